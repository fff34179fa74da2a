"""Optimiser and learning-rate schedule of both training stages (SPEC.md §6.7).

Adam with *coupled* L2 weight decay (the decay term is added to the gradient before the Adam moments, as
``torch.optim.Adam(weight_decay=…)`` does; this is not AdamW), and a linear warm-up followed by a cosine decay.

Deliberate deviation from the reference: its schedule has no clamp, so its cosine restarts after ``decay_steps`` and the
learning rate oscillates with period ``2·(decay_steps − warmup_steps)``. Here the schedule is floored at ``end_lr``
after ``decay_steps`` (optax's ``warmup_cosine_decay_schedule``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import optax

from cfip_jax import validation as V
from cfip_jax.nn.decoder import adaln_layer_index


def check_optim_config(cfg, name: str = "optim") -> None:
    """Validate an ``optim`` config block on the host; raises a one-line ``ValueError`` naming the field."""
    for field in ("lr", "weight_decay", "end_lr", "eps"):
        value = float(cfg[field])
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}.{field} must be a finite number >= 0, got {cfg[field]!r}")
    V.check_probability(cfg.b1, f"{name}.b1")
    V.check_probability(cfg.b2, f"{name}.b2")
    warmup = V.check_int(cfg.warmup_steps, f"{name}.warmup_steps", minimum=0)
    decay = V.check_int(cfg.decay_steps, f"{name}.decay_steps", minimum=1)
    if warmup >= decay:
        raise ValueError(f"{name}.warmup_steps ({warmup}) must be < {name}.decay_steps ({decay})")
    if float(cfg.end_lr) > float(cfg.lr):
        raise ValueError(f"{name}.end_lr ({cfg.end_lr}) must be <= {name}.lr ({cfg.lr})")
    _check_layer_rate(cfg, name)


def _check_layer_rate(cfg, name: str) -> None:
    V.check_int(cfg.get("layer_lr_from", 0), f"{name}.layer_lr_from", minimum=0)
    factor = float(cfg.get("layer_lr_factor", 1.0))
    if not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"{name}.layer_lr_factor must be a finite number > 0, got {cfg.get('layer_lr_factor')!r}")


def layer_mask(first: int) -> Callable[[Any], Any]:
    """A mask function for ``optax.masked``: True on the parameters of the layers ``layers_k`` with ``k >= first``
    (the first ``layers_<k>`` name on a parameter's path decides; a parameter outside any such layer is False).
    Applied to parameters none of which it selects (e.g. the encoder's, whose layers are named otherwise), it raises
    a one-line ``ValueError``: a rate factor that scales nothing is a mistake, not a no-op."""

    def pick(path, _leaf) -> bool:
        k = adaln_layer_index(getattr(p, "key", getattr(p, "name", p)) for p in path)
        return k is not None and k >= first

    def mask(params: Any) -> Any:
        selected = jax.tree_util.tree_map_with_path(pick, params)
        if not any(jax.tree.leaves(selected)):
            raise ValueError(f"layer_lr_factor: no parameter lies in a layer layers_k with k >= {first}")
        return selected

    return mask


def learning_rate_schedule(cfg, *, budgeted: bool = False) -> optax.Schedule:
    """The learning rate of optimiser step t (t = 0, 1, …).

    ``lr·t/warmup_steps`` for ``t < warmup_steps`` (so step 0 uses lr 0), then
    ``end_lr + (lr − end_lr)·½(1 + cos(π·(t − warmup_steps)/(decay_steps − warmup_steps)))`` up to ``decay_steps``,
    then ``end_lr``. ``budgeted``: the warm-up, then ``lr`` for good (a time-budgeted stage decays by the step's
    ``lr_scale`` instead, see :mod:`cfip_jax.train.budget`).

    Args:
      cfg: an ``optim`` config block (``lr``, ``warmup_steps``, ``decay_steps``, ``end_lr``).
      budgeted: the schedule of a time-budgeted stage.
    """
    check_optim_config(cfg)
    if budgeted:
        warmup = int(cfg.warmup_steps)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, float(cfg.lr), max(warmup, 1)), optax.constant_schedule(float(cfg.lr))],
            [warmup],
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(cfg.lr),
        warmup_steps=int(cfg.warmup_steps),
        decay_steps=int(cfg.decay_steps),
        end_value=float(cfg.end_lr),
    )


def make_optimizer(cfg, *, budgeted: bool = False) -> optax.GradientTransformation:
    """Adam with coupled L2 weight decay and the warm-up + cosine schedule (``budgeted``: warm-up + constant).

    ``update = −lr(t) · adam(g + weight_decay·θ)`` with Adam's ``(b1, b2, eps)``. The optimiser state has the same
    structure either way, so a checkpoint restores into both.

    Args:
      cfg: an ``optim`` config block (``lr``, ``b1``, ``b2``, ``eps``, ``weight_decay``, ``warmup_steps``,
        ``decay_steps``, ``end_lr``; optional ``layer_lr_from`` / ``layer_lr_factor``: the updates of the layers
        ``layers_k``, ``k >= layer_lr_from``, are multiplied by ``layer_lr_factor``; with the factor 1 the state is
        the plain chain's).
      budgeted: see :func:`learning_rate_schedule`.
    """
    check_optim_config(cfg)
    parts = [
        optax.add_decayed_weights(float(cfg.weight_decay)),
        optax.scale_by_adam(b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps)),
        optax.scale_by_learning_rate(learning_rate_schedule(cfg, budgeted=budgeted)),
    ]
    factor = float(cfg.get("layer_lr_factor", 1.0))
    if factor != 1.0:  # the later layers' rate ×factor (e.g. a grown decoder's new layers, so that they open)
        parts.append(optax.masked(optax.scale(factor), layer_mask(int(cfg.get("layer_lr_from", 0)))))
    return optax.chain(*parts)
