"""The command line of ``eval.py``: arguments, checks (one-line errors before any work), methods, then
:func:`cfip_jax.eval.runner.run`.
"""

from __future__ import annotations

import argparse
import json
import sys

from cfip_jax import dataclass_flags as flags
from cfip_jax.eval import fip, runner, tasks
from cfip_jax.inference import refine as refine_lib
from cfip_jax.inference import structure

METHODS = ("cond-fip", "cond-fip-refined", *runner.BASELINES)
NOT_BY_DEFAULT = ("cond-fip-refined",)  # asked for by name (it costs seconds per dataset)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(f"expected integers >= 2, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval.py", description="Evaluate Cond-FiP and per-dataset baselines with the paper's protocol."
    )
    p.add_argument("--checkpoint", help="training workdir or exported model directory (default: the shipped model)")
    p.add_argument("--data-dir", help="evaluate every dataset directory below DIR (reference format)")
    p.add_argument("--suite", help=f"synthetic suite: {', '.join(runner.SUITES)}")
    p.add_argument("--suite-d", type=_ints, default=[10, 20, 50], help="node counts of the suite (default 10,20,50)")
    p.add_argument("--per-graph", type=int, default=3, help="suite SCMs per graph type and setting (default 3)")
    p.add_argument("--interventions", type=int, default=None, help="interventions per suite dataset (default d)")
    p.add_argument("--real", help=f"comma-separated real datasets: {', '.join(runner.REAL)}")
    p.add_argument(
        "--methods", default=None, help=f"comma-separated methods (default: all installed): {', '.join(METHODS)}"
    )
    p.add_argument("--fip-steps", type=int, default=fip.FiPConfig.steps, help="training steps of the fip baseline")
    p.add_argument(
        "--fip-batch", type=int, default=None, help="rows per fip training step (default: the whole training split)"
    )
    p.add_argument(
        "--refine",
        default="auto",
        help="cond-fip-refined: optimiser steps, 'auto' (early stopping on held-out context rows; default) or "
        "'closed-form' (no gradient step, the correction only)",
    )
    flags.add_flags(p.add_argument_group("cond-fip-refined (the fields of RefineConfig)"), refine_lib.RefineConfig,
                    "refine")  # fmt: skip
    p.add_argument(
        "--include",
        nargs="*",
        default=[],
        help="results.json (or results.partial.json) files of earlier runs: reported with this one; what they "
        "already score is not evaluated again",
    )
    p.add_argument(
        "--graph",
        default="true",
        choices=runner.GRAPHS,
        help="the graph the methods get: the true one (default) or one learned from each context (methods are then "
        "reported as METHOD@LEARNER, with the structural Hamming distance)",
    )
    p.add_argument("--n-context", type=_ints, default=None, help="context sizes, e.g. 50,100,400 (default: all rows)")
    p.add_argument("--out", required=True, help="output directory")
    return p


def refine_settings(p: argparse.ArgumentParser, args) -> tuple[int | str, refine_lib.RefineConfig]:
    """``(steps or "auto", RefineConfig)`` of the ``--refine*`` flags (one-line errors)."""
    steps = args.refine
    if steps not in refine_lib.SCHEDULES:
        try:
            steps = int(steps)
        except ValueError:
            p.error(f"--refine must be a number of steps >= 1, 'auto' or 'closed-form', got {steps!r}")
        if steps < 1:
            p.error(f"--refine must be a number of steps >= 1, 'auto' or 'closed-form', got {steps}")
    if steps == "closed-form" and args.refine_correction is None:
        p.error("--refine closed-form is the correction alone: it needs --refine-correction features or linear")
    try:
        cfg = flags.from_flags(args, refine_lib.RefineConfig, "refine")
    except ValueError as err:
        p.error(f"--refine-*: {err}")
    return steps, cfg


