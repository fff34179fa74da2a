"""Fixed-point solvers: observational generation, hard interventions, abduction and counterfactuals (SPEC.md §6.8).

A *mechanism* is a callable ``T: z [..., n, N] -> [..., n, N]`` returning the noiseless mechanism values F(z) (the
learned decoder closed over its conditioning, see :func:`cfip_jax.nn.decoder.decoder_mechanism`, or a true SCM's
mechanism). Under an additive-noise model the sample x with noise ε is the fixed point of z ↦ T(z) + ε; starting
from z = ε, iterating reaches it exactly for any T whose output node i depends on z only through i's parents in a
DAG: a node whose longest path from a root has k edges is final after k + 1 steps.

Iteration count (``iterations``):
  - ``None`` (default, the reference's rule): d steps, d = the number of real nodes (the largest over the batch when
    ``node_mask`` is given and concrete, else N).
  - an ``int``: that many steps.
  - ``"depth"``: longest-path(G) + 1 steps (the largest over the batch), exact for a DAG and several times cheaper
    than d on sparse graphs. When ``adj`` is concrete, the depth is computed on the host and the scan has that static
    length (one compilation per distinct depth). When ``adj`` is a tracer (the solver called inside someone else's
    ``jit``), the scan runs the static bound (the default count) and each step past depth + 1 is skipped with
    ``lax.cond`` (it costs nothing when not vmapped; under ``vmap`` both branches run, so it is merely correct).

The loop is a ``jax.lax.scan`` (reverse-mode differentiable), compiled once per shapes and step count. Pass the
mechanism as a pytree (a ``jax.tree_util.Partial`` whose arrays are arguments) to reuse that compilation across
datasets; a plain function is treated as static, so each new closure compiles again.

Public entry points validate concrete inputs on the host (shapes, NaN/inf, the graph: square, matching, binary,
acyclic, no self-loop) and raise ``ValueError``; tracers are not checked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from cfip_jax import validation as V
from cfip_jax.scm import graphs

Mechanism = Callable[[jax.Array], jax.Array]


def _concrete(x: Any) -> bool:
    return x is not None and not isinstance(x, jax.core.Tracer)


def _as_pytree(mechanism: Mechanism) -> Any:
    """A pytree form of ``mechanism`` to pass through ``jit``: kept if it already is one with array leaves."""
    if not callable(mechanism):
        raise ValueError(f"mechanism must be callable, got {type(mechanism).__name__}")
    leaves = jax.tree.leaves(mechanism)
    if leaves and all(isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, int)) for leaf in leaves):
        return mechanism
    return Partial(mechanism)


def _host_node_levels(adj: np.ndarray) -> np.ndarray:
    """``[..., N]`` int64: the number of edges on the longest directed path ending at each node (NumPy)."""
    edges = np.asarray(adj) != 0
    level = np.zeros(edges.shape[:-1], dtype=np.int64)  # [..., N]
    for _ in range(edges.shape[-1]):
        new = np.max(np.where(edges, level[..., :, None] + 1, 0), axis=-2)
        if np.array_equal(new, level):
            break
        level = new
    return level


def host_longest_path(adj: np.ndarray) -> np.ndarray:
    """Number of edges on the longest directed path of each DAG, computed on the host with NumPy.

    The host twin of :func:`cfip_jax.scm.graphs.longest_path` (no compilation, a plain int for the static scan length).

    Args:
      adj: ``[..., N, N]``, ``adj[i, j] != 0`` ⇔ edge i → j (acyclic).

    Returns:
      ``[...]`` int64 (0 for a graph without edges).
    """
    return _host_node_levels(adj).max(axis=-1, initial=0)


@functools.partial(jax.jit, static_argnames=("steps",))
def _solve(
    mechanism: Any,
    noise: jax.Array,
    clamp: jax.Array | None,
    values: jax.Array | None,
    depth: jax.Array | None,
    *,
    steps: int,
) -> jax.Array:
    """z ← ε (clamped); ``steps`` × z ← clamp(T(z) + ε), skipping steps ≥ ``depth`` (+1 included) when given."""

    def fix(z: jax.Array) -> jax.Array:
        return z if clamp is None else jnp.where(clamp, values, z)

    def update(z: jax.Array) -> jax.Array:
        return fix(mechanism(z).astype(z.dtype) + noise)

    def body(z: jax.Array, t: jax.Array) -> tuple[jax.Array, None]:
        if depth is None:
            return update(z), None
        return jax.lax.cond(t < depth, update, lambda z: z, z), None

    z, _ = jax.lax.scan(body, fix(noise), jnp.arange(steps))
    return z


def _check_adj(adj: Any, num_nodes: int) -> Any:
    if not _concrete(adj):
        return adj
    arr = V.check_finite(adj, "adj")
    if arr.ndim < 2 or arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"adj must be a square [..., N, N] matrix, got shape {arr.shape}")
    for graph in arr.reshape((-1,) + arr.shape[-2:]):
        V.check_dag(graph, "adj", d=num_nodes)
    return jnp.asarray(arr, jnp.float32)


def _check_node_mask(node_mask: Any, num_nodes: int) -> Any:
    if not _concrete(node_mask):
        return node_mask
    arr = np.asarray(node_mask)
    if arr.ndim < 1 or arr.shape[-1] != num_nodes:
        raise ValueError(f"node_mask must have shape [..., {num_nodes}], got {arr.shape}")
    if arr.dtype != np.bool_ and not np.all((arr == 0) | (arr == 1)):
        raise ValueError("node_mask must be boolean (0/1 entries)")
    return jnp.asarray(arr, bool)


def _steps(noise: Any, adj: Any, node_mask: Any, iterations: Any) -> tuple[int, Any]:
    """Static scan length and optional traced depth bound."""
    default = noise.shape[-1]
    if _concrete(node_mask):
        default = int(np.asarray(node_mask).sum(axis=-1).max(initial=0))
    if iterations is None:
        return default, None
    if isinstance(iterations, str):
        V.check_choice(iterations, ("depth",), "iterations")
        if adj is None:
            raise ValueError('iterations="depth" needs the graph adj')
        if _concrete(adj):
            return int(host_longest_path(np.asarray(adj)).max(initial=0)) + 1, None
        return default, jnp.max(graphs.longest_path(adj)) + 1
    return V.check_int(iterations, "iterations", minimum=0), None


def _check_noise(x: Any, name: str) -> Any:
    if _concrete(x):
        x = jnp.asarray(V.check_finite(x, name), jnp.float32)
    if jnp.ndim(x) < 2:
        raise ValueError(f"{name} must have shape [..., n, N], got shape {jnp.shape(x)}")
    return x


def _check_intervention(intervened: Any, values: Any, num_nodes: int) -> tuple[Any, Any]:
    for arg, name in ((intervened, "intervened"), (values, "values")):
        if jnp.ndim(arg) < 1 or jnp.shape(arg)[-1] != num_nodes:
            raise ValueError(f"{name} must have shape [..., {num_nodes}], got {jnp.shape(arg)}")
    if _concrete(intervened):
        arr = V.check_finite(intervened, "intervened")
        if arr.dtype != np.bool_ and not np.all((arr == 0) | (arr == 1)):
            raise ValueError("intervened must be boolean (0/1 entries)")
        intervened = jnp.asarray(arr, bool)
    if _concrete(values):
        values = jnp.asarray(V.check_finite(values, "values"), jnp.float32)
    return jnp.asarray(intervened, bool)[..., None, :], jnp.asarray(values, jnp.float32)[..., None, :]


def generate(
    mechanism: Mechanism,
    noise: jax.Array,
    *,
    adj: jax.Array | None = None,
    node_mask: jax.Array | None = None,
    iterations: int | str | None = None,
) -> jax.Array:
    """Observational samples: the fixed point of z ↦ T(z) + ε.

    Args:
      mechanism: ``T: [..., n, N] -> [..., n, N]``.
      noise: ``[..., n, N]`` ε (0 on padded nodes).
      adj: ``[..., N, N]`` graph (``adj[i, j] = 1`` ⇔ i → j); needed for ``iterations="depth"``, validated if given.
      node_mask: ``[..., N]`` bool (True = real node); sets the default iteration count.
      iterations: ``None`` (d steps), an int, or ``"depth"`` (longest path + 1); see the module docstring.

    Returns:
      ``[..., n, N]`` float32 samples x.
    """
    noise = _check_noise(noise, "noise")
    adj = _check_adj(adj, noise.shape[-1])
    node_mask = _check_node_mask(node_mask, noise.shape[-1])
    steps, depth = _steps(noise, adj, node_mask, iterations)
    return _solve(_as_pytree(mechanism), noise, None, None, depth, steps=steps)


def intervene(
    mechanism: Mechanism,
    noise: jax.Array,
    intervened: jax.Array,
    values: jax.Array,
    *,
    adj: jax.Array | None = None,
    node_mask: jax.Array | None = None,
    iterations: int | str | None = None,
) -> jax.Array:
    """Samples under the hard intervention do(X_I = a): intervened nodes are clamped after every step.

    The graph is not changed: the intervened nodes' mechanism outputs are overwritten, which cuts their incoming
    edges.

    Args:
      mechanism: ``T: [..., n, N] -> [..., n, N]``.
      noise: ``[..., n, N]`` ε.
      intervened: ``[N]`` or ``[..., N]`` bool, the nodes I.
      values: ``[N]`` or ``[..., N]`` the values a (read where ``intervened``).
      adj, node_mask, iterations: as :func:`generate`.

    Returns:
      ``[..., n, N]`` float32 interventional samples.
    """
    noise = _check_noise(noise, "noise")
    adj = _check_adj(adj, noise.shape[-1])
    node_mask = _check_node_mask(node_mask, noise.shape[-1])
    clamp, vals = _check_intervention(intervened, values, noise.shape[-1])
    steps, depth = _steps(noise, adj, node_mask, iterations)
    return _solve(_as_pytree(mechanism), noise, clamp, vals, depth, steps=steps)


STEP_COST_IN_NODES = 1.0
"""What one step of :func:`solve_by_level` costs beyond its nodes, in nodes' worth: the decoder recomputes every
node's keys and values once per step (measured with the shipped model at d = 20 and 400 rows: a step of K nodes takes
about (K + 0.9) times one node's time)."""


