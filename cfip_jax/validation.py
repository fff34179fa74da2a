"""Host-side input checks shared by every public entry point.

Each check runs on concrete NumPy values *before* any JAX tracing and raises a one-line ``ValueError`` that names the
argument and the problem. Nothing is clipped or repaired silently.

Adjacency convention (the one used by the whole public API): ``adj[i, j] == 1`` means the edge ``i -> j``
(row = parent, column = child), as in ``networkx.to_numpy_array``. The reference's files store the transpose.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def check_choice(value: Any, choices: Iterable[Any], name: str) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise naming the valid ones."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(map(str, choices))}")
    return value


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_probability(value: Any, name: str) -> float:
    """Return ``value`` as a float if it lies in [0, 1]."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return value


def check_positive(value: Any, name: str) -> float:
    """A finite number > 0 (not a bool), as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_nonnegative(value: Any, name: str) -> float:
    """A finite number >= 0 (not a bool), as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_range(value: Sequence[float], name: str, *, positive: bool = False) -> tuple[float, float]:
    """Return ``(low, high)`` if it is a finite interval with ``low <= high`` (and ``low > 0`` when ``positive``)."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high)) or low > high:
        raise ValueError(f"{name} must be a finite interval with low <= high, got ({low}, {high})")
    if positive and low <= 0:
        raise ValueError(f"{name} must be positive, got ({low}, {high})")
    return low, high


def check_finite(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a NumPy array if every entry is finite (no NaN, no inf)."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = "NaN" if np.any(np.isnan(arr)) else "inf"
        raise ValueError(f"{name} contains {bad} values")
    return arr


def find_cycle(adj: np.ndarray) -> list[int] | None:
    """Return the nodes of one directed cycle of ``adj`` (``adj[i, j]`` = edge i -> j), or None for a DAG."""
    adj = np.asarray(adj) != 0
    d = adj.shape[0]
    state = np.zeros(d, dtype=np.int8)  # 0 = new, 1 = on stack, 2 = done
    for start in range(d):
        if state[start]:
            continue
        stack = [(start, iter(np.flatnonzero(adj[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state[child] == 1:
                return path[path.index(int(child)) :]
            elif state[child] == 0:
                state[child] = 1
                path.append(int(child))
                stack.append((int(child), iter(np.flatnonzero(adj[child]))))
    return None


def check_dag(adj: Any, name: str = "graph", d: int | None = None, names: Sequence[str] | None = None) -> np.ndarray:
    """Validate a single adjacency matrix and return it as float32 ``[d, d]``.

    Args:
      adj: ``[d, d]`` array with ``adj[i, j] = 1`` for the edge ``i -> j``.
      name: how the argument is called in error messages.
      d: if given, the number of nodes the data has.
      names: the nodes' names, used in the messages (default: their indices).

    Raises:
      ValueError: not square, not of size ``d``, not binary, non-finite, with a self-loop, or cyclic.
    """
    arr = check_finite(adj, name)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square [d, d] matrix, got shape {arr.shape}")
    if d is not None and arr.shape[0] != d:
        raise ValueError(f"{name} has {arr.shape[0]} nodes but the data has {d} columns")
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must be binary (0/1 entries)")
    label = (lambda i: repr(str(names[i]))) if names is not None and len(names) == arr.shape[0] else str
    loops = np.flatnonzero(np.diag(arr))
    if loops.size:
        raise ValueError(f"{name} has a self-loop at node {label(int(loops[0]))}")
    cycle = find_cycle(arr)
    if cycle is not None:
        raise ValueError(f"{name} is cyclic: {' -> '.join(label(int(i)) for i in cycle + cycle[:1])}")
    return arr.astype(np.float32)


def check_data(x: Any, name: str = "data", *, min_rows: int = 2) -> np.ndarray:
    """Validate a ``[n, d]`` (or batched ``[..., n, d]``) data array: numeric, finite, at least ``min_rows`` rows."""
    arr = check_finite(x, name)
    if arr.ndim < 2:
        raise ValueError(f"{name} must have shape [n, d], got shape {arr.shape}")
    if arr.shape[-2] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {arr.shape[-2]}")
    out = arr.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} holds values beyond float32's range (|x| > 3.4e38): rescale them")
    return out
