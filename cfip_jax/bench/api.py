"""Latency of the notebook API: ``CondFiP.fit`` + ``InferredSCM.sample(400)`` after compilation.

Usage: ``python -m cfip_jax.bench.api [--checkpoint DIR] [--reps 5]`` — uses the shipped pretrained model by default.
Data: one linear-Gaussian ER SCM per d from :mod:`cfip_jax.scm` (400 rows). Timed twice: with ``fit``'s default (the
encoder reads the model's training context size, 200 rows for the shipped model; the noise is abducted from all 400)
and with ``max_context=None`` (all 400 rows encoded, the paper's evaluation protocol). When DoWhy-GCM is importable,
its fit time on the same data (``gcm.auto.assign_causal_mechanisms`` + ``gcm.fit``) is printed too. Ends with one JSON
line.
"""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="model directory (default: the shipped pretrained model)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--d", default="20,100")
    args = p.parse_args(argv)
    model = CondFiP.load(args.checkpoint) if args.checkpoint else CondFiP.pretrained()
    out: dict = {"backend": jax.default_backend()}
    for d in (int(v) for v in args.d.split(",")):
        data = generate_dataset(
            0, scm_prior("er", "linear", "gaussian"), d, n_context=400, n_query=2, interventions=0,
            intervention_samples=2,
        )  # fmt: skip
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
        dowhy = _dowhy_fit_seconds(x, adj)
        if dowhy is not None:
            out[f"dowhy_fit_d{d}_s"] = round(dowhy, 3)
            print(f"d = {d}: DoWhy-GCM assign + fit {dowhy:.3f} s", flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
