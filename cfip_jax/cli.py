"""``python -m cfip_jax``: fit an SCM to a CSV and a graph, then sample, intervene and ask counterfactuals.

    python -m cfip_jax dataset sachs --out data/                  # data/sachs.csv, data/sachs_edges.csv (shipped)
    python -m cfip_jax fit data/sachs.csv --graph data/sachs_edges.csv [--refine auto] --out sachs_scm
    python -m cfip_jax fit data/sachs.csv --graph none --structure ges --out sachs_ges
    python -m cfip_jax sample sachs_scm --n 1000 [--do PKA=500] [--shift PIP3=10] [--out samples.csv]
    python -m cfip_jax counterfactual sachs_scm rows.csv --do PKA=500 [--out cf.csv]
    python -m cfip_jax effect data/sachs.csv --graph data/sachs_edges.csv --outcome pmek --do PKA=500 \
        [--baseline PKA=300] [--bootstrap 100] [--out effect.json]

Files: data CSVs have a header row naming the columns (the nodes), then one row per sample, numbers only; an edge CSV
has two columns, one ``parent,child`` pair of node names per row (a first row that is not a pair of node names is a
header). ``fit`` writes the fitted SCM (``InferredSCM.save``: ``scm.json`` + ``arrays.npz``, no pickle) and
``summary.json`` (per node: parents, noise scale, held-out RMSE), and prints the summary. ``sample`` and
``counterfactual`` write CSVs with the data's column names, in its units (to ``--out``, or to standard output).

Bad input (a non-numeric or missing value, duplicate or missing column names, an edge naming an unknown node, a cyclic
graph, ``--do`` on an unknown node or with a non-number, a learner that is not installed, an incomplete saved model)
prints one line ``error: ...`` and exits with status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from cfip_jax import dataclass_flags as flags
from cfip_jax import validation as V
from cfip_jax.inference import inputs
from cfip_jax.inference import structure as structure_lib
from cfip_jax.inference.refine import RefineConfig

MISSING = {"", "na", "nan", "null", "none", "?"}


class InputError(ValueError):
    """Bad input to the command line (reported as one line, exit status 2)."""


# -- files --------------------------------------------------------------------------------------------------------
def read_data_csv(path: str | os.PathLike, min_rows: int = 3) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(x [n, d] float64, column names)`` of a numeric CSV with a header row and at least ``min_rows`` rows; one
    ``ValueError`` per problem."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    rows = [r for r in rows if r]  # blank lines
    if not rows:
        raise InputError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    for k, name in enumerate(header):
        if not name:
            raise InputError(f"{path}: column {k + 1} has no name (the first row must name every column)")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise InputError(f"{path}: duplicate column name {name!r}")
        seen.add(name)
    d = len(header)
    x = np.empty((len(rows) - 1, d), np.float64)
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != d:
            raise InputError(f"{path}: line {r} has {len(row)} fields, the header has {d}")
        for k, cell in enumerate(row):
            text = cell.strip()
            if text.lower() in MISSING:
                raise InputError(f"{path}: missing value in column {header[k]!r}, line {r}")
            try:
                value = float(text)
            except ValueError:
                raise InputError(f"{path}: non-numeric value {cell!r} in column {header[k]!r}, line {r}") from None
            if not math.isfinite(value):
                raise InputError(f"{path}: non-finite value {cell!r} in column {header[k]!r}, line {r}")
            x[r - 2, k] = value
    if x.shape[0] < min_rows:
        raise InputError(f"{path}: needs at least {min_rows} data rows, got {x.shape[0]}")
    return x, tuple(header)


def read_edges_csv(path: str | os.PathLike, nodes: Sequence[str]) -> np.ndarray:
    """The DAG ``adj [d, d]`` of an edge CSV (``parent,child`` per row, optional header), checked against ``nodes``."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with path.open(newline="") as fh:
        rows = [[c.strip() for c in r] for r in csv.reader(fh) if r]
    index = set(nodes)
    if rows and not (len(rows[0]) == 2 and rows[0][0] in index and rows[0][1] in index):
        rows = rows[1:]  # a header
    for r, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise InputError(f"{path}: edge {r} has {len(row)} fields; each row is 'parent,child'")
    return inputs.edges_to_adjacency([tuple(row) for row in rows], nodes, where=str(path))


