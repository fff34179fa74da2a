"""Cell-by-cell comparison of evaluation results: two models, or a model against the baselines.

Each column is ``RESULTS.json:METHOD[@N_CONTEXT][=LABEL]`` (the records of ``eval.py``); a cell is (task, d,
LIN/RFF × IN/OUT) at one context size (``--n-context``, or the column's own ``@N``), its value the mean RMSE over the
cell's datasets. Prints every cell that all columns score, with the paper's Cond-FiP beside it, then per column: the
mean over those cells, and in how many cells it is at or below the first column (``--ref`` names another) and the
paper; then the real-data MMDs (``mmd-generated``) where present. ``--matched`` scores each cell on the datasets
that every column scores in it (a baseline run on a subset, e.g. FiP at d = 50, is compared on its own datasets).
``--paired`` adds, per column and d, the paired difference to the reference column over the (task, dataset) scores
both have: mean ± standard error (two runs of one suite differ far less per dataset than per cell).

    python scripts/compare_cells.py docs/eval_paper/results.json:cond-fip=old  NEW/results.json:cond-fip=new
    python scripts/compare_cells.py R.json:cond-fip@400 R.json:cond-fip@200
    python scripts/compare_cells.py R.json:fip R.json:cond-fip-refined R.json:cond-fip --ref fip --n-context 100
    python scripts/compare_cells.py A.json:fip B.json:cond-fip-refined --matched
    python scripts/compare_cells.py OLD.json:cond-fip-refined=old NEW.json:cond-fip-refined=new --paired
"""

from __future__ import annotations

import argparse
import json
import sys

from cfip_jax.eval import metrics, paper, report

TASKS = tuple(report.TASK_TITLES)  # the report's task order


def _column(spec: str, n_context: int) -> tuple[str, str, int, str]:
    path, sep, rest = spec.rpartition(":")
    rest, _, label = rest.partition("=")
    method, at, n = rest.partition("@")
    if not sep or not path or not method or (at and not n.isdigit()):
        raise SystemExit(f"error: column {spec!r} is not RESULTS.json:METHOD[@N_CONTEXT][=LABEL]")
    n = int(n) if at else n_context
    return path, method, n, label or (f"{method}@{n}" if at else method)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("columns", nargs="+", help="RESULTS.json:METHOD[@N_CONTEXT][=LABEL], the first is the reference")
    p.add_argument("--n-context", type=int, default=400, help="context size of the cells (default 400)")
    p.add_argument("--ref", default=None, help="label of the column the others are counted against")
    p.add_argument("--matched", action="store_true", help="score each cell on the datasets every column scores")
    p.add_argument("--paired", action="store_true", help="paired differences to the reference column, per d")
    args = p.parse_args(argv)
    columns, contexts, scored, mmd = [], [], [], []
    for spec in args.columns:
        path, method, n_context, label = _column(spec, args.n_context)
        try:
            with open(path) as f:
                records = json.load(f)
        except (OSError, ValueError) as err:
            raise SystemExit(f"error: {path}: {err}") from None
        columns.append(label)
        contexts.append(n_context)
        scored.append([r for r in records if r.get("method") == method and r.get("n_context") == n_context and
                       "rmse" in r])  # fmt: skip
        mmd.append({r["dataset"]: r["mmd"] for r in records if r.get("method") == method and
                    r.get("task") == "mmd-generated"})  # fmt: skip
    if args.matched:  # a (task, dataset) counts only where every column scores it
        shared = set.intersection(*({(r["task"], r["dataset"]) for r in recs} for recs in scored))
        scored = [[r for r in recs if (r["task"], r["dataset"]) in shared] for recs in scored]
    cells = []
    for spec, n_context, recs in zip(args.columns, contexts, scored, strict=True):
        cells.append({(r["task"], r["d"], r["category"]): r["mean"] for r in report.aggregate(recs)})
        if not cells[-1]:
            print(f"warning: {spec}: no cells at n_context {n_context}" + " matched" * args.matched, file=sys.stderr)
    if args.ref is not None and args.ref not in columns:
        raise SystemExit(f"error: --ref {args.ref!r} is not a column label ({', '.join(columns)})")
    ref = columns.index(args.ref) if args.ref else 0
    common = sorted(set.intersection(*(set(c) for c in cells)), key=lambda k: (TASKS.index(k[0]), k[1],
                    paper.CATEGORY_ORDER.index(k[2])))  # fmt: skip
    print("| task | d | setting | " + " | ".join(columns) + " | paper |")
    print("|---|---|---|" + "---|" * (len(columns) + 1))
    for key in common:
        ours = " | ".join(f"{c[key]:.3f}" for c in cells)
        ref_paper = paper.cond_fip(key[0], key[2], key[1])
        print(f"| {key[0]} | {key[1]} | {key[2]} | {ours} | {'' if ref_paper is None else f'{ref_paper:.2f}'} |")
    sizes = ", ".join(f"{label} {n}" for label, n in zip(columns, contexts, strict=True))
    print(f"\n{len(common)} cells (n_context: {sizes})")
    papers = [paper.cond_fip(k[0], k[2], k[1]) for k in common]
    for label, c in zip(columns, cells, strict=True):
        mean = sum(c[k] for k in common) / max(1, len(common))
        vs_ref = sum(c[k] <= cells[ref][k] for k in common)
        vs_paper = sum(c[k] <= v for k, v in zip(common, papers, strict=True) if v is not None)
        print(f"{label}: mean {mean:.4f}; cells <= {columns[ref]}: {vs_ref}/{len(common)}; <= paper: {vs_paper}")
    if papers and all(v is not None for v in papers):
        print(f"paper: mean {sum(papers) / len(papers):.4f}")
    if args.paired:
        scores = [{(r["task"], r["dataset"]): (r["d"], r["rmse"]) for r in recs} for recs in scored]
        for label, mine in zip(columns, scores, strict=True):
            if label == columns[ref]:
                continue
            shared = mine.keys() & scores[ref].keys()
            for d in sorted({mine[k][0] for k in shared}):
                diffs = [mine[k][1] - scores[ref][k][1] for k in shared if mine[k][0] == d]
                mean, se = metrics.mean_se(diffs)
                print(f"paired {label} - {columns[ref]}, d = {d}: {mean:+.4f} ± {se:.4f} over {len(diffs)} scores")
    for name in sorted(set().union(*mmd)):
        print(f"MMD {name}: " + ", ".join(f"{label} {m[name]:.3f}" for label, m in zip(columns, mmd, strict=True)
                                          if name in m))  # fmt: skip


if __name__ == "__main__":
    main()
