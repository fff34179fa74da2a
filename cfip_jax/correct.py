"""Closed-form correction of an inferred mechanism, node by node, chosen on held-out rows.

The amortized decoder proposes a mechanism ``T`` for a dataset (zero-shot or after gradient refinement). A node's
proposal can be off in ways a small per-node regression fixes at once: a missed linear trend, a wrong scale, a bump
the mechanism family does not reach. For every node ``i`` with parents ``pa(i)`` the correction regresses the
residual ``x_i − T_i(x)`` on ``[T_i(x), x_pa, φ(x_pa), 1]`` by ridge regression, where
``φ(u) = √(2/M) cos(u Ω / ℓ + β)`` are ``M`` random Fourier features (Ω standard normal, β uniform on [0, 2π)), so
that the corrected mechanism is

    T'_i(x) = (1 + a_i) T_i(x) + w_iᵀ x_pa + v_iᵀ φ_i(x_pa) + b_i.

The ridge penalty shrinks towards the proposal itself (all coefficients 0: ``T' = T``). Which correction a node gets
is chosen on held-out rows (one held-out split, or k-fold cross-validation: :func:`folds`), per node, among: none
(keep ``T_i``), linear (``[T_i, x_pa, 1]``) at each ridge strength of :data:`RIDGES`, and with features
(``kind="features"``) at each length-scale of :data:`LENGTHSCALES` and each ridge strength — the candidate with the
lowest held-out mean squared error wins only if it beats the proposal there; the winner is then refitted on every
row. A node without parents keeps its mechanism (a constant). The corrected ``T'_i`` still reads the parents of
``i`` only, so the graph, the fixed-point solvers, interventions and counterfactuals are unchanged.

The fit is NumPy float64 on the host (one small least-squares problem per node, candidate and fold; with M = 200
features about 0.15 s at d = 20 and 400 rows with one split, 0.4 s with five folds, 3 s at d = 100 and 1000 rows
with five folds); applying it is a pure JAX function of a :class:`Correction` pytree.
Measured in ``docs/refinement.md``.
"""

from __future__ import annotations

import collections

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

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


def _ridge(gram: np.ndarray, rhs: np.ndarray, lam: float, rows: int) -> np.ndarray:
    system = gram.copy()
    diag = np.einsum("ii->i", system)  # a view of the diagonal
    diag[:-1] += lam * rows  # the intercept (last column) is not shrunk
    diag += 1e-9
    return np.linalg.solve(system, rhs)


