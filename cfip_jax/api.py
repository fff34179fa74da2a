"""The functional API for notebooks: ``CondFiP`` infers an SCM from data and a graph, zero-shot.

    model = CondFiP.load("workdir/default")          # or CondFiP.pretrained()
    scm = model.fit(df, [("PKA", "praf"), ...])     # DataFrame + edge list (or adjacency / networkx.DiGraph)
    scm.sample(400, jax.random.key(0))              # new observational samples, a DataFrame like df
    scm.intervene({"PKA": 2.0}, 400, jax.random.key(1))
    scm.counterfactual(df, {"PKA": 2.0})

Graphs: an adjacency matrix with ``adj[i, j] = 1`` ⇔ edge ``i -> j`` (row = parent, column = child, as
``networkx.to_numpy_array``), a ``networkx.DiGraph`` or a list of ``(parent, child)`` pairs (names or indices).
Nodes are addressed by name (DataFrame columns or ``nodes=``) or by index. Results come back in the user's units and
type: DataFrame in, DataFrame out; NumPy in, NumPy out; JAX in, JAX out.

The encoder reads at most the context size the model was trained with (a fixed random subset of the rows; see
:meth:`CondFiP.fit`, ``max_context``); the noise is abducted from every row.

Everything is validated on the host before any tracing; bad input raises one ``ValueError`` naming the problem.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from cfip_jax import bootstrap as bootstrap_lib
from cfip_jax import fixed_point, model_io
from cfip_jax import model as model_lib
from cfip_jax import validation as V
from cfip_jax.inference import correct as correct_lib
from cfip_jax.inference import io as scm_io
from cfip_jax.inference import refine as refine_lib
from cfip_jax.inference import structure as structure_lib
from cfip_jax.nn.arch import decoder_arch
from cfip_jax.nn.decoder import CondFiPDecoder, Conditioning

NOISE_MODELS = ("gaussian", "empirical")


def _rows(v: jax.Array, like: jax.Array) -> jax.Array:
    """A per-node vector ``[d]`` shaped to broadcast over the rows of ``like [..., n, d]`` (explicit rank)."""
    return jnp.reshape(v, (1,) * (jnp.ndim(like) - 1) + (-1,))


def _to_numpy_data(data: Any, nodes: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...], str]:
    kind = "numpy"
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):  # pandas DataFrame
        kind = "pandas"
        if nodes is None:
            nodes = [str(c) for c in data.columns]
        data = data.to_numpy(dtype=np.float64)
    elif isinstance(data, jax.Array):
        kind = "jax"
    arr = V.check_data(np.asarray(data, dtype=np.float64), "data")
    if arr.ndim != 2:
        raise ValueError(f"data must have shape [n, d], got {arr.shape}")
    d = arr.shape[1]
    names = tuple(str(v) for v in (nodes if nodes is not None else range(d)))
    if len(names) != d:
        raise ValueError(f"{len(names)} node names given for data with {d} columns")
    if len(set(names)) != d:
        raise ValueError("node names must be unique")
    unnamed = [k + 1 for k, v in enumerate(names) if not v.strip()]
    if unnamed:
        raise ValueError(f"column {unnamed[0]} has no name (node names must be non-empty)")
    return arr, names, kind


def _statistics(arr: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation ``[d]`` (float64, computed without overflow); refuses constant columns
    and columns whose spread float32 cannot hold."""
    wide = arr.astype(np.float64)
    mean, std = wide.mean(axis=0), wide.std(axis=0, ddof=1)
    constant = [names[j] for j in np.flatnonzero(std == 0)]
    if constant:
        raise ValueError(f"constant column(s): {', '.join(constant)}")
    huge = [names[j] for j in np.flatnonzero(~np.isfinite(std.astype(np.float32)) | (std > 1e30))]
    if huge:
        raise ValueError(f"column(s) {', '.join(huge)} spread too widely for float32 (standard deviation > 1e30)")
    return mean, std


def _resolve(node: Any, names: Sequence[str]) -> int:
    if isinstance(node, (int, np.integer)) and not isinstance(node, bool):
        if not 0 <= int(node) < len(names):
            raise ValueError(f"node index {node} is not in the graph (0..{len(names) - 1})")
        return int(node)
    if str(node) in names:
        return list(names).index(str(node))
    raise ValueError(f"unknown node {node!r}; nodes: {', '.join(names)}")


