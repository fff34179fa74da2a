"""Causal structure learning for the graph-free mode: a DAG from data with a well-kept learner, and graph distances.

Cond-FiP needs a DAG. When the user has none, :func:`discover` learns one with

- ``"ges"``: greedy equivalence search with the BIC score (causal-learn's ``ges``), a CPDAG;
- ``"pc"``: the PC algorithm with Fisher-z tests at level ``alpha`` (causal-learn's ``pc``), a CPDAG;
- ``"lingam"``: DirectLiNGAM (the ``lingam`` package), a DAG (identifiable for non-Gaussian noise).

A CPDAG stands for a Markov equivalence class; :func:`pdag_to_dag` picks one member of it (a consistent extension,
Dor & Tarsi 1992): every undirected edge is oriented without creating a cycle or a new v-structure. When the learner's
output has no consistent extension (PC's orientation conflicts can produce one), every edge of its skeleton is
oriented along one topological order that keeps as many of its directed edges as possible, and the result says so.

Shapes: data ``x [n, d]`` (any units; the learners standardise where they need to), graphs ``[d, d]`` with
``adj[i, j] = 1`` ⇔ ``i -> j``. causal-learn is installed with ``dowhy`` (the ``baselines`` extra) or the ``structure``
extra; lingam with ``pip install lingam``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io

import numpy as np

from cfip_jax import validation as V

LEARNERS = ("ges", "pc", "lingam")
INSTALL = {
    "ges": 'causal-learn (pip install "cfip_jax[structure]")',
    "pc": 'causal-learn (pip install "cfip_jax[structure]")',
    "lingam": "lingam (pip install lingam)",
}
_MODULE = {"ges": "causallearn", "pc": "causallearn", "lingam": "lingam"}


def check_learner(method: str) -> str:
    """``method`` if it is a known learner whose package is installed; else a ``ValueError`` saying what to install."""
    V.check_choice(method, LEARNERS, "structure learner")
    if importlib.util.find_spec(_MODULE[method]) is None:
        raise ValueError(f"structure learner {method!r} needs {INSTALL[method]}, which is not installed")
    return method


def _causallearn_pdag(graph: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """causal-learn's endpoint matrix → ``(directed [d, d], undirected [d, d] symmetric)``.

    causal-learn writes ``G[j, i] = 1, G[i, j] = -1`` for ``i -> j``, ``-1, -1`` for ``i — j`` and ``1, 1`` for
    ``i <-> j`` (an orientation conflict, read here as undirected).
    """
    g = np.asarray(graph)
    directed = ((g.T == 1) & (g == -1)).astype(np.int8)
    undirected = (((g == -1) & (g.T == -1)) | ((g == 1) & (g.T == 1))).astype(np.int8)
    np.fill_diagonal(undirected, 0)
    return directed, undirected


def pdag_to_dag(directed: np.ndarray, undirected: np.ndarray) -> tuple[np.ndarray, bool]:
    """One DAG in the class of a PDAG: ``(adj [d, d] float32, consistent)``.

    Args:
      directed: ``[d, d]`` 0/1, ``directed[i, j] = 1`` ⇔ ``i -> j``.
      undirected: ``[d, d]`` 0/1 symmetric, the edges ``i — j``.

    Returns:
      The DAG and whether it is a consistent extension (Dor–Tarsi: the directed edges kept, no new v-structure). When
      none exists, every skeleton edge follows a greedy order of the directed part (sources first) and ``consistent``
      is False.
    """
    directed = np.asarray(directed, bool).copy()
    undirected = np.asarray(undirected, bool)
    undirected = (undirected | undirected.T) & ~directed & ~directed.T
    d = directed.shape[0]
    out = directed.copy()
    und = undirected.copy()
    remaining = set(range(d))
    while remaining:
        rem = np.zeros(d, bool)
        rem[list(remaining)] = True
        chosen = None
        for x in sorted(remaining):
            if (directed[x] & rem).any():  # x must be a sink of the directed edges among the remaining nodes
                continue
            neigh_und = np.flatnonzero(und[x] & rem)
            adjacent = np.flatnonzero((directed[x] | directed[:, x] | und[x]) & rem)
            ok = True
            for y in neigh_und:
                others = [a for a in adjacent if a != y]
                adj_y = directed[y] | directed[:, y] | und[y]
                if not all(adj_y[a] for a in others):
                    ok = False
                    break
            if ok:
                chosen = x
                break
        if chosen is None:
            return _greedy_orientation(directed, undirected), False
        for y in np.flatnonzero(und[chosen] & rem):
            out[y, chosen] = True  # y -> x
            und[y, chosen] = und[chosen, y] = False
        remaining.remove(chosen)
    return out.astype(np.float32), True


def _greedy_orientation(directed: np.ndarray, undirected: np.ndarray) -> np.ndarray:
    """Orient every skeleton edge along an order that places, at each step, the remaining node with the fewest
    directed parents among the remaining nodes (ties: lowest index)."""
    d = directed.shape[0]
    remaining = list(range(d))
    order = []
    while remaining:
        counts = [int(directed[remaining, v].sum()) for v in remaining]
        v = remaining[int(np.argmin(counts))]
        order.append(v)
        remaining.remove(v)
    rank = np.empty(d, int)
    rank[order] = np.arange(d)
    skeleton = directed | directed.T | undirected
    adj = skeleton & (rank[:, None] < rank[None, :])
    return adj.astype(np.float32)


def discover(x: np.ndarray, method: str, *, alpha: float = 0.05) -> tuple[np.ndarray, dict]:
    """Learn a DAG from data.

    Args:
      x: ``[n, d]`` samples (finite).
      method: ``"ges"``, ``"pc"`` or ``"lingam"`` (see the module docstring).
      alpha: the PC algorithm's test level.

    Returns:
      ``(adj [d, d] float32, info)`` with ``info = {"learner", "consistent"}`` (``consistent``: the DAG is a
      consistent extension of the learned CPDAG; always True for lingam).
    """
    check_learner(method)
    x = V.check_data(np.asarray(x, np.float64), "data", min_rows=3)
    z = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    quiet = contextlib.redirect_stdout(io.StringIO())
    if method == "lingam":
        import lingam

        with quiet:
            model = lingam.DirectLiNGAM().fit(z)
        adj = (np.abs(np.asarray(model.adjacency_matrix_)).T > 0).astype(np.float32)  # B[i, j] ≠ 0 ⇔ j -> i
        np.fill_diagonal(adj, 0.0)
        return V.check_dag(adj, "learned graph"), dict(learner=method, consistent=True)
    if method == "ges":
        from causallearn.search.ScoreBased.GES import ges

        with quiet:
            graph = ges(z, score_func="local_score_BIC")["G"].graph
    else:
        from causallearn.search.ConstraintBased.PC import pc

        alpha = V.check_probability(alpha, "alpha")
        with quiet:
            graph = pc(z, alpha=alpha, indep_test="fisherz", show_progress=False).G.graph
    adj, consistent = pdag_to_dag(*_causallearn_pdag(graph))
    return V.check_dag(adj, "learned graph"), dict(learner=method, consistent=consistent)


def shd(learned: np.ndarray, true: np.ndarray) -> int:
    """Structural Hamming distance between two DAGs ``[d, d]``: node pairs whose edge differs (missing, extra or
    reversed; a reversal counts once)."""
    a = np.asarray(learned) != 0
    b = np.asarray(true) != 0
    if a.shape != b.shape:
        raise ValueError(f"graphs of different shapes: {a.shape} and {b.shape}")
    upper = np.triu(np.ones(a.shape, bool), 1)
    differs = (a != b) | (a.T != b.T)
    return int((differs & upper).sum())