def _held_out_errors(
    a: np.ndarray, r: np.ndarray, held_out: list[np.ndarray], scored: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge fits of ``r [n]`` on ``a [n, p]`` at each strength of :data:`RIDGES`, fitted on the rows outside each
    fold and scored on the fold: ``(held-out mean squared error [ridges], out-of-fold predictions [ridges, n])``
    (rows in no fold: 0)."""
    gram, rhs = a.T @ a, a.T @ r
    pred = np.zeros((len(RIDGES), a.shape[0]))
    for h in held_out:
        ah, rh = a[h], r[h]
        gram_fit, rhs_fit, m = gram - ah.T @ ah, rhs - ah.T @ rh, a.shape[0] - h.size
        for j, lam in enumerate(RIDGES):
            pred[j, h] = ah @ _ridge(gram_fit, rhs_fit, lam, m)
    rows = np.concatenate(held_out)
    return np.sum((pred[:, rows] - r[rows]) ** 2, axis=1) / scored, pred


def folds(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint held-out folds of ``n`` rows (a random partition, each sorted), for :func:`fit`'s ``held_out``."""
    if not 1 <= k <= n:
        raise ValueError(f"correction: cannot make {k} folds of {n} rows (1 to {n} folds)")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def _fit_node(i, pa, g, b, *, t, x, held_out, scored, scales):
    """Node ``i``'s chosen correction: ``(length-scale or None, coefficients [1 + k (+ M) + 1], out-of-fold
    predictions of the residual [n])``, or ``(None, None, 0)`` where no candidate beats the proposal on the held-out
    rows.

    ``pa [k]`` its parents, ``g [k, M]`` and ``b [M]`` its random features, ``t`` and ``x`` ``[n, d]``, ``held_out``
    the folds, ``scored [rows]`` their rows, ``scales`` the candidate length-scales (None: linear)."""
    features = g.shape[1]
    r = x[:, i] - t[:, i]

    def design(ell):
        cols = [t[:, i : i + 1], x[:, pa]]
        if ell is not None:
            cols.append(np.sqrt(2.0 / features) * np.cos(x[:, pa] @ (g / ell) + b))
        return np.concatenate([*cols, np.ones((x.shape[0], 1))], axis=1)

    best_err, best, best_pred = float(np.mean(r[scored] ** 2)), None, 0.0
    for ell in scales:
        err, pred = _held_out_errors(design(ell), r, held_out, scored.size)  # [ridges], [ridges, n]
        j = int(np.argmin(err))
        if err[j] < best_err:
            best_err, best, best_pred = float(err[j]), (ell, RIDGES[j]), pred[j]
    if best is None:
        return None, None, 0.0
    ell, lam = best
    a = design(ell)
    return ell, _ridge(a.T @ a, a.T @ r, lam, x.shape[0]), best_pred


def fit(
    t: np.ndarray,
    x: np.ndarray,
    adj: np.ndarray,
    held_out: list[np.ndarray],
    *,
    kind: str = "features",
    features: int = 200,
    seed: int = 0,
    out_of_fold: bool = False,
) -> tuple[Correction, dict[str, int]] | tuple[Correction, dict[str, int], np.ndarray]:
    """Fit the correction of the proposal ``t = T(x)`` on the rows ``x`` (standardised units).

    Args:
      t: ``[n, d]`` the proposal at the data.
      x: ``[n, d]`` the data.
      adj: ``[d, d]`` the graph (``adj[j, i] = 1``: j → i).
      held_out: the folds the candidates are chosen on: disjoint, non-empty row-index arrays; each candidate is
        fitted on the rows outside a fold and scored on the fold, its squared errors summed over the folds (one fold:
        a single fit / held-out split; :func:`folds` for cross-validation). The winner is refitted on every row.
      kind: ``"features"`` (linear and random-feature candidates) or ``"linear"`` (linear ones only).
      features: ``M``, random features per node.
      seed: the random features.
      out_of_fold: also return the cross-validated corrected proposal.

    Returns:
      ``(correction, counts)``: counts of the nodes that kept their mechanism (``"none"``), got a linear correction
      (``"linear"``) or one with features (``"features"``); nodes without parents are not counted. With
      ``out_of_fold``, ``(correction, counts, oof)``: ``oof [n, d]`` float64, on the rows of each fold the corrected
      proposal with each node's chosen candidate fitted without that fold (``t`` where a node keeps its mechanism;
      NaN on rows in no fold). The choice itself saw these rows, so their error is slightly optimistic.
    """
    check_kind(kind)
    t, x = np.asarray(t, np.float64), np.asarray(x, np.float64)
    adj = np.asarray(adj) > 0
    n, d = x.shape
    if t.shape != x.shape or adj.shape != (d, d):
        raise ValueError(f"correction: t {t.shape}, x {x.shape} and adj {adj.shape} do not agree")
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
    k_max = max(1, int(adj.sum(0).max(initial=0)))
    rng = np.random.default_rng(seed)
    scales = (None,) + (LENGTHSCALES if kind == "features" else ())
    scale, bias = np.zeros(d), np.zeros(d)
    parents, pmask, coef = np.zeros((d, k_max), np.int32), np.zeros((d, k_max)), np.zeros((d, k_max))
    omega, phase, weight = np.zeros((d, k_max, features)), np.zeros((d, features)), np.zeros((d, features))
    counts = collections.Counter()
    oof = np.full((n, d), np.nan)
    oof[scored] = t[scored]
    for i in range(d):
        pa = np.flatnonzero(adj[:, i])
        if pa.size == 0:
            continue
        g = rng.standard_normal((pa.size, features))
        b = rng.uniform(0.0, 2.0 * np.pi, features)
        ell, beta, r_oof = _fit_node(i, pa, g, b, t=t, x=x, held_out=held_out, scored=scored, scales=scales)
        if beta is None:
            counts["none"] += 1
            continue
        oof[scored, i] += r_oof[scored]
        k = pa.size
        scale[i], bias[i] = beta[0], beta[-1]
        parents[i, :k], pmask[i, :k], coef[i, :k] = pa, 1.0, beta[1 : 1 + k]
        if ell is None:
            counts["linear"] += 1
        else:
            counts["features"] += 1
            omega[i, :k], phase[i] = g / ell, b
            weight[i] = np.sqrt(2.0 / features) * beta[1 + k : -1]
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    corr = Correction(scale=f32(scale), parents=jnp.asarray(parents), pmask=f32(pmask), coef=f32(coef),
                      bias=f32(bias), omega=f32(omega), phase=f32(phase), weight=f32(weight))  # fmt: skip
    counts = {key: counts.get(key, 0) for key in ("none", "linear", "features")}
    return (corr, counts, oof) if out_of_fold else (corr, counts)
