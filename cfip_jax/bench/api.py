"""Latency of the notebook API: ``CondFiP.fit`` + ``InferredSCM.sample(400)`` after compilation.

Usage: ``python -m cfip_jax.bench.api [--checkpoint DIR] [--reps 5] [--d 20,100] [--refine-reps 3]`` — uses the
shipped pretrained model by default. Data: one linear-Gaussian ER SCM per d from :mod:`cfip_jax.scm` (400 rows). Timed
three ways: with ``fit``'s default (the encoder reads the model's training context size, 200 rows for the shipped
model; the noise is abducted from all 400), with ``max_context=None`` (all 400 rows encoded, the paper's evaluation
protocol), with ``refine="closed-form"`` (the per-node closed-form correction alone) and with ``refine="auto"``
(semi-amortized: early-stopped gradient steps on the data, then the correction; the steps it took are printed;
``--refine-reps 0`` leaves ``refine="auto"`` out).
When DoWhy-GCM is importable, its fit time on the same data (``gcm.auto.assign_causal_mechanisms`` + ``gcm.fit``)
is printed too, beside the DoWhy bridge's (:func:`cfip_jax.integrations.dowhy.fit_gcm`: Cond-FiP's
mechanisms assigned to a ``gcm`` model, zero-shot and refined, after compilation).
 With ``--graphs K``: ``sample(400)`` alone on K SCMs of each graph family of the prior (ER, scale-free with
in- and out-hubs; linear-Gaussian, 400 rows): the solve's cost follows the graph's shape (its steps,
:func:`cfip_jax.fixed_point.host_schedule`), which one ER graph does not show.
Then the memory of a refinement at d = 100 with n = 1000 rows: the process's peak
resident set size (``ru_maxrss``) after it. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import numpy as np

from cfip_jax.api import CondFiP
from cfip_jax.data.generate import generate_dataset
from cfip_jax.eval import dowhy_gcm
from cfip_jax.scm.priors import scm_prior


def _median_time(fn, reps: int) -> float:
    fn()  # compile
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _dowhy_fit_seconds(x: np.ndarray, adj: np.ndarray) -> float | None:
    """DoWhy-GCM's assign + fit time on the same data (:func:`cfip_jax.eval.dowhy_gcm.fit_dowhy`), None without it."""
    if not dowhy_gcm.available():
        return None
    start = time.perf_counter()
    dowhy_gcm.fit_dowhy(x, adj)
    return time.perf_counter() - start


def _bridge_seconds(model: CondFiP, x: np.ndarray, adj: np.ndarray, refine, reps: int) -> float:
    """Median seconds of ``fit_gcm`` on a fresh ``gcm`` model of the graph (after one untimed call)."""
    import networkx as nx
    import pandas as pd
    from dowhy import gcm

    from cfip_jax.integrations.dowhy import fit_gcm

    gcm.config.disable_progress_bars()
    frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(x.shape[1])])
    graph = nx.relabel_nodes(nx.from_numpy_array(adj, create_using=nx.DiGraph), lambda j: f"x{j}")
    graph.add_nodes_from(frame.columns)
    return _median_time(lambda: fit_gcm(gcm.InvertibleStructuralCausalModel(graph), frame, model=model,
                                        refine=refine), reps)  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="model directory (default: the shipped pretrained model)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--d", default="20,100")
    p.add_argument(
        "--refine-reps",
        type=int,
        default=3,
        help="timed runs of fit(refine='auto') + sample(400); 0 leaves refine='auto' out",
    )
    p.add_argument("--memory-rows", type=int, default=1000, help="rows of the d = 100 refinement whose memory is read")
    p.add_argument("--graphs", type=int, default=0, help="SCMs per graph family whose sample(400) is timed alone")
    args = p.parse_args(argv)
    if args.reps < 1 or args.refine_reps < 0:
        p.error(f"--reps must be >= 1 and --refine-reps >= 0, got {args.reps} and {args.refine_reps}")
    model = CondFiP.load(args.checkpoint) if args.checkpoint else CondFiP.pretrained()
    out: dict = {"backend": jax.default_backend()}
    for d in (int(v) for v in args.d.split(",")):
        data = _dataset(0, "er", d)
        x, adj = data.train_x, data.adj

        for label, max_context in (("", "trained"), ("_all_rows", None)):

            def fit_and_sample(x=x, adj=adj, max_context=max_context):
                scm = model.fit(x, adj, max_context=max_context)
                return jax.block_until_ready(scm.sample(400, jax.random.key(0)))

            key = f"fit_sample400{label}_d{d}_s"
            out[key] = round(_median_time(fit_and_sample, args.reps), 4)
            encoded = model.context_rows(len(x), max_context)
            rows = len(x) if encoded is None else len(encoded)
            print(f"d = {d}: fit + sample(400) {out[key]:.4f} s ({rows} of {len(x)} rows encoded)", flush=True)

        out.update(_refined_times(model, x, adj, d, args.reps, args.refine_reps))
        out.update(_dowhy_times(model, x, adj, d, args.refine_reps))
        out.update(_sample_times(model, d, args.graphs, args.reps))
    if args.memory_rows:
        out["refine_d100_peak_rss_gb"] = _refine_memory(model, args.memory_rows)
        print(f"d = 100, n = {args.memory_rows}: refinement peak RSS {out['refine_d100_peak_rss_gb']:.2f} GB")
    print(json.dumps(out))
    return out


