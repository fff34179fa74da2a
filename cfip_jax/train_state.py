"""The training state of one stage: a plain pytree of arrays (checkpointable as is)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, and nothing else.

    Attributes:
      step: int32 scalar, the number of optimiser steps taken; training data and dropout are drawn from
        ``fold_in(key, step)``, so no RNG key is stored.
      params: the trained network's parameters.
      opt_state: the optax state.
      ema_params: the exponential moving average of ``params`` (used for validation and by the next stage).
      frozen: parameters used but not trained (stage 2: the stage-1 encoder's EMA parameters; stage 1: ``{}``).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    frozen: Any

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, frozen: Any = None) -> TrainState:
        """The state before the first step: ``ema_params`` is a copy of ``params``."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            ema_params=jax.tree.map(jnp.copy, params),
            frozen={} if frozen is None else frozen,
        )
