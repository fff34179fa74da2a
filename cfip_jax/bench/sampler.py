"""Throughput of the synthetic-data sampler: datasets per second.

Linear and RFF SCMs on ER graphs (in-distribution prior, Gaussian noise), d = 20 and d = 50, n = 400 samples, batches
of 32 datasets drawn by :func:`cfip_jax.scm.batch.sample_batch` (standardised, as in training). The time is the median
over several batches after compilation (``block_until_ready``). Ends with one JSON line.

Usage: ``python -m cfip_jax.bench.sampler [--reps 7] [--batch 32] [--n 400]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax

from cfip_jax.scm.batch import BatchSpec, sample_batch
from cfip_jax.scm.priors import scm_prior


def datasets_per_second(func: str, d: int, *, batch: int, n: int, reps: int) -> float:
    """Median datasets/s of ``sample_batch`` for one (mechanism, d) setting, compilation excluded."""
    spec = BatchSpec(priors=(scm_prior("er", func, "gaussian", "in"),), node_counts=(d,), n=n, batch_size=batch)
    draw = jax.jit(sample_batch, static_argnums=1)
    jax.block_until_ready(draw(jax.random.key(0), spec))  # compile
    times = []
    for rep in range(reps):
        key = jax.random.key(rep + 1)
        start = time.perf_counter()
        jax.block_until_ready(draw(key, spec))
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="timed batches per setting")
    parser.add_argument("--batch", type=int, default=32, help="datasets per batch")
    parser.add_argument("--n", type=int, default=400, help="samples per dataset")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    if args.n < 2:
        parser.error("--n must be >= 2")
    print(f"devices: {jax.devices()}; batch {args.batch}, n = {args.n}, ER graphs, Gaussian noise, prior 'in'")
    results = {}
    for d in (20, 50):
        for func in ("linear", "rff"):
            rate = datasets_per_second(func, d, batch=args.batch, n=args.n, reps=args.reps)
            results[f"{func}_d{d}"] = round(rate, 1)
            print(f"{func:>6} d = {d:3d}: {rate:9.1f} datasets/s", flush=True)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
