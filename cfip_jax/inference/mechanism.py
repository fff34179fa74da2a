"""The inferred mechanism of one dataset, and how it was made: built here and nowhere else.

A :class:`Mechanism` is the decoder conditioned on one dataset (paper §3.2: the conditional FiP decoder
T(z; embedding, G)), with the closed-form correction of a refinement (:mod:`cfip_jax.inference.correct`) and, for an
ensemble of refinements, the mean of its members'. :class:`FitInfo` records how the SCM was made.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from cfip_jax import model as model_lib
from cfip_jax.inference import correct as correct_lib
from cfip_jax.nn.decoder import Conditioning, frozen_config


@flax.struct.dataclass
class Mechanism:
    """``T: z [..., n, d] -> [..., n, d]`` in standardised units; ``mech(z, nodes)`` is ``T(z)[..., nodes]`` for
    ``nodes [K]`` int (the form :func:`cfip_jax.fixed_point.solve_by_level` evaluates). A pytree — arrays are leaves,
    the decoder is static — so the solvers compile once per model and shapes.

    Attributes:
      decoder: the :class:`~cfip_jax.nn.decoder.CondFiPDecoder` (static; its config frozen so that it hashes).
      params: the decoder's variables.
      cond: the :class:`~cfip_jax.nn.decoder.Conditioning` of the dataset.
      adj: ``[1, d, d]`` the graph.
      correction: the :class:`~cfip_jax.inference.correct.Correction`, or None.
      members: how many refinements are averaged (static); with more than one, ``params``, ``cond`` and
        ``correction`` hold them along a leading axis and ``T`` is the mean of the members' mechanisms, evaluated one
        member at a time (``lax.map``: one member's intermediates alive at once).
      shared: the members share one decoder (static; ``refine="closed-form"``, whose members differ only in their
        corrections): ``params`` and ``cond`` hold one copy, ``correction`` the members along a leading axis, and
        ``T`` is the decoder evaluated once, then the mean of the members' corrections of it (the correction is
        affine in the proposal, so this is the mean of the members' mechanisms at the cost of one).
    """

    decoder: Any = flax.struct.field(pytree_node=False)
    params: Any
    cond: Conditioning
    adj: jax.Array
    correction: correct_lib.Correction | None = None
    members: int = flax.struct.field(pytree_node=False, default=1)
    shared: bool = flax.struct.field(pytree_node=False, default=False)

    @classmethod
    def build(cls, decoder, params, cond: Conditioning, adj: jax.Array, correction=None, members: int = 1,
              shared: bool = False) -> Mechanism:  # fmt: skip
        """The mechanism of a conditioned decoder (``adj [1, d, d]``); see the attributes."""
        decoder = decoder.clone(config=frozen_config(decoder.config))
        shared = bool(shared) and int(members) > 1
        return cls(decoder, params, cond, jnp.asarray(adj, jnp.float32), correction, int(members), shared)

    def __call__(self, z: jax.Array, nodes: jax.Array | None = None) -> jax.Array:
        if self.members == 1:
            return self._member(self.params, self.cond, self.correction, z, nodes)
        if self.shared:
            t = self._member(self.params, self.cond, None, z, nodes)  # the decoder once for every member
            return correct_lib.apply_mean(self.correction, t, z, nodes)
        one = lambda member: self._member(*member, z, nodes)  # noqa: E731
        return jnp.mean(jax.lax.map(one, (self.params, self.cond, self.correction)), axis=0)

    @property
    def at(self) -> Mechanism:
        """The subset-of-nodes form ``at(z, nodes) = T(z)[..., nodes]``: the mechanism itself (it takes ``nodes`` as
        its second argument), so what a solver receives is this pytree and compiles once per shapes, not per fit."""
        return self

    def _member(self, params, cond, correction, z, nodes):
        mech, mech_at = model_lib.decoder_mechanisms(self.decoder, params, cond, self.adj)
        t = mech(z) if nodes is None else mech_at(z, nodes)
        return t if correction is None else correct_lib.apply(correction, t, z, nodes)


@dataclasses.dataclass(frozen=True)
class FitInfo:
    """How an inferred SCM was made (static provenance).

    Attributes:
      refined_steps: optimiser steps of its refinement (0: zero-shot).
      refine_loss: ``(before, after)`` the refinement objective (per-row RMSE of x − F(x), standardised) on
        ``refine_loss_on`` (``"held-out rows"`` for ``"auto"`` and ``"closed-form"``, ``"fitted rows"`` for a number
        of steps); None when zero-shot.
      refine_loss_on: see ``refine_loss``.
      graph_source: ``"given"`` or the structure learner that made the graph (``"ges"``, ``"pc"``, ``"lingam"``).
      corrected_nodes: ``(kept, linear, features)`` node counts of the correction, summed over the members; or None.
    """

    refined_steps: int = 0
    refine_loss: tuple[float, float] | None = None
    refine_loss_on: str | None = None
    graph_source: str = "given"
    corrected_nodes: tuple[int, int, int] | None = None

    def to_dict(self) -> dict:
        """The fields, JSON-able (tuples as lists)."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
