"""New noise for an inferred SCM from the noise abducted from its data: the two noise models.

``"empirical"`` resamples each node's abducted noise (independently across nodes, as the SCM's noise is);
``"gaussian"`` fits a Gaussian per node (the paper's protocol, §4). Used by :class:`cfip_jax.inference.scm.InferredSCM`,
the bootstrap ensemble and evaluation's real-data task, so all three draw alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MODELS = ("gaussian", "empirical")


def draw(noise_data: jax.Array, n: int, key: jax.Array, model: str) -> jax.Array:
    """``[..., n, d]`` new noise from ``noise_data [..., m, d]`` (each leading index its own dataset).

    Args:
      noise_data: the abducted noise, ``m`` rows.
      n: rows to draw.
      key: PRNG key.
      model: ``"gaussian"`` (per node: the mean and the ddof = 1 standard deviation of its column) or
        ``"empirical"`` (per node: ``n`` of its column's values, drawn with replacement).
    """
    if model not in MODELS:
        raise ValueError(f"unknown noise model {model!r}; expected one of {', '.join(MODELS)}")
    shape = noise_data.shape[:-2] + (n, noise_data.shape[-1])
    if model == "gaussian":
        mu = noise_data.mean(-2, keepdims=True)
        sd = noise_data.std(-2, ddof=1, keepdims=True)
        return mu + sd * jax.random.normal(key, shape)
    idx = jax.random.randint(key, shape, 0, noise_data.shape[-2])
    return jnp.take_along_axis(noise_data, idx, axis=-2)