def _list_schedule(
    children: list[list[int]], parents_left: list[int], height: list[int], width: int
) -> list[list[int]]:
    """Steps of at most ``width`` nodes, each node after its parents: greedy, the longest path to a sink first."""
    left = list(parents_left)
    ready = sorted((i for i, k in enumerate(left) if k == 0), key=lambda i: (-height[i], i))
    steps = []
    while ready:
        step, ready = ready[:width], ready[width:]
        steps.append(step)
        for i in step:
            for j in children[i]:
                left[j] -= 1
                if left[j] == 0:
                    ready.append(j)
        ready.sort(key=lambda i: (-height[i], i))
    return steps


def host_schedule(adj: np.ndarray, keep: np.ndarray | None = None, bucket: bool = False):
    """The order in which :func:`solve_by_level` sets the nodes, computed on the host.

    Parentless nodes come first and apart (their mechanism value is a constant of the SCM: one row computes it).
    The others are set in steps of equal width K, each node in a step after all its parents: the width and the steps
    minimise the steps' cost ``S · (K + STEP_COST_IN_NODES)`` (greedy list scheduling, the longest remaining path
    first, for each width up to the widest topological level). Padding a level table to its widest level instead
    costs up to the number of levels times that width: a scale-free graph with many roots and a long tail, or a
    wide level beside narrow ones, pays several times the nodes it has.

    Args:
      adj: ``[N, N]`` acyclic, ``adj[i, j] != 0`` ⇔ edge i → j.
      keep: optional ``[N]`` bool: schedule only these nodes (the others are never set: their values are final).
      bucket: pad the steps to a power of two in both dimensions (a row's first node repeated, the last row
        repeated), so that graphs of many shapes share a few compiled solvers. Exact: a node set again after its
        parents are final gets the same value.

    Returns:
      ``(roots [K₀] int32 or None, steps [S, K] int32)``; ``steps`` is ``[0, 1]`` when only roots are left.
    """
    edges = np.asarray(adj) != 0
    keep = np.ones(edges.shape[-1], bool) if keep is None else np.asarray(keep, bool)
    parentless = keep & ~edges.any(axis=0)
    roots = np.flatnonzero(parentless).astype(np.int32)
    rest = np.flatnonzero(keep & ~parentless)
    if not len(rest):
        return (roots if len(roots) else None), np.zeros((0, 1), np.int32)
    sub = edges[np.ix_(rest, rest)]  # the constraints between nodes still to set
    children = [np.flatnonzero(row).tolist() for row in sub]
    height = (_host_node_levels(sub.T) if sub.any() else np.zeros(len(rest), np.int64)).tolist()
    parents_left = sub.sum(axis=0).tolist()
    widest = int(np.bincount(_host_node_levels(sub)).max())  # more is never needed: each level fits in one step
    widths = [1 << k for k in range((widest - 1).bit_length() + 1)] if bucket else range(1, widest + 1)
    best = None
    for width in widths:
        steps = _list_schedule(children, parents_left, height, width)
        count = 1 << (len(steps) - 1).bit_length() if bucket else len(steps)
        cost = (count * (width + STEP_COST_IN_NODES), count)  # a tie goes to fewer steps
        if best is None or cost < best[0]:
            best = (cost, steps, width, count)
    _, steps, width, count = best
    steps = steps + [steps[-1]] * (count - len(steps))
    table = np.stack([np.concatenate([rest[s], np.full(width - len(s), rest[s[0]])]) for s in steps])
    return (roots if len(roots) else None), table.astype(np.int32)


