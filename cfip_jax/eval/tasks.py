"""The paper's four tasks on one dataset, for any method that turns a context into a mechanism map.

A :class:`Method` fits on the standardised context (``[n, d]``) and the true graph and returns a mechanism
``T: z [..., n, d] -> [..., n, d]`` in standardised units. Everything is standardised with the **context's** per-node
mean and std (ddof = 1): samples ``(x − μ)/σ``, noise ``ε/σ``, intervention values ``(a − μ_i)/σ_i``. The tasks
(PAPER.md §2.4, SPEC.md §6.8):

- ``noise``: RMSE between the query's true noise and ``x − T(x)``;
- ``generation``: RMSE between the query and the fixed point generated from the query's true noise;
- ``interventional``: per intervention file, RMSE between the true counterfactual rows and the intervened fixed point
  from the factual rows' *true* noise, averaged over the files;
- ``counterfactual``: the same, from the noise *inferred* from the factual rows (``x_f − T(x_f)``).

RMSE is the paper's per-sample RMSE (:func:`cfip_jax.eval.metrics.rmse`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from cfip_jax import fixed_point
from cfip_jax import model as model_lib
from cfip_jax.data.io import Dataset
from cfip_jax.eval import baselines, dowhy_gcm, fip
from cfip_jax.eval.metrics import rmse

TASKS = ("noise", "generation", "interventional", "counterfactual")

FitFn = Callable[[np.ndarray, np.ndarray], Callable[[jax.Array], jax.Array]]


@dataclasses.dataclass(frozen=True)
class Method:
    """A method under evaluation.

    Attributes:
      name: the name reported in results.
      fit: ``(x_context_std [n, d], adj [d, d]) -> T`` with ``T: z [..., n, d] -> [..., n, d]``.
    """

    name: str
    fit: FitFn


def _fit_linear(x: np.ndarray, adj: np.ndarray):
    return Partial(baselines.apply_linear, baselines.fit_linear(x, adj))


def _fit_kernel_ridge(x: np.ndarray, adj: np.ndarray):
    return Partial(baselines.apply_kernel_ridge, baselines.fit_kernel_ridge(x, adj))


def _fit_fip(config: fip.FiPConfig, x: np.ndarray, adj: np.ndarray):
    return fip.fit_fip(x, adj, config)[0]


def fip_method(config: fip.FiPConfig | None = None, name: str = "fip") -> Method:
    """Per-dataset FiP (:mod:`cfip_jax.eval.fip`) trained with ``config`` (default ``FiPConfig()``) on each context."""
    return Method(name, functools.partial(_fit_fip, config or fip.FiPConfig()))


def _fit_dowhy(x: np.ndarray, adj: np.ndarray):
    return dowhy_gcm.fit_dowhy(x, adj)


LINEAR = Method("linear", _fit_linear)
KERNEL_RIDGE = Method("kernel-ridge", _fit_kernel_ridge)
FIP = fip_method()
DOWHY = Method("dowhy", _fit_dowhy)


@dataclasses.dataclass(frozen=True)
class Standardizer:
    """Per-node affine map fitted on a context: ``mean [d]``, ``std [d]`` (ddof = 1; zero std → 1)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        """Statistics of ``x [n, d]``."""
        std = x.std(axis=0, ddof=1)
        return cls(x.mean(axis=0), np.where(std > 0, std, 1.0))

    def x(self, x: np.ndarray) -> np.ndarray:
        """Standardise samples."""
        return ((x - self.mean) / self.std).astype(np.float32)

    def noise(self, noise: np.ndarray) -> np.ndarray:
        """Scale noise (not centred)."""
        return (noise / self.std).astype(np.float32)

    def value(self, index: int, value: float) -> float:
        """Map an intervention value on node ``index``."""
        return float((value - self.mean[index]) / self.std[index])


