"""The training state of one stage (a plain pytree of arrays, checkpointable as is) and its one constructor.

:func:`create_state` builds a fresh state from a run config; :func:`abstract_state` is its ``jax.eval_shape`` (the
restore target of checkpoints). The training loop, :mod:`cfip_jax.model_io` and the tests all build states this way.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from cfip_jax.train.optim import make_optimizer
from cfip_jax.train.stage import build_stage, data_spec


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


def stage_parts(config, name: str):
    """``(stage, init spec, optimizer)`` of stage ``name`` of a run config: what :func:`create_state` builds from."""
    return build_stage(config, name), data_spec(config, 1), make_optimizer(config[name].optim)


def create_state(config, name: str, key: jax.Array, frozen: Any = None) -> TrainState:
    """The fresh state of stage ``name``: its network initialised from ``key``, the optimiser state, the EMA copy.

    Args:
      config: the run config.
      name: ``"encoder"`` or ``"decoder"``.
      key: the initialisation key.
      frozen: stage 2: the frozen encoder's variables (default: a random template of the right structure).
    """
    stage, spec, tx = stage_parts(config, name)
    if name == "decoder" and frozen is None:
        frozen = stage.init_frozen(key, spec)
    return TrainState.create(stage.init(key, spec), tx, frozen if name == "decoder" else None)


def abstract_state(config, name: str, sharding: jax.sharding.Sharding | None = None) -> TrainState:
    """The shapes, dtypes (and, with ``sharding``, the placement) of stage ``name``'s state; nothing is computed.

    Checkpoints are restored into it; ``jax.jit(create_state…, out_shardings=sharding)`` creates the real one.
    """
    shapes = jax.eval_shape(lambda: create_state(config, name, jax.random.key(0)))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)