def host_reachable(adj: np.ndarray, start: np.ndarray) -> np.ndarray:
    """``[N]`` bool: the nodes in ``start`` (``[N]`` bool) and every node reachable from them along the edges of
    ``adj [N, N]`` (``adj[i, j] != 0`` ⇔ i → j): their descendants; pass ``adj.T`` for their ancestors (NumPy)."""
    edges = np.asarray(adj) != 0
    reached = np.asarray(start, bool).copy()
    frontier = reached.copy()
    while frontier.any():
        frontier = edges[frontier].any(0) & ~reached
        reached |= frontier
    return reached


def host_ancestral_set(adj: np.ndarray, targets: Any, cut: np.ndarray | None = None) -> np.ndarray:
    """``[N]`` bool: the ``targets`` and every node with a directed path to one of them (NumPy).

    ``cut`` (``[N]`` bool, optional): nodes whose incoming edges are removed first (hard-intervened nodes: their
    ancestors do not reach the targets through them).
    """
    edges = np.asarray(adj) != 0
    if cut is not None:
        edges = edges & ~np.asarray(cut, bool)[None, :]
    start = np.zeros(edges.shape[-1], bool)
    start[np.asarray(targets, np.int64).reshape(-1)] = True
    return host_reachable(edges.T, start)


@jax.jit
def _solve_levels(mechanism_at: Any, noise: jax.Array, clamp: Any, values: Any, roots: Any, levels: jax.Array):
    """``roots [K₀]`` (or None): parentless nodes, whose mechanism value does not depend on z (one row computes it
    for all); ``levels [S, K]``: the other nodes' steps (:func:`host_schedule`; S may be 0)."""

    def fix(z: jax.Array) -> jax.Array:
        return z if clamp is None else jnp.where(clamp, values, z)

    def body(z: jax.Array, nodes: jax.Array) -> tuple[jax.Array, None]:
        new = fix(z.at[..., nodes].set(mechanism_at(z, nodes).astype(z.dtype) + noise[..., nodes]))
        return new, None

    z = fix(noise)
    if roots is not None:
        z = fix(z.at[..., roots].set(mechanism_at(z[..., :1, :], roots).astype(z.dtype) + noise[..., roots]))
    z, _ = jax.lax.scan(body, z, levels)
    return z