def _timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def evaluate_dataset(
    method: Method,
    data: Dataset,
    *,
    n_context: int | None = None,
    tasks: tuple[str, ...] = TASKS,
    iterations: int | str | None = "depth",
) -> list[dict]:
    """Run ``tasks`` for ``method`` on one dataset.

    Args:
      method: the :class:`Method`.
      data: a dataset (raw units): context = ``train_x`` (first ``n_context`` rows), query = ``test_x``,
        interventions = ``counterfactuals``.
      n_context: context rows to use (default all).
      tasks: a subset of :data:`TASKS`.
      iterations: fixed-point steps (``"depth"``: longest path + 1, exact for every method here since each T respects
        the graph).

    Returns:
      One record per task: ``{"method", "task", "n_context", "rmse", "seconds"}`` (``seconds``: fitting plus the
      task's own computation).
    """
    x_ctx = data.train_x if n_context is None else data.train_x[:n_context]
    if x_ctx.shape[0] < 2:
        raise ValueError(f"the context needs at least 2 rows, got {x_ctx.shape[0]}")
    scale = Standardizer.fit(x_ctx)
    adj = data.adj.astype(np.float32)
    mech, fit_seconds = _timed(method.fit, scale.x(x_ctx), adj)
    kw = dict(adj=adj, iterations=iterations)
    records = []

    def record(task, value, seconds):
        records.append(
            dict(
                method=method.name,
                task=task,
                n_context=int(x_ctx.shape[0]),
                rmse=float(value),
                seconds=fit_seconds + seconds,
            )
        )

    at = getattr(mech, "at", None)  # T of a subset of nodes: solve one topological level at a time

    def solve(noise, onehot=None, values=None):
        if at is not None and iterations == "depth":
            return fixed_point.solve_by_level(at, noise, adj, onehot, values)
        if onehot is None:
            return fixed_point.generate(mech, noise, **kw)
        return fixed_point.intervene(mech, noise, onehot, values, **kw)

    xq, nq = scale.x(data.test_x), scale.noise(data.test_noise)
    if "noise" in tasks:
        pred, sec = _timed(fixed_point.abduct, mech, xq)
        record("noise", rmse(nq, pred), sec)
    if "generation" in tasks:
        pred, sec = _timed(solve, nq)
        record("generation", rmse(xq, pred), sec)
    for task in ("interventional", "counterfactual"):
        if task not in tasks or not data.counterfactuals:
            continue
        errors, seconds = [], 0.0
        for cf in data.counterfactuals:
            onehot = np.zeros(data.d, bool)
            onehot[cf.index] = True
            values = np.zeros(data.d, np.float32)
            values[cf.index] = scale.value(cf.index, cf.value)
            if task == "interventional":
                fn = lambda: solve(scale.noise(cf.noise), onehot, values)  # noqa: B023
            else:
                fn = lambda: solve(fixed_point.abduct(mech, scale.x(cf.x)), onehot, values)  # noqa: B023
            pred, sec = _timed(fn)
            errors.append(float(rmse(scale.x(cf.x_cf), pred)))
            seconds += sec
        record(task, np.mean(errors), seconds)
    return records


def true_mechanism_method(apply: Callable[[jax.Array], jax.Array], scale_from: Standardizer) -> Callable:
    """Wrap a raw-unit mechanism ``f: x [..., d] -> [..., d]`` into standardised units with a given standardiser.

    ``T(z) = (f(σ z + μ) − μ) / σ`` — the true mechanism seen in standardised space (used to check the tasks).
    """
    mean, std = jnp.asarray(scale_from.mean, jnp.float32), jnp.asarray(scale_from.std, jnp.float32)

    def mechanism(z):
        m, s = (v.reshape((1,) * (jnp.ndim(z) - 1) + (-1,)) for v in (mean, std))
        return (apply(z * s + m) - m) / s

    return mechanism


def cond_fip_method(model, name: str = "cond-fip") -> Method:
    """Cond-FiP as a :class:`Method`: no fitting, the context is encoded and conditions the decoder (zero-shot).

    Args:
      model: a :class:`cfip_jax.model.TrainedModel`.
      name: the reported method name.
    """

    def fit(x: np.ndarray, adj: np.ndarray):
        adj = jnp.asarray(adj, jnp.float32)[None]
        cond = model_lib.condition_jit(model, jnp.asarray(x, jnp.float32)[None], adj)
        return model_lib.mechanism(model, cond, adj, single=True)

    return Method(name, fit)
