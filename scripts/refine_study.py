"""The refinement study behind docs/refinement.md: what to refine, measured on the paper suite.

Every variant starts from the zero-shot conditioned decoder of one model and refines it on the dataset's context rows
with ``refine="auto"`` (early stopping on held-out context rows, :mod:`cfip_jax.inference.refine`); the variants
differ in what is refined (the dataset embedding, the adaLN conditioning, the whole decoding path, with or without
a pull towards the zero-shot parameters) and in the learning rate. All variants and the zero-shot model are scored
on the same suite datasets by the evaluation's own tasks, so the tables are ``eval.py``'s.

    python scripts/refine_study.py --out results/refine_study [--suite-d 10,20] [--only embedding,decoder]
    python eval.py --include results/refine_study/results.json --out results/refine_study   # re-report

``--checkpoint`` picks the model (default: the shipped one). The run resumes from ``results.partial.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from cfip_jax import model_io  # noqa: E402
from cfip_jax.eval import runner, tasks  # noqa: E402
from cfip_jax.inference.refine import RefineConfig  # noqa: E402

# name -> (what is refined, its RefineConfig)
VARIANTS: dict[str, tuple[str, RefineConfig]] = {
    "embedding": (
        "the dataset embedding (V, P, C) only, lr 1e-2",
        RefineConfig(target="embedding", lr=1e-2, correction=None),
    ),
    "adaln": (
        "condition C and the adaLN modulation layers, lr 3e-3",
        RefineConfig(target="adaln", lr=3e-3, correction=None),
    ),
    "decoder": (
        "embedding and every decoding weight, lr 1e-3",
        RefineConfig(target="decoder", lr=1e-3, correction=None),
    ),
    "decoder-pull": (
        "as decoder, pulled towards the zero-shot values (λ = 10)",
        RefineConfig(target="decoder", lr=1e-3, pull=10.0, correction=None),
    ),
}  # the gradient stage alone (no closed-form correction), as measured in docs/refinement.md; RefineConfig's
# defaults otherwise: 64 rows a step, held-out check every 10 steps, patience 3, cap 200


def compare(records: list[dict], reference: str = "cond-fip", baseline: str = "fip") -> str:
    """A markdown table: per method, the mean RMSE over the (task, d, func, prior) cells, the cells where it is at or
    below ``reference`` (the zero-shot model) and ``baseline``, and its mean seconds per dataset (fit + noise task)."""
    cells: dict = {}
    seconds: dict = {}
    for r in records:
        if "rmse" not in r or r.get("d") is None:
            continue
        key = (r["task"], r["d"], r["func"], r["prior"])
        cells.setdefault(r["method"], {}).setdefault(key, []).append(r["rmse"])
        if r["task"] == "noise":
            seconds.setdefault((r["method"], r["d"]), []).append(r["seconds"])
    mean = {m: {k: sum(v) / len(v) for k, v in c.items()} for m, c in cells.items()}
    ds = sorted({k[1] for c in mean.values() for k in c})
    head = "| method | mean RMSE over cells | cells ≤ zero-shot | cells ≤ " + baseline + " | "
    head += " | ".join(f"s / dataset, d = {d}" for d in ds) + " |"
    lines = [head, "|" + "---|" * (4 + len(ds))]
    for m, c in mean.items():
        keys = sorted(c)
        ref, base = mean.get(reference, {}), mean.get(baseline, {})
        below_ref = sum(c[k] <= ref[k] for k in keys if k in ref)
        below_base = sum(c[k] <= base[k] for k in keys if k in base)
        secs = []
        for d in ds:
            v = sorted(seconds.get((m, d), []))
            secs.append(f"{v[len(v) // 2]:.2f}" if v else "–")  # the median (the first dataset compiles)
        lines.append(
            f"| {m} | {sum(c.values()) / len(c):.4f} ({len(c)} cells) | {below_ref}/{len(keys)} | "
            f"{below_base}/{len(keys)} | " + " | ".join(secs) + " |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", default=None, help="training workdir or export (default: the shipped model)")
    p.add_argument("--suite-d", default="10,20", help="node counts of the suite (default 10,20)")
    p.add_argument("--per-graph", type=int, default=3)
    p.add_argument(
        "--baselines",
        default=os.path.join(REPO, "docs", "eval_paper", "results.json"),
        help="results.json whose per-dataset baselines (same suite) are reported beside the variants ('' for none)",
    )
    p.add_argument("--only", default=None, help=f"comma-separated variants (default all): {', '.join(VARIANTS)}")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(VARIANTS)
    for name in names:
        if name not in VARIANTS:
            p.error(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}")
    model = model_io.load(args.checkpoint) if args.checkpoint else model_io.load_pretrained()
    methods = [tasks.cond_fip_method(model)]
    methods += [tasks.cond_fip_refined_method(model, "auto", VARIANTS[n][1], name=f"refined-{n}") for n in names]
    partial = os.path.join(args.out, "results.partial.json")
    done = json.load(open(partial)) if os.path.exists(partial) else []
    d_values = [int(v) for v in args.suite_d.split(",")]
    if args.baselines:
        with open(args.baselines) as f:
            done += [r for r in json.load(f) if r.get("method") in runner.BASELINES and r.get("d") in d_values]
    records = runner.run(
        include=done,
        methods=methods,
        out=args.out,
        suite="paper",
        suite_d=d_values,
        per_graph=args.per_graph,
    )
    table = compare(records)
    with open(os.path.join(args.out, "comparison.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
