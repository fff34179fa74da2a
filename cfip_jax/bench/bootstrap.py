"""Bootstrap intervals: coverage on linear-Gaussian SCMs with known effects, and the time of ``n_boot`` refits.

Usage: ``python -m cfip_jax.bench.bootstrap [--trials 50] [--d 10] [--n 400] [--n-boot 100] [--time-d 20]
[--dowhy] [--refine closed-form] [--max-context trained|all|K] [--chunk 1] [--workers W] [--solve-chunk B]
[--reps 1]``.

Coverage: each trial draws a random linear-Gaussian SCM (an ER DAG with d nodes and about d edges, weights
±U(0.5, 1.5), unit-variance Gaussian noise), n rows from it, and one (treatment, outcome) pair with the treatment an
ancestor of the outcome; the true average effect of do(T = 1) against do(T = 0) is the total effect
[(I − W)⁻¹]_{T,O}. ``CondFiP.bootstrap(...).effect(...)`` gives the estimate and the 95 % interval; the script prints
the share of intervals that cover the truth and the median relative error of the estimate (the resamples' median)
and of the single fit to all rows (``Effect.point``).

Time: ``CondFiP.bootstrap(x, graph, n_boot).effect(...)`` at ``--time-d`` nodes after compilation, and with
``--dowhy`` DoWhy-GCM's ``gcm.confidence_intervals(gcm.fit_and_compute(gcm.average_causal_effect, ...))`` with the
same number of resamples on the same data (``--dowhy-resamples K``: K of them, scaled to ``--n-boot``; each resample
is a refit). ``--refine closed-form`` bootstraps the closed-form refinement instead of the zero-shot fit (both the
coverage and the time). ``--max-context`` is the rows each fit's encoder reads (``CondFiP.bootstrap``'s
``max_context``: ``trained``, the default, the model's training context; ``all`` every row; or a count), for both the
coverage and the time. ``--chunk`` / ``--solve-chunk`` set the resamples per batched pass of the fit and per solve
of the effect, ``--workers`` the calls run at once (default ``cfip_jax.bootstrap.default_workers()``; ``--chunk 4
--workers 1`` is the behaviour before the groups ran concurrently), ``--reps`` the timed runs whose median is
printed. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from cfip_jax.api import CondFiP


def linear_scm(rng: np.random.Generator, d: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x [n, d], adj [d, d], W [d, d])`` of a random linear-Gaussian SCM in topological order."""
    adj = np.triu(rng.random((d, d)) < 2.0 / (d - 1), 1).astype(np.float32)
    w = adj * rng.uniform(0.5, 1.5, (d, d)) * rng.choice([-1.0, 1.0], (d, d))
    x = rng.normal(size=(n, d)) @ np.linalg.inv(np.eye(d) - w)
    return x, adj, w


def pick_pair(rng: np.random.Generator, w: np.ndarray) -> tuple[int, int, float] | None:
    total = np.linalg.inv(np.eye(len(w)) - w)
    pairs = [(i, j) for i in range(len(w)) for j in range(len(w)) if i != j and abs(total[i, j]) > 0.2]
    if not pairs:
        return None
    i, j = pairs[rng.integers(len(pairs))]
    return i, j, float(total[i, j])


def coverage(model: CondFiP, trials: int, d: int, n: int, n_boot: int, seed: int = 0,
             refine: str | None = None, max_context: int | str | None = "trained") -> dict:  # fmt: skip
    rng = np.random.default_rng(seed)
    hits, rel, rel_point, widths, done = [], [], [], [], 0
    while done < trials:
        x, adj, w = linear_scm(rng, d, n)
        pair = pick_pair(rng, w)
        if pair is None:
            continue
        i, j, truth = pair
        boot = model.bootstrap(x, adj, n_boot, key=jax.random.key(done), refine=refine, max_context=max_context)
        e = boot.effect(j, {i: 1.0}, {i: 0.0}, key=jax.random.key(10_000 + done))
        hits.append(e.low <= truth <= e.high)
        rel.append(abs(e.estimate - truth) / abs(truth))
        rel_point.append(abs(e.point - truth) / abs(truth))
        widths.append((e.high - e.low) / abs(truth))
        done += 1
    return dict(trials=trials, d=d, n=n, n_boot=n_boot, refine=refine, max_context=max_context,
                coverage=float(np.mean(hits)),
                median_rel_error=float(np.median(rel)), median_rel_error_point=float(np.median(rel_point)),
                median_rel_width=float(np.median(widths)))  # fmt: skip


