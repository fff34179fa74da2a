"""DoWhy-GCM (Blöbaum et al., 2022) as a per-dataset baseline; needs the extra ``pip install "cfip_jax[baselines]"``.

DoWhy's graphical causal model is built on the true graph and fitted on the standardised context with
``gcm.auto.assign_causal_mechanisms`` (quality ``GOOD``: for each node DoWhy picks a regressor among its small model
zoo by cross-validation, inside an additive-noise model) and ``gcm.fit``.
DoWhy draws its cross-validation folds and its candidates' seeds from NumPy's and Python's global generators;
:func:`fit_dowhy` seeds them (``seed``) for the fit and restores the caller's state afterwards, so the same data give
the same baseline in every run (unseeded, its choice between least squares and a degree-2 polynomial on the same linear
data changes from run to run). The fitted mechanism of node ``j`` is the
additive-noise model's prediction model on the parents; root nodes get ``T_j = 0`` (the context's mean in standardised
units). The mechanism runs on the host (scikit-learn) and enters the JAX fixed-point solver through
``jax.pure_callback``, so every task of :mod:`cfip_jax.eval.tasks` treats DoWhy exactly like the other methods.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import random
import warnings

import jax
import numpy as np

INSTALL_HINT = 'the dowhy baseline needs DoWhy: pip install "cfip_jax[baselines]"'


def available() -> bool:
    """Whether DoWhy is installed."""
    return importlib.util.find_spec("dowhy") is not None


class DoWhyMechanism:
    """``T: z [..., d] -> [..., d]`` from fitted per-node prediction models, evaluated on the host.

    Attributes:
      models: per node, a fitted regressor with ``predict`` (None for a root).
      parents: per node, the parent indices in the regressor's column order.
    """

    def __init__(self, models: list, parents: list[np.ndarray]):
        self.models, self.parents = models, parents

    def __call__(self, z: jax.Array) -> jax.Array:
        return jax.pure_callback(self.host, jax.ShapeDtypeStruct(z.shape, np.float32), z, vmap_method="sequential")

    def at(self, z: jax.Array, nodes: jax.Array) -> jax.Array:
        """``T(z)[..., nodes]`` for ``nodes [K]``: only those nodes' regressors run (for
        :func:`cfip_jax.fixed_point.solve_by_level`)."""
        shape = jax.ShapeDtypeStruct(z.shape[:-1] + nodes.shape, np.float32)
        return jax.pure_callback(self.host_at, shape, z, nodes, vmap_method="sequential")

    def host(self, z: np.ndarray) -> np.ndarray:
        """The NumPy mechanism: ``z [..., d] -> [..., d]``."""
        return self.host_at(z, np.arange(np.shape(z)[-1]))

    def host_at(self, z: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """The NumPy mechanism of ``nodes [K]``: ``z [..., d] -> [..., K]``."""
        z = np.asarray(z, np.float64)
        flat = z.reshape(-1, z.shape[-1])
        nodes = np.asarray(nodes).reshape(-1)
        out = np.zeros((flat.shape[0], nodes.size))
        predicted: dict[int, np.ndarray] = {}
        for k, j in enumerate(nodes.tolist()):
            if self.models[j] is not None:
                if j not in predicted:
                    predicted[j] = np.asarray(self.models[j].predict(flat[:, self.parents[j]])).reshape(-1)
                out[:, k] = predicted[j]
        return out.reshape(z.shape[:-1] + (nodes.size,)).astype(np.float32)


@contextlib.contextmanager
def _seeded_global_generators(seed: int):
    """Seed NumPy's and Python's global generators (which DoWhy draws from) and restore their state on exit."""
    numpy_state, python_state = np.random.get_state(), random.getstate()  # noqa: NPY002 (DoWhy uses the legacy one)
    np.random.seed(seed)  # noqa: NPY002
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(numpy_state)  # noqa: NPY002
        random.setstate(python_state)


def fit_dowhy(x: np.ndarray, adj: np.ndarray, quality: str = "GOOD", seed: int = 0):
    """Fit DoWhy-GCM on a standardised context ``x [n, d]`` with the graph ``adj [d, d]`` (``adj[i, j] = 1`` ⇔ i → j).

    Args:
      x: ``[n, d]`` context.
      adj: ``[d, d]`` DAG.
      quality: ``gcm.auto.AssignmentQuality`` member name (``GOOD``, ``BETTER``, ``BEST``).
      seed: seeds DoWhy's model selection and fit (the caller's global generators are left as they were).

    Returns:
      A :class:`DoWhyMechanism` ``T: z [..., d] -> [..., d]`` (callable from JAX; computed on the host).
    """
    if not available():
        raise ValueError(INSTALL_HINT)
    import networkx as nx
    import pandas as pd
    from dowhy import gcm
    from dowhy.graph import get_ordered_predecessors

    x = np.asarray(x, np.float64)
    adj = np.asarray(adj) != 0
    d = x.shape[1]
    names = [f"x{j}" for j in range(d)]
    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    graph.add_edges_from((names[i], names[j]) for i, j in zip(*np.nonzero(adj), strict=True))
    scm = gcm.InvertibleStructuralCausalModel(graph)
    frame = pd.DataFrame(x, columns=names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level = logging.getLogger("dowhy").level
        logging.getLogger("dowhy").setLevel(logging.ERROR)
        try:
            with _seeded_global_generators(seed):
                gcm.auto.assign_causal_mechanisms(scm, frame, quality=getattr(gcm.auto.AssignmentQuality, quality))
                gcm.config.disable_progress_bars()
                gcm.fit(scm, frame)
        finally:
            logging.getLogger("dowhy").setLevel(level)
    models, parents = [], []
    for j, name in enumerate(names):
        pa = np.flatnonzero(adj[:, j])
        mechanism = scm.causal_mechanism(name)
        if pa.size == 0:
            models.append(None)
        elif isinstance(mechanism, gcm.AdditiveNoiseModel):
            # the graph's parent order is DoWhy's column order for the prediction model
            order = [names.index(p) for p in get_ordered_predecessors(scm.graph, name)]
            pa = np.asarray(order, int)
            models.append(mechanism.prediction_model)
        else:
            raise ValueError(
                f"DoWhy assigned {type(mechanism).__name__} to {name}; only additive-noise models are supported"
            )
        parents.append(pa)
    return DoWhyMechanism(models, parents)