def host_unaffected(adj: np.ndarray, *intervened: Any) -> np.ndarray:
    """``[N]`` bool: the nodes no hard intervention reaches — neither a node set (in any row) by one of the
    ``intervened`` masks (each None, ``[N]`` or ``[..., N]`` bool) nor a descendant of one (NumPy). Their values are
    the same under all these interventions for the same noise, so one solve serves them all (an effect's two arms)."""
    num_nodes = np.asarray(adj).shape[-1]
    moved = np.zeros(num_nodes, bool)
    for mask in intervened:
        if mask is not None:
            moved |= np.asarray(mask, bool).reshape(-1, num_nodes).any(axis=0)
    return ~host_reachable(np.asarray(adj), moved)


def _kept_nodes(adj: np.ndarray, targets: Any, clamp: Any, known: np.ndarray | None) -> np.ndarray | None:
    """The nodes :func:`solve_by_level` solves: the targets' ancestral set (not through a node clamped in every
    row), less the ``known`` ones; None: all nodes."""
    num_nodes = adj.shape[-1]
    keep = None if known is None else ~known
    if targets is None:
        return keep
    idx = np.asarray(targets).reshape(-1)
    if idx.size == 0 or idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= num_nodes:
        raise ValueError(f"targets must be node indices in [0, {num_nodes}), got {targets!r}")
    cut = None if not _concrete(clamp) else np.asarray(clamp).reshape(-1, num_nodes).all(axis=0)
    ancestral = host_ancestral_set(adj, idx, cut)
    return ancestral if keep is None else ancestral & keep


