"""An inferred SCM and its verbs: sampling, interventions, counterfactuals, effects, saving and loading.

:class:`InferredSCM` is what :meth:`cfip_jax.api.CondFiP.fit` returns: the inferred mechanism
(:class:`~cfip_jax.inference.mechanism.Mechanism`), the graph, the map to the user's units and the abducted noise.
Samples are the fixed point x = F(x) + n (paper §3.3); hard interventions clamp nodes; counterfactuals push the
abducted noise n̂ = x − F(x) through the intervened SCM.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from cfip_jax import fixed_point
from cfip_jax import model as model_lib
from cfip_jax import validation as V
from cfip_jax.inference import correct as correct_lib
from cfip_jax.inference import inputs
from cfip_jax.inference import io as scm_io
from cfip_jax.inference import noise as noise_lib
from cfip_jax.inference.mechanism import FitInfo, Mechanism
from cfip_jax.nn.arch import decoder_arch
from cfip_jax.nn.decoder import CondFiPDecoder, Conditioning

NOISE_MODELS = noise_lib.MODELS


def _rows(v: jax.Array, like: jax.Array) -> jax.Array:
    """A per-node vector ``[d]`` shaped to broadcast over the rows of ``like [..., n, d]`` (explicit rank)."""
    return jnp.reshape(v, (1,) * (jnp.ndim(like) - 1) + (-1,))


@flax.struct.dataclass
class InferredSCM:
    """An SCM inferred by Cond-FiP from one dataset: a pure pytree (jit-friendly); arrays in standardised units inside.

    Attributes:
      mechanism_fn: the inferred mechanism ``T: z [n, d] -> [n, d]`` (standardised units), a pytree: a
        :class:`~cfip_jax.inference.mechanism.Mechanism` (then, with a concrete graph, samples are solved a few
        nodes at a time, each node once after its parents, :func:`cfip_jax.fixed_point.solve_by_level`) or any
        jit-able callable pytree (solved with depth + 1 full passes).
      adj: ``[d, d]`` graph.
      mean, std: ``[d]`` the data's per-node mean and std (ddof = 1): the map to the user's units.
      noise_data: ``[n, d]`` the standardised noise abducted from the fitted data, ``x − T(x)``.
      nodes: node names (static).
      kind: the input type results are returned as: ``"numpy"``, ``"pandas"`` or ``"jax"`` (static).
      noise_model: ``"empirical"`` (resampling the abducted noise per node) or ``"gaussian"`` (a Gaussian per node
        fitted to the abducted noise) for :meth:`sample` and :meth:`intervene` (static).
      info: how it was made, a :class:`~cfip_jax.inference.mechanism.FitInfo` (static); its fields are also read as
        attributes (``scm.refined_steps``, ``scm.refine_loss``, ``scm.corrected_nodes``, ``scm.graph_source``).

    Interventions (:meth:`intervene`, :meth:`counterfactual`): hard ones, ``do(X_i = a)`` (``values={node: a}``: the
    node's mechanism and noise are replaced by the constant), and shift ones (``shift={node: δ}``: x_i = F_i(pa_i) +
    n_i + δ, the node keeps its mechanism and noise and moves by δ in the user's units, its descendants follow),
    alone or together on different nodes.
    """

    mechanism_fn: Any
    adj: jax.Array
    mean: jax.Array
    std: jax.Array
    noise_data: jax.Array
    nodes: tuple[str, ...] = flax.struct.field(pytree_node=False)
    kind: str = flax.struct.field(pytree_node=False, default="numpy")
    noise_model: str = flax.struct.field(pytree_node=False, default="gaussian")
    info: FitInfo = flax.struct.field(pytree_node=False, default=FitInfo())

    # -- provenance and parts, read through ---------------------------------------------------------------------
    refined_steps = property(lambda self: self.info.refined_steps, doc="Optimiser steps of the refinement (0: none).")
    refine_loss = property(lambda self: self.info.refine_loss, doc="The refinement objective (before, after).")
    refine_loss_on = property(lambda self: self.info.refine_loss_on, doc="What ``refine_loss`` was measured on.")
    graph_source = property(lambda self: self.info.graph_source, doc='``"given"`` or the structure learner.')
    corrected_nodes = property(lambda self: self.info.corrected_nodes, doc="(kept, linear, features) node counts.")

    @property
    def decoder_mechanism(self) -> Mechanism | None:
        """The :class:`~cfip_jax.inference.mechanism.Mechanism` (None when the mechanism is another callable)."""
        return self.mechanism_fn if isinstance(self.mechanism_fn, Mechanism) else None

    @property
    def mechanism_at(self) -> Mechanism | None:
        """``(z, nodes [K]) -> T(z)[..., nodes]`` (the mechanism itself), or None."""
        return self.decoder_mechanism

    @property
    def members(self) -> int:
        """How many refinements the mechanism averages."""
        return 1 if self.decoder_mechanism is None else self.decoder_mechanism.members

    @property
    def correction(self) -> correct_lib.Correction | None:
        """The closed-form correction of the refinement, or None."""
        return None if self.decoder_mechanism is None else self.decoder_mechanism.correction

    # -- unit conversions ------------------------------------------------------------------------------------------
    def _std(self, x) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        return (x - _rows(self.mean, x)) / _rows(self.std, x)

    def _raw(self, z) -> jax.Array:
        return z * _rows(self.std, z) + _rows(self.mean, z)

    def _input(self, x, name: str) -> jax.Array:
        arr, _, _ = inputs.data(x, self.nodes if hasattr(x, "columns") else None)
        if arr.shape[1] != len(self.nodes):
            raise ValueError(f"{name} has {arr.shape[1]} columns but the SCM has {len(self.nodes)} nodes")
        if hasattr(x, "columns") and tuple(map(str, x.columns)) != self.nodes:
            raise ValueError(f"{name} columns {list(map(str, x.columns))} differ from the SCM's nodes")
        return self._std(arr)

    def _intervention(self, values, shift=None) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
        return inputs.intervention(values, shift, self.nodes, np.asarray(self.mean), np.asarray(self.std))

    def _fresh_noise(self, n: int, key: jax.Array) -> jax.Array:
        return noise_lib.draw(self.noise_data, V.check_int(n, "n", minimum=1), key, self.noise_model)

    def _solve(self, noise: jax.Array, mask: np.ndarray | None = None, vals: np.ndarray | None = None,
               targets=None, known=None) -> jax.Array:  # fmt: skip
        """The fixed point x = T(x) + noise (standardised), clamped where ``mask``; exact for the DAG. With
        ``targets``, only they are guaranteed solved (and, by level, only their ancestors are computed); ``known``
        as :func:`cfip_jax.fixed_point.solve_by_level` (a hint: the other solvers compute every node)."""
        if self.decoder_mechanism is not None and not isinstance(self.adj, jax.core.Tracer):
            return fixed_point.solve_by_level(self.decoder_mechanism, noise, np.asarray(self.adj), mask, vals,
                                              targets=targets, known=known)  # fmt: skip
        if mask is None:
            return fixed_point.generate(self.mechanism_fn, noise, adj=self.adj, iterations="depth")
        return fixed_point.intervene(self.mechanism_fn, noise, mask, vals, adj=self.adj, iterations="depth")

    # -- the public verbs ----------------------------------------------------------------------------------------
    def mechanism(self, z):
        """The inferred mechanisms F(z) (noiseless), in the user's units: ``z [n, d] -> [n, d]``."""
        return inputs.wrap(self._raw(self.mechanism_fn(self._input(z, "z"))), self.nodes, self.kind)

    def noise(self, x):
        """Abducted noise ``x − F(x)`` in the user's units (not centred): ``x [n, d] -> [n, d]``."""
        eps = fixed_point.abduct(self.mechanism_fn, self._input(x, "x"))
        return inputs.wrap(eps * _rows(self.std, eps), self.nodes, self.kind)

    def generate(self, noise):
        """Samples from given noise (user's units, as returned by :meth:`noise`): the fixed point x = F(x) + noise."""
        arr, _, _ = inputs.data(noise, None)
        if arr.shape[1] != len(self.nodes):
            raise ValueError(f"noise has {arr.shape[1]} columns but the SCM has {len(self.nodes)} nodes")
        z = self._solve(jnp.asarray(arr / np.asarray(self.std)[None, :], jnp.float32))
        return inputs.wrap(self._raw(z), self.nodes, self.kind)

    def sample(self, n: int, key: jax.Array):
        """``n`` new observational samples (new noise from the per-node noise model)."""
        z = self._solve(self._fresh_noise(n, key))
        return inputs.wrap(self._raw(z), self.nodes, self.kind)

    def intervene(
        self,
        values: Mapping[Any, float] | None = None,
        n: int | None = None,
        key: jax.Array | None = None,
        *,
        shift: Mapping[Any, float] | None = None,
    ):
        """``n`` samples under do(node = value, …) and/or the shifts ``shift={node: δ}`` (x_i = F_i(pa_i) + n_i + δ);
        nodes by name or index, values and shifts in the user's units, fresh noise from ``key``."""
        if n is None or key is None:
            raise ValueError("intervene needs n (the number of samples) and key (a PRNG key)")
        mask, vals, delta = self._intervention(values, shift)
        z = self._solve(self._fresh_noise(n, key) + delta[None, :], mask, vals)
        return inputs.wrap(self._raw(z), self.nodes, self.kind)

    def counterfactual(self, x, values: Mapping[Any, float] | None = None, *, shift: Mapping[Any, float] | None = None):
        """Counterfactuals of factual rows ``x`` under do(node = value, …) and/or shifts: the abducted noise of each
        row, pushed through the intervened SCM (a shifted node's own noise is kept and moved by δ). Nodes that are
        neither intervened on nor descendants of an intervened node keep their factual values exactly."""
        mask, vals, delta = self._intervention(values, shift)
        z = self._solve(fixed_point.abduct(self.mechanism_fn, self._input(x, "x")) + delta[None, :], mask, vals)
        out = self._raw(z)
        if not isinstance(self.adj, jax.core.Tracer):  # rows of nodes the intervention cannot reach: the factual ones
            moved = (mask if mask is not None else np.zeros(len(self.nodes), bool)) | (delta != 0)
            factual = jnp.asarray(inputs.data(x, self.nodes if hasattr(x, "columns") else None)[0], jnp.float32)
            out = jnp.where(jnp.asarray(fixed_point.host_reachable(np.asarray(self.adj), moved))[None, :], out, factual)
        return inputs.wrap(out, self.nodes, self.kind)

    def intervention_values(self, values: Mapping[Any, float]) -> tuple[np.ndarray, np.ndarray]:
        """``(mask [d] bool, values [d] float64 in the data's units)`` of a hard intervention ``{node: value}``
        (:func:`cfip_jax.inference.inputs.hard_values`)."""
        return inputs.hard_values(values, self.nodes)

    def effect_plan(self, outcome, do, baseline, n: int):
        """The validated parts of an effect query (:func:`cfip_jax.inference.inputs.effect_plan`)."""
        return inputs.effect_plan(outcome, do, baseline, n, self.nodes)

    def effect(self, outcome, do: Mapping[Any, float], baseline: Mapping[Any, float] | None = None, *,
               n: int = 1000, key: jax.Array) -> float:  # fmt: skip
        """The average causal effect E[outcome | do(do)] − E[outcome | baseline], in the outcome's units.

        ``baseline=None`` compares with the observational mean; otherwise with another hard intervention (e.g.
        ``do={"X": 1}, baseline={"X": 0}``). Several nodes may be set at once. Both expectations are Monte Carlo
        means over the same ``n`` noise draws (the noise model's), so their difference carries little sampling noise.
        Only the outcome's ancestors are solved, and under ``do`` only those the interventions reach (the others are
        the baseline's). For an interval, fit with :meth:`CondFiP.bootstrap`.
        """
        j, (mask, raw), base = self.effect_plan(outcome, do, baseline, n)
        noise = self._fresh_noise(n, key)
        std = np.asarray(self.std, np.float64)
        mean = np.asarray(self.mean, np.float64)
        standard = lambda v: ((v - mean) / std).astype(np.float32)  # noqa: E731
        control = self._solve(noise, *((None, None) if base is None else (base[0], standard(base[1]))), [j])
        same = fixed_point.host_unaffected(np.asarray(self.adj), mask, None if base is None else base[0])
        treated = self._solve(noise, mask, standard(raw), [j], known=(control, same))  # only what `do` moves
        return float(treated[:, j].mean() - control[:, j].mean()) * float(std[j])

    def with_noise_model(self, noise_model: str) -> InferredSCM:
        """The same SCM with another noise model for :meth:`sample` / :meth:`intervene`."""
        V.check_choice(noise_model, NOISE_MODELS, "noise model")
        return self.replace(noise_model=noise_model)

    @property
    def graph(self) -> list[tuple[str, str]]:
        """The graph as ``(parent, child)`` name pairs."""
        adj = np.asarray(self.adj)
        return [(self.nodes[i], self.nodes[j]) for i, j in zip(*np.nonzero(adj), strict=True)]

    # -- persistence -----------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, summary: dict | None = None) -> str:
        """Write this SCM to the directory ``path`` (``scm.json`` + ``arrays.npz``, no pickle; see
        :mod:`cfip_jax.inference.io`): the conditioned decoder, graph, units and abducted noise, and ``summary`` (any
        JSON-able dict) as ``summary.json``. Written whole or not at all; an existing saved SCM there is replaced.
        Returns the directory."""
        return str(scm_io.write(path, *_pack(self), summary))

    @classmethod
    def load(cls, path: str | os.PathLike) -> InferredSCM:
        """Read an SCM written by :meth:`save` (one ``ValueError`` if the directory is incomplete, not a saved SCM,
        or from another format version)."""
        return cls(**_unpack(path))


def _pack(scm: InferredSCM) -> tuple[dict, dict[str, np.ndarray]]:
    """``(metadata, arrays)`` of a saved SCM (:mod:`cfip_jax.inference.io`); refuses one without a decoder."""
    mech = scm.decoder_mechanism
    if mech is None:
        raise ValueError("this SCM holds no decoder to save (make it with CondFiP.fit)")
    arrays = dict(adj=scm.adj, mean=scm.mean, std=scm.std, noise_data=scm.noise_data,
                  **{f"cond/{k}": getattr(mech.cond, k) for k in ("v", "p", "c")},
                  **scm_io.flatten("decoder", mech.params))  # fmt: skip
    if mech.correction is not None:
        arrays.update({f"correction/{k}": getattr(mech.correction, k) for k in correct_lib.Correction.FIELDS})
    meta = dict(nodes=list(scm.nodes), kind=scm.kind, noise_model=scm.noise_model, **scm.info.to_dict(),
                decoder=mech.decoder.config.to_dict(), correction=mech.correction is not None,
                members=mech.members, shared_decoder=mech.shared)  # fmt: skip
    return meta, {k: np.asarray(v) for k, v in arrays.items()}


def _unpack(path: str | os.PathLike) -> dict:
    """The :class:`InferredSCM` fields of the SCM saved in ``path``, every array checked."""
    meta, arrays = scm_io.read(path)
    try:
        decoder = CondFiPDecoder(config=decoder_arch("reference", **meta["decoder"]))
        nodes = tuple(str(v) for v in meta["nodes"])
        cond = Conditioning(**{k: jnp.asarray(arrays[f"cond/{k}"]) for k in ("v", "p", "c")})
        params = scm_io.unflatten("decoder", arrays)
        adj = V.check_dag(arrays["adj"], "saved graph", len(nodes))
        fields = dict(noise_model=V.check_choice(meta["noise_model"], NOISE_MODELS, "noise model"),
                      kind=V.check_choice(meta["kind"], inputs.KINDS, "kind"))  # fmt: skip
        made = dict(refined_steps=int(meta["refined_steps"]), refine_loss_on=meta["refine_loss_on"],
                    refine_loss=None if meta["refine_loss"] is None else tuple(meta["refine_loss"]),
                    graph_source=str(meta["graph_source"]))  # fmt: skip
        members = V.check_int(meta.get("members", 1), "saved members", minimum=1)
        shared = meta.get("shared_decoder", False)
        if not isinstance(shared, bool):
            raise ValueError(f"{path}: saved shared_decoder must be true or false, got {shared!r}")
        lead = () if members == 1 else (members,)
        dec_lead = () if shared else lead  # a closed-form ensemble holds one decoder and conditioning
        model_lib.check_variables(params, decoder, f"{path}: array decoder/", dec_lead)
        mean, std, noise = (np.asarray(arrays[k], np.float32) for k in ("mean", "std", "noise_data"))
        correction = None
        if meta.get("correction"):
            correction = correct_lib.Correction(
                **{k: jnp.asarray(arrays[f"correction/{k}"]) for k in correct_lib.Correction.FIELDS}
            )
            if correction.scale.shape != lead + (len(nodes),):
                raise ValueError(f"{path}: saved correction does not match its {len(nodes)} nodes")
            made["corrected_nodes"] = tuple(int(v) for v in meta["corrected_nodes"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: incomplete saved SCM ({err!s} missing or malformed)") from None
    if mean.shape != (len(nodes),) or std.shape != (len(nodes),) or noise.ndim != 2 or noise.shape[1] != len(nodes):
        raise ValueError(f"{path}: saved arrays do not match its {len(nodes)} nodes")
    adj_b = jnp.asarray(adj)[None]
    if cond.c.ndim != 4 + len(dec_lead) or cond.c.shape[: len(dec_lead)] != dec_lead:
        raise ValueError(f"{path}: saved conditioning does not hold its {members} members")
    mech = Mechanism.build(decoder, params, cond, adj_b, correction, members, shared)
    return dict(
        mechanism_fn=mech,
        adj=jnp.asarray(adj),
        mean=jnp.asarray(mean),
        std=jnp.asarray(std),
        noise_data=jnp.asarray(noise),
        nodes=nodes,
        info=FitInfo(**made),
        **fields,
    )