def graph_to_adjacency(graph: Any, names: Sequence[str]) -> np.ndarray:
    """An adjacency matrix ``[d, d]`` (``adj[i, j] = 1`` ⇔ ``i -> j``) from any supported graph form, validated.

    Accepted: a NumPy/JAX array or a list of d lists of d numbers (adjacency), a ``networkx.DiGraph`` (nodes named as
    the data's, or indices), or a list of ``(parent, child)`` tuples.
    """
    d = len(names)
    if hasattr(graph, "edges") and hasattr(graph, "is_directed"):  # networkx
        if not graph.is_directed():
            raise ValueError("graph must be a directed graph (networkx.DiGraph)")
        for node in graph.nodes:
            _resolve(node, names)
        graph = [tuple(e) for e in graph.edges]
    is_matrix = (
        isinstance(graph, (list, tuple))
        and len(graph) == d
        and all(isinstance(row, list) and len(row) == d for row in graph)
    )
    if isinstance(graph, (list, tuple)) and not is_matrix:
        adj = np.zeros((d, d), np.float32)
        for edge in graph:
            if not isinstance(edge, (list, tuple)) or len(edge) != 2:
                raise ValueError(f"edges must be (parent, child) pairs, got {edge!r}")
            adj[_resolve(edge[0], names), _resolve(edge[1], names)] = 1.0
        return V.check_dag(adj, "graph", d, names)
    return V.check_dag(np.asarray(graph), "graph", d, names)


def _reachable(adj: np.ndarray, start: np.ndarray) -> np.ndarray:
    """``[d]`` bool: the nodes in ``start`` and every descendant of them in ``adj [d, d]``."""
    reached = np.asarray(start, bool).copy()
    frontier = reached.copy()
    while frontier.any():
        frontier = (np.asarray(adj)[frontier] != 0).any(0) & ~reached
        reached |= frontier
    return reached


def _wrap(x: np.ndarray | jax.Array, names: Sequence[str], kind: str):
    if kind == "pandas":
        import pandas as pd

        return pd.DataFrame(np.asarray(x), columns=list(names))
    if kind == "jax":
        return jnp.asarray(x)
    return np.asarray(x)


