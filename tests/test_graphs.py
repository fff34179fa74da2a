"""Random DAG priors: statistics against the reference, structure, determinism, relabelling, bad input."""

from __future__ import annotations

import functools
import json
import math

import jax
import networkx as nx
import numpy as np
import pytest
import scipy.stats

from cfip_jax.scm import graphs
from cfip_jax.scm.graphs import graph_stats, in_degree, is_acyclic, longest_path, out_degree, sample_graph
from cfip_jax.scm.priors import GRAPH_FAMILIES, GraphPrior, scm_prior

NUM_GRAPHS = 500  # graphs per (family, d); one compiled vmap per (prior, d, max_nodes)
PADDED = {10: 12}  # d = 10 is sampled padded to 12 nodes, so the statistics also check that padding changes nothing
STATS = ("edges", "max_in_degree", "max_out_degree", "roots", "longest_path")


def _prior(family: str, setting: str = "in") -> GraphPrior:
    return scm_prior(family, "linear", "gaussian", setting).graph


def _samples(prior: GraphPrior, d: int, max_nodes: int | None = None, seed: int = 0) -> np.ndarray:
    """``[NUM_GRAPHS, N, N]`` graphs from one vmapped call (cached so tests share compilations)."""
    return _cached_samples(prior, d, PADDED.get(d, d) if max_nodes is None else max_nodes, seed)


@functools.cache
def _cached_samples(prior: GraphPrior, d: int, max_nodes: int, seed: int) -> np.ndarray:
    keys = jax.random.split(jax.random.key(seed), NUM_GRAPHS)
    return np.asarray(jax.jit(jax.vmap(lambda k: sample_graph(k, prior, d, max_nodes)))(keys))


def _row_id(case: tuple) -> str:
    return "-".join(map(str, case))


# (setting, family, d) rows of reference-graph-stats.json that are checked: every row at d = 10 and d = 20, and d = 50
# for a subset only, to keep the file fast.
_ROWS = [("in", f, d) for f in ("er", "sf_in", "sf_out") for d in (10, 20)]
_ROWS += [("out", f, d) for f in ("sf_out", "sbm", "ws") for d in (10, 20)]
_ROWS += [("in", "er", 50), ("in", "sf_in", 50), ("out", "sf_out", 50), ("out", "sbm", 50), ("out", "ws", 50)]


# ---------------------------------------------------------------------------------------------------------------------
# Statistics against the reference's samplers
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _ROWS, ids=_row_id)
def test_statistics_match_reference(shared_dir, case):
    """Mean edges / max in- and out-degree / roots / longest path agree with the reference's 200-graph means.

    Tolerance: 3 standard errors of the difference of the two means, plus 5 % of the reference mean. The slack
    covers the reference's own sampling luck (its sf_in and sf_out rows at d = 10 come from the same law, transposed,
    yet their longest paths differ by 2.1 standard errors; its SBM d = 10 edge mean 8.52 is 2 s.e. below the true 9.20
    of a direct simulation of the rule) and version details of igraph that cannot be checked here (the reference
    ran igraph 0.11.8).
    It stays far below the effect of a wrong family: e.g. Watts–Strogatz without rewiring has max in-degree 4.05
    instead of 5.13 at d = 20, and swapping sf_in / sf_out moves max in-degree by > 4.
    """
    setting, family, d = case
    reference = json.loads((shared_dir / "data" / "reference-graph-stats.json").read_text())
    (row,) = [r for r in reference["rows"] if (r["prior"], r["family"], r["d"]) == case]
    adj = _samples(_prior(family, setting), d)
    node_mask = np.arange(adj.shape[-1]) < d
    stats = {k: np.asarray(v, dtype=np.float64) for k, v in graph_stats(adj, node_mask).items()}
    n_ref = row["n_graphs"]
    failures = []
    for name in STATS:
        ours, ref = stats[name].mean(), row["mean"][name]
        se = math.sqrt(row["std"][name] ** 2 / n_ref + stats[name].std() ** 2 / NUM_GRAPHS)
        tol = 3.0 * se + 0.05 * abs(ref)
        if abs(ours - ref) > tol:
            failures.append(f"{name}: ours {ours:.3f} vs reference {ref:.3f} (tolerance {tol:.3f})")
    assert not failures, "; ".join(failures)


# ---------------------------------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------------------------------


def _family_prior(family: str) -> GraphPrior:
    """The prior of the reference rows: IN for er / sf / grg, OUT (identical to IN) for sbm / ws."""
    return _prior(family, "out" if family in ("sbm", "ws") else "in")


