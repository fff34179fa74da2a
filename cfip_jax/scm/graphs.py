"""Random DAG priors (SPEC.md §1) in pure JAX, plus jit-friendly graph statistics.

Adjacency convention: ``adj[..., i, j] = 1`` ⇔ edge ``i -> j`` (row = parent, column = child). Real nodes occupy
indices ``0..d-1``; padded nodes ``d..N-1`` (``N = max_nodes``) have no edges.

Every family builds an acyclic graph by construction (a triangular matrix, or new → old edges for Barabási–Albert)
and then relabels the real nodes with one uniform random permutation applied to rows and columns together, as the
reference does. Hyper-parameters given as tuples in :class:`~cfip_jax.scm.priors.GraphPrior` are drawn uniformly
and independently for every graph, inside the traced function, so a vmapped batch mixes them.

Only the law of the reference's samplers is reproduced, not its random streams (numpy / igraph cannot be matched).
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from cfip_jax import validation as V
from cfip_jax.scm.priors import GraphPrior

# ---------------------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------------------


def _pick(key: jax.Array, options: tuple) -> jax.Array:
    """One entry of a static choice list, drawn uniformly (scalar float32)."""
    values = jnp.asarray(options, dtype=jnp.float32)
    if len(options) == 1:
        return values[0]
    return values[jax.random.randint(key, (), 0, len(options))]


# Random arrays are drawn flat and reshaped: the same i.i.d. law, but with partitionable threefry an N-d draw builds one
# counter per dimension and compiles several times slower under vmap.


def _uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.uniform(key, (math.prod(shape),)).reshape(shape)


def _gumbel(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.gumbel(key, (math.prod(shape),)).reshape(shape)


def _bernoulli(key: jax.Array, p: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return _uniform(key, shape) < p


def _permute(key: jax.Array, adj: jax.Array) -> jax.Array:
    """Relabel the nodes of ``adj [d, d]`` by one uniform permutation π: ``adj'[a, b] = adj[π[a], π[b]]``."""
    perm = jax.random.permutation(key, adj.shape[0])
    return adj[perm][:, perm]


def _strict_upper(d: int) -> jax.Array:
    return jnp.triu(jnp.ones((d, d), dtype=bool), k=1)


# ---------------------------------------------------------------------------------------------------------------------
# Families. Each returns an acyclic boolean [d, d] matrix BEFORE the final relabelling.
# ---------------------------------------------------------------------------------------------------------------------


def _er(key: jax.Array, prior: GraphPrior, d: int) -> jax.Array:
    """Erdős–Rényi: p = min(2k/(d−1), 0.99) i.i.d. on the strictly lower triangle (SPEC.md §1.1)."""
    k_key, b_key = jax.random.split(key)
    k = _pick(k_key, prior.edges_per_node)
    p = jnp.minimum(2.0 * k / (d - 1), 0.99)
    return _bernoulli(b_key, p, (d, d)) & _strict_upper(d).T


def _barabasi(key: jax.Array, prior: GraphPrior, d: int) -> jax.Array:
    """Barabási–Albert without multi-edges (igraph "psumtree", zero appeal 1, in-degree attachment; SPEC.md §1.2).

    Vertex t = 1..d−1 draws min(m, t) distinct earlier vertices, sequentially without replacement with probability
    ∝ in_degree^γ + 1, and becomes their parent (``adj[t, old] = 1``). Sequential weighted sampling without
    replacement has the law of the top-k of Gumbel-perturbed log-weights, which is what each scan step computes.
    """
    m_key, g_key, n_key = jax.random.split(key, 3)
    m = _pick(m_key, prior.edges_per_node)
    gamma = _pick(g_key, prior.power)
    m_max = max(prior.edges_per_node)  # static, < d (GraphPrior.check_nodes)
    gumbel = _gumbel(n_key, (d, d))
    nodes = jnp.arange(d)

    def add_vertex(in_deg, inputs):
        t, noise = inputs
        log_w = jnp.log(jnp.power(in_deg, gamma) + 1.0)
        score = jnp.where(nodes < t, log_w + noise, -jnp.inf)
        _, chosen = jax.lax.top_k(score, m_max)
        take = (jnp.arange(m_max) < jnp.minimum(m, t)).astype(jnp.float32)
        row = jnp.zeros(d, jnp.float32).at[chosen].add(take)
        return in_deg + row, row

    _, rows = jax.lax.scan(add_vertex, jnp.zeros(d, jnp.float32), (nodes[1:], gumbel[1:]))
    return jnp.concatenate([jnp.zeros((1, d), jnp.float32), rows]) > 0


