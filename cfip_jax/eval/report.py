"""Reports from evaluation records: ``results.json``, ``summary.md``, ``summary.csv`` and PNG plots.

A record is a dict ``{"dataset", "method", "task", "n_context", "rmse" | "mmd", "seconds", ...}``; synthetic datasets
also carry ``"func"``, ``"prior"`` and ``"d"``, which place them in the paper's layout (method × d ×
{LIN IN, RFF IN, LIN OUT, RFF OUT}, mean (standard error) over datasets). Records with an ``"error"`` field are
skipped datasets and are listed separately.
"""

from __future__ import annotations

import collections
import csv
import json
import pathlib
from collections.abc import Iterable, Sequence

from cfip_jax.eval import paper
from cfip_jax.eval.metrics import mean_se

CATEGORIES = (
    ("linear", "in", "LIN IN"),
    ("rff", "in", "RFF IN"),
    ("linear", "out", "LIN OUT"),
    ("rff", "out", "RFF OUT"),
)
TASK_TITLES = {
    "noise": "Noise prediction",
    "generation": "Sample generation",
    "interventional": "Interventional generation",
    "counterfactual": "Counterfactual generation",
}


def _category(rec: dict) -> str | None:
    for func, prior, title in CATEGORIES:
        if rec.get("func") == func and rec.get("prior") == prior:
            return title
    return None


def aggregate(records: Iterable[dict]) -> list[dict]:
    """Mean and standard error of the RMSE per (task, n_context, method, d, category) over datasets."""
    groups: dict[tuple, list[float]] = collections.defaultdict(list)
    for rec in records:
        if "rmse" not in rec or _category(rec) is None:
            continue
        groups[(rec["task"], rec["n_context"], rec["method"], rec["d"], _category(rec))].append(rec["rmse"])
    rows = []
    for (task, n_ctx, method, d, cat), values in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        mean, se = mean_se(values)
        rows.append(dict(task=task, n_context=n_ctx, method=method, d=d, category=cat, mean=mean, se=se, n=len(values)))
    return rows


def _methods_in_order(rows: Sequence[dict], preferred: Sequence[str]) -> list[str]:
    present = {r["method"] for r in rows}
    return [m for m in preferred if m in present] + sorted(present - set(preferred))


def summary_markdown(records: Sequence[dict], method_order: Sequence[str] = ()) -> str:
    """The paper's tables (one per task and context size) plus real-data MMD and skipped datasets, as Markdown."""
    rows = aggregate(records)
    lines: list[str] = []
    by_table = collections.defaultdict(list)
    for r in rows:
        by_table[(r["task"], r["n_context"])].append(r)
    for task in TASK_TITLES:
        for (t, n_ctx), table in sorted(((k, v) for k, v in by_table.items() if k[0] == task), key=lambda kv: kv[0][1]):
            cells = {(r["method"], r["d"], r["category"]): r for r in table}
            lines += [f"### {TASK_TITLES[t]} (RMSE, n_context = {n_ctx})", ""]
            lines += ["| Method | d | " + " | ".join(c[2] for c in CATEGORIES) + " |", "|---|---|" + "---|" * 4]
            for d in sorted({r["d"] for r in table}):
                for method in _methods_in_order(table, method_order):
                    vals = []
                    for _, _, cat in CATEGORIES:
                        c = cells.get((method, d, cat))
                        vals.append(f"{c['mean']:.2f} ({c['se']:.2f})" if c else "–")
                    if any(v != "–" for v in vals):
                        lines.append(f"| {method} | {d} | " + " | ".join(vals) + " |")
            lines.append("")
    lines += _timing_table(records, method_order)
    lines += _structure_table(records)
    mmd = [r for r in records if "mmd" in r]
    if mmd:
        lines += ["### Real data (MMD, lower is better)", "", "| Dataset | Method | Task | MMD |", "|---|---|---|---|"]
        for r in mmd:
            lines.append(f"| {r['dataset']} | {r['method']} | {r['task']} | {r['mmd']:.4f} |")
        lines.append("")
    errors = [r for r in records if "error" in r]
    if errors:
        lines += ["### Skipped datasets", ""] + [f"- `{r['dataset']}`: {r['error']}" for r in errors] + [""]
    return "\n".join(lines)


