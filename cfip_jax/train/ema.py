"""Exponential moving average of the parameters with the reference's warm-up rule (SPEC.md §6.7).

The rule, for an update-call counter ``c = 0, 1, 2, …`` (one call per micro-batch, as the reference calls its EMA
update in every training step, gradient accumulation or not):

- only calls with ``c mod every == 0`` act;
- an acting call with ``c <= update_after`` copies the parameters;
- an acting call with ``c > update_after`` blends ``ema ← δ·ema + (1 − δ)·θ`` with
  ``δ = clip(1 − (1 + (c − update_after)/inv_gamma)^(−power), min_decay, decay)``.

With the reference's values (decay 0.99, every 10, update_after 100, inv_gamma 1, power 2/3, min_decay 0) δ reaches
0.99 at c ≈ 1100.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from cfip_jax import validation as V


@dataclasses.dataclass(frozen=True)
class EMAConfig:
    """Static EMA hyper-parameters (hashable, usable as a static argument).

    Attributes:
      decay: the largest decay δ (the reference's ``beta``).
      every: only update calls with ``c mod every == 0`` act.
      update_after: acting calls with ``c <= update_after`` copy the parameters.
      power: warm-up exponent.
      inv_gamma: warm-up time scale.
      min_decay: the smallest decay after the copy phase.
    """

    decay: float = 0.99
    every: int = 10
    update_after: int = 100
    power: float = 2.0 / 3.0
    inv_gamma: float = 1.0
    min_decay: float = 0.0

    def __post_init__(self):
        V.check_probability(self.decay, "ema.decay")
        V.check_probability(self.min_decay, "ema.min_decay")
        V.check_int(self.every, "ema.every", minimum=1)
        V.check_int(self.update_after, "ema.update_after", minimum=0)
        if not self.power > 0 or not self.inv_gamma > 0:
            raise ValueError(f"ema.power and ema.inv_gamma must be > 0, got {self.power}, {self.inv_gamma}")
        if self.min_decay > self.decay:
            raise ValueError(f"ema.min_decay {self.min_decay} must be <= ema.decay {self.decay}")

    @classmethod
    def from_config(cls, cfg) -> EMAConfig:
        """Build from an ml_collections ``ema`` block (fields named as the attributes)."""
        return cls(**{f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg})


def ema_decay(count: jax.Array, cfg: EMAConfig) -> jax.Array:
    """The blend decay δ of an acting update call ``count`` (0 for the copy phase).

    Args:
      count: int scalar, the update-call counter c.
      cfg: the EMA hyper-parameters.

    Returns:
      float32 scalar δ; ``ema ← δ·ema + (1 − δ)·θ``.
    """
    epoch = (jnp.asarray(count) - cfg.update_after).astype(jnp.float32)
    warm = 1.0 - (1.0 + jnp.maximum(epoch, 0.0) / cfg.inv_gamma) ** (-cfg.power)
    blend = jnp.clip(warm, cfg.min_decay, cfg.decay)
    return jnp.where(epoch <= 0, 0.0, blend).astype(jnp.float32)


def ema_update(ema_params: Any, params: Any, count: jax.Array, cfg: EMAConfig, calls: int = 1) -> Any:
    """Apply ``calls`` consecutive EMA update calls ``count, count+1, …`` with the same parameters.

    Args:
      ema_params: pytree of the averaged parameters.
      params: pytree of the current parameters (same structure).
      count: int scalar, the counter of the first call.
      cfg: the EMA hyper-parameters.
      calls: static number of calls (the number of micro-batches of one optimiser step).

    Returns:
      The new averaged parameters. Copies are exact (no arithmetic on the copied values).
    """
    count = jnp.asarray(count, jnp.int32)
    for j in range(calls):
        c = count + j
        acts = (c % cfg.every) == 0
        decay = ema_decay(c, cfg)
        copy = c <= cfg.update_after
        blended = optax.incremental_update(params, ema_params, 1.0 - decay)
        ema_params = jax.tree.map(
            lambda e, p, b, acts=acts, copy=copy: jnp.where(acts, jnp.where(copy, p, b), e), ema_params, params, blended
        )
    return ema_params
