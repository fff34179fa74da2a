"""Per-dataset additive-noise baselines, fitted on one dataset's context with the true graph.

Each ``fit_*`` function takes a standardised context ``x [n, d]`` and the graph ``adj [d, d]`` (``adj[i, j] = 1`` ⇔
``i -> j``) and returns a pytree of parameters; :func:`apply_linear` / :func:`apply_kernel_ridge` evaluate the fitted
mechanism ``T(z) [..., d]`` for any points ``z [..., d]``. Node ``j``'s prediction depends on ``z`` only through its
parents, so the fixed-point solver in :mod:`cfip_jax.fixed_point` turns a fit into a generative SCM.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0)


@flax.struct.dataclass
class LinearFit:
    """Least-squares linear ANM: ``T(z)_j = intercept_j + Σ_i adj[i, j] · coef[i, j] · z_i``.

    Attributes:
      coef: ``[d, d]`` coefficients (zero off the graph).
      intercept: ``[d]``.
    """

    coef: jax.Array
    intercept: jax.Array


@jax.jit
def fit_linear(x: jax.Array, adj: jax.Array) -> LinearFit:
    """Ordinary least squares of every node on its parents plus an intercept.

    Args:
      x: ``[n, d]`` context samples.
      adj: ``[d, d]`` graph.

    Returns:
      The :class:`LinearFit`.
    """
    x = jnp.asarray(x, jnp.float32)
    adj = jnp.asarray(adj, jnp.float32)
    n, d = x.shape
    ones = jnp.ones((n, 1), x.dtype)

    def one_node(mask, y):
        # [n, d + 1] design with non-parent columns zeroed; their normal-equation rows become identity rows.
        m = jnp.concatenate([mask, jnp.ones((1,), x.dtype)])
        design = jnp.concatenate([x, ones], axis=1) * m[None, :]
        gram = design.T @ design + jnp.diag(1.0 - m) + 1e-6 * jnp.eye(d + 1)
        beta = jnp.linalg.solve(gram, design.T @ y)
        return beta[:d] * mask, beta[d]

    coef, intercept = jax.vmap(one_node, in_axes=(1, 1), out_axes=(1, 0))(adj, x)
    return LinearFit(coef=coef, intercept=intercept)


def apply_linear(fit: LinearFit, z: jax.Array) -> jax.Array:
    """Evaluate the linear mechanism: ``z [..., d] -> [..., d]``."""
    out = z @ fit.coef
    return out + fit.intercept.reshape((1,) * (out.ndim - 1) + (-1,))


@flax.struct.dataclass
class KernelRidgeFit:
    """Per-node Gaussian-kernel ridge regression on the parents (roots: the context mean).

    Attributes:
      support: ``[n, d]`` context inputs.
      dual: ``[d, n]`` dual coefficients per node.
      mean: ``[d]`` target means.
      gamma: ``[d]`` kernel precision ``1 / (2σ_j²)`` (σ_j: median distance between parent vectors).
      parents: ``[d, d]`` graph (column j = parents of j).
    """

    support: jax.Array
    dual: jax.Array
    mean: jax.Array
    gamma: jax.Array
    parents: jax.Array


def _rbf(a, b, mask, gamma):
    a, b = a * mask[None, :], b * mask[None, :]
    d2 = jnp.sum(a * a, -1)[..., :, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T
    return jnp.exp(-gamma * jnp.maximum(d2, 0.0))


@jax.jit
def fit_kernel_ridge(x: jax.Array, adj: jax.Array) -> KernelRidgeFit:
    """Kernel ridge regression of every node on its parents, ridge chosen by exact leave-one-out error.

    The bandwidth of node j's Gaussian kernel is the median heuristic on its parents' context values; the ridge
    strength is the entry of :data:`RIDGE_GRID` (times n) with the smallest closed-form leave-one-out squared error.

    Args:
      x: ``[n, d]`` context samples.
      adj: ``[d, d]`` graph.

    Returns:
      The :class:`KernelRidgeFit`.
    """
    x = jnp.asarray(x, jnp.float32)
    adj = jnp.asarray(adj, jnp.float32)
    n, d = x.shape
    off_diag = ~jnp.eye(n, dtype=bool)

    def one_node(mask, y):
        xm = x * mask[None, :]
        d2 = jnp.maximum(jnp.sum(xm * xm, -1)[:, None] + jnp.sum(xm * xm, -1)[None, :] - 2.0 * xm @ xm.T, 0.0)
        med = jnp.nanmedian(jnp.where(off_diag, d2, jnp.nan))
        gamma = 1.0 / (2.0 * jnp.where(med > 0, med, 1.0))
        has_parents = jnp.any(mask > 0)
        k = jnp.exp(-gamma * d2)
        mu = jnp.mean(y)
        yc = y - mu
        evals, evecs = jnp.linalg.eigh(k)
        evals = jnp.maximum(evals, 0.0)
        proj = evecs.T @ yc

        def loo(lam):
            shrink = evals / (evals + lam)
            fitted = evecs @ (shrink * proj)
            hat_diag = jnp.sum(evecs * evecs * shrink[None, :], axis=1)
            return jnp.mean(jnp.square((yc - fitted) / (1.0 - hat_diag)))

        lams = jnp.asarray(RIDGE_GRID, jnp.float32) * n
        best = lams[jnp.argmin(jax.vmap(loo)(lams))]
        dual = evecs @ (proj / (evals + best))
        dual = jnp.where(has_parents, dual, 0.0)
        return dual, mu, gamma

    dual, mean, gamma = jax.vmap(one_node, in_axes=(1, 1))(adj, x)
    return KernelRidgeFit(support=x, dual=dual, mean=mean, gamma=gamma, parents=adj)


def apply_kernel_ridge(fit: KernelRidgeFit, z: jax.Array) -> jax.Array:
    """Evaluate the kernel-ridge mechanism: ``z [..., d] -> [..., d]``."""
    lead = z.shape[:-1]
    flat = z.reshape(-1, z.shape[-1])

    def one_node(mask, dual, mu, gamma):
        return _rbf(flat, fit.support, mask, gamma) @ dual + mu

    out = jax.vmap(one_node, in_axes=(1, 0, 0, 0), out_axes=1)(fit.parents, fit.dual, fit.mean, fit.gamma)
    return out.reshape(*lead, -1)
