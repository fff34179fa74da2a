"""Graph-free mode: structure learners, CPDAG → DAG (closed forms), structural Hamming distance, the API's checks."""

import importlib.util
import itertools

import numpy as np
import pytest

from cfip_jax.api import CondFiP
from cfip_jax.inference import structure


def _undirected(d, edges):
    u = np.zeros((d, d), int)
    for a, b in edges:
        u[a, b] = u[b, a] = 1
    return u


def _v_structures(adj):
    """``{(a, c, b)}``: a -> c <- b with a, b not adjacent (a < b)."""
    adj = np.asarray(adj) != 0
    out = set()
    for c in range(adj.shape[0]):
        for a, b in itertools.combinations(np.flatnonzero(adj[:, c]), 2):
            if not adj[a, b] and not adj[b, a]:
                out.add((int(a), c, int(b)))
    return out


def test_chain_cpdag_extends_without_a_new_v_structure():
    adj, consistent = structure.pdag_to_dag(np.zeros((3, 3)), _undirected(3, [(0, 1), (1, 2)]))
    assert consistent
    assert adj.sum() == 2 and (adj + adj.T)[0, 1] == 1 and (adj + adj.T)[1, 2] == 1
    assert _v_structures(adj) == set()


def test_directed_edges_are_kept_and_the_undirected_one_is_forced():
    # a -> c <- b is a v-structure; c — d must become c -> d (d -> c would make a -> c <- d, a new v-structure).
    directed = np.zeros((4, 4), int)
    directed[0, 2] = directed[1, 2] = 1
    adj, consistent = structure.pdag_to_dag(directed, _undirected(4, [(2, 3)]))
    assert consistent
    expected = directed.copy()
    expected[2, 3] = 1
    np.testing.assert_array_equal(adj, expected)


def test_a_chordless_undirected_four_cycle_has_no_consistent_extension():
    u = _undirected(4, [(0, 1), (1, 2), (2, 3), (3, 0)])
    adj, consistent = structure.pdag_to_dag(np.zeros((4, 4)), u)
    assert not consistent
    np.testing.assert_array_equal((adj + adj.T) != 0, u != 0)  # the skeleton is kept
    structure.V.check_dag(adj)  # and it is a DAG


def test_shd_counts_missing_extra_and_reversed_edges_once_each():
    true = np.zeros((4, 4))
    true[0, 1] = true[1, 2] = true[2, 3] = 1
    learned = true.copy()
    learned[1, 2], learned[2, 1] = 0, 1  # reversed
    learned[2, 3] = 0  # missing
    learned[0, 3] = 1  # extra
    assert structure.shd(learned, true) == 3
    assert structure.shd(true, true) == 0


@pytest.mark.parametrize("method", ["ges", "pc"])
def test_learners_recover_a_collider_and_its_child(method):
    rng = np.random.default_rng(1)
    n = 2000
    x, y = rng.normal(size=n), rng.normal(size=n)
    z = x + y + 0.5 * rng.normal(size=n)
    w = z + 0.5 * rng.normal(size=n)
    true = np.zeros((4, 4))
    true[0, 2] = true[1, 2] = true[2, 3] = 1  # x -> z <- y, z -> w: the CPDAG is fully directed
    adj, info = structure.discover(np.stack([x, y, z, w], 1), method)
    assert info == {"learner": method, "consistent": True}
    np.testing.assert_array_equal(adj, true)


def test_unknown_or_missing_learners_are_one_line_errors():
    with pytest.raises(ValueError, match="structure learner"):
        structure.check_learner("notears")
    if importlib.util.find_spec("lingam") is None:
        with pytest.raises(ValueError, match="pip install lingam"):
            structure.check_learner("lingam")


@pytest.fixture(scope="module")
def model():
    return CondFiP.pretrained()


def test_fit_without_a_graph_learns_one_and_says_so(model):
    rng = np.random.default_rng(1)
    n = 600
    x, y = rng.normal(size=n), rng.normal(size=n)
    z = x + y + 0.5 * rng.normal(size=n)
    data = np.stack([x, y, z], 1)
    scm = model.fit(data, None, structure="pc", nodes=["x", "y", "z"])
    assert scm.graph_source == "pc" and sorted(scm.graph) == [("x", "z"), ("y", "z")]
    assert model.fit(data, [(0, 2), (1, 2)]).graph_source == "given"
    with pytest.raises(ValueError, match="graph=None needs a structure learner"):
        model.fit(data, None)
    with pytest.raises(ValueError, match="not both"):
        model.fit(data, [("x", "z")], structure="pc", nodes=["x", "y", "z"])