def _bootstrap_seconds(model: CondFiP, x, adj, i: int, j: int, n_boot: int, refine, max_context, chunk: int,
                       solve_chunk: int | None, reps: int, workers: int | None = None) -> float:  # fmt: skip
    """Median seconds of ``bootstrap(...).effect(...)`` over ``reps`` runs after one untimed (compiling) run;
    ``solve_chunk`` None keeps :class:`cfip_jax.bootstrap.BootstrapSCM`'s default."""

    def run(seed):
        boot = model.bootstrap(x, adj, n_boot, key=jax.random.key(seed), refine=refine, max_context=max_context,
                               chunk=chunk, workers=workers)  # fmt: skip
        boot = boot if solve_chunk is None else boot.replace(solve_chunk=solve_chunk)
        return boot.effect(j, {i: 1.0}, {i: 0.0}, key=jax.random.key(seed + 1))  # 200 samples per resample

    run(0)  # compile
    times = []
    for r in range(reps):
        start = time.perf_counter()
        run(2 + 2 * r)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def timing(model: CondFiP, d: int, n: int, n_boot: int, dowhy: bool, dowhy_resamples: int | None = None,
           refine: str | None = None, max_context: int | str | None = "trained", chunk: int = 1,
           solve_chunk: int | None = None, reps: int = 1, workers: int | None = None) -> dict:  # fmt: skip
    rng = np.random.default_rng(1)
    x, adj, w = linear_scm(rng, d, n)
    i, j, _ = pick_pair(rng, w)
    seconds = _bootstrap_seconds(model, x, adj, i, j, n_boot, refine, max_context, chunk, solve_chunk, reps, workers)
    out = dict(
        time_d=d,
        time_n=n,
        chunk=chunk,
        workers=workers,
        solve_chunk=solve_chunk,
        reps=reps,
        cfip_bootstrap_s=round(seconds, 2),
    )
    if dowhy:
        import networkx as nx
        import pandas as pd
        from dowhy import gcm

        names = [f"x{k}" for k in range(d)]
        frame = pd.DataFrame(x, columns=names)
        graph = nx.DiGraph([(names[a], names[b]) for a, b in zip(*np.nonzero(adj), strict=True)])
        graph.add_nodes_from(names)
        causal_model = gcm.StructuralCausalModel(graph)
        gcm.auto.assign_causal_mechanisms(causal_model, frame)
        k = dowhy_resamples or n_boot
        start = time.perf_counter()
        gcm.confidence_intervals(
            gcm.fit_and_compute(gcm.average_causal_effect, causal_model, frame, target_node=names[j],
                                interventions_alternative={names[i]: lambda v: 1.0},
                                interventions_reference={names[i]: lambda v: 0.0}, num_samples_to_draw=1000),
            num_bootstrap_resamples=k,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        out.update(dowhy_resamples=k, dowhy_s=round(seconds, 2), dowhy_bootstrap_s=round(seconds * n_boot / k, 2))
    return out


def parse_max_context(text: str) -> int | str | None:
    """``--max-context``'s value: ``trained``, ``all`` (None: every row) or a row count."""
    if text in ("trained", "all"):
        return None if text == "all" else text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not trained, all or a row count: {text!r}") from None


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m cfip_jax.bench.bootstrap", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="model directory (default: the shipped model)")
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--d", type=int, default=10)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--n-boot", type=int, default=100)
    p.add_argument("--time-d", type=int, default=20, help="nodes of the timed run (0: skip it)")
    p.add_argument("--dowhy", action="store_true", help="also time DoWhy-GCM's bootstrap interval")
    p.add_argument("--dowhy-resamples", type=int, help="DoWhy-GCM's resamples timed (default --n-boot; fewer are "
                   "scaled up linearly to --n-boot: each is a refit)")  # fmt: skip
    p.add_argument("--refine", choices=["closed-form"], help="bootstrap the closed-form refinement (default zero-shot)")
    p.add_argument("--max-context", default="trained", type=parse_max_context,
                   help="rows each fit encodes: trained (default), all, or a count")  # fmt: skip
    p.add_argument("--chunk", type=int, default=1, help="resamples per batched pass (CondFiP.bootstrap's chunk)")
    p.add_argument("--workers", type=int, help="calls run at once (CondFiP.bootstrap's workers; default: cores)")
    p.add_argument("--solve-chunk", type=int, help="resamples per solve of the effect (default BootstrapSCM's)")
    p.add_argument("--reps", type=int, default=1, help="timed runs (their median is printed)")
    args = p.parse_args(argv)
    if min(args.chunk, args.reps, *(1 if v is None else v for v in (args.solve_chunk, args.workers))) < 1:
        p.error("--chunk, --workers, --solve-chunk and --reps must be >= 1")
    model = CondFiP.load(args.checkpoint) if args.checkpoint else CondFiP.pretrained()
    result = {}
    if args.trials > 0:
        result.update(coverage(model, args.trials, args.d, args.n, args.n_boot, refine=args.refine,
                               max_context=args.max_context))  # fmt: skip
        print(f"coverage of the 95 % interval over {args.trials} trials (d = {args.d}, n = {args.n}): "
              f"{result['coverage']:.2f}; median relative error {result['median_rel_error']:.3f} "
              f"(the single fit to all rows: {result['median_rel_error_point']:.3f}), "
              f"median relative width {result['median_rel_width']:.3f}", flush=True)  # fmt: skip
    if args.time_d > 0:
        result.update(timing(model, args.time_d, args.n, args.n_boot, args.dowhy, args.dowhy_resamples, args.refine,
                             args.max_context, args.chunk, args.solve_chunk, args.reps, args.workers))  # fmt: skip
        line = (f"bootstrap + effect, d = {args.time_d}, n = {args.n}, {args.n_boot} resamples: "
                f"{result['cfip_bootstrap_s']} s")  # fmt: skip
        if "dowhy_s" in result:
            line += (f"; DoWhy-GCM {result['dowhy_s']} s for {result['dowhy_resamples']} resamples "
                     f"({result['dowhy_bootstrap_s']} s for {args.n_boot})")  # fmt: skip
        print(line)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