def _sf_in(key: jax.Array, prior: GraphPrior, d: int) -> jax.Array:
    """Scale-free with power-law in-degree: new vertices are parents of old hubs."""
    return _barabasi(key, prior, d)


def _sf_out(key: jax.Array, prior: GraphPrior, d: int) -> jax.Array:
    """Scale-free with power-law out-degree: the transpose of :func:`_sf_in` (hubs have many children)."""
    return _barabasi(key, prior, d).T


def _sbm(key: jax.Array, prior: GraphPrior, d: int) -> jax.Array:
    """Stochastic block model DAG (SPEC.md §1.3), with the number of blocks capped at d + 1.

    K − 1 distinct split points are drawn from {0, …, d−1} and cut a random node order into K blocks (empty blocks
    allowed). The reference raises when K − 1 > d; here K is capped at d + 1 instead (d split points), which only
    matters for d < max(num_blocks) − 1. Edge probability p = min(0.99, k·d / E) inside blocks and δ·p across, with
    E = Σ_a s_a(s_a−1)/2 + δ Σ_{a<b} s_a s_b; strict upper triangle.
    """
    k_key, nb_key, dm_key, split_key, order_key, intra_key, inter_key = jax.random.split(key, 7)
    k = _pick(k_key, prior.edges_per_node)
    num_blocks = jnp.minimum(_pick(nb_key, prior.num_blocks), d + 1)
    damping = _pick(dm_key, prior.damping)
    num_splits = min(max(prior.num_blocks), d + 1) - 1  # static bound on K − 1
    splits = jax.random.permutation(split_key, d)[:num_splits]  # distinct points of {0..d-1}
    valid = jnp.arange(num_splits) < num_blocks - 1
    # Block of position i in the random order = number of (valid) split points ≤ i.
    block_of_position = jnp.sum(valid[None, :] & (splits[None, :] <= jnp.arange(d)[:, None]), axis=1)
    block = block_of_position[jax.random.permutation(order_key, d)]
    same = block[:, None] == block[None, :]
    q = jnp.sum(same).astype(jnp.float32)  # Σ_a s_a²
    expected = 0.5 * (q - d) + 0.5 * damping * (d * d - q)
    p = jnp.minimum(0.99, k * d / expected)
    intra = _bernoulli(intra_key, p, (d, d))
    inter = _bernoulli(inter_key, damping * p, (d, d))
    return jnp.where(same, intra, inter) & _strict_upper(d)


def _lattice_edges(dim: int, size: int, nei: int) -> np.ndarray:
    """Edges ``[E, 2]`` (smaller endpoint first) of igraph's periodic square lattice, in igraph's edge order.

    Vertex index = Σ_j coord_j·size^j. For ``nei = 1`` the order is igraph's: for each vertex, for each dimension,
    the edge to its +1 neighbour (wrapping around; none for size 1, one edge only for size 2). For ``nei > 1`` the
    edges join vertices at torus L1 distance 1..nei, in lexicographic order.
    """
    num = size**dim
    coords = np.stack(np.unravel_index(np.arange(num), (size,) * dim, order="F"), axis=1)  # [V, dim]
    if nei == 1:
        edges = []
        for i in range(num):
            for j in range(dim):
                if size == 1 or (size == 2 and coords[i, j] == 1):
                    continue
                c = coords[i].copy()
                c[j] = (c[j] + 1) % size
                other = int(np.ravel_multi_index(tuple(c), (size,) * dim, order="F"))
                edges.append((min(i, other), max(i, other)))
        return np.asarray(edges, dtype=np.int32).reshape(-1, 2)
    delta = np.abs(coords[:, None, :] - coords[None, :, :])
    dist = np.minimum(delta, size - delta).sum(-1)
    a, b = np.nonzero(np.triu((dist >= 1) & (dist <= nei), k=1))
    return np.stack([a, b], axis=1).astype(np.int32)


