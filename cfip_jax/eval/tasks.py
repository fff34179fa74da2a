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
from cfip_jax.data.io import Dataset
from cfip_jax.eval import baselines, dowhy_gcm, fip
from cfip_jax.eval.metrics import rmse
from cfip_jax.inference import fit as fit_lib
from cfip_jax.inference import refine as refine_lib

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


@dataclasses.dataclass(frozen=True)
class Fitted:
    """A method fitted on one dataset's context: what every task needs.

    Attributes:
      mech: the fitted mechanism ``T`` (standardised units).
      data: the dataset (raw units).
      scale: the context's :class:`Standardizer`.
      adj: ``[d, d]`` float32 graph.
      iterations: fixed-point steps (``"depth"``: longest path + 1).
    """

    mech: Callable
    data: Dataset
    scale: Standardizer
    adj: np.ndarray
    iterations: int | str | None

    def solve(self, noise, onehot=None, values=None):
        """The (intervened) fixed point from ``noise``; each node once, after its parents, when the mechanism has
        ``.at`` (a subset-of-nodes form) and ``iterations="depth"``."""
        at = getattr(self.mech, "at", None)
        if at is not None and self.iterations == "depth":
            return fixed_point.solve_by_level(at, noise, self.adj, onehot, values, bucket=True)  # few compiles
        kw = dict(adj=self.adj, iterations=self.iterations)
        if onehot is None:
            return fixed_point.generate(self.mech, noise, **kw)
        return fixed_point.intervene(self.mech, noise, onehot, values, **kw)

    def intervention(self, cf) -> tuple[np.ndarray, np.ndarray]:
        """The one-hot mask and standardised values of an intervention file."""
        onehot = np.zeros(self.data.d, bool)
        onehot[cf.index] = True
        values = np.zeros(self.data.d, np.float32)
        values[cf.index] = self.scale.value(cf.index, cf.value)
        return onehot, values


def noise_task(f: Fitted) -> tuple[float, float] | None:
    """RMSE between the query's true noise and ``x − T(x)``; ``(rmse, seconds)``."""
    pred, sec = _timed(fixed_point.abduct, f.mech, f.scale.x(f.data.test_x))
    return float(rmse(f.scale.noise(f.data.test_noise), pred)), sec


def generation_task(f: Fitted) -> tuple[float, float] | None:
    """RMSE between the query and the fixed point generated from its true noise."""
    pred, sec = _timed(f.solve, f.scale.noise(f.data.test_noise))
    return float(rmse(f.scale.x(f.data.test_x), pred)), sec


def _intervention_task(f: Fitted, noise_of) -> tuple[float, float] | None:
    if not f.data.counterfactuals:
        return None
    errors, seconds = [], 0.0
    for cf in f.data.counterfactuals:
        onehot, values = f.intervention(cf)
        pred, sec = _timed(lambda cf=cf, o=onehot, v=values: f.solve(noise_of(cf), o, v))
        errors.append(float(rmse(f.scale.x(cf.x_cf), pred)))
        seconds += sec
    return float(np.mean(errors)), seconds


def interventional_task(f: Fitted) -> tuple[float, float] | None:
    """Per intervention file, RMSE between the true counterfactual rows and the intervened fixed point from the
    factual rows' *true* noise, averaged over the files (None without intervention files)."""
    return _intervention_task(f, lambda cf: f.scale.noise(cf.noise))


def counterfactual_task(f: Fitted) -> tuple[float, float] | None:
    """The same from the noise *inferred* from the factual rows, ``x_f − T(x_f)``."""
    return _intervention_task(f, lambda cf: fixed_point.abduct(f.mech, f.scale.x(cf.x)))


TASK_FUNCTIONS = {
    "noise": noise_task,
    "generation": generation_task,
    "interventional": interventional_task,
    "counterfactual": counterfactual_task,
}


def evaluate_dataset(
    method: Method,
    data: Dataset,
    *,
    n_context: int | None = None,
    tasks: tuple[str, ...] = TASKS,
    iterations: int | str | None = "depth",
    adj: np.ndarray | None = None,
) -> list[dict]:
    """Fit ``method`` on one dataset's context, then run ``tasks``.

    Args:
      method: the :class:`Method`.
      data: a dataset (raw units): context = ``train_x`` (first ``n_context`` rows), query = ``test_x``,
        interventions = ``counterfactuals``.
      n_context: context rows to use (default all).
      tasks: a subset of :data:`TASKS`.
      iterations: fixed-point steps (``"depth"``: longest path + 1, exact for every method here since each T respects
        the graph).
      adj: the graph ``[d, d]`` the method is fitted on and solved with (default the dataset's true graph; e.g. a
        learned one, :mod:`cfip_jax.inference.structure`).

    Returns:
      One record per task: ``{"method", "task", "n_context", "rmse", "seconds"}`` (``seconds``: fitting plus the
      task's own computation).
    """
    x_ctx = data.train_x if n_context is None else data.train_x[:n_context]
    if x_ctx.shape[0] < 2:
        raise ValueError(f"the context needs at least 2 rows, got {x_ctx.shape[0]}")
    scale = Standardizer.fit(x_ctx)
    adj = (data.adj if adj is None else np.asarray(adj)).astype(np.float32)
    mech, fit_seconds = _timed(method.fit, scale.x(x_ctx), adj)
    fitted = Fitted(mech, data, scale, adj, iterations)
    records = []
    for task in TASKS:
        if task not in tasks:
            continue
        result = TASK_FUNCTIONS[task](fitted)
        if result is not None:
            value, seconds = result
            records.append(dict(method=method.name, task=task, n_context=int(x_ctx.shape[0]), rmse=value,
                                seconds=fit_seconds + seconds))  # fmt: skip
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
    """Cond-FiP as a :class:`Method`: no fitting, the context is encoded and conditions the decoder (zero-shot;
    :func:`cfip_jax.inference.fit.infer`, as :meth:`cfip_jax.api.CondFiP.fit`).

    Args:
      model: a :class:`cfip_jax.model.TrainedModel`.
      name: the reported method name.
    """

    def fit(x: np.ndarray, adj: np.ndarray):
        return fit_lib.infer(model, jnp.asarray(x, jnp.float32), adj).mechanism  # a Mechanism: has .at

    return Method(name, fit)


def cond_fip_refined_method(
    model, steps: int | str = "auto", config: refine_lib.RefineConfig | None = None, name: str = "cond-fip-refined"
) -> Method:
    """Cond-FiP conditioned on the context (zero-shot), then refined on the context rows
    (:mod:`cfip_jax.inference.refine`: gradient steps, then the closed-form per-node correction of
    :mod:`cfip_jax.inference.correct` unless the config has none).

    Args:
      model: a :class:`cfip_jax.model.TrainedModel`.
      steps: optimiser steps, ``"auto"`` (early stopping on held-out context rows) or ``"closed-form"``.
      config: the :class:`~cfip_jax.inference.refine.RefineConfig`.
      name: the reported method name.
    """

    def fit(x: np.ndarray, adj: np.ndarray):
        return fit_lib.infer(model, jnp.asarray(x, jnp.float32), adj, refine=steps, cfg=config).mechanism

    return Method(name, fit)
