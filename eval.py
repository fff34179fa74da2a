"""Evaluate Cond-FiP and per-dataset baselines with the paper's protocol.

Examples:
  python eval.py --real sachs,ecoli --out results/real     # the shipped pretrained model and every baseline
  python eval.py --checkpoint workdir/default --data-dir ../shared/data/reference-sample --out results/ref
  python eval.py --checkpoint workdir/default --suite paper --suite-d 10,20,50 --out results/paper
  python eval.py --checkpoint workdir/default --real sachs,ecoli --out results/real

Writes ``results.json``, ``summary.md``, ``summary.csv`` and PNG plots into ``--out``.
"""

from __future__ import annotations

import argparse
import sys

from cfip_jax.eval import runner, tasks

METHODS = ("cond-fip", *runner.BASELINES)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(f"expected integers >= 2, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eval.py", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="training workdir or exported model directory (default: the shipped model)")
    p.add_argument("--data-dir", help="evaluate every dataset directory below DIR (reference format)")
    p.add_argument("--suite", help=f"synthetic suite: {', '.join(runner.SUITES)}")
    p.add_argument("--suite-d", type=_ints, default=[10, 20, 50], help="node counts of the suite (default 10,20,50)")
    p.add_argument("--interventions", type=int, default=None, help="interventions per suite dataset (default d)")
    p.add_argument("--real", help=f"comma-separated real datasets: {', '.join(runner.REAL)}")
    p.add_argument("--methods", default=None, help=f"comma-separated methods (default: all available): {METHODS}")
    p.add_argument("--n-context", type=_ints, default=None, help="context sizes, e.g. 50,100,400 (default: all rows)")
    p.add_argument("--out", required=True, help="output directory")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    p = parser()
    args = p.parse_args(argv)
    if not (args.data_dir or args.suite or args.real):
        p.error("give at least one of --data-dir, --suite, --real")
    if args.suite and args.suite not in runner.SUITES:
        p.error(f"unknown suite {args.suite!r}; valid: {', '.join(runner.SUITES)}")
    real = [r for r in (args.real or "").split(",") if r]
    for name in real:
        if name not in runner.REAL:
            p.error(f"unknown real dataset {name!r}; valid: {', '.join(runner.REAL)}")
    names = [m for m in (args.methods.split(",") if args.methods else METHODS) if m]
    for name in names:
        if name not in METHODS:
            p.error(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    if args.interventions is not None and args.interventions < 0:
        p.error("--interventions must be >= 0")
    methods = []
    for name in names:
        if name == "cond-fip":
            from cfip_jax import model_io

            try:
                model = model_io.load(args.checkpoint) if args.checkpoint else model_io.load_pretrained()
            except ValueError as err:
                p.error(f"--checkpoint: {err}")
            methods.append(tasks.cond_fip_method(model))
        else:
            methods.append(runner.BASELINES[name])
    records = runner.run(
        methods=methods,
        out=args.out,
        data_dir=args.data_dir,
        suite=args.suite,
        suite_d=args.suite_d,
        real_names=real,
        n_contexts=args.n_context or [None],
        interventions=args.interventions,
    )
    skipped = [r for r in records if "error" in r]
    print(f"{len(records)} records ({len(skipped)} skipped datasets) written to {args.out}", file=sys.stderr)
    return records


if __name__ == "__main__":
    main()
