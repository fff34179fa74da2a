"""Where the closed-form correction's time goes: the batched linear algebra it is made of, at its shapes.

    python scripts/correction_primitives.py [--d 20] [--n 400] [--features 200] [--folds 5]

One member's correction (``cfip_jax.inference.correct.fit``) factors, for every node × feature length-scale × ridge
strength × (fold + the full fit), one ``p × p`` normal-equations matrix (``p`` = features + parent slots + 2) and
solves it for two right-hand sides. This prints, for that batch at the given shapes, the median time of each
primitive and its rate, next to the alternatives that would change the formulation: a batched LU solve, an explicit
inverse, a symmetric eigendecomposition (all ridges from one factorisation), and the triangular solve with ``n``
right-hand sides a hat-matrix (leave-fold-out) form needs per full fit. Then the whole device fit for comparison.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from cfip_jax.bench.model import median_time
from cfip_jax.inference import correct


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=20)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--features", type=int, default=200)
    p.add_argument("--folds", type=int, default=5)
    args = p.parse_args()
    d, n, folds = args.d, args.n, args.folds
    rng = np.random.default_rng(0)
    adj = np.triu((rng.random((d, d)) < 4.0 / d).astype(np.float32), 1)
    k_max = correct.parent_slots(adj)[1].shape[1]
    size = args.features + k_max + 2
    groups = folds + 1  # each fold left out, and the full fit
    per_member = d * len(correct.LENGTHSCALES) * len(correct.RIDGES) * groups
    batch = d * groups  # one length-scale and ridge: the batch of one factorisation call in the fit
    design = rng.normal(size=(batch, n * (folds - 1) // folds, size)).astype(np.float32)
    gram = jnp.asarray(np.einsum("bnp,bnq->bpq", design, design) / design.shape[1] + 1e-2 * np.eye(size))
    rhs = jnp.asarray(rng.normal(size=(batch, size, 2)).astype(np.float32))
    chol = jax.jit(jnp.linalg.cholesky)
    factor = chol(gram)
    rows = jnp.asarray(np.swapaxes(rng.normal(size=(batch, n, size)).astype(np.float32), 1, 2))
    scale = per_member / batch
    flops = {"cholesky": size**3 / 3, "cho_solve (2 rhs)": 4 * size**2, "lu solve (2 rhs)": 2 * size**3 / 3,
             "inverse": 2 * size**3, "eigh": 9 * size**3, f"triangular solve ({n} rhs)": size**2 * n}  # fmt: skip
    runs = {
        "cholesky": (chol, gram),
        "cho_solve (2 rhs)": (jax.jit(lambda c, r: jax.scipy.linalg.cho_solve((c, True), r)), factor, rhs),
        "lu solve (2 rhs)": (jax.jit(jnp.linalg.solve), gram, rhs),
        "inverse": (jax.jit(jnp.linalg.inv), gram),
        "eigh": (jax.jit(jnp.linalg.eigh), gram),
        f"triangular solve ({n} rhs)": (jax.jit(lambda c, r: jax.scipy.linalg.solve_triangular(c, r, lower=True)),
                                        factor, rows),
    }  # fmt: skip
    print(f"d = {d}, n = {n}, p = {size}: {per_member} factorisations per member ({batch} per call)")
    for name, (fn, *inputs) in runs.items():
        seconds = median_time(lambda fn=fn, inputs=inputs: fn(*inputs), 5)
        rate = flops[name] * batch / seconds / 1e9
        print(f"  {name:28s} {seconds * 1e3:7.2f} ms per {batch} ({rate:5.1f} GFLOP/s), "
              f"x {scale:.0f} = {seconds * scale * 1e3:7.1f} ms per member", flush=True)  # fmt: skip
    x = rng.normal(size=(n, d)).astype(np.float32)
    for i in range(d):
        x[:, i] += np.sin(x @ adj[:, i])
    t = (0.7 * x + 0.1 * rng.normal(size=x.shape)).astype(np.float32)
    held = correct.folds(n, folds, 1)
    seconds = median_time(lambda: correct.fit(t, x, adj, held, features=args.features).correction, 3)
    print(f"  the whole device fit (correct.fit)  {seconds * 1e3:7.1f} ms per member")


if __name__ == "__main__":
    main()