@flax.struct.dataclass
class InferredSCM:
    """An SCM inferred by Cond-FiP from one dataset: a pure pytree (jit-friendly); arrays in standardised units inside.

    Attributes:
      mechanism_fn: the conditioned decoder ``T: z [n, d] -> [n, d]`` (standardised units).
      mechanism_at: the same for a subset of nodes, ``(z [n, d], nodes [K]) -> T(z)[:, nodes]``, or None; when given
        (and the graph is concrete), samples are solved one topological level at a time
        (:func:`cfip_jax.fixed_point.solve_by_level`).
      adj: ``[d, d]`` graph.
      mean, std: ``[d]`` the data's per-node mean and std (ddof = 1): the map to the user's units.
      noise_data: ``[n, d]`` the standardised noise abducted from the fitted data, ``x − T(x)``.
      nodes: node names (static).
      kind: the input type results are returned as: ``"numpy"``, ``"pandas"`` or ``"jax"`` (static).
      noise_model: ``"gaussian"`` (a Gaussian per node fitted to the abducted noise) or ``"empirical"`` (resampling the
        abducted noise per node) for :meth:`sample` and :meth:`intervene` (static).
      refined_steps: optimiser steps of the refinement it was made with (0: zero-shot; static).
      refine_loss: ``(before, after)`` the refinement objective (per-row RMSE of x − F(x), standardised) before and
        after, on ``refine_loss_on`` (``"held-out rows"`` for ``refine="auto"``, ``"fitted rows"`` for a number of
        steps); None when zero-shot (static).
      graph_source: where the graph came from: ``"given"`` or the structure learner (``"ges"``, ``"pc"``,
        ``"lingam"``; static).
      decoder, decoder_params, cond: the conditioned decoder the mechanisms are made of (what :meth:`save` writes;
        ``decoder`` static).
      correction: the closed-form per-node correction of the refinement (:mod:`cfip_jax.inference.correct`), or None.
      corrected_nodes: ``(kept, linear, features)`` node counts of that correction (summed over the members), or
        None (static).
      members: how many refinements the mechanism averages (``RefineConfig(members=...)``; static). With more than
        one, ``decoder_params``, ``cond`` and ``correction`` hold the members along a leading axis
        (:func:`cfip_jax.inference.refine.mechanisms`).

    Interventions (:meth:`intervene`, :meth:`counterfactual`): hard ones, ``do(X_i = a)`` (``values={node: a}``: the
    node's mechanism and noise are replaced by the constant), and shift ones (``shift={node: δ}``: x_i = F_i(pa_i) +
    n_i + δ, the node keeps its mechanism and noise and moves by δ in the user's units, its descendants follow),
    alone or together on different nodes.
    """

    mechanism_fn: Any
    mechanism_at: Any
    adj: jax.Array
    mean: jax.Array
    std: jax.Array
    noise_data: jax.Array
    nodes: tuple[str, ...] = flax.struct.field(pytree_node=False)
    kind: str = flax.struct.field(pytree_node=False, default="numpy")
    noise_model: str = flax.struct.field(pytree_node=False, default="gaussian")
    refined_steps: int = flax.struct.field(pytree_node=False, default=0)
    refine_loss: tuple[float, float] | None = flax.struct.field(pytree_node=False, default=None)
    refine_loss_on: str | None = flax.struct.field(pytree_node=False, default=None)
    graph_source: str = flax.struct.field(pytree_node=False, default="given")
    decoder: Any = flax.struct.field(pytree_node=False, default=None)
    decoder_params: Any = None
    cond: Any = None
    correction: Any = None
    corrected_nodes: tuple[int, int, int] | None = flax.struct.field(pytree_node=False, default=None)
    members: int = flax.struct.field(pytree_node=False, default=1)

    # -- unit conversions ------------------------------------------------------------------------------------------
    def _std(self, x) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        return (x - _rows(self.mean, x)) / _rows(self.std, x)

    def _raw(self, z) -> jax.Array:
        return z * _rows(self.std, z) + _rows(self.mean, z)

    def _input(self, x, name: str) -> jax.Array:
        arr, _, _ = _to_numpy_data(x, self.nodes if hasattr(x, "columns") else None)
        if arr.shape[1] != len(self.nodes):
            raise ValueError(f"{name} has {arr.shape[1]} columns but the SCM has {len(self.nodes)} nodes")
        if hasattr(x, "columns") and tuple(map(str, x.columns)) != self.nodes:
            raise ValueError(f"{name} columns {list(map(str, x.columns))} differ from the SCM's nodes")
        return self._std(arr)

    def _intervention(
        self, values: Mapping[Any, float] | None, shift: Mapping[Any, float] | None = None
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
        """``(clamp mask [d] or None, standardised values [d] or None, standardised shift [d])`` of an intervention;
        one-line errors for unknown nodes, non-numbers, non-finite values and a node both clamped and shifted."""
        d = len(self.nodes)
        hard, moved = self._node_values(values, "values"), self._node_values(shift, "shift")
        if not hard and not moved:
            raise ValueError("an intervention needs values={node: value} (hard) and/or shift={node: delta}")
        both = sorted(set(hard) & set(moved))
        if both:
            raise ValueError(f"node(s) {', '.join(self.nodes[i] for i in both)} both clamped and shifted")
        mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
        delta = np.zeros(d, np.float32)
        for i, value in moved.items():
            delta[i] = value / std[i]  # a shift in the user's units is δ/σ in standardised ones (no centring)
        if not hard:
            return None, None, delta
        mask, vals = np.zeros(d, bool), np.zeros(d, np.float32)
        for i, value in hard.items():
            mask[i], vals[i] = True, (value - mean[i]) / std[i]
        return mask, vals, delta

    def _node_values(self, mapping: Mapping[Any, float] | None, what: str) -> dict[int, float]:
        if mapping is None:
            return {}
        if not isinstance(mapping, Mapping):
            raise ValueError(f"{what} must be a mapping {{node: number}}, got {type(mapping).__name__}")
        out = {}
        for node, value in mapping.items():
            i = _resolve(node, self.nodes)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{what} for {self.nodes[i]} must be a number, got {value!r}") from None
            if not np.isfinite(value):
                raise ValueError(f"{what} for {self.nodes[i]} is not finite")
            out[i] = value
        return out

    def _fresh_noise(self, n: int, key: jax.Array) -> jax.Array:
        n = V.check_int(n, "n", minimum=1)
        if self.noise_model == "gaussian":
            mu = self.noise_data.mean(0)
            sd = self.noise_data.std(0, ddof=1)
            return mu[None, :] + sd[None, :] * jax.random.normal(key, (n, len(self.nodes)))
        keys = jax.random.split(key, len(self.nodes))
        idx = jax.vmap(lambda k: jax.random.randint(k, (n,), 0, self.noise_data.shape[0]))(keys)  # [d, n]
        return jnp.take_along_axis(self.noise_data, idx.T, axis=0)

    def _solve(self, noise: jax.Array, mask: np.ndarray | None = None, vals: np.ndarray | None = None) -> jax.Array:
        """The fixed point x = T(x) + noise (standardised), clamped where ``mask``; exact for the DAG."""
        if self.mechanism_at is not None and not isinstance(self.adj, jax.core.Tracer):
            return fixed_point.solve_by_level(self.mechanism_at, noise, np.asarray(self.adj), mask, vals)
        if mask is None:
            return fixed_point.generate(self.mechanism_fn, noise, adj=self.adj, iterations="depth")
        return fixed_point.intervene(self.mechanism_fn, noise, mask, vals, adj=self.adj, iterations="depth")

    # -- the public verbs ----------------------------------------------------------------------------------------
    def mechanism(self, z):
        """The inferred mechanisms F(z) (noiseless), in the user's units: ``z [n, d] -> [n, d]``."""
        return _wrap(self._raw(self.mechanism_fn(self._input(z, "z"))), self.nodes, self.kind)

    def noise(self, x):
        """Abducted noise ``x − F(x)`` in the user's units (not centred): ``x [n, d] -> [n, d]``."""
        eps = fixed_point.abduct(self.mechanism_fn, self._input(x, "x"))
        return _wrap(eps * _rows(self.std, eps), self.nodes, self.kind)

    def generate(self, noise):
        """Samples from given noise (user's units, as returned by :meth:`noise`): the fixed point x = F(x) + noise."""
        arr, _, _ = _to_numpy_data(noise, None)
        if arr.shape[1] != len(self.nodes):
            raise ValueError(f"noise has {arr.shape[1]} columns but the SCM has {len(self.nodes)} nodes")
        z = self._solve(jnp.asarray(arr / np.asarray(self.std)[None, :], jnp.float32))
        return _wrap(self._raw(z), self.nodes, self.kind)

    def sample(self, n: int, key: jax.Array):
        """``n`` new observational samples (new noise from the per-node noise model)."""
        z = self._solve(self._fresh_noise(n, key))
        return _wrap(self._raw(z), self.nodes, self.kind)

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
        return _wrap(self._raw(z), self.nodes, self.kind)

    def counterfactual(self, x, values: Mapping[Any, float] | None = None, *, shift: Mapping[Any, float] | None = None):
        """Counterfactuals of factual rows ``x`` under do(node = value, …) and/or shifts: the abducted noise of each
        row, pushed through the intervened SCM (a shifted node's own noise is kept and moved by δ). Nodes that are
        neither intervened on nor descendants of an intervened node keep their factual values exactly."""
        mask, vals, delta = self._intervention(values, shift)
        z = self._solve(fixed_point.abduct(self.mechanism_fn, self._input(x, "x")) + delta[None, :], mask, vals)
        out = self._raw(z)
        if not isinstance(self.adj, jax.core.Tracer):  # rows of nodes the intervention cannot reach: the factual ones
            moved = (mask if mask is not None else np.zeros(len(self.nodes), bool)) | (delta != 0)
            factual = jnp.asarray(_to_numpy_data(x, self.nodes if hasattr(x, "columns") else None)[0], jnp.float32)
            out = jnp.where(jnp.asarray(_reachable(np.asarray(self.adj), moved))[None, :], out, factual)
        return _wrap(out, self.nodes, self.kind)

    def intervention_values(self, values: Mapping[Any, float]) -> tuple[np.ndarray, np.ndarray]:
        """``(mask [d] bool, values [d] float64 in the data's units)`` of a hard intervention ``{node: value}``
        (validated: known nodes, finite numbers, at least one)."""
        hard = self._node_values(values, "do")
        if not hard:
            raise ValueError("an effect needs do={node: value} with at least one node")
        mask, raw = np.zeros(len(self.nodes), bool), np.zeros(len(self.nodes), np.float64)
        for i, value in hard.items():
            mask[i], raw[i] = True, value
        return mask, raw

    def effect_plan(self, outcome, do, baseline, n: int):
        """The validated parts of an effect query: ``(outcome index, (mask, values) of do, (mask, values) of the
        baseline or None)``; one ``ValueError`` for an unknown outcome, an outcome that is also intervened on, an
        empty or bad intervention, or ``n < 1``."""
        j = _resolve(outcome, self.nodes)
        V.check_int(n, "n", minimum=1)
        plans = [self.intervention_values(do)] + ([] if baseline is None else [self.intervention_values(baseline)])
        for mask in (p[0] for p in plans):
            if mask[j]:
                raise ValueError(f"the outcome {self.nodes[j]!r} is also intervened on: it cannot be a treatment")
        return j, plans[0], (plans[1] if baseline is not None else None)

    def effect(self, outcome, do: Mapping[Any, float], baseline: Mapping[Any, float] | None = None, *,
               n: int = 1000, key: jax.Array) -> float:  # fmt: skip
        """The average causal effect E[outcome | do(do)] − E[outcome | baseline], in the outcome's units.

        ``baseline=None`` compares with the observational mean; otherwise with another hard intervention (e.g.
        ``do={"X": 1}, baseline={"X": 0}``). Several nodes may be set at once. Both expectations are Monte Carlo
        means over the same ``n`` noise draws (the noise model's), so their difference carries little sampling noise.
        For an interval, fit with :meth:`CondFiP.bootstrap`.
        """
        j, (mask, raw), base = self.effect_plan(outcome, do, baseline, n)
        noise = self._fresh_noise(n, key)
        std = np.asarray(self.std, np.float64)
        mean = np.asarray(self.mean, np.float64)
        standard = lambda v: ((v - mean) / std).astype(np.float32)  # noqa: E731
        treated = self._solve(noise, mask, standard(raw))[:, j].mean()
        if base is None:
            control = self._solve(noise)[:, j].mean()
        else:
            control = self._solve(noise, base[0], standard(base[1]))[:, j].mean()
        return float(treated - control) * float(std[j])

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
        if self.decoder is None:
            raise ValueError("this SCM holds no decoder to save (make it with CondFiP.fit)")
        arrays = dict(adj=self.adj, mean=self.mean, std=self.std, noise_data=self.noise_data,
                      **{f"cond/{k}": getattr(self.cond, k) for k in ("v", "p", "c")},
                      **scm_io.flatten("decoder", self.decoder_params))  # fmt: skip
        if self.correction is not None:
            arrays.update({f"correction/{k}": getattr(self.correction, k) for k in correct_lib.Correction.FIELDS})
        meta = dict(
            nodes=list(self.nodes),
            kind=self.kind,
            noise_model=self.noise_model,
            refined_steps=self.refined_steps,
            refine_loss=None if self.refine_loss is None else list(self.refine_loss),
            refine_loss_on=self.refine_loss_on,
            graph_source=self.graph_source,
            decoder=self.decoder.config.to_dict(),
            correction=self.correction is not None,
            corrected_nodes=None if self.corrected_nodes is None else list(self.corrected_nodes),
            members=self.members,
        )
        return str(scm_io.write(path, meta, {k: np.asarray(v) for k, v in arrays.items()}, summary))

    @classmethod
    def load(cls, path: str | os.PathLike) -> InferredSCM:
        """Read an SCM written by :meth:`save` (one ``ValueError`` if the directory is incomplete, not a saved SCM,
        or from another format version)."""
        meta, arrays = scm_io.read(path)
        try:
            decoder = CondFiPDecoder(config=decoder_arch("reference", **meta["decoder"]))
            nodes = tuple(str(v) for v in meta["nodes"])
            cond = Conditioning(**{k: jnp.asarray(arrays[f"cond/{k}"]) for k in ("v", "p", "c")})
            params = scm_io.unflatten("decoder", arrays)
            adj = V.check_dag(arrays["adj"], "saved graph", len(nodes))
            fields = dict(noise_model=V.check_choice(meta["noise_model"], NOISE_MODELS, "noise model"),
                          kind=V.check_choice(meta["kind"], ("numpy", "pandas", "jax"), "kind"),
                          refined_steps=int(meta["refined_steps"]), refine_loss_on=meta["refine_loss_on"],
                          refine_loss=None if meta["refine_loss"] is None else tuple(meta["refine_loss"]),
                          graph_source=str(meta["graph_source"]),
                          members=V.check_int(meta.get("members", 1), "saved members", minimum=1))  # fmt: skip
            lead = () if fields["members"] == 1 else (fields["members"],)
            model_lib.check_variables(params, decoder, f"{path}: array decoder/", lead)
            mean, std, noise = (np.asarray(arrays[k], np.float32) for k in ("mean", "std", "noise_data"))
            correction = None
            if meta.get("correction"):
                correction = correct_lib.Correction(
                    **{k: jnp.asarray(arrays[f"correction/{k}"]) for k in correct_lib.Correction.FIELDS}
                )
                if correction.scale.shape != lead + (len(nodes),):
                    raise ValueError(f"{path}: saved correction does not match its {len(nodes)} nodes")
                fields["corrected_nodes"] = tuple(int(v) for v in meta["corrected_nodes"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path}: incomplete saved SCM ({err!s} missing or malformed)") from None
        if mean.shape != (len(nodes),) or std.shape != (len(nodes),) or noise.ndim != 2 or noise.shape[1] != len(nodes):
            raise ValueError(f"{path}: saved arrays do not match its {len(nodes)} nodes")
        adj_b = jnp.asarray(adj)[None]
        if cond.c.shape[: len(lead)] != lead:
            raise ValueError(f"{path}: saved conditioning does not hold its {fields['members']} members")
        mech, at = refine_lib.mechanisms(decoder, params, cond, correction, adj_b, fields["members"])
        return cls(mechanism_fn=mech, mechanism_at=at, adj=jnp.asarray(adj), mean=jnp.asarray(mean),
                   std=jnp.asarray(std), noise_data=jnp.asarray(noise), nodes=nodes, decoder=decoder,
                   decoder_params=params, cond=cond, correction=correction, **fields)  # fmt: skip


class CondFiP:
    """A trained Cond-FiP model: encoder and decoder with their EMA parameters."""

    def __init__(self, model: model_lib.TrainedModel):
        self.model = model

    @classmethod
    def load(cls, path: str | os.PathLike) -> CondFiP:
        """Load an exported model directory (``model.json`` + ``params.npz``) or a ``train.py`` workdir."""
        return cls(model_io.load(path))

    @classmethod
    def pretrained(cls) -> CondFiP:
        """The model shipped inside the package (no network needed)."""
        return cls(model_io.load_pretrained())

    @property
    def info(self) -> dict:
        """Provenance of the weights (training config, steps, …)."""
        return self.model.info

    @property
    def training_context(self) -> int | None:
        """Rows per context the model was trained with (``data.n_context`` of its run), None when not recorded."""
        value = self.model.info.get("run_config", {}).get("data", {}).get("n_context")
        return None if value is None else int(value)

    def context_rows(self, n: int, max_context: int | str | None = "trained") -> np.ndarray | None:
        """The rows of an ``n``-row dataset that :meth:`fit` hands to the encoder, or None for all of them.

        ``max_context``: ``"trained"`` (the model's :attr:`training_context`, all rows when unknown), an int ≥ 2, or
        None (all rows). When it is below ``n``, the rows are a uniformly random subset drawn with a fixed seed
        (sorted, the same for every call with the same ``n``).
        """
        if isinstance(max_context, str):
            V.check_choice(max_context, ("trained",), "max_context")
            limit = self.training_context
        elif max_context is None:
            limit = None
        else:
            limit = V.check_int(max_context, "max_context", minimum=2)
        if limit is None or limit >= n:
            return None
        return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))

    def bootstrap(
        self,
        data: Any,
        graph: Any,
        n_boot: int = 100,
        *,
        key: jax.Array,
        refine: int | str | None = None,
        level: float = 0.95,
        nodes: Sequence[str] | None = None,
        noise_model: str = "empirical",
        max_context: int | str | None = "trained",
        chunk: int = 10,
    ) -> bootstrap_lib.BootstrapSCM:
        """:meth:`fit` on ``n_boot`` resamples of the rows (drawn with replacement from ``key``) and on the rows
        themselves: a :class:`cfip_jax.bootstrap.BootstrapSCM` whose ``effect`` answers with an interval at
        ``level`` and whose ``sample`` / ``intervene`` give one set per resample.

        Zero-shot (``refine=None``), the resamples are fitted in one compiled, batched pass (``chunk`` at a time).
        The interval covers the fit's sampling variability given the graph and the model, not the model's bias
        (:mod:`cfip_jax.bootstrap`). Other arguments as :meth:`fit`; a refinement is not batched and is refused.
        """
        V.check_int(n_boot, "n_boot", minimum=2)
        if not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        if refine_lib.check_refine(refine) is not None:
            raise ValueError("bootstrap fits zero-shot only (refine=None): the refinement is not batched yet")
        V.check_int(chunk, "chunk", minimum=1)
        point = self.fit(data, graph, nodes=nodes, noise_model=noise_model, max_context=max_context)
        arr, _, _ = _to_numpy_data(data, nodes)
        rows = bootstrap_lib.resample_rows(key, arr.shape[0], int(n_boot))
        limit = self.context_rows(arr.shape[0], max_context)
        n_ctx = arr.shape[0] if limit is None else len(limit)
        cond, mean, std, noise = bootstrap_lib.fit_resamples(self.model, arr, np.asarray(point.adj), rows,
                                                             n_ctx=n_ctx, chunk=chunk)  # fmt: skip
        return bootstrap_lib.BootstrapSCM(point=point, cond=cond, mean=mean, std=std, noise_data=noise, adj=point.adj,
                                          decoder=self.model.decoder, decoder_params=self.model.decoder_params,
                                          level=float(level))  # fmt: skip

    def fit(
        self,
        data: Any,
        graph: Any,
        *,
        structure: str | None = None,
        nodes: Sequence[str] | None = None,
        noise_model: str = "empirical",
        max_context: int | str | None = "trained",
        refine: int | str | None = None,
        refine_config: refine_lib.RefineConfig | None = None,
    ):
        """Infer the SCM of ``data`` with causal graph ``graph``: zero-shot (no gradient step), or refined on the data.

        The encoder reads at most ``max_context`` rows (the dataset embedding); the noise is abducted from every row.
        By default that is the context size the model was trained with (200 for the shipped model), drawn at random
        with a fixed seed (:meth:`context_rows`). The encoder's cost grows as n², and more rows barely change the
        result: on the d = 10/20 suite 200 and 400 rows differ by at most 0.018 RMSE per cell, within the standard
        errors, with all rows about 1 % better on average (``docs/eval_context/summary.md``; the paper finds no gain
        from n = 1000 either). Pass ``max_context=None`` to encode all rows, as ``eval.py`` does to follow the
        paper's protocol.

        Args:
          data: ``[n, d]`` samples: NumPy array, pandas DataFrame (its columns name the nodes) or JAX array.
          graph: adjacency ``[d, d]`` (``adj[i, j] = 1`` ⇔ ``i -> j``), ``networkx.DiGraph`` or ``(parent, child)``
            pairs; or None to learn one from the data with ``structure``.
          structure: with ``graph=None``, the structure learner: ``"ges"``, ``"pc"`` (causal-learn; a CPDAG turned
            into one of its DAGs) or ``"lingam"`` (DirectLiNGAM); see :mod:`cfip_jax.inference.structure`. The learner
            sees every row. ``InferredSCM.graph_source`` records which.
          nodes: node names (default: DataFrame columns or ``0..d-1``).
          noise_model: ``"empirical"`` (the default: resampling each node's abducted noise) or ``"gaussian"`` (a
            Gaussian per node fitted to it, the paper's protocol and ``eval.py``'s); see :class:`InferredSCM`. On
            real data the empirical one generates samples closer to held-out rows (Sachs: MMD 0.085 against 0.162,
            values outside the data's range 10 % against 18 %; ``scripts/noise_models.py``).
          max_context: ``"trained"``, an int ≥ 2 or None (all rows); see :meth:`context_rows`.
          refine: None or 0 (zero-shot, the default), a number of optimiser steps, ``"auto"`` (early stopping on
            held-out rows, with a cap) or ``"closed-form"`` (no gradient step): start from the zero-shot SCM, fit the
            decoder to the data itself with the per-dataset FiP objective x ≈ F(x), then correct each node's
            mechanism in closed form, the correction chosen per node on held-out rows
            (:mod:`cfip_jax.inference.refine`, :mod:`cfip_jax.inference.correct`; ``docs/refinement.md`` for what each
            buys). A refinement that diverges returns the zero-shot SCM with a warning.
          refine_config: what is refined and how (:class:`cfip_jax.inference.refine.RefineConfig`; default the
            measured one).

        Returns:
          The :class:`InferredSCM` (``refined_steps`` and ``refine_loss`` say how it was made).
        """
        V.check_choice(noise_model, NOISE_MODELS, "noise model")
        refine = refine_lib.check_refine(refine)
        if graph is None and structure is None:
            learners = ", ".join(structure_lib.LEARNERS)
            raise ValueError(f"graph=None needs a structure learner: structure= one of {learners}")
        if graph is not None and structure is not None:
            raise ValueError("give either a graph or structure= (a learner for graph=None), not both")
        if structure is not None:
            structure_lib.check_learner(structure)
        arr, names, kind = _to_numpy_data(data, nodes)
        mean, std = _statistics(arr, names)
        if graph is None:
            adj, _ = structure_lib.discover(arr, structure)
        else:
            adj = graph_to_adjacency(graph, names)
        z = jnp.asarray((arr - mean) / std, jnp.float32)
        adj_b = jnp.asarray(adj)[None]
        rows = self.context_rows(arr.shape[0], max_context)
        context = z if rows is None else z[rows]
        cfg = refine_config or refine_lib.RefineConfig()
        if refine is not None:
            refine_lib.check_schedule(refine, cfg, z.shape[0])  # e.g. too few rows to hold some out: say so now
        cond, noise = model_lib.condition_and_abduct(self.model, context, z, adj_b)
        model, made = self.model, {}
        mech, at = model_lib.decoder_mechanisms(model.decoder, model.decoder_params, cond, adj_b)
        if refine is not None:
            out = refine_lib.refine(self.model, cond, z, adj_b, refine, cfg)
            if out.finite:
                model, cond = out.model, out.cond
                mech, at = out.mechanisms(adj_b)
                noise = fixed_point.abduct(mech, z)
                made = dict(refined_steps=out.steps, refine_loss=(out.loss_before, out.loss_after),
                            refine_loss_on=out.loss_on, correction=out.correction, members=out.members)  # fmt: skip
                if out.corrected_nodes is not None:
                    made["corrected_nodes"] = tuple(out.corrected_nodes[k] for k in ("none", "linear", "features"))
            else:
                warnings.warn("the refinement's loss became non-finite; returning the zero-shot SCM", stacklevel=2)
        return InferredSCM(
            mechanism_fn=mech,
            mechanism_at=at,
            adj=jnp.asarray(adj),
            mean=jnp.asarray(mean, jnp.float32),
            std=jnp.asarray(std, jnp.float32),
            noise_data=noise,
            nodes=names,
            kind=kind,
            noise_model=noise_model,
            graph_source="given" if graph is not None else structure,
            decoder=model.decoder,
            decoder_params=model.decoder_params,
            cond=cond,
            **made,
        )