def _timing_table(records: Sequence[dict], method_order: Sequence[str]) -> list[str]:
    """Mean seconds per dataset of the noise task (the method's fit on the context plus one abduction) by method × d."""
    times: dict[tuple, list[float]] = collections.defaultdict(list)
    for rec in records:
        if rec.get("task") == "noise" and "seconds" in rec and "d" in rec:
            times[(rec["method"], rec["d"])].append(rec["seconds"])
    if not times:
        return []
    ds = sorted({d for _, d in times})
    lines = ["### Wall time per dataset (s): fit on the context + noise prediction, mean over datasets", ""]
    lines += ["| Method | " + " | ".join(f"d = {d}" for d in ds) + " |", "|---|" + "---|" * len(ds)]
    for method in _methods_in_order([{"method": m} for m, _ in times], method_order):
        cells = [f"{sum(v) / len(v):.2f}" if (v := times.get((method, d))) else "–" for d in ds]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def _structure_table(records: Sequence[dict]) -> list[str]:
    """Learned graphs (``eval.py --graph LEARNER``): mean SHD to the true graph, edges learned and true, learner
    seconds, per learner × d, over datasets (one record per dataset and context size)."""
    seen: dict[tuple, dict] = {}
    for rec in records:
        if "shd" in rec and rec.get("task") == "noise":
            seen.setdefault((rec["graph_used"], rec["d"], rec["dataset"], rec["n_context"]), rec)
    if not seen:
        return []
    groups: dict[tuple, list[dict]] = collections.defaultdict(list)
    for (learner, d, _, _), rec in seen.items():
        groups[(learner, d)].append(rec)
    lines = ["### Learned graphs (structural Hamming distance to the true graph, mean over datasets)", ""]
    lines += ["| Learner | d | datasets | SHD | edges learned | true edges | seconds |", "|" + "---|" * 7]
    for (learner, d), recs in sorted(groups.items()):
        m = {k: sum(r[k] for r in recs) / len(recs) for k in ("shd", "edges", "true_edges", "structure_seconds")}
        lines.append(f"| {learner} | {d} | {len(recs)} | {m['shd']:.1f} | {m['edges']:.1f} | {m['true_edges']:.1f} | "
                     f"{m['structure_seconds']:.2f} |")  # fmt: skip
    return lines + [""]


def write_reports(records: Sequence[dict], out: str | pathlib.Path, method_order: Sequence[str] = ()) -> list[str]:
    """Write ``results.json``, ``summary.md``, ``summary.csv`` and plots into ``out``; return the written paths."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    (out / "results.json").write_text(json.dumps(list(records), indent=1))
    (out / "summary.md").write_text(summary_markdown(records, method_order))
    written += [str(out / "results.json"), str(out / "summary.md")]
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["task", "n_context", "method", "d", "category", "mean", "se", "n"])
        writer.writeheader()
        writer.writerows(aggregate(records))
    written.append(str(out / "summary.csv"))
    written += plot_rmse_vs_d(records, out)
    return written


def plot_rmse_vs_d(records: Sequence[dict], out: pathlib.Path) -> list[str]:
    """One PNG per task: RMSE against d, a line per method and category (mean ± s.e.), and the paper's Cond-FiP as a
    dashed reference line (:mod:`cfip_jax.eval.paper`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = aggregate(records)
    paths = []
    for task in TASK_TITLES:
        table = [r for r in rows if r["task"] == task]
        if not table:
            continue
        cats = [c[2] for c in CATEGORIES if any(r["category"] == c[2] for r in table)]
        fig, axes = plt.subplots(1, len(cats), figsize=(4 * len(cats), 3.2), squeeze=False)
        for ax, cat in zip(axes[0], cats, strict=True):
            for method in _methods_in_order(table, ()):
                pts = sorted(
                    (r["d"], r["mean"], r["se"]) for r in table if r["method"] == method and r["category"] == cat
                )
                if pts:
                    ds, means, ses = zip(*pts, strict=True)
                    ax.errorbar(ds, means, yerr=ses, marker="o", capsize=3, label=method)
            ref = [(d, v) for d in sorted({r["d"] for r in table}) if (v := paper.cond_fip(task, cat, d)) is not None]
            if ref:
                ax.plot(*zip(*ref, strict=True), "k--", linewidth=1, alpha=0.6, label="Cond-FiP (paper)")
            ax.set_title(cat)
            ax.set_xlabel("d")
            ax.set_xscale("log")
            ticks = sorted({r["d"] for r in table if r["category"] == cat})
            ax.set_xticks(ticks, [str(d) for d in ticks])  # ticks at the d values, not at log-scale powers
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_ylabel("RMSE")
        axes[0][-1].legend(fontsize=8)
        fig.suptitle(TASK_TITLES[task])
        fig.tight_layout()
        path = out / f"rmse_{task}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths


def plot_interventions(x_true, x_pred, node: int, names: Sequence[str], path: str | pathlib.Path, title: str) -> str:
    """Scatter of true vs generated interventional samples for every node (one panel per node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = x_true.shape[1]
    cols = min(d, 5)
    rows = -(-d // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.4 * rows), squeeze=False)
    for j in range(rows * cols):
        ax = axes[j // cols][j % cols]
        if j >= d:
            ax.axis("off")
            continue
        ax.scatter(x_true[:, j], x_pred[:, j], s=4, alpha=0.6)
        lo, hi = float(min(x_true[:, j].min(), x_pred[:, j].min())), float(max(x_true[:, j].max(), x_pred[:, j].max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"{names[j]}{' (do)' if j == node else ''}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.supxlabel("true")
    fig.supylabel("generated")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
