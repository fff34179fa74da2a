"""DoWhy-GCM bridge: a Cond-FiP SCM as a DoWhy graphical causal model, and Cond-FiP mechanisms for a DoWhy model.

DoWhy-GCM (``dowhy.gcm``) is where most practitioners of additive-noise SCMs work, with tools this library does not
rewrite: ``gcm.interventional_samples``, ``gcm.counterfactual_samples``, ``gcm.arrow_strength``,
``gcm.attribute_anomalies``, ``gcm.distribution_change``, …

- :func:`to_gcm` turns a fitted :class:`~cfip_jax.api.InferredSCM` into a ``gcm.InvertibleStructuralCausalModel``:
  each node with parents is a ``gcm.AdditiveNoiseModel`` whose prediction model is Cond-FiP's fitted mechanism
  (:class:`CondFiPPrediction`) and whose noise model is fitted to the abducted noise (Gaussian or empirical, as the
  SCM's ``noise_model``); each root node is the empirical distribution of its data.
- :func:`fit_gcm` does the same for an existing ``gcm`` causal model and a DataFrame: Cond-FiP (zero-shot or refined,
  ``refine=``) is fitted on the model's graph and its mechanisms are assigned to the model's nodes, in place of
  ``gcm.auto.assign_causal_mechanisms`` + ``gcm.fit``.

All values are in the data's own units. Needs DoWhy: ``pip install "cfip_jax[baselines]"``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:
    import networkx as nx
    import pandas as pd
    from dowhy import gcm
    from dowhy.gcm.ml import PredictionModel
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(f'cfip_jax.integrations.dowhy needs DoWhy: pip install "cfip_jax[baselines]" ({err})') from None

from cfip_jax import api

__all__ = ["CondFiPPrediction", "fit_gcm", "to_gcm"]


@functools.partial(jax.jit, static_argnums=2)
def _node_values(mechanism_at: Any, z: jax.Array, node: int) -> jax.Array:
    """``F(z)[:, node]`` (``z [n, d]``): the decoder's queries for that node only."""
    return mechanism_at(z, jnp.asarray([node]))[:, 0]


class CondFiPPrediction(PredictionModel):
    """Cond-FiP's fitted mechanism of one node as a DoWhy prediction model: ``predict(parents [n, k]) -> [n, 1]``.

    The parents' columns come in DoWhy's order (``dowhy.graph.get_ordered_predecessors``: sorted names). Already
    fitted: ``fit`` does nothing (the mechanism was inferred by :meth:`cfip_jax.CondFiP.fit`).

    Attributes:
      scm: the fitted SCM.
      node: the node's index in ``scm.nodes``.
      parents: the parents' indices, in DoWhy's column order.
    """

    def __init__(self, scm: api.InferredSCM, node: int, parents: list[int]):
        self.scm, self.node, self.parents = scm, int(node), [int(p) for p in parents]

    def fit(self, X: np.ndarray, Y: np.ndarray) -> None:  # noqa: N803 (DoWhy's signature)
        """Nothing to fit."""

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """``F_node(parents)`` in the data's units, ``[n, 1]``."""
        x = np.asarray(X, np.float64).reshape(np.shape(X)[0], -1)
        if x.shape[1] != len(self.parents):
            raise ValueError(f"node {self.scm.nodes[self.node]} has {len(self.parents)} parents, got {x.shape[1]} "
                             "columns")  # fmt: skip
        mean, std = np.asarray(self.scm.mean, np.float64), np.asarray(self.scm.std, np.float64)
        n = x.shape[0]
        rows = max(64, 1 << max(n - 1, 0).bit_length())  # DoWhy asks for many row counts: compile once per power of 2
        z = np.zeros((rows, len(self.scm.nodes)), np.float32)  # non-parents do not enter F_node: any value will do
        z[:n, self.parents] = (x - mean[self.parents]) / std[self.parents]
        out = np.asarray(_node_values(self.scm.mechanism_at, z, self.node), np.float64)[:n]
        return (out * std[self.node] + mean[self.node])[:, None]

    def clone(self) -> CondFiPPrediction:
        return CondFiPPrediction(self.scm, self.node, self.parents)


def _graph(scm: api.InferredSCM) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(scm.nodes)
    graph.add_edges_from(scm.graph)
    return graph


