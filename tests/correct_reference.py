"""A float64 NumPy oracle of :func:`cfip_jax.inference.correct.fit`: the same candidates, chosen one node,
family, design, ridge strength and fold at a time with ``numpy.linalg.solve`` (the host fit the device fit replaced)."""

from __future__ import annotations

import numpy as np

from cfip_jax.inference import correct


def _ridge(gram: np.ndarray, rhs: np.ndarray, lam: float, rows: int, fixed: bool) -> np.ndarray:
    """Ridge coefficients, intercept (last column) not shrunk; with ``fixed`` column 0 is held at −1."""
    system = gram + np.diag(np.r_[np.full(gram.shape[0] - 1, lam * rows), 0.0] + 1e-9)
    if not fixed:
        return np.linalg.solve(system, rhs)
    rest = np.linalg.solve(system[1:, 1:], rhs[1:] + system[1:, 0])  # r + t regressed on the other columns
    return np.r_[-1.0, rest]


def node_fits(t, x, i, pa, g, b, held_out, scales):
    """Node ``i``'s candidates in :func:`cfip_jax.inference.correct.fit`'s order: ``[(family, length-scale or None,
    ridge, held-out squared error, coefficients on every row [1 + k (+ M) + 1], out-of-fold residual predictions
    [n])]``."""
    t, x = np.asarray(t, np.float64), np.asarray(x, np.float64)
    r, n, m = x[:, i] - t[:, i], x.shape[0], g.shape[-1]
    out = []
    for fixed in (False, True):
        if fixed:  # least squares on the parents alone (ridge 0): the first candidate without the proposal
            a = np.concatenate([x[:, pa], np.ones((n, 1))], axis=1)
            pred = np.zeros(n)
            for h in held_out:
                rest = np.setdiff1d(np.arange(n), h)
                pred[h] = a[h] @ _ridge(a[rest].T @ a[rest], a[rest].T @ x[rest, i], 0.0, rest.size, False) - t[h, i]
            scored = np.concatenate(held_out)
            err = float(np.sum((pred[scored] - r[scored]) ** 2))
            beta = np.r_[-1.0, _ridge(a.T @ a, a.T @ x[:, i], 0.0, n, False)]
            out.append(("plain", None, 0.0, err, beta, pred))
        for ell in (None, *scales):
            cols = [t[:, i : i + 1], x[:, pa]]
            if ell is not None:
                cols.append(np.sqrt(2.0 / m) * np.cos(x[:, pa] @ (g / ell) + b))
            a = np.concatenate([*cols, np.ones((n, 1))], axis=1)
            for lam in correct.RIDGES:
                pred = np.zeros(n)
                for h in held_out:
                    rest = np.setdiff1d(np.arange(n), h)
                    beta = _ridge(a[rest].T @ a[rest], a[rest].T @ r[rest], lam, rest.size, fixed)
                    pred[h] = a[h] @ beta
                scored = np.concatenate(held_out)
                err = float(np.sum((pred[scored] - r[scored]) ** 2))
                out.append(("plain" if fixed else "proposal", ell, lam, err, _ridge(a.T @ a, a.T @ r, lam, n, fixed),
                            pred))  # fmt: skip
    return out


def choose(cands, r, held_out, prefer: float) -> int | None:
    """The index of the candidate :func:`cfip_jax.inference.correct.fit` takes among ``cands`` (:func:`node_fits`) of
    a node whose residual is ``r [n]``, None to keep the proposal: least squares (the first ``"plain"`` candidate)
    where its held-out error is within ``prefer`` standard errors (the per-row differences' standard deviation ×
    √rows) of the lowest one — the proposal kept included —, else the lowest if it beats the proposal."""
    scored = np.concatenate(held_out)
    errs, keep = np.array([c[3] for c in cands]), float(np.sum(r[scored] ** 2))
    best, ols = int(np.argmin(errs)), next(k for k, c in enumerate(cands) if c[0] == "plain")
    if prefer > 0:
        rival = r[scored] ** 2 if errs[best] >= keep else (cands[best][5][scored] - r[scored]) ** 2
        diff = (cands[ols][5][scored] - r[scored]) ** 2 - rival
        if diff.sum() <= prefer * np.sqrt(diff.size * diff.var(ddof=1)):
            return ols
    return best if errs[best] < keep else None
