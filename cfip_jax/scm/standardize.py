"""Per-node standardisation of datasets (SPEC.md §5.2–§5.3).

``x ← (x − μ) / σ`` and ``ε ← ε / σ`` (the noise is scaled, not centred), with μ and σ the per-node mean and standard
deviation over the sample axis (``ddof = 1`` by default, as torch's unbiased std). A zero σ is replaced by 1. Padded
nodes get μ = 0, σ = 1. The statistics are returned so that results (and intervention values) can be mapped between
raw and standardised units.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from cfip_jax import validation as V


@struct.dataclass
class Stats:
    """Per-node affine map of a standardisation: ``x_std = (x − mean) / std``.

    Attributes:
      mean: ``[..., N]`` per-node mean (0 on padded nodes).
      std: ``[..., N]`` per-node standard deviation (1 where zero and on padded nodes).
    """

    mean: jax.Array
    std: jax.Array


def compute_stats(x: jax.Array, node_mask: jax.Array | None = None, ddof: int = 1) -> Stats:
    """Per-node statistics of ``x [..., n, N]`` over the sample axis; ``node_mask [..., N]`` (True = real)."""
    x = jnp.asarray(x, jnp.float32)
    n = x.shape[-2]
    ddof = V.check_int(ddof, "ddof", minimum=0, maximum=n - 1)
    mean = jnp.mean(x, axis=-2)
    std = jnp.std(x, axis=-2, ddof=ddof)
    std = jnp.where(std > 0, std, 1.0)
    if node_mask is not None:
        mask = jnp.asarray(node_mask, bool)
        mean = jnp.where(mask, mean, 0.0)
        std = jnp.where(mask, std, 1.0)
    return Stats(mean=mean, std=std)


def apply_stats(x: jax.Array, noise: jax.Array | None, stats: Stats) -> tuple[jax.Array, jax.Array | None]:
    """Standardise ``x [..., n, N]`` (centred and scaled) and ``noise`` (scaled only) with given statistics."""
    x_std = (jnp.asarray(x, jnp.float32) - stats.mean[..., None, :]) / stats.std[..., None, :]
    noise_std = None if noise is None else jnp.asarray(noise, jnp.float32) / stats.std[..., None, :]
    return x_std, noise_std


def standardize(
    x: jax.Array, noise: jax.Array | None = None, node_mask: jax.Array | None = None, ddof: int = 1
) -> tuple[jax.Array, jax.Array | None, Stats]:
    """Standardise a dataset per node with its own statistics.

    Args:
      x: ``[..., n, N]`` samples.
      noise: ``[..., n, N]`` additive noise (scaled by 1/σ, not centred), or None.
      node_mask: ``[..., N]`` bool, True for real nodes (padded nodes keep μ = 0, σ = 1); None = all real.
      ddof: delta degrees of freedom of σ (1 = unbiased, the reference's choice).

    Returns:
      ``(x_std, noise_std, stats)``; ``stats.mean`` and ``stats.std`` are ``[..., N]``.
    """
    stats = compute_stats(x, node_mask, ddof)
    x_std, noise_std = apply_stats(x, noise, stats)
    return x_std, noise_std, stats


def standardize_values(values: jax.Array, stats: Stats) -> jax.Array:
    """Map per-node values (e.g. intervention values) ``[..., N]`` to standardised units: ``(v − μ)/σ``."""
    return (jnp.asarray(values, jnp.float32) - stats.mean) / stats.std


def unstandardize_values(values: jax.Array, stats: Stats) -> jax.Array:
    """Map per-node values ``[..., N]`` back to raw units: ``v σ + μ``."""
    return jnp.asarray(values, jnp.float32) * stats.std + stats.mean


def unstandardize(x_std: jax.Array, stats: Stats) -> jax.Array:
    """Map standardised samples ``[..., n, N]`` back to raw units."""
    return jnp.asarray(x_std, jnp.float32) * stats.std[..., None, :] + stats.mean[..., None, :]


def unstandardize_noise(noise_std: jax.Array, stats: Stats) -> jax.Array:
    """Map standardised noise ``[..., n, N]`` back to raw units (scaled only)."""
    return jnp.asarray(noise_std, jnp.float32) * stats.std[..., None, :]