def _bucket_order(keys: jax.Array) -> jax.Array:
    """Order of igraph's bucket sort by ``keys [E]``: ascending key, ties by descending edge index."""
    num = keys.shape[0]
    return jnp.argsort(keys * num + (num - 1 - jnp.arange(num)))


def _ws_lattice(d: int, dim: int, nei: int) -> np.ndarray:
    """Edges of the periodic lattice with size = ⌈d^(1/L)⌉ per side (the reference's float formula), or of size^L."""
    size = math.ceil(d ** (1.0 / dim))
    while size**dim < d:  # guard against floating-point rounding; never taken for the reference's sizes
        size += 1
    return size**dim, _lattice_edges(dim, size, nei)


def _ws(key: jax.Array, prior: GraphPrior, d: int) -> jax.Array:
    """Watts–Strogatz DAG (SPEC.md §1.4); lattice dimension L, neighbourhood and rewiring probability p are drawn
    uniformly per graph.

    Reproduces igraph's rewiring without loops or multi-edges: pass I visits the edges in order of their smaller
    endpoint (igraph's bucket order: ties by descending edge id) and, with probability p each, moves the other
    endpoint; pass II visits them in order of their (current) second endpoint and moves the first. A moved endpoint
    goes to a vertex drawn uniformly among the vertices that are neither the fixed endpoint nor adjacent to it, or
    stays where it is (igraph's rejection loop also accepts the old endpoint). Then size^L − d uniformly chosen
    vertices are deleted, and the strict upper triangle of the remaining vertices (order preserved) is kept.

    All (L, neighbourhood) choices share one traced program: their lattices are padded to the largest vertex and edge
    counts, padded edges are never rewired and padded vertices never chosen.
    """
    combo_key, p_key, flag_key, noise_key, keep_key = jax.random.split(key, 5)
    lattices = [_ws_lattice(d, dim, nei) for dim, nei in itertools.product(prior.lattice_dim, prior.neighbors)]
    num_max = max(num for num, _ in lattices)
    edges_max = max(len(e) for _, e in lattices)
    edges_np = np.zeros((len(lattices), edges_max, 2), np.int32)
    valid_np = np.zeros((len(lattices), edges_max), bool)
    adj_np = np.zeros((len(lattices), num_max, num_max), bool)
    for c, (_, e) in enumerate(lattices):
        edges_np[c, : len(e)], valid_np[c, : len(e)] = e, True
        adj_np[c, e[:, 0], e[:, 1]] = adj_np[c, e[:, 1], e[:, 0]] = True
    c = 0 if len(lattices) == 1 else jax.random.randint(combo_key, (), 0, len(lattices))
    num = jnp.asarray([n for n, _ in lattices])[c]
    valid = jnp.asarray(valid_np)[c]
    p = _pick(p_key, prior.rewire_prob)
    flags = _bernoulli(flag_key, p, (2, edges_max)) & valid[None, :]
    noise = _gumbel(noise_key, (2, edges_max, num_max))
    verts = jnp.arange(num_max)

    def rewire_pass(carry, inputs):
        moving, pass_flags, pass_noise = inputs
        fixed = 1 - moving
        adj, ends = carry
        order = _bucket_order(jnp.where(valid, ends[:, fixed], num_max))

        def step(carry, inputs):
            adj, ends = carry
            e, flag, g = inputs
            other, v = ends[e, fixed], ends[e, moving]
            allowed = (~adj[other] & (verts != other) & (verts < num)) | (verts == v)
            pot = jnp.argmax(jnp.where(allowed, g, -jnp.inf))
            moved = flag & (pot != v)
            is_other, is_v, is_pot = verts == other, verts == v, verts == pot
            old_edge = (is_other[:, None] & is_v[None, :]) | (is_v[:, None] & is_other[None, :])
            new_edge = (is_other[:, None] & is_pot[None, :]) | (is_pot[:, None] & is_other[None, :])
            adj = jnp.where(moved, (adj & ~old_edge) | new_edge, adj)
            return (adj, ends.at[e, moving].set(jnp.where(moved, pot, v))), None

        carry, _ = jax.lax.scan(step, (adj, ends), (order, pass_flags, pass_noise))
        return carry, None

    init = (jnp.asarray(adj_np)[c], jnp.asarray(edges_np)[c])
    (adj, _), _ = jax.lax.scan(rewire_pass, init, (jnp.array([1, 0]), flags, noise))
    keep_score = jnp.where(verts < num, jax.random.gumbel(keep_key, (num_max,)), -jnp.inf)
    kept = jnp.sort(jax.lax.top_k(keep_score, d)[1])  # d distinct vertices, uniformly, order preserved
    return adj[kept][:, kept] & _strict_upper(d)


