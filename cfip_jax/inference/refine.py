"""Semi-amortized inference: refine the zero-shot SCM on its own data with a few gradient steps.

Cond-FiP infers the mechanisms of a dataset zero-shot: the encoder reads the context and conditions the decoder
(:func:`cfip_jax.model.condition`). Refinement starts from that conditioned decoder and takes optimiser steps on the
dataset itself with the per-dataset FiP objective (SPEC.md §7), x ≈ T(x): the mean over rows of the per-row RMSE over
nodes in standardised units. It needs no noise labels — T's output for node i depends on i's parents only, so it
regresses x_i on them. What is refined (``target``):

- ``"embedding"``: the dataset embedding only (the decoder's per-node V, P and C, ``3·d·D`` numbers);
- ``"adaln"`` (the default, the best of the variants measured in ``docs/refinement.md``): the condition C and the
  adaLN modulation layers that read it;
- ``"decoder"``: the embedding and every weight of the decoding path (adaLN blocks, final norm and output),
  optionally pulled towards the zero-shot values (``pull``: λ·mean((θ − θ₀)²)).

Schedules (``steps``): an int runs that many Adam steps on all rows; ``"auto"`` holds out a random ``holdout``
fraction of the rows (at least 10), runs up to ``max_steps`` steps on the others, checks the held-out loss every
``eval_every`` steps and stops after ``patience`` checks without improvement, returning the best parameters;
``"closed-form"`` takes no gradient step. Each step uses ``batch`` random rows (all rows when there are fewer). The
whole gradient refinement is one compiled call (a ``lax.fori_loop`` or ``lax.while_loop`` of steps inside ``jit``),
compiled once per model, shapes and settings.

Then (``correction``, on by default) the decoder's mechanism is corrected node by node in closed form
(:mod:`cfip_jax.inference.correct`): a ridge regression of each node's residual on its proposal, its parents and random
features of them, chosen per node by k-fold cross-validation over the rows (``CorrectionConfig.folds``; 1: on the
held-out rows of ``"auto"``'s split), the winner refitted on every row. The held-out loss ``"auto"`` and
``"closed-form"`` report after it scores each held-out row with the correction fitted without that row's fold (the
cross-validation's own out-of-fold predictions, so no second fit). Every schedule needs enough rows to hold some out
(:func:`held_out_rows`), unless ``correction=None``.

By default (``members=2``) two such refinements are averaged: member k runs with seed ``seed + k`` — its own
hold-out split, row batches, random features and folds — and the refined mechanism is the mean of the members'. The
refinement's outcome depends on its path (which held-out check early stopping keeps, which candidate each node's
correction picks), and averaging two paths removed about 5 % of the error on the suite
(``docs/refinement.md``). Every member's gradient stage runs in the same compiled call (``vmap`` over the members);
their corrections are fitted one after the other, each in one compiled call (:func:`cfip_jax.inference.correct.fit`).

A refinement whose loss turns non-finite returns the zero-shot parameters (the caller warns).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cfip_jax import model as model_lib
from cfip_jax import validation as V
from cfip_jax.inference import correct as correct_lib
from cfip_jax.inference.correct import CorrectionConfig
from cfip_jax.inference.mechanism import Mechanism
from cfip_jax.nn.decoder import Conditioning

TARGETS = ("embedding", "adaln", "decoder")
MIN_HELD_OUT, MIN_FIT_ROWS = 10, 20


@dataclasses.dataclass(frozen=True)
class RefineConfig:
    """How to refine (hashable: a static argument of the compiled refinement).

    Attributes:
      target: what is refined: ``"embedding"``, ``"adaln"`` or ``"decoder"`` (:data:`TARGETS`).
      correction: after the gradient steps, the closed-form per-node correction (:mod:`cfip_jax.inference.correct`)
        and its settings (:class:`~cfip_jax.inference.correct.CorrectionConfig`: candidates, features, folds, the
        least-squares rule), or None (no correction). A kind alone is short for its config: ``correction="linear"``
        is ``CorrectionConfig(kind="linear")``.
      lr: Adam's learning rate.
      batch: rows per step (None: all). 32 rather than 64: with two members slightly more accurate at every d and
        a fifth faster (with one member it tied 64 at d ≤ 20 and lost 1 % at d = 50; ``docs/refinement.md``).
      pull: weight of the pull towards the zero-shot parameters (``"decoder"`` target only matters).
      max_steps: the cap of ``"auto"``.
      holdout: the fraction of rows ``"auto"`` holds out (at least :data:`MIN_HELD_OUT` rows).
      eval_every: ``"auto"``: steps between checks of the held-out loss.
      patience: ``"auto"``: checks without improvement before stopping.
      seed: the row sampling, the hold-out split and the correction's features and folds.
      members: how many refinements are averaged (an ensemble: member k runs with seed ``seed + k``, so on its own
        hold-out split, row batches, random features and folds; the refined SCM's mechanism is the mean of the
        members' mechanisms). Each member costs one refinement's time; sampling evaluates every member's decoder.
    """

    target: str = "adaln"
    correction: CorrectionConfig | None = CorrectionConfig()
    lr: float = 3e-3
    batch: int | None = 32
    pull: float = 0.0
    max_steps: int = 200
    holdout: float = 0.2
    eval_every: int = 10
    patience: int = 3
    seed: int = 0
    members: int = 2

    def __post_init__(self):
        V.check_choice(self.target, TARGETS, "refine target")
        if isinstance(self.correction, str):
            object.__setattr__(self, "correction", CorrectionConfig(kind=self.correction))
        if self.correction is not None and not isinstance(self.correction, CorrectionConfig):
            raise ValueError(f"refine correction must be a CorrectionConfig, a kind or None, got {self.correction!r}")
        V.check_positive(self.lr, "refine lr")
        if self.batch is not None:
            V.check_int(self.batch, "refine batch", minimum=1)
        V.check_nonnegative(self.pull, "refine pull")
        V.check_int(self.max_steps, "refine max_steps", minimum=1)
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"refine holdout must be a fraction in (0, 1), got {self.holdout!r}")
        V.check_int(self.eval_every, "refine eval_every", minimum=1)
        V.check_int(self.patience, "refine patience", minimum=1)
        V.check_int(self.seed, "refine seed", minimum=0)
        V.check_int(self.members, "refine members", minimum=1)

    def compiled(self) -> RefineConfig:
        """The settings the compiled refinement depends on: not the seed (the members' keys are an argument) nor,
        beyond the arguments' shapes, the member count, so every seed shares one compiled program."""
        return dataclasses.replace(self, seed=0, members=1)


SCHEDULES = ("auto", "closed-form")


def check_refine(refine: Any) -> int | str | None:
    """Validate a ``refine=`` argument: None/0 (zero-shot), an int ≥ 0 (steps), ``"auto"`` or ``"closed-form"``;
    one-line errors."""
    if refine is None or refine in SCHEDULES:
        return refine
    if isinstance(refine, str):
        raise ValueError(f"refine must be None, a number of steps >= 0, 'auto' or 'closed-form', got {refine!r}")
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)):
        raise ValueError(f"refine must be None, a whole number of steps >= 0 or 'auto', got {refine!r}")
    if refine < 0:
        raise ValueError(f"refine must be >= 0 steps, got {refine}")
    return int(refine) or None