def _dataset(seed: int, family: str, d: int, rows: int = 400):
    """One linear-Gaussian SCM of the prior's ``family`` graphs (``train_x [rows, d]``, ``adj``)."""
    return generate_dataset(seed, scm_prior(family, "linear", "gaussian"), d, n_context=rows, n_query=2,
                            interventions=0, intervention_samples=2)  # fmt: skip


def _sample_times(model: CondFiP, d: int, graphs: int, reps: int) -> dict:
    """Median ``sample(400)`` seconds on ``graphs`` SCMs of each graph family, their mean per family and overall."""
    out, every = {}, []
    for family in ("er", "sf_in", "sf_out") if graphs else ():
        times = []
        for seed in range(graphs):
            data = _dataset(seed, family, d)
            scm = model.fit(data.train_x, data.adj)
            times.append(_median_time(lambda scm=scm: jax.block_until_ready(scm.sample(400, jax.random.key(0))), reps))
        out[f"sample400_{family}_d{d}_s"] = round(float(np.mean(times)), 4)
        every += times
        print(f"d = {d}: sample(400) on {graphs} {family} graphs {1e3 * np.mean(times):.1f} ms "
              f"({', '.join(f'{1e3 * t:.1f}' for t in times)})", flush=True)  # fmt: skip
    if every:
        out[f"sample400_graphs_d{d}_s"] = round(float(np.mean(every)), 4)
        print(f"d = {d}: sample(400), mean over {len(every)} graphs {1e3 * np.mean(every):.1f} ms", flush=True)
    return out


def _refined_times(model: CondFiP, x: np.ndarray, adj: np.ndarray, d: int, reps: int, refine_reps: int) -> dict:
    """``fit(refine="closed-form")`` + ``sample(400)`` (``reps`` timed runs), and ``refine="auto"`` with its steps
    (``refine_reps`` timed runs; none, and no keys, when 0)."""
    out = {}

    def refined_fit_and_sample(refine="auto"):
        scm = model.fit(x, adj, refine=refine)
        jax.block_until_ready(scm.sample(400, jax.random.key(0)))
        return scm

    key = f"fit_refine_closed_form_sample400_d{d}_s"
    out[key] = round(_median_time(lambda: refined_fit_and_sample(refine="closed-form"), reps), 4)
    print(f"d = {d}: fit(refine='closed-form') + sample(400) {out[key]:.3f} s", flush=True)
    if refine_reps:
        key = f"fit_refine_auto_sample400_d{d}_s"
        out[key] = round(_median_time(refined_fit_and_sample, refine_reps), 4)
        scm = refined_fit_and_sample()
        out[f"refine_auto_steps_d{d}"] = scm.refined_steps
        print(
            f"d = {d}: fit(refine='auto') + sample(400) {out[key]:.3f} s ({scm.refined_steps} steps; held-out "
            f"objective {scm.refine_loss[0]:.4f} -> {scm.refine_loss[1]:.4f})",
            flush=True,
        )
    return out


def _dowhy_times(model: CondFiP, x: np.ndarray, adj: np.ndarray, d: int, refine_reps: int) -> dict:
    """DoWhy-GCM's fit and the DoWhy bridge's (zero-shot; refined too unless ``refine_reps`` is 0); empty without
    DoWhy."""
    out = {}
    dowhy = _dowhy_fit_seconds(x, adj)
    if dowhy is None:
        return out
    out[f"dowhy_fit_d{d}_s"] = round(dowhy, 3)
    print(f"d = {d}: DoWhy-GCM assign + fit {dowhy:.3f} s", flush=True)
    arms = [("", None, max(refine_reps, 1))] + ([("_refine_auto", "auto", refine_reps)] if refine_reps else [])
    for label, refine, reps in arms:
        key = f"bridge_fit_gcm{label}_d{d}_s"
        out[key] = round(_bridge_seconds(model, x, adj, refine, reps), 3)
        print(f"d = {d}: DoWhy bridge fit_gcm(refine={refine!r}) {out[key]:.3f} s", flush=True)
    return out


def _refine_memory(model: CondFiP, rows: int) -> float:
    """The process's peak resident set size (GB) after ``fit(refine="auto")`` on ``rows`` rows at d = 100."""
    data = _dataset(1, "er", 100, rows)
    scm = model.fit(data.train_x, data.adj, refine="auto")
    jax.block_until_ready(scm.sample(rows, jax.random.key(0)))
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB on Linux


if __name__ == "__main__":
    main()
