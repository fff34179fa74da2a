"""Speed of the networks and of the fixed-point solver on this machine.

``python -m cfip_jax.bench.model [--reps 3] [--sizes reference,small] [--dtype float32] [--skip-generation]
[--networks encoder,decoder]``

Prints, per configuration, the median forward+backward time of one training step of the encoder (4 datasets,
n = 400 samples, d = 20 nodes) and of the decoder (200 context / 200 query samples, encoding precomputed) and the
achieved GFLOP/s (flops from XLA's ``cost_analysis()``) and the mean process CPU time per call (all threads; steadier
than wall time on a loaded machine); then the time to generate 400 samples with the small decoder
(conditioning precomputed) at d = 20 and d = 100, with d steps and with longest-path + 1 steps. Ends with one JSON
line of the figures. The workload matches ``shared/peers/torch_reference.py`` (same sizes, same squared loss).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cfip_jax import fixed_point
from cfip_jax.nn import CondFiPDecoder, DatasetEncoder, decoder_arch, decoder_mechanism, encoder_arch


def median_time(fn: Callable[[], Any], reps: int) -> float:
    """Median wall time of ``fn()`` (blocked until ready) over ``reps`` calls after one warm-up."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def random_dags(rng: np.random.Generator, batch: int, d: int, edges_per_node: float = 1.0) -> np.ndarray:
    """``[batch, d, d]`` random DAGs (``adj[i, j] = 1`` ⇔ i → j) with about ``edges_per_node·d`` edges."""
    p = min(1.0, 2.0 * edges_per_node / max(d - 1, 1))
    adj = np.triu(rng.random((batch, d, d)) < p, k=1).astype(np.float32)
    perm = rng.permutation(d)
    return adj[:, perm][:, :, perm]


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def flops(compiled: Any) -> float:
    """Flops of a compiled computation from XLA's cost analysis (0 when unavailable)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def bench_networks(
    size: str,
    dtype: str,
    reps: int,
    batch: int = 4,
    n: int = 400,
    d: int = 20,
    networks: tuple[str, ...] = ("encoder", "decoder"),
) -> dict[str, float]:
    """Forward+backward time and GFLOP/s of the encoder and/or the decoder at one configuration."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, n, d)), jnp.float32)
    adj = jnp.asarray(random_dags(rng, batch, d))
    node_mask = jnp.ones((batch, d), bool)
    enc = DatasetEncoder(encoder_arch(size, dtype=dtype))
    dec = CondFiPDecoder(decoder_arch(size, dtype=dtype))
    enc_params = enc.init(jax.random.key(0), x[:, :8], adj, node_mask)
    half = n // 2
    encoding = jax.jit(lambda p, x: enc.apply(p, x, adj, node_mask, method="encode"))(enc_params, x[:, :half])
    dec_params = dec.init(jax.random.key(1), x[:, half : half + 8], encoding[:, :8], adj, node_mask)

    def enc_loss(p: Any) -> jax.Array:
        return jnp.mean((enc.apply(p, x, adj, node_mask) - x) ** 2)

    def dec_loss(p: Any) -> jax.Array:
        out = dec.apply(p, x[:, half:], encoding, adj, node_mask, deterministic=False,
                        rngs={"dropout": jax.random.key(2)})  # fmt: skip
        return jnp.mean((out - x[:, half:]) ** 2)

    out = {}
    for name, loss, params in (("encoder", enc_loss, enc_params), ("decoder", dec_loss, dec_params)):
        if name not in networks:
            continue
        step = jax.jit(jax.value_and_grad(loss))
        start = time.perf_counter()
        compiled = step.lower(params).compile()
        compile_s = time.perf_counter() - start
        cpu_start = time.process_time()
        seconds = median_time(lambda compiled=compiled, params=params: compiled(params), reps)
        cpu_s = (time.process_time() - cpu_start) / (reps + 1)
        gflop = flops(compiled) / 1e9
        out[f"{name}_params"] = count_params(params)
        out[f"{name}_fwd_bwd_s"] = round(seconds, 4)
        out[f"{name}_fwd_bwd_cpu_s"] = round(cpu_s, 4)
        out[f"{name}_fwd_bwd_gflop"] = round(gflop, 1)
        out[f"{name}_fwd_bwd_gflops_per_s"] = round(gflop / seconds, 1)
        out[f"{name}_compile_s"] = round(compile_s, 1)
    return out


def bench_generation(reps: int, n: int = 400, dims: tuple[int, ...] = (20, 100)) -> dict[str, float]:
    """Time to generate ``n`` samples of one dataset with the small decoder, d steps vs longest-path + 1 steps."""
    rng = np.random.default_rng(1)
    dec = CondFiPDecoder(decoder_arch("small"))
    cfg = dec.config
    out = {}
    for d in dims:
        adj = jnp.asarray(random_dags(rng, 1, d))
        node_mask = jnp.ones((1, d), bool)
        noise = jnp.asarray(rng.normal(size=(1, n, d)), jnp.float32)
        encoding = jnp.asarray(rng.normal(size=(1, n, d, cfg.encoder_dim)), jnp.float32)
        params = dec.init(jax.random.key(0), noise[:, :8], encoding[:, :8], adj, node_mask)
        cond = jax.jit(lambda p, e, a, m: dec.apply(p, e, a, m, method="embed"))(params, encoding, adj, node_mask)
        mech = decoder_mechanism(dec, params, cond, adj, node_mask)
        depth = int(fixed_point.host_longest_path(np.asarray(adj)).max())
        for label, iterations in (("d_steps", None), ("depth_steps", "depth")):
            run = functools.partial(fixed_point.generate, mech, noise, adj=adj, iterations=iterations)
            seconds = median_time(run, reps)
            out[f"generate_{n}_d{d}_{label}_s"] = round(seconds, 4)
        out[f"generate_d{d}_longest_path"] = depth
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures, ending with one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sizes", default="reference,small")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--networks", default="encoder,decoder", help="comma-separated subset of encoder,decoder")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"jax": jax.__version__, "backend": jax.default_backend(), "dtype": args.dtype}
    for size in args.sizes.split(","):
        figures = bench_networks(size, args.dtype, args.reps, networks=tuple(args.networks.split(",")))
        for key, value in figures.items():
            print(f"{size:9s} {key:32s} {value}", flush=True)
        prefix = "" if size == "reference" else f"{size}_"
        result.update({prefix + key: value for key, value in figures.items()})
    if not args.skip_generation:
        figures = bench_generation(args.reps)
        for key, value in figures.items():
            print(f"small     {key:32s} {value}", flush=True)
        result.update(figures)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
