"""Training losses of the two stages, masked over padded nodes (SPEC.md §6.4, §6.6).

Both losses are root-mean-square errors in standardised units over the *real* nodes only (``node_mask``):

- stage 1 (encoder): the RMSE over nodes of each sample, averaged over datasets and samples;
- stage 2 (decoder): the RMSE over samples and nodes of each dataset, averaged over datasets.

Packed batches (:class:`cfip_jax.scm.batch.Batch` with ``segment``) hold several datasets per row; the losses then
take the same per-dataset quantities over each dataset's nodes (``segment``) and average them over the datasets, so a
packed batch has exactly the loss of its datasets laid out one per row.

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


def _segment_sums(sq: jax.Array, segment: jax.Array, segments: int) -> tuple[jax.Array, jax.Array]:
    """Per-dataset sums of ``sq [R, n, N]`` over each dataset's nodes: ``([R, n, G], node counts [R, G])``."""
    # [R, N, G]: one-hot of each node's dataset; padded nodes (−1) belong to none.
    member = (segment[..., None] == jnp.arange(segments)[None, None, :]).astype(sq.dtype)
    return jnp.einsum("rsj,rjg->rsg", sq, member), jnp.sum(member, axis=1)


def encoder_loss(
    pred: jax.Array, target: jax.Array, node_mask: jax.Array, segment: jax.Array | None = None, segments: int = 1
) -> jax.Array:
    """Stage-1 loss: the mean over datasets and samples of the per-sample RMSE over the dataset's real nodes.

    Args:
      pred, target: ``[B, n, N]``.
      node_mask: ``[B, N]`` bool.
      segment: packed rows: ``[B, N]`` int32, the dataset (``0..segments-1``) of each node, −1 padded; None: one
        dataset per row (:func:`per_sample_rmse`).
      segments: static, the most datasets per row.

    Returns:
      The scalar loss.
    """
    if segment is None:
        return jnp.mean(per_sample_rmse(pred, target, node_mask))
    sq, count = _segment_sums((pred - target) ** 2, segment, segments)
    real = count > 0  # [R, G]
    rmse = _safe_sqrt(sq / jnp.where(real, count, 1.0)[:, None, :])  # [R, n, G]
    return jnp.sum(jnp.where(real, jnp.mean(rmse, axis=1), 0.0)) / jnp.sum(real)


def decoder_loss(
    pred: jax.Array, target: jax.Array, node_mask: jax.Array, segment: jax.Array | None = None, segments: int = 1
) -> jax.Array:
    """Stage-2 loss: the mean over datasets of the RMSE over the dataset's samples and real nodes.

    Arguments as :func:`encoder_loss` (one dataset per row: :func:`per_dataset_rmse`).
    """
    if segment is None:
        return jnp.mean(per_dataset_rmse(pred, target, node_mask))
    sq, count = _segment_sums((pred - target) ** 2, segment, segments)
    real = count > 0
    rmse = _safe_sqrt(jnp.sum(sq, axis=1) / jnp.where(real, pred.shape[-2] * count, 1.0))  # [R, G]
    return jnp.sum(jnp.where(real, rmse, 0.0)) / jnp.sum(real)
