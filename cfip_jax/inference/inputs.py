"""What a user hands over — data, a graph, node values — parsed and checked once, for the API and the command line.

Every function raises one ``ValueError`` naming the problem, before anything is traced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cfip_jax import validation as V

KINDS = ("numpy", "pandas", "jax")


def data(x: Any, nodes: Sequence[str] | None = None) -> tuple[np.ndarray, tuple[str, ...], str]:
    """``(x [n, d] float64, node names, kind)`` of a NumPy array, pandas DataFrame (its columns name the nodes) or
    JAX array; ``kind`` (one of :data:`KINDS`) is the type results go back as. Names default to ``0..d-1``."""
    kind = "numpy"
    if hasattr(x, "columns") and hasattr(x, "to_numpy"):  # pandas DataFrame
        kind = "pandas"
        if nodes is None:
            nodes = [str(c) for c in x.columns]
        x = x.to_numpy(dtype=np.float64)
    elif isinstance(x, jax.Array):
        kind = "jax"
    arr = V.check_data(np.asarray(x, dtype=np.float64), "data")
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


def statistics(arr: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation ``[d]`` (float64, ddof = 1, computed without overflow); refuses constant
    columns and columns whose spread float32 cannot hold."""
    wide = arr.astype(np.float64)
    mean, std = wide.mean(axis=0), wide.std(axis=0, ddof=1)
    constant = [names[j] for j in np.flatnonzero(std == 0)]
    if constant:
        raise ValueError(f"constant column(s): {', '.join(constant)}")
    huge = [names[j] for j in np.flatnonzero(~np.isfinite(std.astype(np.float32)) | (std > 1e30))]
    if huge:
        raise ValueError(f"column(s) {', '.join(huge)} spread too widely for float32 (standard deviation > 1e30)")
    return mean, std


def node_index(node: Any, names: Sequence[str]) -> int:
    """The index of ``node`` (a name, or an index in ``0..d-1``)."""
    if isinstance(node, (int, np.integer)) and not isinstance(node, bool):
        if not 0 <= int(node) < len(names):
            raise ValueError(f"node index {node} is not in the graph (0..{len(names) - 1})")
        return int(node)
    if str(node) in names:
        return list(names).index(str(node))
    raise ValueError(f"unknown node {node!r}; nodes: {', '.join(names)}")


def edges_to_adjacency(edges: Sequence[Any], names: Sequence[str], where: str = "graph") -> np.ndarray:
    """The DAG ``adj [d, d]`` (``adj[i, j] = 1`` ⇔ ``i -> j``) of ``(parent, child)`` pairs (names or indices);
    ``where`` names the source in the messages (a pair that is not one, an unknown node, a self-loop, a cycle)."""
    adj = np.zeros((len(names), len(names)), np.float32)
    for r, edge in enumerate(edges, start=1):
        if not isinstance(edge, (list, tuple)) or len(edge) != 2:
            raise ValueError(f"{where}: edge {r} is not a (parent, child) pair: {edge!r}")
        ends = []
        for node in edge:
            try:
                ends.append(node_index(node, names))
            except ValueError as err:
                raise ValueError(f"{where}: edge {r} names {err}") from None
        if ends[0] == ends[1]:
            raise ValueError(f"{where}: edge {r} is a self-loop at {names[ends[0]]!r}")
        adj[ends[0], ends[1]] = 1.0
    cycle = V.find_cycle(adj)
    if cycle is not None:
        raise ValueError(f"{where} is cyclic (cycle: {' -> '.join(names[i] for i in cycle + cycle[:1])})")
    return adj


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
            node_index(node, names)
        graph = [tuple(e) for e in graph.edges]
    is_matrix = (
        isinstance(graph, (list, tuple))
        and len(graph) == d
        and all(isinstance(row, list) and len(row) == d for row in graph)
    )
    if isinstance(graph, (list, tuple)) and not is_matrix:
        return edges_to_adjacency(graph, names)
    return V.check_dag(np.asarray(graph), "graph", d, names)