def _write_csv(x: np.ndarray, names: Sequence[str], out: str | None) -> None:
    """Rows of ``x`` under a header of ``names``, to the file ``out`` (written whole, then moved into place) or to
    standard output."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([[f"{v:.9g}" for v in row] for row in np.asarray(x, np.float64)])
    if out is None:
        sys.stdout.write(buf.getvalue())
        return
    target = pathlib.Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(buf.getvalue())
    os.replace(tmp, target)


# -- commands ----------------------------------------------------------------------------------------------------
def cmd_dataset(args) -> None:
    """Write a dataset shipped with the package as ``NAME.csv`` and ``NAME_edges.csv``."""
    from cfip_jax.data import real

    data = real.load_sachs() if args.name == "sachs" else real.sample_ecoli70(args.n, args.seed)
    out = pathlib.Path(args.out)
    edges = [(data.nodes[i], data.nodes[j]) for i, j in zip(*np.nonzero(data.adj), strict=True)]
    _write_csv(data.x, data.nodes, str(out / f"{args.name}.csv"))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([("parent", "child"), *edges])
    (out / f"{args.name}_edges.csv").write_text(buf.getvalue())
    print(f"wrote {out / f'{args.name}.csv'} ({data.x.shape[0]} rows, {len(data.nodes)} columns) and "
          f"{out / f'{args.name}_edges.csv'} ({len(edges)} edges)")  # fmt: skip


def _refine_arg(value: str | None):
    if value is None or value in ("auto", "closed-form"):
        return value
    try:
        return int(value)
    except ValueError:
        raise InputError(f"--refine must be 'auto', 'closed-form' or a number of steps, got {value!r}") from None


def cmd_fit(args) -> None:
    """Fit an SCM (zero-shot or refined) and save it with its summary."""
    x, names = read_data_csv(args.data)
    if args.graph.lower() == "none":
        structure = structure_lib.check_learner(args.structure)
        adj = None
    else:
        if args.structure is not None:
            raise InputError("--structure is for --graph none")
        structure, adj = None, read_edges_csv(args.graph, names)
    refine = _refine_arg(args.refine)
    try:
        refine_config = flags.from_flags(args, RefineConfig, "refine")
    except ValueError as err:
        raise InputError(f"--refine-*: {err}") from None
    holdout = V.check_probability(args.holdout, "--holdout")
    if not holdout < 0.5:
        raise InputError(f"--holdout must be below 0.5, got {holdout}")
    rng = np.random.default_rng(args.seed)
    held = np.sort(rng.choice(x.shape[0], size=int(round(holdout * x.shape[0])), replace=False))
    fit_rows = np.setdiff1d(np.arange(x.shape[0]), held)
    from cfip_jax import api  # nothing is traced before the input is known to be good
    from cfip_jax.inference import io as scm_io

    out = scm_io.check_target(args.out)  # before the fit, not after it

    model = api.CondFiP.pretrained() if args.model is None else api.CondFiP.load(args.model)
    start = time.perf_counter()
    scm = model.fit(x[fit_rows], adj, structure=structure, nodes=names, refine=refine, noise_model=args.noise_model,
                    refine_config=refine_config)  # fmt: skip
    seconds = time.perf_counter() - start
    noise = np.asarray(scm.noise(x[fit_rows]))
    adj_used = np.asarray(scm.adj)
    per_node = []
    held_resid = np.asarray(scm.noise(x[held])) if held.size else None
    for j, name in enumerate(names):
        row = dict(node=name, parents=[names[i] for i in np.flatnonzero(adj_used[:, j])],
                   noise_scale=float(noise[:, j].std(ddof=1)))  # fmt: skip
        if held_resid is not None:
            row["held_out_rmse"] = float(np.sqrt(np.mean((held_resid[:, j] - noise[:, j].mean()) ** 2)))
        per_node.append(row)
    summary = dict(
        data=str(args.data), rows=int(x.shape[0]), rows_fitted=int(fit_rows.size), rows_held_out=int(held.size),
        graph=str(args.graph), graph_source=scm.graph_source, edges=int(adj_used.sum()),
        refine=args.refine, refined_steps=scm.refined_steps, refine_loss=scm.refine_loss,
        corrected_nodes=None if scm.corrected_nodes is None else dict(
            zip(("kept", "linear", "features"), scm.corrected_nodes, strict=True)),
        refine_members=scm.members,  # the corrected_nodes counts are summed over the members
        model=args.model or "pretrained", fit_seconds=round(seconds, 3), nodes=per_node,
    )  # fmt: skip
    scm.save(out, summary=summary)
    print(f"fitted {len(names)} nodes, {int(adj_used.sum())} edges ({scm.graph_source} graph) on {fit_rows.size} rows"
          f" in {seconds:.2f} s" + (f", refined {scm.refined_steps} steps" if scm.refined_steps else "") +
          f"; saved to {out}")  # fmt: skip
    width = max(len(n) for n in names)
    print(f"{'node':<{width}}  {'noise scale':>12}  {'held-out RMSE':>13}  parents")
    for row in per_node:
        rmse = f"{row['held_out_rmse']:13.4g}" if "held_out_rmse" in row else f"{'-':>13}"
        print(f"{row['node']:<{width}}  {row['noise_scale']:12.4g}  {rmse}  {', '.join(row['parents']) or '-'}")


def _load_scm(path: str):
    from cfip_jax import api

    return api.InferredSCM.load(path)


def cmd_sample(args) -> None:
    """Observational or interventional samples."""
    n = V.check_int(args.n, "--n", minimum=1)
    scm = _load_scm(args.model_dir)
    do = inputs.assignments(args.do, "--do", scm.nodes)
    shift = inputs.assignments(args.shift, "--shift", scm.nodes)
    import jax

    key = jax.random.key(args.seed)
    scm = scm.replace(kind="numpy")
    x = scm.intervene(do or None, n, key, shift=shift or None) if (do or shift) else scm.sample(n, key)
    _write_csv(np.asarray(x), scm.nodes, args.out)


def cmd_counterfactual(args) -> None:
    """Counterfactuals of the rows of a CSV."""
    scm = _load_scm(args.model_dir)
    x, names = read_data_csv(args.rows, min_rows=1)
    if set(names) != set(scm.nodes):
        raise InputError(f"{args.rows}: columns {', '.join(names)} differ from the SCM's nodes {', '.join(scm.nodes)}")
    x = x[:, [names.index(n) for n in scm.nodes]]
    do = inputs.assignments(args.do, "--do", scm.nodes)
    shift = inputs.assignments(args.shift, "--shift", scm.nodes)
    if not do and not shift:
        raise InputError("counterfactual needs --do NODE=VALUE and/or --shift NODE=DELTA")
    cf = scm.replace(kind="numpy").counterfactual(x, do or None, shift=shift or None)
    _write_csv(np.asarray(cf), scm.nodes, args.out)


def cmd_effect(args) -> None:
    """The average causal effect of ``--do`` (against ``--baseline`` or the observational mean) on ``--outcome``,
    with a bootstrap interval when ``--bootstrap B`` is given."""
    x, names = read_data_csv(args.data)
    adj = read_edges_csv(args.graph, names)
    if args.outcome not in names:
        raise InputError(f"--outcome {args.outcome!r}: unknown node; nodes: {', '.join(names)}")
    do = inputs.assignments(args.do, "--do", names)
    baseline = inputs.assignments(args.baseline, "--baseline", names) or None
    if not do:
        raise InputError("effect needs --do NODE=VALUE")
    if args.outcome in do or (baseline and args.outcome in baseline):
        raise InputError(f"--outcome {args.outcome!r} is also intervened on: it cannot be a treatment")
    if args.bootstrap is not None and args.bootstrap < 2:
        raise InputError(f"--bootstrap must be at least 2 resamples, got {args.bootstrap}")
    if not 0.0 < args.level < 1.0:
        raise InputError(f"--level must be in (0, 1), got {args.level}")
    n = V.check_int(args.n if args.n is not None else (1000 if args.bootstrap is None else 200), "--n", minimum=1)
    refine = _refine_arg(args.refine)
    if args.bootstrap is not None and refine not in (None, "closed-form"):
        raise InputError("--bootstrap fits zero-shot or --refine closed-form (the gradient refinement is not batched)")
    import jax

    from cfip_jax import api

    model = api.CondFiP.pretrained() if args.model is None else api.CondFiP.load(args.model)
    key = jax.random.key(args.seed)
    if args.bootstrap is None:
        scm = model.fit(x, adj, nodes=names, refine=refine, noise_model=args.noise_model)
        result = dict(outcome=args.outcome, estimate=scm.effect(args.outcome, do, baseline, n=n, key=key))
    else:
        boot = model.bootstrap(x, adj, args.bootstrap, key=jax.random.fold_in(key, 1), level=args.level, nodes=names,
                               noise_model=args.noise_model, refine=refine)  # fmt: skip
        result = boot.effect(args.outcome, do, baseline, n=n, key=key).to_dict()
    result.update(do=do, baseline=baseline, data=str(args.data), rows=int(x.shape[0]), refine=args.refine)
    against = "the observational mean" if baseline is None else _describe(baseline)
    line = f"effect of {_describe(do)} against {against} on {args.outcome}: {result['estimate']:.6g}"
    if "low" in result:
        line += (f"  [{result['low']:.6g}, {result['high']:.6g}] ({100 * args.level:g} % bootstrap interval, "
                 f"{args.bootstrap} resamples)")  # fmt: skip
    print(line)
    if args.out:
        target = pathlib.Path(args.out)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh, indent=1)
        os.replace(tmp, target)


def _describe(values: dict[str, float]) -> str:
    return "do(" + ", ".join(f"{k}={v:g}" for k, v in values.items()) + ")"


def _fit_parser(sub) -> None:
    f = sub.add_parser("fit", help="fit an SCM to a CSV and a graph (or a learned one)")
    f.add_argument("data", help="CSV with a header row of node names")
    f.add_argument("--graph", required=True, help="edge CSV (parent,child per row), or 'none' to learn the graph")
    f.add_argument("--structure", choices=structure_lib.LEARNERS, help="learner for --graph none (default ges)")
    f.add_argument("--refine", help="'auto', 'closed-form' or a number of steps (default: zero-shot)")
    f.add_argument("--model", help="a Cond-FiP model directory (default: the pretrained one)")
    f.add_argument("--holdout", type=float, default=0.1, help="fraction of rows held out for the summary's RMSE")
    f.add_argument("--seed", type=int, default=0, help="seed of the held-out rows")
    f.add_argument("--out", required=True, help="directory for the fitted SCM")
    f.add_argument("--noise-model", choices=("empirical", "gaussian"), default="empirical",
                   help="new noise for sample: resampled abducted noise (default) or a Gaussian per node")  # fmt: skip
    flags.add_flags(f.add_argument_group("the refinement (with --refine; the fields of RefineConfig)"),
                    RefineConfig, "refine")  # fmt: skip
    f.set_defaults(run=cmd_fit)


def _effect_parser(sub) -> None:
    e = sub.add_parser("effect", help="the average causal effect of an intervention, optionally with an interval")
    e.add_argument("data", help="CSV with a header row of node names")
    e.add_argument("--graph", required=True, help="edge CSV (parent,child per row)")
    e.add_argument("--outcome", required=True, help="the outcome node")
    e.add_argument("--do", action="append", metavar="NODE=VALUE", help="the intervention (repeatable)")
    e.add_argument("--baseline", action="append", metavar="NODE=VALUE",
                   help="compare with this intervention instead of the observational mean")  # fmt: skip
    e.add_argument("--bootstrap", type=int, metavar="B", help="resamples for an interval (zero-shot fits)")
    e.add_argument("--level", type=float, default=0.95, help="the interval's coverage (default 0.95)")
    e.add_argument("--refine", help="'auto', 'closed-form' or a number of steps (without --bootstrap)")
    e.add_argument("--noise-model", choices=("empirical", "gaussian"), default="empirical")
    e.add_argument("--n", type=int, help="Monte Carlo samples per expectation (default 1000; with --bootstrap, "
                   "200 per resample)")  # fmt: skip
    e.add_argument("--model", help="a Cond-FiP model directory (default: the pretrained one)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", help="also write the result as JSON here")
    e.set_defaults(run=cmd_effect)


def _solver_parsers(sub) -> None:
    s = sub.add_parser("sample", help="observational or interventional samples of a fitted SCM")
    s.add_argument("model_dir")
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--do", action="append", metavar="NODE=VALUE", help="hard intervention (repeatable)")
    s.add_argument("--shift", action="append", metavar="NODE=DELTA", help="shift intervention (repeatable)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="output CSV (default: standard output)")
    s.set_defaults(run=cmd_sample)

    c = sub.add_parser("counterfactual", help="counterfactuals of factual rows")
    c.add_argument("model_dir")
    c.add_argument("rows", help="CSV of factual rows, the SCM's columns")
    c.add_argument("--do", action="append", metavar="NODE=VALUE")
    c.add_argument("--shift", action="append", metavar="NODE=DELTA")
    c.add_argument("--out", help="output CSV (default: standard output)")
    c.set_defaults(run=cmd_counterfactual)


def _dataset_parser(sub) -> None:
    d = sub.add_parser("dataset", help="write a dataset shipped with the package as CSVs")
    d.add_argument("name", choices=("sachs", "ecoli70"))
    d.add_argument("--out", default=".")
    d.add_argument("--n", type=int, default=800, help="ecoli70: samples drawn")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(run=cmd_dataset)


def parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per verb (``fit``, ``effect``, ``sample``, ``counterfactual``, ``dataset``)."""
    p = argparse.ArgumentParser(prog="python -m cfip_jax", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_fit_parser, _effect_parser, _solver_parsers, _dataset_parser):
        add(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from cfip_jax import compilation_cache

    compilation_cache.enable()  # a second run reads its compiled programs back (CFIP_JAX_CACHE_DIR="" turns it off)
    if args.command == "fit" and args.graph.lower() == "none" and args.structure is None:
        args.structure = "ges"
    try:
        args.run(args)
    except ValueError as err:  # every input check raises one (InputError or the library's own)
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