def _check_known(known: Any, noise: jax.Array) -> tuple[np.ndarray, jax.Array] | tuple[None, None]:
    if known is None:
        return None, None
    values, nodes = known
    nodes = np.asarray(nodes)
    if nodes.dtype != bool or nodes.shape != (noise.shape[-1],):
        raise ValueError(f"known's node mask must be [{noise.shape[-1]}] bool, got {nodes.dtype} {nodes.shape}")
    values = _check_noise(values, "known values")
    if values.shape != noise.shape:
        raise ValueError(f"known values must have the noise's shape {noise.shape}, got {values.shape}")
    return nodes, values


def solve_by_level(
    mechanism_at: Callable[[jax.Array, jax.Array], jax.Array],
    noise: jax.Array,
    adj: np.ndarray,
    intervened: jax.Array | None = None,
    values: jax.Array | None = None,
    *,
    targets: Any = None,
    known: tuple[jax.Array, np.ndarray] | None = None,
    bucket: bool = False,
) -> jax.Array:
    """The fixed point computed a few nodes at a time, each after its parents: the same samples as :func:`generate` /
    :func:`intervene` with ``iterations="depth"``, evaluating each node's mechanism once instead of depth + 1 times.

    Each step sets its nodes to ``T(z)_i + ε_i`` (clamped where intervened); their parents were set in earlier
    steps, hence are already final. The steps are :func:`host_schedule`'s: equal widths chosen so that little is
    padded. Parentless nodes come first: their ``T`` is a constant of the SCM, computed on one row (``mechanism_at``
    must honour the DAG: output node i depends on z only through i's parents). Needs a concrete graph (the schedule
    is computed on the host).

    Args:
      mechanism_at: ``(z [..., n, N], nodes [K] int) -> T(z)[..., nodes]`` (e.g.
        :func:`cfip_jax.nn.decoder.decoder_node_mechanism`); a pytree to reuse compilations.
      noise: ``[..., n, N]`` ε.
      adj: ``[N, N]`` concrete DAG.
      intervened, values: optional hard intervention, as :func:`intervene`.
      targets: optional node indices: solve only what they depend on — the targets and their ancestors (not through
        a node intervened on in every row, when ``intervened`` is concrete). Their values are exact; the other
        nodes' entries are left unsolved (their noise, or their clamp). An effect on one outcome needs only these.
      known: optional ``(z [..., n, N], nodes [N] bool)``: these nodes' values are already solved, under this noise
        and intervention (e.g. by another intervention's solve, for the nodes :func:`host_unaffected` lists); they
        are taken from ``z`` instead of computed again.
      bucket: pad the steps to powers of two (:func:`host_schedule`): the same result, up to ~2× the work per
        dimension, and one compiled solver for many graphs — for processes that solve many graphs (evaluation).

    Returns:
      ``[..., n, N]`` float32.
    """
    noise = _check_noise(noise, "noise")
    if not _concrete(adj):
        raise ValueError("solve_by_level needs a concrete graph; use generate(..., iterations='depth') under jit")
    adj = _check_adj(adj, noise.shape[-1])
    if jnp.ndim(adj) != 2:
        raise ValueError(f"solve_by_level takes one [N, N] graph, got shape {jnp.shape(adj)}")
    clamp = vals = None
    if intervened is not None:
        clamp, vals = _check_intervention(intervened, values, noise.shape[-1])
    known_nodes, known_values = _check_known(known, noise)
    keep = _kept_nodes(np.asarray(adj), targets, clamp, known_nodes)
    if known_nodes is not None:  # a known node is never set, so its entry stays what the start holds
        noise = jnp.where(jnp.asarray(known_nodes), known_values, noise)
    if keep is not None and not keep.any():  # nothing left to solve
        return noise if clamp is None else jnp.where(clamp, vals, noise)
    roots, steps = host_schedule(np.asarray(adj), keep, bucket)
    roots = None if roots is None else jnp.asarray(roots)
    return _solve_levels(_as_pytree(mechanism_at), noise, clamp, vals, roots, jnp.asarray(steps))