def _grg(key: jax.Array, prior: GraphPrior, d: int) -> jax.Array:
    """Geometric random graph: d uniform points in the unit square, an edge when their distance is < r, oriented
    from smaller to larger x-coordinate (SPEC.md §1.5)."""
    r_key, xy_key = jax.random.split(key)
    radius = _pick(r_key, prior.radius)
    xy = _uniform(xy_key, (d, 2))
    xy = xy[jnp.argsort(xy[:, 0])]
    dist2 = jnp.sum((xy[:, None, :] - xy[None, :, :]) ** 2, axis=-1)
    return (dist2 < radius * radius) & _strict_upper(d)


_FAMILIES = {"er": _er, "sf_in": _sf_in, "sf_out": _sf_out, "sbm": _sbm, "ws": _ws, "grg": _grg}


# ---------------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sample_graph(key: jax.Array, prior: GraphPrior, d: int, max_nodes: int) -> jax.Array:
    build_key, perm_key = jax.random.split(key)
    adj = _permute(perm_key, _FAMILIES[prior.family](build_key, prior, d)).astype(jnp.float32)
    return jnp.pad(adj, ((0, max_nodes - d), (0, max_nodes - d)))


def sample_graph(key: jax.Array, prior: GraphPrior, d: int, max_nodes: int | None = None) -> jax.Array:
    """Sample one random DAG from ``prior`` (SPEC.md §1).

    Pure and jit-able with ``prior``, ``d`` and ``max_nodes`` static; vmap over ``key`` for a batch. Families:

    - ``er``: Erdős–Rényi with k ∈ ``edges_per_node`` expected edges per node, p = min(2k/(d−1), 0.99).
    - ``sf_in`` / ``sf_out``: Barabási–Albert (m ∈ ``edges_per_node``, γ ∈ ``power``) with power-law in-degree
      (new vertices are parents of hubs) or its transpose (power-law out-degree).
    - ``sbm``: stochastic block model with K ∈ ``num_blocks`` blocks and damping δ. **Deviation:** the reference
      raises when K − 1 > d; here K is capped at d + 1.
    - ``ws``: Watts–Strogatz on a periodic lattice of size^L vertices (size = ⌈d^(1/L)⌉), igraph's rewiring law
      without loops or multi-edges, size^L − d random vertices deleted, strict upper triangle.
    - ``grg``: geometric random graph in the unit square, edges from smaller to larger x.

    In every family the d real nodes are finally relabelled by one uniform random permutation.

    Args:
      key: PRNG key.
      prior: graph family and hyper-parameter choice lists.
      d: number of real nodes (≥ 2).
      max_nodes: padded size N ≥ d; defaults to d.

    Returns:
      ``[N, N]`` float32 0/1 adjacency, ``adj[i, j] = 1`` ⇔ ``i -> j``; acyclic, zero diagonal, zero padded
      rows/columns.

    Raises:
      ValueError: ``d`` invalid for the family (d < 2, edges per node ≥ d) or ``max_nodes < d``.
    """
    if not isinstance(prior, GraphPrior):
        raise ValueError(f"prior must be a GraphPrior, got {type(prior).__name__}")
    d = prior.check_nodes(d)
    max_nodes = d if max_nodes is None else V.check_int(max_nodes, "max_nodes", minimum=d)
    return _sample_graph(key, prior, d, max_nodes)


