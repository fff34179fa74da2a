"""Closed-form correction of an inferred mechanism, node by node, chosen on held-out rows.

The amortized decoder proposes a mechanism ``T`` for a dataset (zero-shot or after gradient refinement). A node's
proposal can be off in ways a small per-node regression fixes at once: a missed linear trend, a wrong scale, a bump
the mechanism family does not reach. For every node ``i`` with parents ``pa(i)`` the correction regresses the
residual ``x_i − T_i(x)`` on ``[T_i(x), x_pa, φ(x_pa), 1]`` by ridge regression, where
``φ(u) = √(2/M) cos(u Ω / ℓ + β)`` are ``M`` random Fourier features (Ω standard normal, β uniform on [0, 2π)), so
that the corrected mechanism is

    T'_i(x) = (1 + a_i) T_i(x) + w_iᵀ x_pa + v_iᵀ φ_i(x_pa) + b_i.

Two families of candidates are offered per node. *Around the proposal*: the ridge penalty shrinks towards the
proposal itself (all coefficients 0: ``T' = T``). *Without the proposal*: ``a_i = −1`` is held fixed, so the fit is
a plain ridge regression of ``x_i`` on ``[x_pa, φ(x_pa), 1]`` shrunk towards zero; its first member is the
least-squares fit of ``x_i`` on ``[x_pa, 1]`` with no shrinkage (a design of its own, so the proposal's column cannot
condition it) — exactly the fit a per-dataset linear model makes, which on nearly noiseless linear data with
correlated parents even the smallest ridge strength misses visibly. Which correction a node gets is chosen on
held-out rows (one held-out split, or k-fold cross-validation: :func:`folds`), per node, among: none (keep ``T_i``),
least squares, and for each family linear (``[x_pa, 1]``) and, with ``kind="features"``, random features at each
length-scale of :data:`LENGTHSCALES`, each at every ridge strength of :data:`RIDGES` — the candidate with the lowest
held-out squared error wins only if it beats the proposal there, except that least squares is taken wherever its
held-out error is within ``prefer`` standard errors of the lowest, keeping the proposal included (the
one-standard-error rule: where the folds cannot tell the fits apart, the linear one, which extrapolates as a linear
mechanism does beyond the rows the folds hold); the winner is then refitted on every row. A node
without parents keeps its mechanism (a constant). The corrected ``T'_i`` still reads the parents of ``i`` only, so
the graph, the fixed-point solvers, interventions and counterfactuals are unchanged.

The fit runs on the device in one compiled call per shape (:func:`fit`): every node × candidate × fold at once as
batched float32 linear algebra — per-fold Gram matrices of the design, each held-out fit as the full Gram minus its
fold's, Cholesky factorisations at each ridge strength, and the without-proposal family from the same factorisation
as a constrained solution (``a_i = −1`` by one Lagrange multiplier; the least-squares member from its own small
factorisation). Applying it is a pure JAX function of a :class:`Correction` pytree. Measured in
``docs/refinement.md``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from cfip_jax import validation as V

KINDS = ("features", "linear")
LENGTHSCALES = (0.5, 1.0, 2.0)
RIDGES = (1e-3, 1e-2, 1e-1, 1.0)


@flax.struct.dataclass
class Correction:
    """A fitted per-node correction (see the module docstring); ``d`` nodes, ``K`` ≥ 1 parent slots, ``M`` features.

    Attributes:
      scale: ``[d]`` a (the corrected mechanism uses ``1 + a``).
      parents: ``[d, K]`` int32 parent indices (padding: 0, masked by ``pmask``).
      pmask: ``[d, K]`` 1.0 for a real parent slot.
      coef: ``[d, K]`` w, per parent slot.
      bias: ``[d]`` b.
      omega: ``[d, K, M]`` Ω / ℓ, per parent slot.
      phase: ``[d, M]`` β.
      weight: ``[d, M]`` v (already scaled by √(2/M)).
    """

    scale: jax.Array
    parents: jax.Array
    pmask: jax.Array
    coef: jax.Array
    bias: jax.Array
    omega: jax.Array
    phase: jax.Array
    weight: jax.Array

    FIELDS = ("scale", "parents", "pmask", "coef", "bias", "omega", "phase", "weight")


def apply(corr: Correction, t: jax.Array, z: jax.Array, nodes: jax.Array | None = None) -> jax.Array:
    """The corrected mechanism ``T'(z)`` from ``t = T(z)``.

    Args:
      corr: the :class:`Correction`.
      t: ``[..., n, d]`` the proposal ``T(z)`` (or ``[..., n, K']`` its columns ``nodes``).
      z: ``[..., n, d]`` the inputs.
      nodes: ``[K']`` int, the nodes ``t`` holds (default all).

    Returns:
      ``T'(z)`` with ``t``'s shape.
    """
    c = corr if nodes is None else jax.tree.map(lambda a: a[nodes], corr)
    lead = (1,) * (jnp.ndim(z) - 1)  # the batch and row axes, broadcast explicitly
    zp = jnp.take(z, c.parents, axis=-1) * c.pmask.reshape(lead + c.pmask.shape)  # [..., n, d, K]
    phi = jnp.cos(jnp.einsum("...nik,ikm->...nim", zp, c.omega) + c.phase.reshape(lead + c.phase.shape))
    lin = jnp.sum(zp * c.coef.reshape(lead + c.coef.shape), -1)
    out = (1.0 + c.scale.reshape(lead + c.scale.shape)) * t + lin + c.bias.reshape(lead + c.bias.shape)
    return out + jnp.einsum("...nim,im->...ni", phi, c.weight)


def apply_mean(corr: Correction, t: jax.Array, z: jax.Array, nodes: jax.Array | None = None) -> jax.Array:
    """The mean over an ensemble's members (``corr``'s leaves carry them on a leading axis) of :func:`apply` to the
    same proposal ``t``, one member at a time (``lax.map``: one member's random features alive at once)."""
    return jnp.mean(jax.lax.map(lambda c: apply(c, t, z, nodes), corr), axis=0)


def _corrected(mech, corr: Correction, z):
    return apply(corr, mech(z), z)


def _corrected_at(mech_at, corr: Correction, z, nodes):
    return apply(corr, mech_at(z, nodes), z, nodes)


def corrected(mech, mech_at, corr: Correction | None):
    """``(mechanism, node mechanism)`` with the correction applied (both unchanged when ``corr`` is None).

    ``mech: z [..., n, d] -> [..., n, d]``; ``mech_at: (z, nodes [K]) -> [..., n, K]`` or None (as
    :func:`cfip_jax.model.decoder_mechanisms` returns). Pytrees (``Partial``), so solvers compile once per shape."""
    if corr is None:
        return mech, mech_at
    return Partial(_corrected, mech, corr), None if mech_at is None else Partial(_corrected_at, mech_at, corr)


def check_kind(kind: str | None) -> str | None:
    """``kind`` if it is None or one of :data:`KINDS` (one-line error otherwise)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown correction {kind!r}; expected one of {', '.join(KINDS)} or None")
    return kind


@dataclasses.dataclass(frozen=True)
class CorrectionConfig:
    """The correction's settings (hashable), nested in :class:`cfip_jax.inference.refine.RefineConfig` as its
    ``correction`` (None there: no correction).

    Attributes:
      kind: which candidates, ``"features"`` (linear and random-feature ones) or ``"linear"`` (linear ones only).
      features: random features per node of the ``"features"`` correction (``M``).
      folds: how the candidates are chosen: 1 on the held-out rows of the refinement's split, k > 1 by k-fold
        cross-validation over the rows (:func:`folds`).
      prefer_linear: the one-standard-error rule (:func:`fit`'s ``prefer``): a node takes the least-squares fit on its
        parents unless the lowest held-out error (keeping the proposal included) is below it by more than this many
        standard errors; 0: the lowest held-out error wins.
    """

    kind: str = "features"
    features: int = 200
    folds: int = 5
    prefer_linear: float = 1.0

    def __post_init__(self):
        if self.kind is None:
            raise ValueError("correction kind must be features or linear (none: RefineConfig(correction=None))")
        check_kind(self.kind)
        V.check_int(self.features, "refine features", minimum=1)
        V.check_int(self.folds, "refine folds", minimum=1)
        V.check_nonnegative(self.prefer_linear, "refine prefer_linear")


JITTER = 1e-6  # added to the normal equations' diagonal, relative to the rows fitted (float32 Cholesky)


class Fit(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      correction: the :class:`Correction`.
      counts: nodes that kept their mechanism (``"none"``), got a linear correction (``"linear"``) or one with
        features (``"features"``); nodes without parents are not counted.
      plain: how many of the corrected nodes took a candidate without the proposal (``a_i = −1``).
      out_of_fold: ``[n, d]`` float64, on the rows of each fold the corrected proposal with each node's chosen
        candidate fitted without that fold (``t`` where a node keeps its mechanism; NaN on rows in no fold). The
        choice itself saw these rows, so their error is slightly optimistic.
    """

    correction: Correction
    counts: dict[str, int]
    plain: int
    out_of_fold: np.ndarray


def folds(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint held-out folds of ``n`` rows (a random partition, each sorted), for :func:`fit`'s ``held_out``."""
    if not 1 <= k <= n:
        raise ValueError(f"correction: cannot make {k} folds of {n} rows (1 to {n} folds)")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def parent_slots(adj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(parents [d, K] int32, pmask [d, K] float32)`` of the graph ``adj [d, d]`` (``adj[j, i] ≠ 0``: j → i), K the
    largest in-degree rounded up to a power of two (so graphs of one size share a few compiled fits; the padded
    slots get coefficient 0 exactly); node i's parents in increasing order, padding 0 with mask 0."""
    adj = np.asarray(adj) != 0
    d = adj.shape[0]
    k_max = 1 << max(0, int(adj.sum(0).max(initial=0)) - 1).bit_length()
    parents, pmask = np.zeros((d, k_max), np.int32), np.zeros((d, k_max), np.float32)
    for i in range(d):
        pa = np.flatnonzero(adj[:, i])
        parents[i, : pa.size], pmask[i, : pa.size] = pa, 1.0
    return parents, pmask


def feature_draws(seed: int, pmask: np.ndarray, features: int) -> tuple[jax.Array, jax.Array]:
    """The random features' draws from ``jax.random.key(seed)``: ``(Ω [d, K, M] standard normal, zero on padded
    parent slots of ``pmask [d, K]``; β [d, M] uniform on [0, 2π))``."""
    key_g, key_b = jax.random.split(jax.random.key(seed))
    d, k_max = pmask.shape
    g = jax.random.normal(key_g, (d, k_max, features)) * jnp.asarray(pmask)[..., None]
    return g, jax.random.uniform(key_b, (d, features), maxval=2.0 * np.pi)


def _layout(n: int, held_out: list[np.ndarray], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by fold: ``(idx [F + 1, L] int32, valid [F + 1, L] float32)``, group F the rows in no fold, each
    group padded to ``length`` (default the longest group; ``valid`` 0)."""
    rest = np.setdiff1d(np.arange(n), np.concatenate(held_out))
    groups = [*held_out, rest]
    length = max(len(g) for g in groups) if length is None else length
    idx, valid = np.zeros((len(groups), length), np.int32), np.zeros((len(groups), length), np.float32)
    for k, rows in enumerate(groups):
        idx[k, : rows.size], valid[k, : rows.size] = rows, 1.0
    return idx, valid


def _candidates(a_g: jax.Array, r_g: jax.Array, valid: jax.Array, icol: int, ridges: tuple[float, ...] = RIDGES,
                constrained: bool = True):  # fmt: skip
    """Every ridge strength × family × fold of one design.

    Args:
      a_g: ``[F + 1, L, d, p]`` the design grouped by fold (padded rows 0; column 0 the proposal, ``icol`` the
        intercept).
      r_g: ``[F + 1, L, d]`` the target (the residual ``x − t``) grouped alike.
      valid: ``[F + 1, L]``.
      ridges: the ridge strengths (relative to the rows fitted; the intercept is not shrunk).
      constrained: also the family with coefficient 0 held at −1 (else the plain ridge fit only).

    Returns:
      ``(held-out squared error [R, Φ, d], held-out predictions of the target [R, Φ, F, L, d], coefficients fitted on
      every row [R, Φ, d, p])``, Φ = 2 families with ``constrained`` (0 around the proposal, 1 without it: coefficient
      0 held at −1), else 1.
    """
    n_folds, p = a_g.shape[0] - 1, a_g.shape[-1]
    gram = jnp.einsum("gldp,gldq->gdpq", a_g, a_g)
    rhs = jnp.einsum("gldp,gld->gdp", a_g, r_g)
    count = valid.sum(1)
    gram_fit = jnp.concatenate([gram.sum(0)[None] - gram[:n_folds], gram.sum(0)[None]])  # fit without fold f; last: all
    rhs_fit = jnp.concatenate([rhs.sum(0)[None] - rhs[:n_folds], rhs.sum(0)[None]])
    rows_fit = jnp.concatenate([count.sum() - count[:n_folds], count.sum()[None]])
    pen = jnp.ones(p).at[icol].set(0.0)  # the intercept is not shrunk
    unit = jnp.broadcast_to(jnp.zeros(p).at[0].set(1.0), rhs_fit.shape)

    def solve(lam):
        diag = (lam * pen + JITTER)[None, None, :] * rows_fit[:, None, None]  # [F + 1, 1, p]
        chol = jnp.linalg.cholesky(gram_fit + diag[..., None] * jnp.eye(p)[None, None])
        if not constrained:
            return jax.scipy.linalg.cho_solve((chol, True), rhs_fit[..., None])[None, ..., 0]  # [1, F + 1, d, p]
        sol = jax.scipy.linalg.cho_solve((chol, True), jnp.stack([rhs_fit, unit], -1))
        u, v = sol[..., 0], sol[..., 1]
        lagrange = (-1.0 - u[..., 0]) / v[..., 0]  # the multiplier that holds coefficient 0 at -1
        return jnp.stack([u, u + lagrange[..., None] * v])  # [2, F + 1, d, p]

    beta = jax.lax.map(solve, jnp.asarray(ridges, jnp.float32))  # [R, Φ, F + 1, d, p]
    pred = jnp.einsum("gldp,rcgdp->rcgld", a_g[:n_folds], beta[:, :, :n_folds])
    sse = jnp.sum(jnp.square(r_g[:n_folds][None, None] - pred) * valid[None, None, :n_folds, :, None], axis=(2, 3))
    return sse, pred, beta[:, :, n_folds]


def _least_squares(t, x, xp, idx, valid):
    """The without-proposal family's exact linear member: least squares of ``x_i`` on ``[x_pa, 1]``, ridge 0 (the
    jitter only) — what a per-dataset linear model fits — on a design of its own, so that the proposal's column cannot
    condition it (held at −1 by the multiplier instead, a nearly collinear ``[t, x_pa]`` would cancel in float32).

    Args: ``t``, ``x`` ``[n, d]``; ``xp [n, d, K]`` the parents (padded slots 0); ``idx``, ``valid`` (:func:`_layout`).

    Returns:
      ``(held-out squared error [1, d], held-out predictions of x − t [1, F, L, d], coefficients on every row
      [1, d, K + 2] in the layout [t, x_pa, 1], t's held at −1)``.
    """
    design = jnp.concatenate([xp, jnp.ones(xp.shape[:2] + (1,), x.dtype)], -1)[idx] * valid[..., None, None]
    k_max = xp.shape[-1]
    sse, pred, beta = _candidates(design, x[idx] * valid[..., None], valid, k_max, ridges=(0.0,), constrained=False)
    beta = jnp.concatenate([-jnp.ones_like(beta[..., :1]), beta], -1)
    return sse[:, 0], pred[:, 0] - t[idx][None, : idx.shape[0] - 1], beta[:, 0]


def _after(done, x):
    """``x`` unchanged, with a data dependency on ``done`` (its sum, made a zero XLA does not fold away):
    the correction's groups of batched Cholesky factorisations run one after the other, since independent ones
    running at once can deadlock XLA's CPU runtime (jax 0.10.2: an evaluation at d = 50 hung; an optimization
    barrier does not order them, XLA removes it before scheduling)."""
    zero = jnp.minimum(jnp.abs(jnp.nan_to_num(jnp.sum(done))), 0.0)
    return x + zero.astype(x.dtype)


def _prefer_least_squares(sse, pred, r_g, valid, best, ols: int, none, prefer: float):
    """The one-standard-error rule: ``(best [d], taken [d] bool)`` — the least-squares candidate ``ols`` at the nodes
    where its held-out squared error exceeds the lowest one, the proposal kept (``none [d]``) included, by at most
    ``prefer`` standard errors of that difference (from the per-row differences: √(rows × their variance)); ``taken``
    marks them. Least squares extrapolates as a linear mechanism does, beyond the rows the folds hold.

    Args: ``sse [C, d]``; ``pred [C, F, L, d]`` held-out predictions of ``r_g [F + 1, L, d]``; ``valid [F + 1, L]``.
    """
    if not prefer:
        return best, jnp.zeros_like(none, bool)
    n_folds = pred.shape[1]
    rows = valid[:n_folds, :, None]
    row_err = lambda c: jnp.square(r_g[:n_folds] - jnp.take_along_axis(pred, c[None, None, None], 0)[0]) * rows  # noqa: E731
    keep = jnp.take_along_axis(sse, best[None], 0)[0] >= none  # the proposal itself is the lowest
    diff = row_err(jnp.full_like(best, ols)) - jnp.where(keep, jnp.square(r_g[:n_folds]) * rows, row_err(best))
    count = rows.sum()
    centred = (diff - diff.sum((0, 1))[None, None] / count) * rows
    se = jnp.sqrt(count * jnp.sum(jnp.square(centred), (0, 1)) / jnp.maximum(count - 1.0, 1.0))
    taken = diff.sum((0, 1)) <= prefer * se
    return jnp.where(taken, ols, best), taken


@functools.partial(jax.jit, static_argnames=("scales", "prefer"))
def _fit_device(t, x, parents, pmask, g, b, idx, valid, scales: tuple[float, ...], prefer: float = 0.0):
    """Choose and fit every node's correction (the module docstring) in one compiled call.

    Args: ``t``, ``x`` ``[n, d]``; ``parents``, ``pmask`` ``[d, K]``; ``g [d, K, M]``, ``b [d, M]`` the feature draws;
    ``idx``, ``valid`` ``[F + 1, L]`` (:func:`_layout`); ``scales`` the feature length-scales (empty: linear only);
    ``prefer`` the one-standard-error rule's standard errors (:func:`_prefer_least_squares`; 0: the lowest error).

    Returns: ``(correction, chosen [d] bool, with features [d] bool, without the proposal [d] bool, out-of-fold
    residual predictions [F, L, d])``.
    """
    n, d = x.shape
    k_max, m = pmask.shape[1], g.shape[-1]
    n_folds = idx.shape[0] - 1
    width = k_max + 2 + (m if scales else 0)  # [t, x_pa, 1, φ]
    has_parents = pmask.sum(1) > 0
    xp = jnp.take(x, parents, axis=1) * pmask[None]  # [n, d, K]
    base = jnp.concatenate([t[..., None], xp, jnp.ones((n, d, 1), x.dtype)], -1)  # [n, d, K + 2]
    base_g, xp_g = base[idx] * valid[..., None, None], xp[idx]
    r_g = (x - t)[idx] * valid[..., None]
    pad = lambda beta: jnp.pad(beta, [(0, 0)] * (beta.ndim - 1) + [(0, width - beta.shape[-1])])  # noqa: E731
    # candidate groups (family, design, sse [C, d], held-out predictions of r [C, F, L, d], coefficients [C, d, width])
    groups = {0: [], 1: []}
    sse, pred, beta = _candidates(base_g, r_g, valid, k_max + 1)
    for family in (0, 1):
        groups[family].append((0, sse[:, family], pred[:, family], pad(beta[:, family])))
    sse, pred, beta = _least_squares(t, x, _after(beta, xp), idx, valid)
    groups[1].insert(0, (0, sse, pred, pad(beta)))
    base_g = _after(beta, base_g)  # the features' factorisations after least squares'
    if scales:

        def with_features(ell):
            phi = jnp.sqrt(2.0 / m) * jnp.cos(jnp.einsum("gldk,dkm->gldm", xp_g, g / ell) + b[None, None])
            return _candidates(jnp.concatenate([base_g, phi * valid[..., None, None]], -1), r_g, valid, k_max + 1)

        sse, pred, beta = jax.lax.map(with_features, jnp.asarray(scales, jnp.float32))  # [S, R, 2, ...]
        for family in (0, 1):
            groups[family].extend((1 + s, sse[s, :, family], pred[s, :, family], beta[s, :, family])
                                  for s in range(len(scales)))  # fmt: skip
    # candidates ordered family, then design (least squares, linear, then each length-scale), then ridge strength
    ordered = [(family, *group) for family in (0, 1) for group in groups[family]]
    plain_of = np.concatenate([np.full(len(c[2]), c[0] == 1) for c in ordered])  # static, per candidate
    design_of = np.concatenate([np.full(len(c[2]), c[1]) for c in ordered])
    sse, pred, beta = (jnp.concatenate([c[j] for c in ordered]) for j in (2, 3, 4))  # [C, d], [C, F, L, d], [C, d, p]
    none = jnp.sum(jnp.square(r_g[:n_folds]) * valid[:n_folds, :, None], axis=(0, 1))  # keeping the proposal
    best = jnp.argmin(sse, axis=0)  # the first of equal errors; least squares (the first plain one) if near enough
    best, taken = _prefer_least_squares(sse, pred, r_g, valid, best, int(np.argmax(plain_of)), none, prefer)
    chosen = ((jnp.take_along_axis(sse, best[None], 0)[0] < none) | taken) & has_parents
    plain, design = jnp.asarray(plain_of)[best], jnp.asarray(design_of)[best]
    feature = chosen & (design > 0)
    w = jnp.where(chosen[:, None], beta[best, jnp.arange(d)], 0.0)  # [d, p]
    ell = jnp.asarray((1.0,) + tuple(scales), jnp.float32)[design]
    on, feat = chosen.astype(x.dtype), feature.astype(x.dtype)
    corr = Correction(
        scale=jnp.where(chosen & plain, -1.0, w[:, 0]), parents=parents * chosen[:, None].astype(parents.dtype),
        pmask=pmask * on[:, None], coef=w[:, 1 : k_max + 1] * pmask, bias=w[:, k_max + 1],
        omega=g / ell[:, None, None] * feat[:, None, None], phase=b * feat[:, None],
        weight=(jnp.sqrt(2.0 / m) * w[:, k_max + 2 :] if scales else jnp.zeros((d, m), x.dtype)) * feat[:, None],
    )  # fmt: skip
    oof = jnp.take_along_axis(pred, best[None, None, None], 0)[0] * on[None, None]  # [F, L, d]
    return corr, chosen, feature, chosen & plain, oof


def fit(
    t: np.ndarray | jax.Array,
    x: np.ndarray | jax.Array,
    adj: np.ndarray,
    held_out: list[np.ndarray],
    *,
    kind: str = "features",
    features: int = 200,
    seed: int = 0,
    prefer: float = 0.0,
) -> Fit:
    """Fit the correction of the proposal ``t = T(x)`` on the rows ``x`` (standardised units), on the device.

    Args:
      t: ``[n, d]`` the proposal at the data.
      x: ``[n, d]`` the data.
      adj: ``[d, d]`` the graph (``adj[j, i] = 1``: j → i).
      held_out: the folds the candidates are chosen on: disjoint, non-empty row-index arrays; each candidate is
        fitted on the rows outside a fold and scored on the fold, its squared errors summed over the folds (one fold:
        a single fit / held-out split; :func:`folds` for cross-validation). The winner is refitted on every row.
      kind: ``"features"`` (linear and random-feature candidates) or ``"linear"`` (linear ones only).
      features: ``M``, random features per node.
      seed: the random features (:func:`feature_draws`).
      prefer: the one-standard-error rule's standard errors (the module docstring; 0: the lowest error wins).

    Returns:
      The :class:`Fit`. Every check runs on the host before any tracing (one ``ValueError``).
    """
    check_kind(kind)
    prefer = V.check_nonnegative(prefer, "correction prefer_linear")
    t, x = np.asarray(t, np.float32), np.asarray(x, np.float32)
    n, d = x.shape if x.ndim == 2 else (0, 0)
    if t.shape != x.shape or np.shape(adj) != (d, d):
        raise ValueError(f"correction: t {t.shape}, x {x.shape} and adj {np.shape(adj)} do not agree")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(x))):
        raise ValueError("correction: the proposal t and the data x must be finite")
    held_out = [np.asarray(h, np.int64).reshape(-1) for h in held_out]
    if not held_out or any(h.size == 0 for h in held_out):
        raise ValueError("correction: needs held-out rows to choose on (one non-empty fold or more)")
    scored = np.concatenate(held_out)
    if scored.min() < 0 or scored.max() >= n or np.unique(scored).size != scored.size:
        raise ValueError(f"correction: the held-out folds must be disjoint row indices in [0, {n})")
    if any(h.size == n for h in held_out):
        raise ValueError("correction: a held-out fold holds every row, leaving none to fit on")
    parents, pmask = parent_slots(adj)
    g, b = feature_draws(seed, pmask, features)
    idx, valid = _layout(n, held_out)
    scales = LENGTHSCALES if kind == "features" else ()
    corr, chosen, feature, plain, r_oof = _fit_device(jnp.asarray(t), jnp.asarray(x), jnp.asarray(parents),
                                                      jnp.asarray(pmask), g, b, jnp.asarray(idx), jnp.asarray(valid),
                                                      scales=scales, prefer=prefer)  # fmt: skip
    chosen, feature, r_oof = np.asarray(chosen), np.asarray(feature), np.asarray(r_oof, np.float64)
    oof = np.full((n, d), np.nan)
    oof[scored] = t[scored]
    fold_rows = valid[:-1] > 0
    np.add.at(oof, idx[:-1][fold_rows], r_oof[fold_rows])
    with_parents = int((pmask.sum(1) > 0).sum())
    counts = {"none": with_parents - int(chosen.sum()), "linear": int((chosen & ~feature).sum()),
              "features": int(feature.sum())}  # fmt: skip
    return Fit(corr, counts, int(np.asarray(plain).sum()), oof)


def fit_batch(t: jax.Array, x: jax.Array, adj: np.ndarray, held_out: list[list[np.ndarray]], *, kind: str = "features",
              features: int = 200, seed: int = 0, chunk: int = 10, prefer: float = 0.0) -> Correction:  # fmt: skip
    """:func:`fit` for ``B`` datasets on one graph in one compiled call (``chunk`` at a time): the correction of each
    ``t[b] = T_b(x[b])``, chosen on its own folds ``held_out[b]``, the random features shared (``seed``).

    Args: ``t``, ``x`` ``[B, n, d]``; ``adj [d, d]``; ``held_out`` B lists of disjoint, non-empty row-index folds
    (the same number for every dataset, not every row need be in one); others as :func:`fit`.

    Returns:
      The :class:`Correction` with a leading ``B`` axis (``fit(t[b], x[b], adj, held_out[b], ...)``'s choice and
      coefficients for each ``b``, within float32 rounding).
    """
    check_kind(kind)
    prefer = V.check_nonnegative(prefer, "correction prefer_linear")
    t, x = jnp.asarray(t, jnp.float32), jnp.asarray(x, jnp.float32)
    if t.ndim != 3 or t.shape != x.shape or np.shape(adj) != (x.shape[2],) * 2 or len(held_out) != x.shape[0]:
        raise ValueError(f"correction: t {t.shape}, x {x.shape}, adj {np.shape(adj)} and {len(held_out)} fold "
                         "lists do not agree")  # fmt: skip
    n = x.shape[1]
    if len({len(f) for f in held_out}) != 1 or any(len(h) == 0 or len(h) == n for f in held_out for h in f):
        raise ValueError("correction: every dataset needs the same number of folds, each non-empty and not all rows")
    parents, pmask = parent_slots(adj)
    g, b = feature_draws(seed, pmask, features)
    rest = [n - sum(len(h) for h in f) for f in held_out]
    length = max(max(len(h) for f in held_out for h in f), max(rest))
    idx, valid = (np.stack(a) for a in zip(*(_layout(n, f, length) for f in held_out), strict=True))
    scales = LENGTHSCALES if kind == "features" else ()
    return _fit_batch_device(t, x, jnp.asarray(parents), jnp.asarray(pmask), g, b, jnp.asarray(idx), jnp.asarray(valid),
                             scales=scales, chunk=int(chunk), prefer=prefer)  # fmt: skip


@functools.partial(jax.jit, static_argnames=("scales", "chunk", "prefer"))
def _fit_batch_device(t, x, parents, pmask, g, b, idx, valid, scales: tuple[float, ...], chunk: int,
                      prefer: float) -> Correction:  # fmt: skip
    """:func:`_fit_device`'s correction for each of the datasets ``t``, ``x``, ``idx``, ``valid`` (leading axis B)."""
    one = lambda a: _fit_device(a[0], a[1], parents, pmask, g, b, a[2], a[3], scales=scales, prefer=prefer)[0]  # noqa: E731
    return jax.lax.map(one, (t, x, idx, valid), batch_size=chunk)