@jax.jit
def _abduct(mechanism: Any, x: jax.Array) -> jax.Array:
    return x - mechanism(x).astype(x.dtype)


def abduct(mechanism: Mechanism, x: jax.Array) -> jax.Array:
    """Noise of observed samples under an additive-noise model: ε̂ = x − T(x).

    Args:
      mechanism: ``T: [..., n, N] -> [..., n, N]``.
      x: ``[..., n, N]`` samples.

    Returns:
      ``[..., n, N]`` float32.
    """
    return _abduct(_as_pytree(mechanism), _check_noise(x, "x"))


def counterfactual(
    mechanism: Mechanism,
    x: jax.Array,
    intervened: jax.Array,
    values: jax.Array,
    *,
    adj: jax.Array | None = None,
    node_mask: jax.Array | None = None,
    iterations: int | str | None = None,
) -> jax.Array:
    """Counterfactuals of factual samples ``x`` under do(X_I = a): abduct ε̂ = x − T(x), then :func:`intervene`.

    Args:
      mechanism: ``T: [..., n, N] -> [..., n, N]``.
      x: ``[..., n, N]`` factual samples.
      intervened, values, adj, node_mask, iterations: as :func:`intervene`.

    Returns:
      ``[..., n, N]`` float32 counterfactual samples.
    """
    noise = abduct(mechanism, x)
    return intervene(mechanism, noise, intervened, values, adj=adj, node_mask=node_mask, iterations=iterations)