def held_out_rows(n: int, cfg: RefineConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(fit rows, held-out rows)`` of ``"auto"`` for an ``n``-row dataset (a fixed random split)."""
    held = max(MIN_HELD_OUT, int(round(cfg.holdout * n)))
    if n - held < MIN_FIT_ROWS:
        need = MIN_FIT_ROWS + max(MIN_HELD_OUT, int(np.ceil(MIN_FIT_ROWS * cfg.holdout / (1 - cfg.holdout))))
        raise ValueError(
            f"refinement holds out {held} of the {n} rows and fits on the rest: it needs at least {need} rows "
            f"(pass refine=<steps> with RefineConfig(correction=None) to refine on every row)"
        )
    order = np.random.default_rng(cfg.seed).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def check_schedule(steps: int | str, cfg: RefineConfig, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """One-line errors for a schedule that cannot run: ``"closed-form"`` without a correction, or ``n`` rows too few
    to hold some out when the schedule or the correction needs held-out rows. Returns that ``(fit, held-out)`` split
    (:func:`held_out_rows`), or None when nothing is held out. Cheap: call it before any tracing."""
    if steps == "closed-form" and cfg.correction is None:
        raise ValueError("refine='closed-form' is the correction alone: it needs RefineConfig(correction=...)")
    if steps in SCHEDULES or cfg.correction is not None:
        return held_out_rows(n, cfg)
    return None


# ---------------------------------------------------------------------------------------------------------------
# What is refined
# ---------------------------------------------------------------------------------------------------------------
def split(decoder_params: Any, cond: Conditioning, target: str) -> tuple[dict, dict]:
    """``(refined, fixed)`` parts of the decoder's variables and conditioning for ``target``."""
    params = decoder_params["params"]
    decode_path = {k: v for k, v in params.items() if k.startswith("layers_") or k in ("norm", "out")}
    if target == "embedding":
        return {"cond": cond}, {"params": params}
    if target == "adaln":
        modulation = {k: {"modulation": v["modulation"]} for k, v in params.items() if k.startswith("layers_")}
        return {"c": cond.c, "modulation": modulation}, {"params": params, "v": cond.v, "p": cond.p}
    return {"cond": cond, "decode": decode_path}, {"params": params}


def merge(refined: dict, fixed: dict, target: str) -> tuple[Any, Conditioning]:
    """The decoder variables and conditioning from :func:`split`'s parts."""
    params = dict(fixed["params"])
    if target == "embedding":
        return {"params": params}, refined["cond"]
    if target == "adaln":
        for k, v in refined["modulation"].items():
            params[k] = {**params[k], "modulation": v["modulation"]}
        return {"params": params}, Conditioning(v=fixed["v"], p=fixed["p"], c=refined["c"])
    params.update(refined["decode"])
    return {"params": params}, refined["cond"]


# ---------------------------------------------------------------------------------------------------------------
# The compiled refinement
# ---------------------------------------------------------------------------------------------------------------
def objective(decoder, decoder_params, cond: Conditioning, x: jax.Array, adj: jax.Array) -> jax.Array:
    """The refinement's objective: the mean over rows of the per-row RMSE of ``x − T(x)`` (``x [m, d]``, ``cond``
    ``[1, 1, d, D]``, ``adj [1, d, d]``), a scalar.

    The rows go through the decoder as two datasets of m/2 rows (the same conditioning and graph) when m is even:
    XLA's CPU backend runs reductions behind a unit leading axis several times slower than the same reductions with
    a batch of two, and the backward pass of a refinement step is mostly such reductions (layer-norm statistics,
    per-node tensors broadcast over rows): the gradient of a d = 20 step of 64 rows took 25–31 ms with one dataset
    and 11–14 ms with two, back to back (``docs/refinement.md``). The rows are independent given the conditioning,
    so the value and its gradient are the same up to float rounding.
    """
    m, d = x.shape
    groups = 2 if m % 2 == 0 else 1
    tile = lambda a: jnp.broadcast_to(a, (groups,) + a.shape[1:])  # noqa: E731
    xs = x.reshape(groups, m // groups, d)
    pred = decoder.apply(decoder_params, xs, jax.tree.map(tile, cond), tile(adj), None, method="decode")
    return jnp.mean(jnp.sqrt(jnp.mean(jnp.square(xs - pred), axis=-1) + 1e-12))


def _loss(theta, theta0, fixed, decoder, cfg: RefineConfig, x, adj):
    params, cond = merge(theta, fixed, cfg.target)
    loss = objective(decoder, params, cond, x, adj)
    if cfg.pull > 0:
        sq = jax.tree.map(lambda a, b: jnp.sum(jnp.square(a - b)), theta, theta0)
        count = sum(a.size for a in jax.tree.leaves(theta))
        loss = loss + cfg.pull * sum(jax.tree.leaves(sq)) / count
    return loss


def _adam_steps(theta, opt_state, theta0, fixed, decoder, cfg, x, adj, key, start, count):
    """``count`` Adam steps from step ``start`` on random batches of the rows ``x [m, d]``."""
    tx = optax.adam(cfg.lr)
    m = x.shape[0]
    batch = m if cfg.batch is None or cfg.batch >= m else cfg.batch

    def step(i, carry):
        theta, opt_state = carry
        rows = jax.random.choice(jax.random.fold_in(key, start + i), m, (batch,), replace=False) if batch < m else None
        xb = x if rows is None else x[rows]
        grads = jax.grad(_loss)(theta, theta0, fixed, decoder, cfg, xb, adj)
        updates, opt_state = tx.update(grads, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state

    return jax.lax.fori_loop(0, count, step, (theta, opt_state))


def _fixed_one(decoder, cfg: RefineConfig, steps: int, decoder_params, cond, x, adj, key):
    """One member: ``steps`` Adam steps on the rows ``x [n, d]``; ``(variables, conditioning, steps, loss before,
    loss after)`` on those rows."""
    theta0, fixed = split(decoder_params, cond, cfg.target)
    opt_state = optax.adam(cfg.lr).init(theta0)
    before = objective(decoder, decoder_params, cond, x, adj)
    theta, _ = _adam_steps(theta0, opt_state, theta0, fixed, decoder, cfg, x, adj, key, 0, steps)
    params, new_cond = merge(theta, fixed, cfg.target)
    after = objective(decoder, params, new_cond, x, adj)
    return params, new_cond, jnp.asarray(steps), before, after


def _auto_one(decoder, cfg: RefineConfig, decoder_params, cond, x_fit, x_held, adj, key):
    """One member of ``"auto"``: Adam steps on ``x_fit [m, d]``, early-stopped on ``x_held [h, d]``; ``(the best
    variables, conditioning, steps taken, held-out loss before, best held-out loss)``."""
    theta0, fixed = split(decoder_params, cond, cfg.target)
    opt_state = optax.adam(cfg.lr).init(theta0)
    held = lambda theta: objective(decoder, *merge(theta, fixed, cfg.target), x_held, adj)  # noqa: E731
    before = held(theta0)

    def keep_going(carry):
        step, _, _, _, _, since_best = carry
        return (step < cfg.max_steps) & (since_best < cfg.patience)

    def body(carry):
        step, theta, opt_state, best, best_loss, since_best = carry
        count = jnp.minimum(cfg.eval_every, cfg.max_steps - step)
        theta, opt_state = _adam_steps(theta, opt_state, theta0, fixed, decoder, cfg, x_fit, adj, key, step, count)
        loss = held(theta)
        better = loss < best_loss  # False for NaN: a diverging run keeps its best (or the zero-shot) parameters
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), theta, best)
        return (step + count, theta, opt_state, best, jnp.where(better, loss, best_loss),
                jnp.where(better, 0, since_best + 1))  # fmt: skip

    init = (jnp.asarray(0), theta0, opt_state, theta0, before, jnp.asarray(0))
    steps, _, _, best, best_loss, _ = jax.lax.while_loop(keep_going, body, init)
    params, new_cond = merge(best, fixed, cfg.target)
    return params, new_cond, steps, before, best_loss


def _over_members(one, *batched):
    """``one(*args)`` for each member, the ``batched`` arguments carrying the members along a leading axis; the
    outputs stacked the same way. One member runs unbatched (no unit axis: XLA's CPU reductions behind one are
    slow, see :func:`objective`); more run as one ``vmap`` (a ``while_loop`` runs until every member has stopped,
    a stopped member's state no longer changing)."""
    if batched[0].shape[0] == 1:
        return jax.tree.map(lambda a: jnp.asarray(a)[None], one(*(b[0] for b in batched)))
    return jax.vmap(one)(*batched)


@functools.partial(jax.jit, static_argnames=("decoder", "cfg", "steps"))
def _refine_fixed(decoder, cfg: RefineConfig, steps: int, decoder_params, cond, x, adj, keys):
    """``steps`` Adam steps on all rows ``x [n, d]`` for each member's key (``keys [K]``); outputs ``[K, ...]``."""
    one = lambda key: _fixed_one(decoder, cfg, steps, decoder_params, cond, x, adj, key)  # noqa: E731
    return _over_members(one, keys)


@functools.partial(jax.jit, static_argnames=("decoder", "cfg"))
def _refine_auto(decoder, cfg: RefineConfig, decoder_params, cond, x_fit, x_held, adj, keys):
    """Early-stopped Adam steps for each member: its fit rows ``x_fit [K, m, d]``, held-out rows ``x_held [K, h, d]``
    and key (``keys [K]``); outputs ``[K, ...]``."""
    one = lambda xf, xh, key: _auto_one(decoder, cfg, decoder_params, cond, xf, xh, adj, key)  # noqa: E731
    return _over_members(one, x_fit, x_held, keys)


@dataclasses.dataclass(frozen=True)
class Refined:
    """The outcome of :func:`refine`.

    With ``members`` > 1 (an ensemble, :class:`RefineConfig`) the refined decoder variables, conditioning and
    correction hold one entry per member along a new leading axis (:func:`stack`), and the mechanism is the mean of
    the members' (:meth:`mechanism`).

    Attributes:
      model: the model with the refined decoder variables (the encoder unchanged).
      cond: the refined conditioning.
      steps: optimiser steps taken (``"auto"``: up to the early stop, the most of any member; ``"closed-form"``: 0).
      loss_before, loss_after: the objective before and after (the correction included), on the held-out rows
        (``"auto"``, ``"closed-form"``: the gradient steps never saw them, and each row is corrected out of fold —
        the correction's choice saw it, so ``loss_after`` is slightly optimistic) or on the fitted rows (a number of
        steps); with members, the mean of the members' (each on its own held-out rows).
      loss_on: ``"held-out rows"`` or ``"fitted rows"``.
      correction: the :class:`cfip_jax.inference.correct.Correction` of the refined mechanism, or None.
      corrected_nodes: how many nodes kept their mechanism / got a linear / a feature correction, summed over the
        members (None without a correction).
      finite: False when the refinement diverged (then ``model``/``cond`` are the zero-shot ones, no correction,
        one member).
      members: how many refinements the mechanism averages.
      shared: the members share the decoder (``"closed-form"``: no gradient step, so ``model`` and ``cond`` are the
        zero-shot ones, held once, and only ``correction`` has the members' axis).
    """

    model: model_lib.TrainedModel
    cond: Conditioning
    steps: int
    loss_before: float
    loss_after: float
    loss_on: str
    correction: correct_lib.Correction | None = None
    corrected_nodes: dict[str, int] | None = None
    finite: bool = True
    members: int = 1
    shared: bool = False

    def mechanism(self, adj: jax.Array) -> Mechanism:
        """The refined SCM's :class:`~cfip_jax.inference.mechanism.Mechanism` (``adj [1, d, d]``)."""
        return Mechanism.build(self.model.decoder, self.model.decoder_params, self.cond, adj, self.correction,
                               self.members, self.shared)  # fmt: skip


def stack(trees: list[Any]) -> Any:
    """The members' pytrees (same structure and shapes) as one pytree with a leading member axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _row_rmse_of(pred: np.ndarray, x: np.ndarray) -> float:
    return float(np.mean(np.sqrt(np.mean(np.square(x - pred), axis=-1) + 1e-12)))


def refine(
    model: model_lib.TrainedModel,
    cond: Conditioning,
    z: jax.Array,
    adj: jax.Array,
    steps: int | str,
    cfg: RefineConfig | None = None,
) -> Refined:
    """Refine the conditioned decoder on one dataset's standardised rows ``z [n, d]`` (graph ``adj [1, d, d]``).

    Args:
      model: the trained model; ``cond``: its zero-shot conditioning for this dataset (``[1, 1, d, D]``).
      z: ``[n, d]`` standardised rows (the objective's data).
      adj: ``[1, d, d]``.
      steps: a number of steps ≥ 1, ``"auto"`` or ``"closed-form"`` (see the module docstring).
      cfg: the :class:`RefineConfig` (default ``RefineConfig()``); ``cfg.members`` refinements, member k with seed
        ``cfg.seed + k``, averaged.

    Returns:
      The :class:`Refined` model, conditioning and correction (the zero-shot ones, ``finite=False``, if any member
      diverged).
    """
    cfg = RefineConfig() if cfg is None else cfg
    z = jnp.asarray(z, jnp.float32)
    if steps not in SCHEDULES:
        steps = V.check_int(steps, "refine steps", minimum=1)
    members = [dataclasses.replace(cfg, seed=cfg.seed + k, members=1) for k in range(cfg.members)]
    splits = [check_schedule(steps, member, z.shape[0]) for member in members]
    runs = []
    for member, split_rows, grad in zip(members, splits, _gradient_stage(model, cond, z, adj, steps, cfg, splits),
                                        strict=True):  # fmt: skip
        run = _corrected_member(model, cond, z, adj, steps, member, split_rows, grad)
        if not run.finite:
            return run
        runs.append(run)
    if cfg.members == 1:
        return runs[0]
    first = runs[0]
    counts = None
    if first.corrected_nodes is not None:
        counts = {key: sum(r.corrected_nodes[key] for r in runs) for key in first.corrected_nodes}
    shared = steps == "closed-form"  # every member holds the zero-shot decoder: keep it once
    return Refined(
        model=first.model
        if shared
        else dataclasses.replace(first.model, decoder_params=stack([r.model.decoder_params for r in runs])),
        cond=first.cond if shared else stack([r.cond for r in runs]),
        steps=max(r.steps for r in runs),
        loss_before=float(np.mean([r.loss_before for r in runs])),
        loss_after=float(np.mean([r.loss_after for r in runs])),
        loss_on=first.loss_on,
        correction=None if first.correction is None else stack([r.correction for r in runs]),
        corrected_nodes=counts,
        members=cfg.members,
        shared=shared,
    )


def _gradient_stage(model, cond: Conditioning, z: jax.Array, adj: jax.Array, steps: int | str, cfg: RefineConfig,
                    splits: list) -> list[tuple]:  # fmt: skip
    """Every member's gradient stage in one compiled call: ``[(decoder variables, conditioning, steps taken, loss
    before, loss after)]`` on the host, member k with the key of seed ``cfg.seed + k`` and the ``"auto"`` split
    ``splits[k]``."""
    count = len(splits)
    if steps == "closed-form":
        return [(model.decoder_params, cond, 0, np.nan, np.nan)] * count
    keys = jax.vmap(jax.random.key)(jnp.arange(cfg.seed, cfg.seed + count))
    if steps == "auto":
        x_fit, x_held = (jnp.stack([z[rows[j]] for rows in splits]) for j in (0, 1))
        out = _refine_auto(model.decoder, cfg.compiled(), model.decoder_params, cond, x_fit, x_held, adj, keys)
    else:
        out = _refine_fixed(model.decoder, cfg.compiled(), steps, model.decoder_params, cond, z, adj, keys)
    out = jax.device_get(out)
    return [jax.tree.map(lambda a, k=k: a[k], out) for k in range(count)]


def _corrected_member(model, cond: Conditioning, z: jax.Array, adj: jax.Array, steps: int | str, cfg: RefineConfig,
                      split_rows, grad: tuple) -> Refined:  # fmt: skip
    """One member (seed ``cfg.seed``) after its gradient stage ``grad`` (:func:`_gradient_stage`): checked, then
    corrected in closed form unless ``cfg.correction`` is None."""
    params, new_cond, taken, before, after = grad
    loss_on = "fitted rows" if isinstance(steps, int) else "held-out rows"
    finite = steps == "closed-form" or (  # closed-form: the trained model's own variables, not changed here
        bool(np.isfinite(after)) and all(np.all(np.isfinite(a)) for a in jax.tree.leaves((params, new_cond)))
    )
    if not finite:
        return Refined(model, cond, int(taken), float(before), float(after), loss_on, finite=False)
    refined = dataclasses.replace(model, decoder_params=jax.tree.map(jnp.asarray, params))
    new_cond = jax.tree.map(jnp.asarray, new_cond)
    if cfg.correction is None:
        return Refined(refined, new_cond, int(taken), float(before), float(after), loss_on)
    t = np.asarray(_proposal(Mechanism.build(refined.decoder, refined.decoder_params, new_cond, adj), z), np.float64)
    x = np.asarray(z, np.float64)
    if not np.all(np.isfinite(t)):  # finite parameters whose mechanism overflows at the data
        return Refined(model, cond, int(taken), float(before), float(after), loss_on, finite=False)
    graph = np.asarray(adj)[0]
    _, held_rows = split_rows
    c = cfg.correction
    kw = dict(kind=c.kind, features=c.features, seed=cfg.seed, prefer=c.prefer_linear)
    corr, counts, _, oof = correct_lib.fit(t, x, graph, correction_folds(z.shape[0], cfg), **kw)
    if loss_on == "held-out rows":  # the objective on the held-out rows, each corrected out of fold
        if steps == "closed-form":
            before = _row_rmse_of(t[held_rows], x[held_rows])
        after = _row_rmse_of(oof[held_rows], x[held_rows])
    else:
        after = _row_rmse_of(np.asarray(correct_lib.apply(corr, jnp.asarray(t, jnp.float32), z)), x)
    if not (np.isfinite(after) and all(np.all(np.isfinite(a)) for a in jax.tree.leaves(corr))):
        return Refined(model, cond, int(taken), float(before), float(after), loss_on, finite=False)
    return Refined(refined, new_cond, int(taken), float(before), float(after), loss_on, corr, counts)


@jax.jit
def _proposal(mech: Mechanism, z: jax.Array) -> jax.Array:
    """``T(z) [n, d]``, compiled once per decoder and shapes (the correction's input)."""
    return mech(z)


def correction_folds(n: int, cfg: RefineConfig) -> list[np.ndarray]:
    """The folds the correction of ``n`` rows is chosen on: with ``cfg.correction.folds == 1`` the held-out rows of
    :func:`held_out_rows`, with ``folds > 1`` that many cross-validation folds (seed ``cfg.seed + 1``); ``cfg`` has a
    correction."""
    k = cfg.correction.folds
    if k > 1:
        return correct_lib.folds(n, min(k, n), cfg.seed + 1)
    return [held_out_rows(n, cfg)[1]]