def _fitted_rows(scm: api.InferredSCM) -> pd.DataFrame:
    """The rows the SCM was fitted on, rebuilt from its abducted noise (x = F(x) + n̂), in the data's units."""
    numpy_scm = scm.replace(kind="numpy")
    x = numpy_scm.generate(np.asarray(scm.noise_data, np.float64) * np.asarray(scm.std, np.float64)[None, :])
    return pd.DataFrame(np.asarray(x, np.float64), columns=list(scm.nodes))


def _assign(causal_model: Any, scm: api.InferredSCM, data: pd.DataFrame) -> None:
    from scipy import stats

    graph = causal_model.graph
    index = {name: i for i, name in enumerate(scm.nodes)}
    for name in scm.nodes:
        parents = sorted(graph.predecessors(name))
        if not parents:
            causal_model.set_causal_mechanism(name, gcm.EmpiricalDistribution())
            continue
        noise = gcm.ScipyDistribution(stats.norm) if scm.noise_model == "gaussian" else gcm.EmpiricalDistribution()
        prediction = CondFiPPrediction(scm, index[name], [index[p] for p in parents])
        causal_model.set_causal_mechanism(name, gcm.AdditiveNoiseModel(prediction, noise_model=noise))
    gcm.fit(causal_model, data[list(scm.nodes)])  # our prediction models are fixed; this fits the noise models


def to_gcm(scm: api.InferredSCM) -> Any:
    """A ``gcm.InvertibleStructuralCausalModel`` equal to ``scm``: Cond-FiP's mechanisms, the abducted noise's
    distribution per node (Gaussian or empirical, as ``scm.noise_model``), roots drawn from their data.

    Args:
      scm: a fitted SCM (``CondFiP.fit`` or ``InferredSCM.load``).

    Returns:
      The fitted DoWhy causal model; its node names are ``scm.nodes``.
    """
    if not isinstance(scm, api.InferredSCM):
        raise ValueError(f"to_gcm needs an InferredSCM (from CondFiP.fit), got {type(scm).__name__}")
    causal_model = gcm.InvertibleStructuralCausalModel(_graph(scm))
    _assign(causal_model, scm, _fitted_rows(scm))
    return causal_model


def fit_gcm(
    causal_model: Any,
    data: pd.DataFrame,
    *,
    model: api.CondFiP | None = None,
    refine: int | str | None = None,
    noise_model: str = "empirical",
) -> api.InferredSCM:
    """Fit Cond-FiP on ``causal_model``'s graph and assign its mechanisms to the model's nodes (in place).

    Use it where ``gcm.auto.assign_causal_mechanisms(causal_model, data)`` + ``gcm.fit(causal_model, data)`` would go.

    Args:
      causal_model: a ``gcm.StructuralCausalModel`` (or invertible one) whose graph is a DAG over columns of ``data``.
      data: a DataFrame holding a column for every node of the graph (other columns are ignored).
      model: the Cond-FiP model (default: the pretrained one).
      refine: as :meth:`cfip_jax.CondFiP.fit` (None: zero-shot; an int; ``"auto"``; ``"closed-form"``).
      noise_model: ``"empirical"`` (default) or ``"gaussian"`` noise models for the non-root nodes.

    Returns:
      The :class:`~cfip_jax.api.InferredSCM` the mechanisms come from.
    """
    graph = getattr(causal_model, "graph", None)
    if graph is None or not hasattr(graph, "predecessors"):
        raise ValueError("fit_gcm needs a dowhy.gcm causal model (with a .graph)")
    if not hasattr(data, "columns"):
        raise ValueError(f"fit_gcm needs a pandas DataFrame, got {type(data).__name__}")
    nodes = [str(v) for v in graph.nodes]
    missing = [v for v in nodes if v not in set(map(str, data.columns))]
    if missing:
        raise ValueError(f"the data has no column for node(s) {', '.join(missing)}")
    if any(not isinstance(v, str) for v in graph.nodes):
        raise ValueError("fit_gcm needs node names that are strings (the DataFrame's column names)")
    frame = data[nodes]
    scm = (model or api.CondFiP.pretrained()).fit(frame, list(graph.edges), refine=refine, noise_model=noise_model)
    _assign(causal_model, scm, frame)
    return scm
