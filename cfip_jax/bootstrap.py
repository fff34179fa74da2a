"""Uncertainty by the bootstrap: Cond-FiP fitted to B resamples of the rows at once, and effects with intervals.

A zero-shot fit is one forward pass (paper §3: the encoder reads the dataset, the decoder is conditioned on its
embedding), so B refits cost one batched pass: :func:`fit_resamples` standardises each resample with its own
statistics, encodes its first ``n_ctx`` rows and abducts its noise, for all B resamples in a few compiled calls of
one compilation (``workers`` groups of resamples at once — XLA runs one such call on little more than one CPU core —
each passing ``chunk`` resamples at a time through the networks, to bound memory). :class:`BootstrapSCM` holds the B
conditioned decoders along a leading axis and answers with the spread:

- :meth:`BootstrapSCM.effect` → :class:`Effect`: the estimate (the median of the B resampled effects: bagging), the
  percentile interval of the B resampled effects at ``level``, the B values, and the effect under the one fit to all
  rows (``point``);
- :meth:`BootstrapSCM.sample` / :meth:`BootstrapSCM.intervene`: ``[B, n, d]`` samples, one set per resample.

With ``refine="closed-form"`` every resample is then corrected as :mod:`cfip_jax.inference.refine` corrects one
fit (:func:`correct_resamples`: one batched device call per member, :func:`cfip_jax.inference.correct.fit_batch`),
its candidates chosen on folds of the original rows (:func:`resample_folds`).

What the interval covers: the fit's sampling variability — how much the inferred SCM, and so the effect, moves when
the rows are redrawn — given the graph and the trained model. It does not cover the model's bias (a mechanism the
zero-shot model infers wrongly on every resample moves every resampled effect alike), nor an error in the graph.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from cfip_jax import fixed_point
from cfip_jax import model as model_lib
from cfip_jax import validation as V
from cfip_jax.inference import correct as correct_lib
from cfip_jax.inference import noise as noise_lib
from cfip_jax.inference import refine as refine_lib


@dataclasses.dataclass(frozen=True)
class Effect:
    """An average causal effect E[Y | do(a)] − E[Y | baseline] in the data's units, with its bootstrap interval.

    The estimate is the median of the resampled effects (bagging; DoWhy-GCM's ``confidence_intervals`` reports the
    same), not the effect under the single fit to all rows (``point``): each resample's encoder reads a different
    draw of the rows, and their median averages out how much a zero-shot fit moves with the rows it reads — on
    random linear-Gaussian SCMs (d = 10, n = 400, ``python -m cfip_jax.bench.bootstrap``) its median relative error
    is about half the single fit's. It always lies inside the interval.

    Attributes:
      estimate: the median of ``values``.
      low, high: the percentile interval of ``values`` at ``level``.
      level: the interval's nominal coverage.
      values: ``[B]`` the effect under each resample's SCM.
      outcome: the outcome node's name.
      point: the effect under the SCM fitted to all rows (what ``fit(...).effect(...)`` gives).
    """

    estimate: float
    low: float
    high: float
    level: float
    values: np.ndarray
    outcome: str
    point: float

    def to_dict(self) -> dict:
        """JSON-able (the resampled values as a list)."""
        return dict(outcome=self.outcome, estimate=self.estimate, low=self.low, high=self.high, level=self.level,
                    point=self.point, n_boot=int(len(self.values)), values=[float(v) for v in self.values])  # fmt: skip


def resample_rows(key: jax.Array, n: int, n_boot: int) -> np.ndarray:
    """``[n_boot, n]`` row indices drawn with replacement."""
    return np.asarray(jax.random.randint(key, (n_boot, n), 0, n))


def distinct_rows(rows: np.ndarray, multiple: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Each resample's distinct rows: ``(distinct [B, K], inverse [B, n])`` with ``rows[b] == distinct[b, inverse[b]]``.

    A resample of n rows drawn with replacement holds about 63 % of them once or more; a row's abducted noise depends
    on that row and the resample's fit only, so it is computed once per distinct row. ``K`` is the largest count of
    distinct rows, rounded up to ``multiple`` (at most n) so that nearby counts share one compiled shape; the padding
    repeats the resample's first row."""
    n = rows.shape[1]
    distinct, inverse = [], np.empty_like(rows)
    for b, r in enumerate(rows):
        u, inverse[b] = np.unique(r, return_inverse=True)
        distinct.append(u)
    width = min(n, -(-max(len(u) for u in distinct) // multiple) * multiple)
    padded = np.stack([np.concatenate([u, np.full(width - len(u), u[0])]) for u in distinct])
    return padded, inverse


@functools.partial(jax.jit, static_argnames=("encoder", "decoder", "n_ctx", "chunk"))
def _fit(encoder, decoder, encoder_params, decoder_params, x, x_distinct, inverse, adj, *, n_ctx, chunk):
    """``x [B, n, d]`` (raw rows of each resample), ``x_distinct [B, K, d]`` its distinct rows and ``inverse [B, n]``
    (:func:`distinct_rows`) → ``(cond [B, 1, d, D], mean, std [B, d], noise [B, n, d])``."""
    mean = x.mean(axis=1)
    std = x.std(axis=1, ddof=1)
    std = jnp.where(std > 0, std, 1.0)  # a column constant in a resample: its values stay where they are
    z = (x - mean[:, None, :]) / std[:, None, :]
    z_distinct = (x_distinct - mean[:, None, :]) / std[:, None, :]
    model = model_lib.TrainedModel(encoder, encoder_params, decoder, decoder_params)

    def one(args):
        zb, zu, inv = args
        cond = model_lib.condition(model, zb[None, :n_ctx], adj[None])
        fz = decoder.apply(decoder_params, zu[None], cond, adj[None], None, method="decode", affine=None)[0]
        return cond, zb - fz[inv]  # each row's F(z) from its distinct row's

    cond, noise = jax.lax.map(one, (z, z_distinct, inverse), batch_size=chunk)
    cond = jax.tree.map(lambda a: a[:, 0], cond)  # [B, 1, d, D]: one dataset per resample
    return cond, mean, std, noise


def default_workers() -> int:
    """Concurrent batched calls :func:`fit_resamples` and :class:`BootstrapSCM` run: the cores this process may use
    on the CPU backend (XLA runs one such call on little more than one core; ``docs/benchmarks.md``), else 1 (an
    accelerator runs one program at a time)."""
    if jax.default_backend() != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def in_groups(fn: Callable[[slice], Any], total: int, workers: int, size: int | None = None) -> Any:
    """``fn`` over consecutive slices of ``range(total)``, ``workers`` of them at once (threads: each call is a
    compiled program that releases the GIL), the results concatenated along the leading axis of every leaf.

    Slices hold ``size`` items (default: ``total`` split evenly over ``workers``); all but the last have that many,
    so the calls share one compilation when ``fn`` pads the last to the same shape."""
    size = int(size or -(-total // max(1, workers)))
    parts = [slice(a, min(a + size, total)) for a in range(0, total, size)]
    if workers <= 1 or len(parts) == 1:
        out = [fn(part) for part in parts]
    else:
        with concurrent.futures.ThreadPoolExecutor(min(workers, len(parts))) as pool:
            out = list(pool.map(lambda part: jax.block_until_ready(fn(part)), parts))
    return out[0] if len(out) == 1 else jax.tree.map(lambda *a: jnp.concatenate(a), *out)


def _padded(a: np.ndarray, part: slice, size: int) -> np.ndarray:
    """``a[part]`` with its last item repeated up to ``size`` items."""
    got = a[part]
    return np.concatenate([got, np.repeat(got[-1:], size - len(got), axis=0)]) if len(got) < size else got


def fit_resamples(model: model_lib.TrainedModel, x: np.ndarray, adj: np.ndarray, rows: np.ndarray, *,
                  n_ctx: int, chunk: int = 1, workers: int | None = None) -> tuple:  # fmt: skip
    """The B resamples ``x[rows[b]]`` fitted in batched, compiled calls: ``(cond, mean [B, d], std [B, d], noise
    [B, n, d])`` (standardised noise).

    Args:
      model: the trained networks.
      x: ``[n, d]`` the data (validated, float32).
      adj: ``[d, d]`` the DAG.
      rows: ``[B, n]`` the resamples' row indices.
      n_ctx: rows of each resample the encoder reads (its first ``n_ctx``; the resample is already random).
      chunk: resamples per batched pass within a call (memory: the encoder's attention grows as
        ``chunk × n_ctx²``).
      workers: calls run at once, each on ``B / workers`` resamples (default :func:`default_workers`); the values
        do not depend on it.
    """
    x = np.asarray(x, np.float32)
    distinct, inverse = distinct_rows(rows)
    workers = default_workers() if workers is None else int(workers)
    size = -(-rows.shape[0] // max(1, workers))
    args = dict(n_ctx=int(min(n_ctx, x.shape[0])), chunk=int(chunk))
    adj = jnp.asarray(adj, jnp.float32)

    def group(part: slice) -> tuple:
        count = len(range(*part.indices(rows.shape[0])))
        out = _fit(model.encoder, model.decoder, model.encoder_params, model.decoder_params,
                   jnp.asarray(x[_padded(rows, part, size)]), jnp.asarray(x[_padded(distinct, part, size)]),
                   jnp.asarray(_padded(inverse, part, size)), adj, **args)  # fmt: skip
        return jax.tree.map(lambda a: a[:count], out)

    return in_groups(group, rows.shape[0], workers, size)


def resample_folds(n: int, rows: np.ndarray, cfg: refine_lib.RefineConfig) -> list[list[np.ndarray]]:
    """The correction's folds in each resample ``rows [B, n]``: refinement's own folds of the ``n`` original rows
    (:func:`cfip_jax.inference.refine.correction_folds`), each resampled row in its original row's fold — so a row
    drawn twice is never fitted on and scored on at once, which would favour the candidates that overfit."""
    fold_of = np.full(n, -1)
    for f, part in enumerate(refine_lib.correction_folds(n, cfg)):
        fold_of[part] = f
    return [[np.flatnonzero(fold_of[r] == f) for f in range(int(fold_of.max()) + 1)] for r in rows]


def correct_resamples(x: np.ndarray, rows: np.ndarray, mean: jax.Array, std: jax.Array, noise: jax.Array,
                      adj: np.ndarray, cfg: refine_lib.RefineConfig,
                      chunk: int = 4) -> tuple[Any, jax.Array]:  # fmt: skip
    """``refine="closed-form"`` for every resample: ``(correction [B, members, ...], corrected noise [B, n, d])``.

    Member k of every resample fits its correction with member k's random features (seed ``cfg.seed + k``) on the
    folds of :func:`resample_folds`; the resample's mechanism is the decoder once, then the mean of its members'
    corrections (as :class:`cfip_jax.inference.mechanism.Mechanism` with ``shared``). ``x [n, d]`` the data,
    ``rows [B, n]``, and :func:`fit_resamples`' ``mean``, ``std [B, d]`` and zero-shot noise ``z − T(z) [B, n, d]``;
    ``chunk`` resamples per batched call."""
    z = (jnp.asarray(np.asarray(x, np.float32)[rows]) - mean[:, None, :]) / std[:, None, :]
    t = z - noise
    per_member = []
    for k in range(cfg.members):
        member = dataclasses.replace(cfg, seed=cfg.seed + k, members=1)
        folds = resample_folds(z.shape[1], rows, member)
        c = cfg.correction
        per_member.append(correct_lib.fit_batch(t, z, adj, folds, kind=c.kind, features=c.features, seed=member.seed,
                                                chunk=chunk, prefer=c.prefer_linear))  # fmt: skip
    corr = jax.tree.map(lambda *a: jnp.stack(a, axis=1), *per_member)
    corrected = jax.lax.map(lambda a: correct_lib.apply_mean(*a), (corr, t, z), batch_size=int(chunk))  # memory
    return corr, z - corrected


def _corrected_at(at, corr, z, nodes):
    """Each resample's mean of its members' corrections (``corr`` leaves ``[B, members, ...]``) of ``at(z, nodes)``."""
    return jax.vmap(lambda c, tb, zb: correct_lib.apply_mean(c, tb, zb, nodes))(corr, at(z, nodes), z)


@flax.struct.dataclass
class BootstrapSCM:
    """B SCMs fitted to resamples of the rows (leading axis B), and the SCM fitted to all of them (``point``).

    Build it with :meth:`cfip_jax.CondFiP.bootstrap`. Noise, statistics and conditioning are standardised per
    resample, as a refit would do; results are in the data's units.
    """

    point: Any  # the InferredSCM of all rows
    cond: Any
    mean: jax.Array  # [B, d]
    std: jax.Array  # [B, d]
    noise_data: jax.Array  # [B, n, d]
    adj: jax.Array
    decoder: Any = flax.struct.field(pytree_node=False, default=None)
    decoder_params: Any = None
    level: float = flax.struct.field(pytree_node=False, default=0.95)
    correction: Any = None  # refine="closed-form": leaves [B, members, ...] (correct_resamples)
    solve_chunk: int = flax.struct.field(pytree_node=False, default=25)  # resamples per solve (sample, effect, …)
    workers: int = flax.struct.field(pytree_node=False, default=1)  # solves run at once (default_workers())

    @property
    def n_boot(self) -> int:
        return int(self.mean.shape[0])

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.point.nodes

    def _fresh_noise(self, n: int, key: jax.Array) -> jax.Array:
        """``[B, n, d]`` new standardised noise from each resample's noise model (the point SCM's kind)."""
        return noise_lib.draw(self.noise_data, n, key, self.point.noise_model)

    def _solve(self, noise: jax.Array, mask=None, vals=None, targets=None, known=None) -> jax.Array:
        """``noise [B, n, d]`` → ``[B, n, d]`` standardised samples, ``self.solve_chunk`` resamples per solve: the
        same values as one solve of all B, and faster on a CPU (``docs/benchmarks.md``).
        ``vals``: None or ``[B, d]``; ``known``: None or ``(z [B, n, d], nodes [d] bool)`` (as
        :func:`cfip_jax.fixed_point.solve_by_level`)."""

        def part_solve(part: slice) -> jax.Array:
            cut = lambda t: t[part]  # noqa: E731
            z = noise[part]
            adj_b = jnp.broadcast_to(self.adj, (z.shape[0], *self.adj.shape))
            at = model_lib.decoder_node_mechanism(self.decoder, self.decoder_params, jax.tree.map(cut, self.cond),
                                                  adj_b, None)  # fmt: skip
            if self.correction is not None:
                at = jax.tree_util.Partial(_corrected_at, at, jax.tree.map(cut, self.correction))
            v = None if vals is None else vals[part]
            given = None if known is None else (known[0][part], known[1])
            return fixed_point.solve_by_level(at, z, np.asarray(self.adj), mask, v, targets=targets, known=given)

        return in_groups(part_solve, self.n_boot, self.workers, self.solve_chunk)

    def _raw(self, z: jax.Array) -> jax.Array:
        return z * self.std[:, None, :] + self.mean[:, None, :]

    def _standardised(self, values: np.ndarray | None) -> jax.Array | None:
        return None if values is None else (jnp.asarray(values)[None, :] - self.mean) / self.std

    def sample(self, n: int, key: jax.Array) -> np.ndarray:
        """``[B, n, d]`` observational samples, ``n`` per resample's SCM, in the data's units."""
        V.check_int(n, "n", minimum=1)
        return np.asarray(self._raw(self._solve(self._fresh_noise(n, key))))

    def intervene(self, values, n: int, key: jax.Array) -> np.ndarray:
        """``[B, n, d]`` samples under the hard intervention ``values={node: a}`` (data units), per resample."""
        V.check_int(n, "n", minimum=1)
        mask, raw = self.point.intervention_values(values)
        z = self._solve(self._fresh_noise(n, key), mask, self._standardised(raw))
        return np.asarray(self._raw(z))

    def effect(self, outcome, do, baseline=None, *, n: int = 200, key: jax.Array) -> Effect:
        """E[outcome | do] − E[outcome | baseline] (observational when None) under every resample's SCM: their
        median, their percentile interval, and the effect under the SCM of all rows (:class:`Effect`); see
        :meth:`cfip_jax.api.InferredSCM.effect` for the arguments.

        ``n``: Monte Carlo samples per resample's SCM (the same noise under both arms, so their difference carries
        little sampling noise); the cost is B × n samples solved for the outcome's ancestors under the baseline, then
        again for those the intervention moves (:func:`cfip_jax.fixed_point.host_unaffected`: the rest are shared),
        so it is kept small by default."""
        j, (mask, raw), base = self.point.effect_plan(outcome, do, baseline, n)
        noise = self._fresh_noise(n, key)  # the same noise under both: the difference is free of sampling noise
        if base is None:
            control = self._solve(noise, targets=[j])  # j's ancestors only
        else:
            control = self._solve(noise, base[0], self._standardised(base[1]), [j])
        same = fixed_point.host_unaffected(np.asarray(self.adj), mask, None if base is None else base[0])
        treated = self._solve(noise, mask, self._standardised(raw), [j], known=(control, same))  # what `do` moves
        values = np.asarray((treated[..., j].mean(-1) - control[..., j].mean(-1)) * self.std[:, j], np.float64)
        alpha = (1.0 - self.level) / 2.0
        low, high = np.quantile(values, [alpha, 1.0 - alpha])
        point = self.point.effect(outcome, do, baseline, n=n, key=key)
        return Effect(float(np.median(values)), float(low), float(high), self.level, values, self.nodes[j],
                      float(point))  # fmt: skip