def in_degree(adj: jax.Array) -> jax.Array:
    """Number of parents of each node: ``[..., N, N] -> [..., N]`` (column sums)."""
    return jnp.sum(jnp.asarray(adj) != 0, axis=-2).astype(jnp.int32)


def out_degree(adj: jax.Array) -> jax.Array:
    """Number of children of each node: ``[..., N, N] -> [..., N]`` (row sums)."""
    return jnp.sum(jnp.asarray(adj) != 0, axis=-1).astype(jnp.int32)


def depth(adj: jax.Array) -> jax.Array:
    """Edges on the longest directed path ending at each node: ``[..., N, N] -> int32 [..., N]`` (0 for roots).

    N rounds of max-plus propagation; on a cyclic graph the values saturate at N instead of diverging.
    """
    a = (jnp.asarray(adj) != 0).astype(jnp.float32)
    n = a.shape[-1]

    def relax(_, h):
        # h_new[j] = max_i a[i, j] · (h[i] + 1)  (h ≥ 0, so non-parents contribute 0)
        return jnp.max(a * (h[..., :, None] + 1.0), axis=-2)

    return jax.lax.fori_loop(0, n, relax, jnp.zeros(a.shape[:-1], jnp.float32)).astype(jnp.int32)


def descendants(adj: jax.Array, node: jax.Array) -> jax.Array:
    """Which nodes a directed path from ``node`` reaches (``node`` itself excluded): ``[N, N], scalar -> bool [N]``.

    N rounds of one-step propagation (any DAG's paths have fewer than N edges).
    """
    a = jnp.asarray(adj) != 0
    start = jnp.arange(a.shape[-1]) == node

    def step(_, reached):
        return reached | jnp.any(a & (reached | start)[:, None], axis=0)

    return jax.lax.fori_loop(0, a.shape[-1], step, jnp.zeros_like(start))


def longest_path(adj: jax.Array) -> jax.Array:
    """Number of edges on the longest directed path: ``[..., N, N] -> int32 [...]`` (0 for an empty graph)."""
    return jnp.max(depth(adj), axis=-1)


def is_acyclic(adj: jax.Array) -> jax.Array:
    """Whether ``adj [..., N, N]`` is a DAG (bool ``[...]``): the adjacency is nilpotent, A^(2^⌈log2 N⌉) = 0.

    Boolean matrix squaring, ⌈log2 N⌉ matmuls; self-loops count as cycles.
    """
    a = (jnp.asarray(adj) != 0).astype(jnp.float32)
    n = a.shape[-1]
    for _ in range(max(1, math.ceil(math.log2(n)))):
        a = (jnp.matmul(a, a) > 0).astype(jnp.float32)
    return ~jnp.any(a > 0, axis=(-2, -1))


def graph_stats(adj: jax.Array, node_mask: jax.Array | None = None) -> dict[str, jax.Array]:
    """Summary statistics of ``adj [..., N, N]`` (jit-able).

    Args:
      adj: adjacency, ``adj[i, j] = 1`` ⇔ ``i -> j``.
      node_mask: ``[..., N]`` bool, True for real nodes; all nodes are real when omitted. Padded nodes are not
        counted as roots.

    Returns:
      dict of int32 ``[...]`` arrays: ``edges``, ``max_in_degree``, ``max_out_degree``, ``roots`` (real nodes
      with no parent) and ``longest_path`` (in edges).
    """
    adj = jnp.asarray(adj)
    indeg, outdeg = in_degree(adj), out_degree(adj)
    mask = jnp.ones(indeg.shape, bool) if node_mask is None else jnp.broadcast_to(node_mask, indeg.shape)
    return {
        "edges": jnp.sum(indeg, axis=-1),
        "max_in_degree": jnp.max(indeg, axis=-1),
        "max_out_degree": jnp.max(outdeg, axis=-1),
        "roots": jnp.sum(mask & (indeg == 0), axis=-1).astype(jnp.int32),
        "longest_path": longest_path(adj),
    }
