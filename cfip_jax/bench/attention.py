"""The sample attention's layouts and implementations, timed at the training step's shapes.

``python -m cfip_jax.bench.attention [--reps 5] [--n 200] [--heads 6x16,3x32,2x48,1x96] [--dtypes float32]``

The sample attention (softmax over the n samples of each node, independently per dataset, node and head) is the
largest attention cost of the CPU training step (docs/training_study.md, the roofline). Each implementation below
computes the same function on the same numbers — softmax(q·kᵀ/√d)·v for ``B·N·H`` problems of ``[n, d]`` — and is
timed forward + backward (the gradient of ⟨out, g⟩ with respect to q, k and v, jitted, median of ``reps`` calls):

- ``ours``: :func:`cfip_jax.nn.attention.sample_attention_heads` on the head-major ``[B, N, H, n, d]`` layout the
  model's blocks produce (chunked, flash-style, custom VJP);
- ``einsum``: the textbook softmax on the same layout, differentiated by JAX (the scores stored for the backward);
- ``dpa``: ``jax.nn.dot_product_attention(implementation="xla")`` on its native ``[B·N, n, H, d]`` layout, as if
  the blocks produced that layout (no transposes counted);
- ``dpa+T``: the same with the transposes from and back to the head-major layout, i.e. what replacing the kernel
  inside today's blocks would cost.

Prints one row per (heads × head_dim, dtype, implementation) with milliseconds, GFLOP/s (4·B·N·H·n²·d forward, twice
that backward) and the ratio to ``ours``, the largest difference from ``ours`` in the output and the gradients, then
one JSON line. The shapes default to stage 1's: 4 datasets × 20 nodes × 200 samples, width 96.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cfip_jax.bench.model import median_time
from cfip_jax.nn.attention import sample_attention_heads

IMPLEMENTATIONS = ("ours", "einsum", "dpa", "dpa+T")


def _einsum_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q·kᵀ/√d)·v on ``[B, N, H, n, d]``, scores and softmax in float32."""
    s = jnp.einsum("bnhqd,bnhkd->bnhqk", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
    w = jax.nn.softmax(s, axis=-1)
    return jnp.einsum("bnhqk,bnhkd->bnhqd", w.astype(v.dtype), v, preferred_element_type=jnp.float32).astype(v.dtype)


def _to_native(x: jax.Array) -> jax.Array:
    """``[B, N, H, n, d]`` → ``[B·N, n, H, d]`` (``jax.nn.dot_product_attention``'s layout)."""
    b, nodes, h, n, d = x.shape
    return jnp.swapaxes(x, 2, 3).reshape(b * nodes, n, h, d)


def _from_native(x: jax.Array, nodes: int) -> jax.Array:
    """Inverse of :func:`_to_native`."""
    bn, n, h, d = x.shape
    return jnp.swapaxes(x.reshape(bn // nodes, nodes, n, h, d), 2, 3)


def _dpa(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    return jax.nn.dot_product_attention(q, k, v, implementation="xla")


def _dpa_transposed(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    nodes = q.shape[1]
    return _from_native(_dpa(_to_native(q), _to_native(k), _to_native(v)), nodes)


def kernel(name: str) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """The attention function of implementation ``name`` (its inputs in the layout :func:`inputs` gives it)."""
    return {
        "ours": lambda q, k, v: sample_attention_heads(q, k, v, scale=q.shape[-1] ** -0.5),
        "einsum": _einsum_attention,
        "dpa": _dpa,
        "dpa+T": _dpa_transposed,
    }[name]


def inputs(name: str, key: jax.Array, shape: tuple[int, ...], dtype) -> tuple[jax.Array, ...]:
    """(q, k, v, g) for implementation ``name``: head-major ``shape = (B, N, H, n, d)``, or its native layout for
    ``dpa``; the same numbers for every implementation (``g`` is the output's cotangent)."""
    parts = tuple(jax.random.normal(k_, shape, jnp.float32).astype(dtype) for k_ in jax.random.split(key, 4))
    return tuple(_to_native(p) for p in parts) if name == "dpa" else parts


def fwd_bwd(name: str) -> Callable:
    """Jitted (q, k, v, g) → (out, (dq, dk, dv)) of implementation ``name``."""
    f = kernel(name)

    def run(q, k, v, g):
        out, vjp = jax.vjp(f, q, k, v)
        return out, vjp(g)

    return jax.jit(run)


def _head_major(name: str, tree, nodes: int):
    return jax.tree.map(lambda x: _from_native(x, nodes), tree) if name == "dpa" else tree


def measure(shape: tuple[int, ...], dtype, reps: int, names=IMPLEMENTATIONS) -> list[dict]:
    """Time every implementation on ``shape = (B, N, H, n, d)``; rows with ms, GFLOP/s and the gap to ``ours``."""
    b, nodes, h, n, d = shape
    flop = 3 * 4.0 * b * nodes * h * n * n * d  # forward 2 products, backward 4
    key = jax.random.key(0)
    reference, rows = None, []
    for name in names:
        args = inputs(name, key, shape, dtype)
        fn = fwd_bwd(name)
        seconds = median_time(lambda fn=fn, args=args: fn(*args), reps)
        result = _head_major(name, fn(*args), nodes)
        result = jax.tree.map(lambda x: np.asarray(x, np.float32), result)
        if reference is None:
            reference = result
        pairs = zip(jax.tree.leaves(result), jax.tree.leaves(reference), strict=True)
        gap = max(float(np.max(np.abs(a - r))) for a, r in pairs)
        rows.append(
            dict(
                impl=name,
                heads=f"{h}x{d}",
                dtype=jnp.dtype(dtype).name,
                ms=1e3 * seconds,
                gflops=flop / seconds / 1e9,
                max_abs_diff=gap,
            )
        )
    base = rows[0]["ms"]
    for row in rows:
        row["speedup"] = base / row["ms"]
    return rows


def _heads(text: str) -> list[tuple[int, int]] | None:
    """``"6x16,1x96"`` → ``[(6, 16), (1, 96)]``; None when malformed or empty."""
    try:
        heads = [tuple(int(p) for p in item.split("x")) for item in text.split(",") if item]
    except ValueError:
        return None
    return heads if heads and all(len(t) == 2 and min(t) >= 1 for t in heads) else None


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m cfip_jax.bench.attention", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4, help="datasets per step")
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--n", type=int, default=200, help="samples attended over")
    parser.add_argument("--heads", default="6x16,3x32,2x48,1x96", help="heads × head_dim, comma-separated")
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32, bfloat16")
    args = parser.parse_args(argv)
    heads, dtypes = _heads(args.heads), args.dtypes.split(",")
    if heads is None:
        parser.error(f"--heads must be a comma-separated list of HxD with H, D >= 1, got {args.heads!r}")
    if any(d not in ("float32", "bfloat16") for d in dtypes):
        parser.error(f"--dtypes must be float32 and/or bfloat16, got {args.dtypes!r}")
    if args.reps < 1 or min(args.batch, args.nodes, args.n) < 1:
        parser.error("--reps, --batch, --nodes and --n must be >= 1")
    rows = []
    print(f"sample attention fwd+bwd, {args.batch} datasets × {args.nodes} nodes × {args.n} samples")
    print(f"{'heads':>6} {'dtype':>9} {'impl':>7} {'ms':>9} {'GFLOP/s':>8} {'× ours':>7} {'max |Δ|':>9}")
    for dtype in dtypes:
        for h, d in heads:
            for row in measure((args.batch, args.nodes, h, args.n, d), jnp.dtype(dtype), args.reps):
                rows.append(row)
                print(
                    f"{row['heads']:>6} {row['dtype']:>9} {row['impl']:>7} {row['ms']:9.2f} {row['gflops']:8.1f} "
                    f"{row['speedup']:7.2f} {row['max_abs_diff']:9.2e}"
                )
    print(json.dumps(dict(bench="attention", batch=args.batch, nodes=args.nodes, n=args.n, rows=rows)))
    return rows


if __name__ == "__main__":
    main()