@pytest.mark.parametrize("d", [20, 10], ids=["d20", "d10-padded12"])
@pytest.mark.parametrize("family", GRAPH_FAMILIES)
def test_acyclic_binary_padded(family, d):
    """Every sample is a binary DAG with zero diagonal; padded rows/columns are empty."""
    adj = _samples(_family_prior(family), d)
    n = PADDED.get(d, d)
    assert adj.shape == (NUM_GRAPHS, n, n) and adj.dtype == np.float32
    assert np.all((adj == 0) | (adj == 1))
    assert not np.any(np.diagonal(adj, axis1=1, axis2=2))
    assert not np.any(adj[:, d:, :]) and not np.any(adj[:, :, d:])
    assert bool(np.all(is_acyclic(adj)))
    assert adj.sum() > 0  # not trivially acyclic


def test_acyclicity_and_longest_path_match_networkx():
    """``is_acyclic`` / ``longest_path`` / degrees agree with networkx, including on graphs with a cycle added."""
    adj = np.concatenate(
        [_samples(_prior(f), 20)[:15] for f in ("er", "sf_in")] + [_samples(_prior("ws", "out"), 20)[:15]]
    )
    lp = np.asarray(longest_path(adj))
    for a, got in zip(adj, lp, strict=True):
        assert got == nx.dag_longest_path_length(nx.from_numpy_array(a, create_using=nx.DiGraph))
    np.testing.assert_array_equal(in_degree(adj), adj.sum(1))
    np.testing.assert_array_equal(out_degree(adj), adj.sum(2))
    cyclic = adj.copy()
    for a in cyclic:  # close the longest path into a cycle
        path = nx.dag_longest_path(nx.from_numpy_array(a, create_using=nx.DiGraph))
        a[path[-1], path[0]] = 1
    assert not np.any(is_acyclic(cyclic))
    assert not bool(is_acyclic(np.eye(3, dtype=np.float32)))  # a self-loop is a cycle
    assert int(longest_path(np.zeros((4, 4), np.float32))) == 0


def test_graph_stats_ignore_padded_nodes():
    adj = np.zeros((5, 5), np.float32)
    adj[0, 1] = adj[1, 2] = adj[0, 2] = 1  # 0 -> 1 -> 2, 0 -> 2; nodes 3 (isolated, real) and 4 (padded)
    mask = np.array([True, True, True, True, False])
    s = {k: int(v) for k, v in graph_stats(adj, mask).items()}
    assert s == {"edges": 3, "max_in_degree": 2, "max_out_degree": 2, "roots": 2, "longest_path": 2}
    assert int(graph_stats(adj)["roots"]) == 3


# ---------------------------------------------------------------------------------------------------------------------
# Family-specific laws with closed forms
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prior",
    [GraphPrior("er", edges_per_node=(2,)), GraphPrior("sbm", edges_per_node=(2,), num_blocks=(1,))],
    ids=["er", "sbm-one-block"],
)
def test_expected_edges_closed_form(prior):
    """ER (and SBM with one block, which reduces to it) has k·d expected edges when p = 2k/(d−1) < 0.99."""
    d, k = 20, 2
    edges = _samples(prior, d).sum((1, 2))
    p = 2 * k / (d - 1)
    se = math.sqrt(d * (d - 1) / 2 * p * (1 - p) / NUM_GRAPHS)
    assert abs(edges.mean() - k * d) < 4 * se


def test_er_mixes_edges_per_node_choices():
    """k ∈ {1, 2, 3} is drawn per graph: mean k·d = 40 and the variance includes the spread of k (var ≫ binomial)."""
    edges = _samples(_prior("er"), 20).sum((1, 2))
    assert abs(edges.mean() - 40) < 4 * edges.std() / math.sqrt(NUM_GRAPHS)
    binomial_var = np.mean([190 * p * (1 - p) for p in (2 / 19, 4 / 19, 6 / 19)])
    assert edges.var() > 3 * binomial_var  # spread of k adds 190² · var(p) ≈ 267


def test_scale_free_orientation():
    """sf_in: new vertices add ≤ m edges to hubs (out-degree ≤ max m, heavy in-degree); sf_out is the transpose;
    OUT sf_out (m = 2) has exactly Σ_t min(2, t) = 2d − 3 edges and one root."""
    d = 20
    sf_in, sf_out, sf_out_out = (_samples(p, d) for p in (_prior("sf_in"), _prior("sf_out"), _prior("sf_out", "out")))
    assert sf_in.sum(2).max() <= 3 and sf_out.sum(1).max() <= 3
    assert sf_in.sum(1).max(1).mean() > 4 * sf_in.sum(2).max(1).mean()
    assert sf_out.sum(2).max(1).mean() > 4 * sf_out.sum(1).max(1).mean()
    assert np.all(sf_out_out.sum((1, 2)) == 2 * d - 3) and sf_out_out.sum(1).max() == 2
    assert np.all((sf_out.sum(1) == 0).sum(1) == 1)  # vertex 0 of the construction is the only root


