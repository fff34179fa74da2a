"""The zero-shot model's curve across runs: fixed-set stage-2 RMSE against cumulative training datasets.

Reads the first run's recorded points (``docs/training_study/run1_decoder_curve.json``) and the ``metrics.jsonl`` of
each continued run (``--run WORKDIR``, in order; each run's datasets — its steps times the batch of its
``config.json`` — are counted after the previous runs' total), fits a power law ``rmse = a · datasets^(−b)`` to the
first run's points after its first 2,000 steps and to the end of each later run (after its learning-rate decay), and
prints where the law reaches ``--targets``. Writes the plot (log-log) and the points as JSON.

A workdir does not outlive the machine it trained on, so ``--previous JSON`` (this script's own output) stands in for
the runs it already holds; ``--run`` workdirs then continue after them. ``--cut-short WORKDIR`` is a run of the
lineage that was stopped before its learning-rate decay (a fork point, ``scripts/ship_model.py``): its points and
datasets count, its end is not fitted (the law is fitted to annealed ends):

    python scripts/lineage_curve.py --run workdir/cont1 --png docs/training_study/lineage.png \\
        --json docs/training_study/lineage.json
    python scripts/lineage_curve.py --previous docs/training_study/lineage.json --run workdir/cont8 \\
        --png docs/training_study/lineage.png --json docs/training_study/lineage.json
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
HISTORY = os.path.join(HERE, "..", "docs", "training_study", "run1_decoder_curve.json")


def datasets_per_step(workdir: str, override: int | None) -> int:
    """Stage-2 datasets per step of a run: ``override``, else batch size × gradient accumulation of its config."""
    if override is not None:
        return override
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            config = json.load(f)
        return int(config["data"]["batch_size"]) * int(config["decoder"].get("grad_accum", 1))
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise SystemExit(f"{workdir}: no datasets per step in its config.json ({e}); give --per-step") from None


def run_points(workdir: str, offset: int, per_step: int) -> list[tuple[int, float]]:
    points = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r.get("stage") == "decoder" and "val_rmse" in r:
                points.append((offset + per_step * int(r["step"]), float(r["val_rmse"])))
    return points


def previous_runs(path: str) -> tuple[list[list[tuple[int, float]]], list[bool]]:
    """The runs of an earlier output, checked: each a non-empty list of (datasets, rmse), datasets increasing; and
    which of them are fitted (all, for an output older than ``--cut-short``)."""
    try:
        with open(path) as f:
            saved = json.load(f)
        runs = [[(int(n), float(v)) for n, v in run] for run in saved["runs"]]
    except (KeyError, TypeError, ValueError):
        runs, saved = [], {}
    flat = [n for run in runs for n, _ in run]
    if not runs or not all(runs) or any(np.diff(flat) <= 0):
        raise SystemExit(f"{path}: runs must be non-empty lists of (datasets, rmse) with datasets increasing")
    return runs, list(saved.get("fitted") or [True] * len(runs))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], type=lambda w: (w, True),
                   help="a continued run's workdir (repeatable, in order)")  # fmt: skip
    p.add_argument("--cut-short", action="append", dest="run", type=lambda w: (w, False),
                   help="a run stopped before its decay, in its place among --run (its end is not fitted)")  # fmt: skip
    p.add_argument("--previous", help="an earlier output of this script: its runs come first")
    p.add_argument("--per-step", type=int, help="datasets per step of every --run (default: each run's config.json)")
    p.add_argument("--targets", default="0.20,0.158", help="RMSE levels to locate on the fitted law")
    p.add_argument("--png")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.previous:
        runs, fitted = previous_runs(args.previous)
    else:
        with open(HISTORY) as f:
            history = json.load(f)
        runs = [[(s * history["datasets_per_step"], v) for s, v in history["points"]]]
        fitted = [True]
    for workdir, annealed in args.run:
        runs.append(run_points(workdir, runs[-1][-1][0], datasets_per_step(workdir, args.per_step)))
        fitted.append(annealed)
    ends = [r[-1] for r, fit in zip(runs, fitted, strict=True) if fit]
    fit_pts = np.asarray(runs[0][1:] + ends[1:], np.float64)  # run 1 after its first 2,000 steps, later runs' ends
    b, log_a = np.polyfit(np.log(fit_pts[:, 0]), np.log(fit_pts[:, 1]), 1)
    law = dict(a=float(np.exp(log_a)), b=float(-b))
    targets = {t: float((t / law["a"]) ** (-1.0 / law["b"])) for t in map(float, args.targets.split(","))}
    print(f"power law on {len(fit_pts)} points: rmse = {law['a']:.4g} · datasets^(−{law['b']:.4f})")
    for t, n in targets.items():
        so_far = runs[-1][-1][0]
        print(f"  reaches {t:.3f} at about {n:,.0f} datasets ({n / so_far:.1f}× the {so_far:,} so far)")
    out = dict(runs=runs, fitted=fitted, law=law, targets=targets)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4))
        for k, pts in enumerate(runs):
            arr = np.asarray(pts)
            note = " (from scratch)" if k == 0 else ("" if fitted[k] else " (cut short, not fitted)")
            ax.plot(arr[:, 0], arr[:, 1], "o-", ms=3, label=f"lineage entry {k + 1}{note}")
        grid = np.geomspace(fit_pts[:, 0].min(), max(targets.values()) * 1.2, 100)
        ax.plot(grid, law["a"] * grid ** (-law["b"]), "k--", lw=1, label=f"fit: {law['a']:.3g}·N^(−{law['b']:.3f})")
        for t, n in targets.items():
            ax.axhline(t, color="grey", lw=0.5)
            ax.annotate(f"{t:.3f} at {n:.2g} datasets", (grid[0], t), fontsize=7, va="bottom")
        ax.set(xscale="log", yscale="log", xlabel="cumulative stage-2 training datasets",
               ylabel="fixed-set stage-2 RMSE (EMA)")  # fmt: skip
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
    return out


if __name__ == "__main__":
    main()
