"""Training losses of the two stages, masked over padded nodes (SPEC.md §6.4, §6.6).

Both losses are root-mean-square errors in standardised units over the *real* nodes only (``node_mask``):

- stage 1 (encoder): the RMSE over nodes of each sample, averaged over datasets and samples;
- stage 2 (decoder): the RMSE over samples and nodes of each dataset, averaged over datasets.

The square root uses a "double where" so that an exactly zero error has gradient 0 instead of NaN; the value is the
exact square root everywhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _safe_sqrt(x: jax.Array) -> jax.Array:
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _mask(node_mask: jax.Array, like: jax.Array) -> jax.Array:
    """``node_mask [B, N]`` as float ``[B, 1, N]`` broadcastable against ``like [B, n, N]``."""
    return node_mask.astype(like.dtype)[:, None, :]


def per_sample_rmse(pred: jax.Array, target: jax.Array, node_mask: jax.Array) -> jax.Array:
    """RMSE over the real nodes of each sample.

    Args:
      pred: ``[B, n, N]`` predictions.
      target: ``[B, n, N]`` targets.
      node_mask: ``[B, N]`` bool, True for real nodes.

    Returns:
      ``[B, n]`` ``sqrt(mean over real nodes of (pred − target)²)``.
    """
    m = _mask(node_mask, pred)
    sq = jnp.sum(m * (pred - target) ** 2, axis=-1)
    return _safe_sqrt(sq / jnp.sum(m, axis=-1))


def per_dataset_rmse(pred: jax.Array, target: jax.Array, node_mask: jax.Array) -> jax.Array:
    """RMSE over all samples and real nodes of each dataset.

    Args:
      pred: ``[B, n, N]`` predictions.
      target: ``[B, n, N]`` targets.
      node_mask: ``[B, N]`` bool, True for real nodes.

    Returns:
      ``[B]`` ``sqrt(mean over samples and real nodes of (pred − target)²)``.
    """
    m = _mask(node_mask, pred)
    sq = jnp.sum(m * (pred - target) ** 2, axis=(-2, -1))
    count = pred.shape[-2] * jnp.sum(m, axis=(-2, -1))
    return _safe_sqrt(sq / count)


def encoder_loss(pred: jax.Array, target: jax.Array, node_mask: jax.Array) -> jax.Array:
    """Stage-1 loss: the mean over ``(B, n)`` of :func:`per_sample_rmse` (a scalar)."""
    return jnp.mean(per_sample_rmse(pred, target, node_mask))


def decoder_loss(pred: jax.Array, target: jax.Array, node_mask: jax.Array) -> jax.Array:
    """Stage-2 loss: the mean over datasets of :func:`per_dataset_rmse` (a scalar)."""
    return jnp.mean(per_dataset_rmse(pred, target, node_mask))