def test_watts_strogatz_lattice_and_rewiring_keep_edge_count():
    """Without rewiring and with d = size^L the graph is the torus lattice (4-regular for 4×4; 3-regular 2×2×2
    cube, whose size-2 dimensions carry one edge only); rewiring moves endpoints but never adds or merges edges."""
    square = _samples(GraphPrior("ws", lattice_dim=(2,), rewire_prob=(0.0,)), 16)
    degree = square.sum(1) + square.sum(2)
    assert np.all(degree == 4)
    cube = _samples(GraphPrior("ws", lattice_dim=(3,), rewire_prob=(0.3,)), 8)
    assert np.all(cube.sum((1, 2)) == 12)
    rewired_degree = cube.sum(1) + cube.sum(2)
    assert np.any(rewired_degree != 3)  # some endpoints did move
    assert 0.2 < np.mean(rewired_degree != 3) < 0.9


def test_geometric_random_graph_edge_probability():
    """Edges ~ C(d, 2) · P(|X − Y| < r) with P = πr² − 8r³/3 + r⁴/2 for uniform points in the unit square."""
    d, r = 20, 0.1
    edges = _samples(_prior("grg"), d).sum((1, 2))
    expected = d * (d - 1) / 2 * (math.pi * r**2 - 8 * r**3 / 3 + r**4 / 2)
    assert abs(edges.mean() - expected) < 4 * edges.std() / math.sqrt(NUM_GRAPHS)


def test_sbm_caps_blocks_at_d_plus_one():
    """K = 10 blocks at d = 6 (the reference raises): K is capped at 7, i.e. all 6 split points, so every node is alone
    in its block: E = δ·C(6, 2) = 1.5, p = min(0.99, k·d/E) = 0.99 and each of the 15 pairs is an edge w.p. δ·p."""
    d, damping = 6, 0.1
    adj = _samples(GraphPrior("sbm", edges_per_node=(2,), num_blocks=(10,), damping=(damping,)), d, 9)
    assert bool(np.all(is_acyclic(adj))) and not np.any(adj[:, d:]) and not np.any(adj[:, :, d:])
    q = damping * 0.99
    edges = adj.sum((1, 2))
    assert abs(edges.mean() - 15 * q) < 4 * math.sqrt(15 * q * (1 - q) / NUM_GRAPHS)


# ---------------------------------------------------------------------------------------------------------------------
# Relabelling, determinism
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["er", "sf_in"])
def test_relabelling_is_exchangeable(family):
    """The final permutation makes every node alike: per-node mean in-degree equal up to sampling noise, and node 0's
    in-degree law equals node d−1's (without the permutation ER/sf_in in-degree grows/shrinks with the index)."""
    adj = _samples(_prior(family), 20)
    indeg = adj.sum(1)  # [G, d]
    se = indeg.std() / math.sqrt(NUM_GRAPHS)
    assert np.max(np.abs(indeg.mean(0) - indeg.mean())) < 4.5 * se
    assert scipy.stats.ks_2samp(indeg[:, 0], indeg[:, -1]).pvalue > 1e-3


@pytest.mark.parametrize("family", GRAPH_FAMILIES)
def test_same_key_same_graph_different_keys_differ(family):
    prior = _family_prior(family)
    key = jax.random.key(7)
    a, b = sample_graph(key, prior, 20), sample_graph(key, prior, 20)
    np.testing.assert_array_equal(a, b)
    batch = _samples(prior, 20)
    single = sample_graph(jax.random.split(jax.random.key(0), NUM_GRAPHS)[3], prior, 20)
    np.testing.assert_array_equal(single, batch[3])  # vmap changes nothing
    distinct = len({g.tobytes() for g in batch})
    assert distinct > 0.95 * NUM_GRAPHS


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_tracing(monkeypatch):
    """Fail if the traced implementation is reached: errors must be raised on the host first."""

    def fail(*args, **kwargs):
        raise AssertionError("reached the traced sampler")

    monkeypatch.setattr(graphs, "_sample_graph", fail)


@pytest.mark.parametrize(
    ("prior", "d", "max_nodes", "match"),
    [
        (GraphPrior("er"), 1, None, "d must be >= 2"),
        (GraphPrior("er"), 3, None, "edges_per_node"),
        (GraphPrior("sf_in"), 3, None, "edges_per_node"),
        (GraphPrior("er"), 10, 9, "max_nodes"),
        (GraphPrior("er"), 10.0, None, "d must be an integer"),
        ("er", 10, None, "GraphPrior"),
    ],
)
def test_bad_input_raises_before_tracing(no_tracing, prior, d, max_nodes, match):
    with pytest.raises(ValueError, match=match):
        sample_graph(jax.random.key(0), prior, d, max_nodes)


def test_unknown_family_rejected():
    with pytest.raises(ValueError, match="unknown graph family"):
        GraphPrior("lattice")