def node_values(mapping: Mapping[Any, Any] | None, names: Sequence[str], what: str) -> dict[int, float]:
    """``{node index: float}`` of ``{node: number}`` (names or indices): known nodes, finite numbers."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{what} must be a mapping {{node: number}}, got {type(mapping).__name__}")
    out = {}
    for node, value in mapping.items():
        i = node_index(node, names)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} for {names[i]} must be a number, got {value!r}") from None
        if not np.isfinite(value):
            raise ValueError(f"{what} for {names[i]} is not finite")
        out[i] = value
    return out


def assignments(items: Sequence[str] | None, flag: str, names: Sequence[str]) -> dict[str, float]:
    """``{node: number}`` of command-line ``NODE=NUMBER`` arguments of ``flag``, checked against ``names``."""
    out: dict[str, float] = {}
    for item in items or ():
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise ValueError(f"{flag} {item!r}: expected NODE=NUMBER")
        if name not in names:
            raise ValueError(f"{flag} {item!r}: unknown node {name!r}; nodes: {', '.join(names)}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{flag} {item!r}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{flag} {item!r}: the value is not finite")
        if name in out:
            raise ValueError(f"{flag} names {name!r} twice")
        out[name] = number
    return out


def intervention(
    values: Mapping[Any, Any] | None, shift: Mapping[Any, Any] | None, names: Sequence[str], mean, std
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """``(clamp mask [d] or None, standardised values [d] or None, standardised shift [d])`` of an intervention:
    ``values`` hard ones, ``shift`` shift ones, in the data's units (``mean``, ``std`` ``[d]`` standardise them);
    one-line errors for unknown nodes, non-numbers, non-finite values, no intervention at all and a node both
    clamped and shifted."""
    d = len(names)
    hard, moved = node_values(values, names, "values"), node_values(shift, names, "shift")
    if not hard and not moved:
        raise ValueError("an intervention needs values={node: value} (hard) and/or shift={node: delta}")
    both = sorted(set(hard) & set(moved))
    if both:
        raise ValueError(f"node(s) {', '.join(names[i] for i in both)} both clamped and shifted")
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    delta = np.zeros(d, np.float32)
    for i, value in moved.items():
        delta[i] = value / std[i]  # a shift in the user's units is δ/σ in standardised ones (no centring)
    if not hard:
        return None, None, delta
    mask, vals = np.zeros(d, bool), np.zeros(d, np.float32)
    for i, value in hard.items():
        mask[i], vals[i] = True, (value - mean[i]) / std[i]
    return mask, vals, delta


def hard_values(values: Mapping[Any, Any], names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(mask [d] bool, values [d] float64 in the data's units)`` of a hard intervention ``{node: value}``
    (known nodes, finite numbers, at least one)."""
    hard = node_values(values, names, "do")
    if not hard:
        raise ValueError("an effect needs do={node: value} with at least one node")
    mask, raw = np.zeros(len(names), bool), np.zeros(len(names), np.float64)
    for i, value in hard.items():
        mask[i], raw[i] = True, value
    return mask, raw


def effect_plan(outcome: Any, do: Mapping[Any, Any], baseline: Mapping[Any, Any] | None, n: int,
                names: Sequence[str]):  # fmt: skip
    """The validated parts of an effect query: ``(outcome index, (mask, values) of do, (mask, values) of the
    baseline or None)``; one ``ValueError`` for an unknown outcome, an outcome that is also intervened on, an empty
    or bad intervention, or ``n < 1``."""
    j = node_index(outcome, names)
    V.check_int(n, "n", minimum=1)
    plans = [hard_values(do, names)] + ([] if baseline is None else [hard_values(baseline, names)])
    for mask in (p[0] for p in plans):
        if mask[j]:
            raise ValueError(f"the outcome {names[j]!r} is also intervened on: it cannot be a treatment")
    return j, plans[0], (plans[1] if baseline is not None else None)


def wrap(x: np.ndarray | jax.Array, names: Sequence[str], kind: str):
    """``x [n, d]`` as the user's type: a DataFrame with ``names`` as columns, a JAX array or a NumPy array."""
    if kind == "pandas":
        import pandas as pd

        return pd.DataFrame(np.asarray(x), columns=list(names))
    if kind == "jax":
        return jnp.asarray(x)
    return np.asarray(x)
