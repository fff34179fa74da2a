"""The functional API for notebooks: ``CondFiP`` infers an SCM from data and a graph, zero-shot.

    model = CondFiP.load("workdir/default")          # or CondFiP.pretrained()
    scm = model.fit(df, [("PKA", "praf"), ...])     # DataFrame + edge list (or adjacency / networkx.DiGraph)
    scm.sample(400, jax.random.key(0))              # new observational samples, a DataFrame like df
    scm.intervene({"PKA": 2.0}, 400, jax.random.key(1))
    scm.counterfactual(df, {"PKA": 2.0})

Graphs: an adjacency matrix with ``adj[i, j] = 1`` ⇔ edge ``i -> j`` (row = parent, column = child, as
``networkx.to_numpy_array``), a ``networkx.DiGraph`` or a list of ``(parent, child)`` pairs (names or indices).
Nodes are addressed by name (DataFrame columns or ``nodes=``) or by index. Results come back in the user's units and
type: DataFrame in, DataFrame out; NumPy in, NumPy out; JAX in, JAX out.

The encoder reads at most the context size the model was trained with (a fixed random subset of the rows; see
:meth:`CondFiP.fit`, ``max_context``); the noise is abducted from every row.

Everything is validated on the host before any tracing; bad input raises one ``ValueError`` naming the problem.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cfip_jax import bootstrap as bootstrap_lib
from cfip_jax import model as model_lib
from cfip_jax import model_io
from cfip_jax import validation as V
from cfip_jax.inference import fit as fit_lib
from cfip_jax.inference import inputs
from cfip_jax.inference import refine as refine_lib
from cfip_jax.inference import structure as structure_lib
from cfip_jax.inference.inputs import graph_to_adjacency
from cfip_jax.inference.mechanism import FitInfo
from cfip_jax.inference.scm import NOISE_MODELS, InferredSCM


def _graph_of(graph: Any, structure: str | None, arr: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """The checked DAG ``[d, d]``: the given ``graph``, or with ``graph=None`` the one ``structure`` learns."""
    if graph is None and structure is None:
        learners = ", ".join(structure_lib.LEARNERS)
        raise ValueError(f"graph=None needs a structure learner: structure= one of {learners}")
    if graph is not None and structure is not None:
        raise ValueError("give either a graph or structure= (a learner for graph=None), not both")
    if graph is not None:
        return graph_to_adjacency(graph, names)
    structure_lib.check_learner(structure)
    return structure_lib.discover(arr, structure)[0]


class CondFiP:
    """A trained Cond-FiP model: encoder and decoder with their EMA parameters."""

    def __init__(self, model: model_lib.TrainedModel):
        self.model = model

    @classmethod
    def load(cls, path: str | os.PathLike) -> CondFiP:
        """Load an exported model directory (``model.json`` + ``params.npz``) or a ``train.py`` workdir."""
        return cls(model_io.load(path))

    @classmethod
    def pretrained(cls) -> CondFiP:
        """The model shipped inside the package (no network needed)."""
        return cls(model_io.load_pretrained())

    @property
    def info(self) -> dict:
        """Provenance of the weights (training config, steps, …)."""
        return self.model.info

    @property
    def training_context(self) -> int | None:
        """Rows per context the model was trained with (``data.n_context`` of its run), None when not recorded."""
        value = self.model.info.get("run_config", {}).get("data", {}).get("n_context")
        return None if value is None else int(value)

    def context_rows(self, n: int, max_context: int | str | None = "trained") -> np.ndarray | None:
        """The rows of an ``n``-row dataset that :meth:`fit` hands to the encoder, or None for all of them.

        ``max_context``: ``"trained"`` (the model's :attr:`training_context`, all rows when unknown), an int ≥ 2, or
        None (all rows). When it is below ``n``, the rows are a uniformly random subset drawn with a fixed seed
        (sorted, the same for every call with the same ``n``).
        """
        if isinstance(max_context, str):
            V.check_choice(max_context, ("trained",), "max_context")
            limit = self.training_context
        elif max_context is None:
            limit = None
        else:
            limit = V.check_int(max_context, "max_context", minimum=2)
        if limit is None or limit >= n:
            return None
        return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))

    def bootstrap(
        self,
        data: Any,
        graph: Any,
        n_boot: int = 100,
        *,
        key: jax.Array,
        refine: int | str | None = None,
        level: float = 0.95,
        nodes: Sequence[str] | None = None,
        noise_model: str = "empirical",
        max_context: int | str | None = "trained",
        chunk: int = 1,
        workers: int | None = None,
        refine_config: refine_lib.RefineConfig | None = None,
    ) -> bootstrap_lib.BootstrapSCM:
        """:meth:`fit` on ``n_boot`` resamples of the rows (drawn with replacement from ``key``) and on the rows
        themselves: a :class:`cfip_jax.bootstrap.BootstrapSCM` whose ``effect`` answers with an interval at
        ``level`` and whose ``sample`` / ``intervene`` give one set per resample.

        The resamples are fitted in batched, compiled calls, ``workers`` of them at once (default: the CPU's cores
        on the CPU backend, 1 on an accelerator; :func:`cfip_jax.bootstrap.default_workers`), each passing ``chunk``
        resamples at a time through the networks (1 was the fastest on a CPU at d = 20, ``docs/benchmarks.md``); the
        values depend on neither: zero-shot (``refine=None``),
        or zero-shot then the closed-form correction (``refine="closed-form"``, ``refine_config`` as :meth:`fit`;
        each resample's correction chosen on the original rows' folds, :func:`cfip_jax.bootstrap.resample_folds`).
        The interval covers the fit's sampling variability given the graph and the model, not the model's bias
        (:mod:`cfip_jax.bootstrap`). Other arguments as :meth:`fit`; a gradient refinement is not batched and is
        refused.
        """
        V.check_int(n_boot, "n_boot", minimum=2)
        if not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        if refine_lib.check_refine(refine) not in (None, "closed-form"):
            raise ValueError(f"bootstrap fits zero-shot or closed-form (refine=None or 'closed-form'), not {refine!r}")
        V.check_int(chunk, "chunk", minimum=1)
        workers = bootstrap_lib.default_workers() if workers is None else V.check_int(workers, "workers", minimum=1)
        cfg = refine_config or refine_lib.RefineConfig()
        point = self.fit(data, graph, nodes=nodes, noise_model=noise_model, max_context=max_context, refine=refine,
                         refine_config=cfg)  # fmt: skip
        arr, _, _ = inputs.data(data, nodes)
        rows = bootstrap_lib.resample_rows(key, arr.shape[0], int(n_boot))
        limit = self.context_rows(arr.shape[0], max_context)
        n_ctx = arr.shape[0] if limit is None else len(limit)
        adj = np.asarray(point.adj)
        cond, mean, std, noise = bootstrap_lib.fit_resamples(self.model, arr, adj, rows, n_ctx=n_ctx, chunk=chunk,
                                                             workers=workers)  # fmt: skip
        correction = None
        if refine == "closed-form":
            correction, noise = bootstrap_lib.correct_resamples(arr, rows, mean, std, noise, adj, cfg)
        return bootstrap_lib.BootstrapSCM(point=point, cond=cond, mean=mean, std=std, noise_data=noise, adj=point.adj,
                                          decoder=self.model.decoder, decoder_params=self.model.decoder_params,
                                          level=float(level), correction=correction, workers=workers)  # fmt: skip

    def fit(
        self,
        data: Any,
        graph: Any,
        *,
        structure: str | None = None,
        nodes: Sequence[str] | None = None,
        noise_model: str = "empirical",
        max_context: int | str | None = "trained",
        refine: int | str | None = None,
        refine_config: refine_lib.RefineConfig | None = None,
    ):
        """Infer the SCM of ``data`` with causal graph ``graph``: zero-shot (no gradient step), or refined on the data.

        The encoder reads at most ``max_context`` rows (the dataset embedding); the noise is abducted from every row.
        By default that is the context size the model was trained with (200 for the shipped model), drawn at random
        with a fixed seed (:meth:`context_rows`): the encoder's cost grows as n², and 200 rows keep ``fit`` +
        ``sample(400)`` near 0.1 s at d = 20. More rows buy accuracy: on the d = 10/20 suite all 400 rows are about
        5 % better on average than 200 (paired −0.012 RMSE at d = 10, −0.006 at d = 20;
        ``docs/eval_context/summary.md``). Pass ``max_context=None`` to encode all rows, as ``eval.py`` does to follow
        the paper's protocol, when accuracy matters more than latency.

        Args:
          data: ``[n, d]`` samples: NumPy array, pandas DataFrame (its columns name the nodes) or JAX array.
          graph: adjacency ``[d, d]`` (``adj[i, j] = 1`` ⇔ ``i -> j``), ``networkx.DiGraph`` or ``(parent, child)``
            pairs; or None to learn one from the data with ``structure``.
          structure: with ``graph=None``, the structure learner: ``"ges"``, ``"pc"`` (causal-learn; a CPDAG turned
            into one of its DAGs) or ``"lingam"`` (DirectLiNGAM); see :mod:`cfip_jax.inference.structure`. The learner
            sees every row. ``InferredSCM.graph_source`` records which.
          nodes: node names (default: DataFrame columns or ``0..d-1``).
          noise_model: ``"empirical"`` (the default: resampling each node's abducted noise) or ``"gaussian"`` (a
            Gaussian per node fitted to it, the paper's protocol and ``eval.py``'s); see :class:`InferredSCM`. On
            real data the empirical one generates samples closer to held-out rows (Sachs: MMD 0.085 against 0.162,
            values outside the data's range 10 % against 18 %; ``scripts/noise_models.py``).
          max_context: ``"trained"``, an int ≥ 2 or None (all rows); see :meth:`context_rows`.
          refine: None or 0 (zero-shot, the default), a number of optimiser steps, ``"auto"`` (early stopping on
            held-out rows, with a cap) or ``"closed-form"`` (no gradient step): start from the zero-shot SCM, fit the
            decoder to the data itself with the per-dataset FiP objective x ≈ F(x), then correct each node's
            mechanism in closed form, the correction chosen per node on held-out rows
            (:mod:`cfip_jax.inference.refine`, :mod:`cfip_jax.inference.correct`; ``docs/refinement.md`` for what each
            buys). A refinement that diverges returns the zero-shot SCM with a warning.
          refine_config: what is refined and how (:class:`cfip_jax.inference.refine.RefineConfig`; default the
            measured one).

        Returns:
          The :class:`InferredSCM` (``refined_steps`` and ``refine_loss`` say how it was made).
        """
        V.check_choice(noise_model, NOISE_MODELS, "noise model")
        refine = refine_lib.check_refine(refine)
        arr, names, kind = inputs.data(data, nodes)
        mean, std = inputs.statistics(arr, names)
        adj = _graph_of(graph, structure, arr, names)
        z = jnp.asarray((arr - mean) / std, jnp.float32)
        rows = self.context_rows(arr.shape[0], max_context)
        out = fit_lib.infer(self.model, z, adj, context_rows=rows, refine=refine, cfg=refine_config)
        info = FitInfo(graph_source="given" if graph is not None else structure, **out.made)
        return InferredSCM(mechanism_fn=out.mechanism, adj=jnp.asarray(adj), mean=jnp.asarray(mean, jnp.float32),
                           std=jnp.asarray(std, jnp.float32), noise_data=out.noise, nodes=names, kind=kind,
                           noise_model=noise_model, info=info)  # fmt: skip
