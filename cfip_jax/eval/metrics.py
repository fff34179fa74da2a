"""Evaluation metrics: per-sample RMSE, kernel MMD, and mean with standard error over datasets."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def rmse(target: jax.Array, pred: jax.Array, node_mask: jax.Array | None = None) -> jax.Array:
    """The paper's RMSE: per sample the root mean square over (real) nodes, then the mean over samples.

    Args:
      target: ``[..., n, N]``.
      pred: ``[..., n, N]``.
      node_mask: optional ``[..., N]`` bool; padded nodes are left out of the node mean.

    Returns:
      A scalar: mean over all leading axes and samples of ``sqrt(mean_j (target_j − pred_j)²)``.
    """
    err = jnp.square(jnp.asarray(target, jnp.float32) - jnp.asarray(pred, jnp.float32))
    if node_mask is None:
        per_sample = jnp.mean(err, axis=-1)
    else:
        mask = jnp.asarray(node_mask, jnp.float32)[..., None, :]
        per_sample = jnp.sum(err * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
    return jnp.mean(jnp.sqrt(per_sample))


def median_bandwidth(x: jax.Array, y: jax.Array) -> jax.Array:
    """Median heuristic: the median Euclidean distance between distinct points of the pooled sample ``[x; y]``."""
    z = jnp.concatenate([x, y], axis=0)
    d2 = _sq_dists(z, z)
    m = z.shape[0]
    off_diag = d2[~np.eye(m, dtype=bool)]
    return jnp.sqrt(jnp.median(off_diag))


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
    d2 = jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T
    return jnp.maximum(d2, 0.0)


@jax.jit
def mmd(x: jax.Array, y: jax.Array) -> jax.Array:
    """Maximum mean discrepancy between two samples with a Gaussian kernel (Gretton et al., 2012).

    Kernel ``k(a, b) = exp(−‖a − b‖² / (2σ²))`` with σ from the median heuristic on the pooled sample
    (:func:`median_bandwidth`). Returns the square root of the biased (V-statistic) estimate of MMD², which is ≥ 0
    and 0 for identical samples.

    Args:
      x: ``[n, d]`` sample.
      y: ``[m, d]`` sample.

    Returns:
      Scalar MMD.
    """
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    sigma = median_bandwidth(x, y)
    gamma = 1.0 / (2.0 * jnp.maximum(sigma, 1e-12) ** 2)
    kxx = jnp.exp(-gamma * _sq_dists(x, x)).mean()
    kyy = jnp.exp(-gamma * _sq_dists(y, y)).mean()
    kxy = jnp.exp(-gamma * _sq_dists(x, y)).mean()
    return jnp.sqrt(jnp.maximum(kxx + kyy - 2.0 * kxy, 0.0))


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample std with ddof = 1 over √k) of k per-dataset values; s.e. is 0 for k = 1."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_se needs at least one value")
    se = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0
    return float(v.mean()), se
