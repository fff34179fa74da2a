"""Real datasets shipped inside the package (see ``cfip_jax/assets/real/ATTRIBUTION.md``).

- :func:`load_sachs`: the 853 observational rows of Sachs et al. (2005) with the consensus graph made acyclic.
- :func:`load_ecoli70` / :func:`sample_ecoli70`: bnlearn's ``ecoli70`` linear-Gaussian network and samples from it.

Graphs follow the package convention ``adj[i, j] = 1`` ⇔ ``i -> j``.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import json

import numpy as np

from cfip_jax import validation as V

_ASSETS = "cfip_jax.assets.real"


@dataclasses.dataclass(frozen=True)
class RealDataset:
    """A real dataset with its reference graph.

    Attributes:
      name: short name.
      nodes: node names, in column order.
      x: ``[n, d]`` float32 samples in the data's own units.
      adj: ``[d, d]`` float32 graph, ``adj[i, j] = 1`` ⇔ ``nodes[i] -> nodes[j]``.
    """

    name: str
    nodes: tuple[str, ...]
    x: np.ndarray
    adj: np.ndarray


def _asset(name: str):
    return importlib.resources.files(_ASSETS).joinpath(name)


# The shipped 18-edge consensus graph contains the 3-cycle plcg -> PIP2 -> PIP3 -> plcg. Cond-FiP needs a DAG, so
# the edge PIP2 -> PIP3 is dropped (17 edges remain: PIP3 -> plcg -> PIP2 is kept).
SACHS_DROPPED_EDGES = (("PIP2", "PIP3"),)


def load_sachs() -> RealDataset:
    """Sachs et al. (2005): 853 observational flow-cytometry rows, 11 proteins, consensus DAG (17 edges).

    The consensus graph file has 18 edges including a 3-cycle; :data:`SACHS_DROPPED_EDGES` lists the edge removed.
    """
    with _asset("sachs_observational.csv").open("r", newline="") as fh:
        rows = list(csv.reader(fh))
    nodes = tuple(rows[0])
    x = np.asarray(rows[1:], dtype=np.float32)
    index = {name: i for i, name in enumerate(nodes)}
    adj = np.zeros((len(nodes), len(nodes)), np.float32)
    with _asset("sachs_consensus_graph.csv").open("r", newline="") as fh:
        for cause, effect in list(csv.reader(fh))[1:]:
            if (cause, effect) not in SACHS_DROPPED_EDGES:
                adj[index[cause], index[effect]] = 1.0
    V.check_dag(adj, "sachs consensus graph")
    return RealDataset("sachs", nodes, V.check_data(x, "sachs data"), adj)


@dataclasses.dataclass(frozen=True)
class LinearGaussianNetwork:
    """A linear-Gaussian Bayesian network: ``x_j = intercept_j + Σ_i coef[i, j] x_i + N(0, variance_j)``.

    Attributes:
      nodes: node names.
      adj: ``[d, d]`` graph.
      coef: ``[d, d]`` coefficients (zero off the graph).
      intercept: ``[d]``.
      variance: ``[d]`` residual variances.
    """

    nodes: tuple[str, ...]
    adj: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    variance: np.ndarray


def load_ecoli70() -> LinearGaussianNetwork:
    """bnlearn's ``ecoli70`` Gaussian Bayesian network (46 nodes, 70 arcs)."""
    with _asset("ecoli70.json").open("r") as fh:
        spec = json.load(fh)
    nodes = tuple(spec["nodes"])
    index = {name: i for i, name in enumerate(nodes)}
    d = len(nodes)
    adj = np.zeros((d, d), np.float32)
    coef = np.zeros((d, d), np.float64)
    intercept = np.zeros(d, np.float64)
    variance = np.zeros(d, np.float64)
    for child, cpd in spec["cpds"].items():
        j = index[child]
        for parent in cpd["parents"]:
            adj[index[parent], j] = 1.0
            coef[index[parent], j] = float(cpd["coefficients"][parent][0])
        intercept[j] = float(cpd["coefficients"]["(Intercept)"][0])
        variance[j] = float(cpd["variance"][0])
    for parent, child in spec["arcs"]:
        if adj[index[parent], index[child]] != 1.0:
            raise ValueError(f"ecoli70.json: arc {parent} -> {child} has no coefficient")
    V.check_dag(adj, "ecoli70 graph")
    return LinearGaussianNetwork(nodes, adj, coef, intercept, variance)


def sample_ecoli70(n: int = 800, seed: int = 0) -> RealDataset:
    """Draw ``n`` samples from ``ecoli70`` (exact linear-Gaussian sampling, NumPy ``default_rng(seed)``)."""
    n = V.check_int(n, "n", minimum=2)
    net = load_ecoli70()
    rng = np.random.default_rng(seed)
    d = len(net.nodes)
    noise = rng.standard_normal((n, d)) * np.sqrt(net.variance)
    # x = x @ coef + intercept + noise  ⇔  x (I − coef) = intercept + noise.
    x = np.linalg.solve((np.eye(d) - net.coef).T, (net.intercept + noise).T).T
    return RealDataset("ecoli70", net.nodes, x.astype(np.float32), net.adj)
