"""Write synthetic test datasets in the reference's directory tree and file format (SPEC.md §4.3, §5.1).

One SCM per seed, drawn from the prior ``(graph, func, noise, prior)`` with ``d`` nodes, gives the directory
``OUT/{graph}_{func}_{noise}_{prior}/total_nodes_{d}/seed_{s}/`` with

- ``true_graph.npy`` (rows = parents), ``train_x.npy`` (``n-context`` rows: the context) and ``test_x.npy``
  (``n-query`` rows: the query), each ``[x | noise]``;
- ``x_cf_0.npy … x_cf_{K-1}.npy``: ``K = interventions`` counterfactual files sharing one set of
  ``intervention-samples`` fresh factual rows; each file is one intervention drawn by the reference's rule (one node
  uniform among all nodes, value ~ U(q10, q90) of that node's factual values in raw units).

``OUT/index.json`` lists the datasets (path, graph, func, noise, prior, ``dist`` = prior as in the reference's index, d,
seed, edges); an entry with the same path is replaced. Each dataset is written into a temporary directory beside its
target and renamed into place, so a failure never leaves a partial dataset. The same seed gives the same dataset.

Usage::

  python -m cfip_jax.data.generate --graph er --func rff --noise gaussian --prior in --d 20 --seeds 1 2 3 --out data
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from cfip_jax.data.io import Counterfactual, Dataset, write_dataset
from cfip_jax.scm import graphs, sampler
from cfip_jax.scm.priors import FUNCTIONS, GRAPH_FAMILIES, NOISES, PRIOR_SETTINGS, SCMPrior, scm_prior

INDEX_FILE = "index.json"


def dataset_dir(graph: str, func: str, noise: str, prior: str, d: int, seed: int) -> str:
    """Relative directory of one dataset, as the reference names it."""
    return f"{graph}_{func}_{noise}_{prior}/total_nodes_{d}/seed_{seed}"


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _draw(key, prior: SCMPrior, d: int, n_context: int, n_query: int, interventions: int, n_cf: int):
    k_scm, k_context, k_query, k_factual, k_interventions = jax.random.split(key, 5)
    func = prior.mechanism.func
    scm = sampler.sample_scm(k_scm, prior, d)
    x_context, noise_context = sampler.sample_observational(k_context, scm, n_context, func=func)
    x_query, noise_query = sampler.sample_observational(k_query, scm, n_query, func=func)
    x_factual, noise_factual = sampler.sample_observational(k_factual, scm, n_cf, func=func)

    def one(k):
        intervened, values = sampler.sample_intervention(k, x_factual, scm.node_mask)
        x_cf = sampler.counterfactual(scm, noise_factual, intervened, values, func=func)
        index = jnp.argmax(intervened)
        # Nodes the intervention cannot reach keep their factual values bit for bit, as in the reference's files: the
        # two solves agree there only up to float rounding, which RFF mechanisms amplify along deep paths.
        moved = graphs.descendants(scm.adj, index) | intervened
        return jnp.where(moved[None, :], x_cf, x_factual), index, values[index]

    cf = jax.vmap(one)(jax.random.split(k_interventions, interventions)) if interventions else None
    return scm.adj, (x_context, noise_context), (x_query, noise_query), (x_factual, noise_factual), cf


def generate_dataset(
    seed: int, prior: SCMPrior, d: int, *, n_context: int, n_query: int, interventions: int, intervention_samples: int
) -> Dataset:
    """Draw one dataset (an SCM and its samples) deterministically from ``seed``."""
    adj, context, query, factual, cf = jax.device_get(
        _draw(jax.random.key(seed), prior, d, n_context, n_query, interventions, intervention_samples)
    )
    counterfactuals = ()
    if interventions:
        x_cf, index, value = cf
        counterfactuals = tuple(
            Counterfactual(x=factual[0], noise=factual[1], x_cf=x_cf[k], index=int(index[k]), value=float(value[k]))
            for k in range(interventions)
        )
    return Dataset(
        adj=np.asarray(adj),
        train_x=context[0],
        train_noise=context[1],
        test_x=query[0],
        test_noise=query[1],
        counterfactuals=counterfactuals,
    )


def write_atomic(target: pathlib.Path, dataset: Dataset) -> None:
    """Write ``dataset`` to ``target`` via a temporary sibling directory renamed into place (replaces ``target``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = None
    try:
        write_dataset(tmp, dataset)
        if target.exists():
            old = target.parent / f"{tmp.name}.old"
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_index(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{path} is not a JSON list")
    return entries


def _write_index(path: pathlib.Path, entries: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(entries, indent=1) + "\n")
    os.replace(tmp, path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cfip_jax.data.generate", description=__doc__.split("\n\n", maxsplit=1)[0]
    )
    p.add_argument("--graph", required=True, choices=GRAPH_FAMILIES, help="graph family")
    p.add_argument("--func", required=True, choices=FUNCTIONS, help="mechanism family")
    p.add_argument("--noise", required=True, choices=NOISES, help="noise law")
    p.add_argument("--prior", required=True, choices=PRIOR_SETTINGS, help="prior setting: in- or out-of-distribution")
    p.add_argument("--d", required=True, type=int, help="number of nodes")
    p.add_argument("--seeds", required=True, type=int, nargs="+", help="one dataset (and SCM) per seed")
    p.add_argument("--out", required=True, help="output root directory")
    p.add_argument("--n-context", type=int, default=400, help="rows of train_x.npy (context)")
    p.add_argument("--n-query", type=int, default=400, help="rows of test_x.npy (query)")
    p.add_argument("--interventions", type=int, default=5, help="number of x_cf_k.npy files")
    p.add_argument("--intervention-samples", type=int, default=100, help="factual rows shared by the x_cf files")
    return p


def _checked_args(parser: argparse.ArgumentParser, argv: list[str] | None):
    """``(args, prior)``: the parsed command line, every value checked (``parser.error`` naming the flag)."""
    args = parser.parse_args(argv)
    try:
        prior = scm_prior(args.graph, args.func, args.noise, args.prior)
    except ValueError as err:
        parser.error(str(err))
    try:
        prior.graph.check_nodes(args.d)
    except ValueError as err:
        parser.error(f"argument --d: {err}")
    for flag, value, minimum in (
        ("--n-context", args.n_context, 2),
        ("--n-query", args.n_query, 2),
        ("--interventions", args.interventions, 0),
        ("--intervention-samples", args.intervention_samples, 2),
    ):
        if value < minimum:
            parser.error(f"argument {flag}: must be >= {minimum}, got {value}")
    if any(s < 0 or s >= 2**32 for s in args.seeds):
        parser.error(f"argument --seeds: seeds must be in [0, 2**32), got {args.seeds}")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"argument --seeds: duplicate seeds in {args.seeds}")
    return args, prior


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the command line; returns the index entries written."""
    parser = _parser()
    args, prior = _checked_args(parser, argv)
    out = pathlib.Path(args.out)
    index_path = out / INDEX_FILE
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
        index = _read_index(index_path)
    except (OSError, ValueError) as err:
        parser.error(f"argument --out: cannot write to {out} ({err})")

    written = []
    for seed in args.seeds:
        dataset = generate_dataset(
            seed,
            prior,
            args.d,
            n_context=args.n_context,
            n_query=args.n_query,
            interventions=args.interventions,
            intervention_samples=args.intervention_samples,
        )
        rel = dataset_dir(args.graph, args.func, args.noise, args.prior, args.d, seed)
        write_atomic(out / rel, dataset)
        entry = {
            "path": rel,
            "graph": args.graph,
            "func": args.func,
            "noise": args.noise,
            "prior": args.prior,
            "dist": args.prior,
            "d": args.d,
            "seed": seed,
            "edges": dataset.num_edges,
        }
        index = [e for e in index if not (isinstance(e, dict) and e.get("path") == rel)] + [entry]
        _write_index(index_path, index)
        written.append(entry)
        print(f"wrote {out / rel} ({dataset.num_edges} edges)", flush=True)
    return written


if __name__ == "__main__":
    main()