def build_methods(p: argparse.ArgumentParser, args, names: list[str]) -> list[tasks.Method]:
    """The :class:`~cfip_jax.eval.tasks.Method` of each name (Cond-FiP loads ``--checkpoint`` or the shipped model)."""
    methods, model = [], None
    for name in names:
        if name in ("cond-fip", "cond-fip-refined") and model is None:
            from cfip_jax import model_io

            try:
                model = model_io.load(args.checkpoint) if args.checkpoint else model_io.load_pretrained()
            except ValueError as err:
                p.error(f"--checkpoint: {err}")
        if name == "cond-fip":
            methods.append(tasks.cond_fip_method(model))
        elif name == "cond-fip-refined":
            steps, cfg = refine_settings(p, args)
            methods.append(tasks.cond_fip_refined_method(model, steps, cfg))
        elif name == "fip":
            methods.append(tasks.fip_method(fip.FiPConfig(steps=args.fip_steps, batch_size=args.fip_batch)))
        else:
            methods.append(runner.BASELINES[name])
    return methods


def _method_names(p: argparse.ArgumentParser, args: argparse.Namespace, report_only: bool) -> list[str]:
    """The methods asked for (the installed defaults when none), each known and installed, else ``p.error``."""
    installed = [m for m in METHODS if m not in runner.OPTIONAL or runner.OPTIONAL[m][0]()]
    default = [m for m in installed if m not in NOT_BY_DEFAULT]
    names = [m for m in (args.methods.split(",") if args.methods else [] if report_only else default) if m]
    for name in names:
        if name not in METHODS:
            p.error(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
        if name not in installed:
            p.error(runner.OPTIONAL[name][1])
    return names


def _included(p: argparse.ArgumentParser, paths: list[str]) -> list[dict]:
    """The records of earlier runs' ``results.json`` files (``--include``), each checked to be a list of records."""
    include = []
    for path in paths:
        try:
            with open(path) as f:
                loaded = json.load(f)
        except (OSError, ValueError) as err:
            p.error(f"--include {path}: {err}")
        if not isinstance(loaded, list) or not all(isinstance(r, dict) for r in loaded):
            p.error(f"--include {path}: expected a list of records (a results.json)")
        include += loaded
    return include


def _check_numbers_and_graph(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.fip_steps < 1 or (args.fip_batch is not None and args.fip_batch < 1):
        p.error("--fip-steps and --fip-batch must be >= 1")
    if args.per_graph < 1:
        p.error("--per-graph must be >= 1")
    if args.interventions is not None and args.interventions < 0:
        p.error("--interventions must be >= 0")
    if args.graph != "true":
        if args.real:
            p.error("--graph with a learner applies to --suite and --data-dir, not --real")
        try:
            structure.check_learner(args.graph)
        except ValueError as err:
            p.error(f"--graph: {err}")


def main(argv: list[str] | None = None) -> list[dict]:
    """Parse ``argv``, evaluate, write the reports; returns the records."""
    p = parser()
    args = p.parse_args(argv)
    report_only = not (args.data_dir or args.suite or args.real)
    if report_only and not args.include:
        p.error("give at least one of --data-dir, --suite, --real (or only --include to re-report earlier runs)")
    if args.suite and args.suite not in runner.SUITES:
        p.error(f"unknown suite {args.suite!r}; valid: {', '.join(runner.SUITES)}")
    real = [r for r in (args.real or "").split(",") if r]
    for name in real:
        if name not in runner.REAL:
            p.error(f"unknown real dataset {name!r}; valid: {', '.join(runner.REAL)}")
    names = _method_names(p, args, report_only)
    _check_numbers_and_graph(p, args)
    include = _included(p, args.include)
    methods = build_methods(p, args, names)
    records = runner.run(
        include=include,
        methods=methods,
        out=args.out,
        data_dir=args.data_dir,
        suite=args.suite,
        suite_d=args.suite_d,
        real_names=real,
        n_contexts=args.n_context or [None],
        interventions=args.interventions,
        per_graph=args.per_graph,
        graph=args.graph,
    )
    skipped = [r for r in records if "error" in r]
    print(f"{len(records)} records ({len(skipped)} skipped datasets) written to {args.out}", file=sys.stderr)
    return records
