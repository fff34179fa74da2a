"""The closed-form per-node correction (cfip_jax.inference.correct): ridge in closed form, parents only, chosen on
held-out rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cfip_jax.inference import correct

D = 6


def _graph(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    adj = np.triu((rng.random((D, D)) < 0.5).astype(np.float32), 1)
    adj[0, 1] = adj[1, 2] = 1.0  # at least a chain
    return adj


def _split(n: int):
    order = np.random.default_rng(1).permutation(n)
    return np.sort(order[n // 5 :]), np.sort(order[: n // 5])


def _linear_data(adj, n, noise_scale, seed=0):
    """Rows of the linear SCM x_i = Σ_j W_ji x_j + c_i + (noise on roots; ``noise_scale`` on the others)."""
    rng = np.random.default_rng(seed)
    w = adj * rng.uniform(0.5, 1.5, adj.shape) * rng.choice([-1, 1], adj.shape)
    c = rng.normal(size=D)
    x = np.zeros((n, D))
    for i in range(D):
        root = adj[:, i].sum() == 0
        x[:, i] = x @ w[:, i] + c[i] + (1.0 if root else noise_scale) * rng.normal(size=n)
    return x.astype(np.float32), w


def _jacobian(fn, x_row):
    return np.asarray(jax.jacfwd(lambda r: fn(r[None])[0])(jnp.asarray(x_row)))  # [d (out), d (in)]


def _choice(n: int, folds: int):
    """The held-out folds: the single split of :func:`_split`, or ``folds``-fold cross-validation."""
    return [_split(n)[1]] if folds == 1 else correct.folds(n, folds, seed=1)


def test_folds_partition_the_rows():
    parts = correct.folds(23, 5, seed=3)
    assert len(parts) == 5 and all(p.size in (4, 5) for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(23))


@pytest.mark.parametrize("folds", [1, 5])
def test_linear_correction_of_a_zero_proposal_is_ridge_regression_on_the_parents(folds):
    adj = _graph()
    x, _ = _linear_data(adj, 600, noise_scale=0.5)
    corr, counts, _, _ = correct.fit(np.zeros_like(x), x, adj, _choice(600, folds), kind="linear")
    assert counts == {"none": 0, "linear": int((adj.sum(0) > 0).sum()), "features": 0}
    mech, _ = correct.corrected(lambda z: jnp.zeros_like(z), None, corr)
    jac, out = _jacobian(mech, x[0]), np.asarray(mech(jnp.asarray(x)))
    for i in range(D):
        pa = np.flatnonzero(adj[:, i])
        if pa.size == 0:
            np.testing.assert_array_equal(out[:, i], 0.0)
            continue
        design = np.concatenate([x[:, pa], np.ones((600, 1))], axis=1).astype(np.float64)
        pen = np.r_[np.ones(pa.size), 0.0]  # the intercept is not shrunk
        ridge = [
            np.linalg.solve(design.T @ design + lam * 600 * np.diag(pen), design.T @ x[:, i])
            for lam in (0.0, *correct.RIDGES)
        ]  # fmt: skip (0: least squares, a candidate of its own)
        # the closed-form ridge solution at one of the candidate strengths, refitted on every row
        gaps = [np.abs(jac[i, pa] - beta[:-1]).max() for beta in ridge]
        beta = ridge[int(np.argmin(gaps))]
        np.testing.assert_allclose(jac[i, pa], beta[:-1], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(jac[i, np.setdiff1d(np.arange(D), pa)], 0.0)
        np.testing.assert_allclose(out[:, i], design @ beta, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("folds", [1, 5])
def test_a_perfect_proposal_is_kept_as_it_is(folds):
    adj = _graph(1)
    x, _ = _linear_data(adj, 300, noise_scale=0.0, seed=2)
    t = x.copy()  # noise-free rows: the proposal is exact at every non-root node, no candidate can beat it
    corr, counts, _, _ = correct.fit(t, x, adj, _choice(300, folds))
    assert counts == {"none": int((adj.sum(0) > 0).sum()), "linear": 0, "features": 0}
    z = jnp.asarray(np.random.default_rng(3).normal(size=(5, D)), jnp.float32)
    proposal = jnp.asarray(np.random.default_rng(4).normal(size=(5, D)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(correct.apply(corr, proposal, z)), np.asarray(proposal))


def _nonlinear_data(adj, n, seed):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, D))
    for i in range(D):
        x[:, i] = np.sin(2.0 * x @ adj[:, i]) + (1.0 if adj[:, i].sum() == 0 else 0.1) * rng.normal(size=n)
    return x.astype(np.float32)


def test_feature_correction_reads_only_the_parents_and_beats_the_linear_one_on_nonlinear_mechanisms():
    adj = _graph(2)
    x = _nonlinear_data(adj, 500, seed=4)
    held_rows = _split(500)[1]
    t = np.zeros_like(x)
    feat, counts, _, _ = correct.fit(t, x, adj, [held_rows], kind="features", features=64)
    lin = correct.fit(t, x, adj, [held_rows], kind="linear").correction
    assert counts["features"] > 0
    zero = lambda z: jnp.zeros_like(z)  # noqa: E731
    f_mech, f_at = correct.corrected(zero, lambda z, nodes: jnp.zeros(z.shape[:-1] + nodes.shape), feat)
    for row in x[:3]:
        jac = _jacobian(f_mech, row)
        assert np.all(jac[adj.T == 0] == 0.0)  # ∂T'_i/∂x_j = 0 unless j → i
        assert np.abs(jac[adj.T > 0]).max() > 0
    fresh = jnp.asarray(_nonlinear_data(adj, 400, seed=5))
    non_roots = adj.sum(0) > 0
    err = lambda mech: float(jnp.mean(jnp.square(mech(fresh) - fresh)[:, non_roots]))  # noqa: E731
    assert err(f_mech) < 0.7 * err(correct.corrected(zero, None, lin)[0])
    nodes = jnp.asarray([4, 1, 2])
    np.testing.assert_allclose(f_at(fresh, nodes), f_mech(fresh)[:, nodes], rtol=1e-6, atol=1e-6)


def test_a_graph_without_edges_leaves_the_mechanism_alone():
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    corr, counts, _, _ = correct.fit(x * 0.5, x, np.zeros((3, 3)), [_split(50)[1]])
    assert counts == {"none": 0, "linear": 0, "features": 0}
    out = correct.apply(corr, jnp.asarray(x * 0.5), jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(out), x * 0.5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: correct.check_kind("quadratic"), "unknown correction 'quadratic'"),
        (lambda: correct.fit(np.zeros((10, 3)), np.zeros((10, 2)), np.zeros((2, 2)), [[1]]), "do not agree"),
        (lambda: correct.fit(np.zeros((10, 2)), np.zeros((10, 2)), np.zeros((2, 2)), [[]]), "held-out rows"),
        (lambda: correct.fit(np.zeros((10, 2)), np.zeros((10, 2)), np.zeros((2, 2)), []), "held-out rows"),
        (lambda: correct.fit(np.zeros((10, 2)), np.zeros((10, 2)), np.zeros((2, 2)), [[1, 2], [2]]), "disjoint"),
        (lambda: correct.fit(np.zeros((10, 2)), np.zeros((10, 2)), np.zeros((2, 2)), [[10]]), "disjoint"),
        (lambda: correct.fit(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((2, 2)), [[0, 1, 2]]), "none to fit"),
        (lambda: correct.fit(np.full((10, 2), np.inf), np.zeros((10, 2)), np.zeros((2, 2)), [[1]]), "finite"),
        (lambda: correct.fit(np.zeros((10, 2)), np.full((10, 2), np.nan), np.zeros((2, 2)), [[1]]), "finite"),
        (lambda: correct.folds(5, 6), "6 folds"),
    ],
)
def test_bad_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_out_of_fold_predictions_are_the_chosen_ridge_fitted_without_each_fold():
    adj = _graph()
    n = 300
    x, _ = _linear_data(adj, n, noise_scale=0.5)
    parts = correct.folds(n - 20, 4, seed=2)  # rows n - 20 … n - 1 lie in no fold
    corr, counts, _, oof = correct.fit(np.zeros_like(x), x, adj, parts, kind="linear")
    assert counts["linear"] == int((adj.sum(0) > 0).sum())
    assert np.all(np.isnan(oof[n - 20 :]))
    scored = np.concatenate(parts)
    for i in range(D):
        pa = np.flatnonzero(adj[:, i])
        if pa.size == 0:
            np.testing.assert_array_equal(oof[scored, i], 0.0)  # a root keeps its proposal
            continue
        design = np.concatenate([x[:, pa], np.ones((n, 1))], axis=1).astype(np.float64)
        pen = np.r_[np.ones(pa.size), 0.0]
        ridges = (0.0, *correct.RIDGES)  # 0: the least-squares candidate
        per_ridge = np.zeros((len(ridges), n))
        for h in parts:
            rest = np.setdiff1d(np.arange(n), h)
            a, m = design[rest], rest.size
            for j, lam in enumerate(ridges):
                per_ridge[j, h] = design[h] @ np.linalg.solve(a.T @ a + lam * m * np.diag(pen), a.T @ x[rest, i])
        errors = np.mean((per_ridge[:, scored] - x[scored, i]) ** 2, axis=1)
        # float32 normal equations on the device against float64 here: relative error ~5e-5 (measured)
        np.testing.assert_allclose(oof[scored, i], per_ridge[int(np.argmin(errors)), scored], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("folds,prefer", [(1, 0.0), (3, 12.0)])
def test_the_device_fit_agrees_with_a_float64_host_fit_node_by_node(folds, prefer):
    """Every node's held-out errors, its choice (with ``prefer`` standard errors of the one-standard-error rule) and
    the chosen coefficients, against the float64 oracle fed the same random features. On these nonlinear data least
    squares is 8.8–16 standard errors behind the best candidate: 12 makes three nodes take it and two not."""
    import correct_reference as ref

    adj = _graph(3)
    x = _nonlinear_data(adj, 240, seed=6)
    t = 0.6 * x + 0.1 * np.random.default_rng(7).normal(size=x.shape).astype(np.float32)  # a rough proposal
    held = _choice(240, folds)
    out = correct.fit(t, x, adj, held, features=16, seed=4, prefer=prefer)
    parents, pmask = correct.parent_slots(adj)
    g, b = (np.asarray(v, np.float64) for v in correct.feature_draws(4, pmask, 16))
    c = jax.tree.map(np.asarray, out.correction)
    scored = np.concatenate(held)
    for i in range(D):
        pa = np.flatnonzero(adj[:, i])
        if pa.size == 0:
            assert c.scale[i] == 0.0 and c.pmask[i].sum() == 0
            continue
        k = pa.size
        cands = ref.node_fits(t, x, i, pa, g[i, :k], b[i], held, correct.LENGTHSCALES)
        errs = np.array([cand[3] for cand in cands])
        keep = float(np.sum((x[scored, i] - t[scored, i]) ** 2))
        assert errs.min() < keep  # every node here gains from a correction
        family, ell, _, _, beta, pred = cands[ref.choose(cands, x[:, i].astype(np.float64) - t[:, i], held, prefer)]
        if (ell is None) != (c.weight[i] == 0).all() or (family == "plain") != (c.scale[i] == -1.0):
            # a different choice is allowed only between candidates within float32 noise of each other
            assert np.sort(errs)[1] - errs.min() < 1e-4 * errs.min(), (i, errs.min(), np.sort(errs)[:3])
            continue
        np.testing.assert_allclose(c.scale[i], beta[0], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(c.coef[i, :k], beta[1 : 1 + k], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(c.bias[i], beta[-1], rtol=1e-3, atol=1e-3)
        if ell is not None:
            np.testing.assert_allclose(c.omega[i, :k], g[i, :k] / ell, rtol=1e-6)
            np.testing.assert_allclose(c.weight[i], np.sqrt(2.0 / 16) * beta[1 + k : -1], rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(out.out_of_fold[scored, i], t[scored, i] + pred[scored], rtol=1e-3, atol=1e-3)


def test_on_linear_data_a_wrong_proposal_is_replaced_by_a_linear_fit_on_the_parents():
    """The family without the proposal (a_i = −1): the corrected mechanism no longer reads T_i at all and is a linear
    fit of x_i on [x_pa, 1] — least squares or the ridge fit at the smallest strength, whichever cross-validates
    better (on noisy rows the two are within the folds' noise of each other)."""
    adj = _graph(4)
    x, _ = _linear_data(adj, 400, noise_scale=0.3, seed=5)
    t = (0.3 * np.sin(3.0 * x) @ adj).astype(np.float32)  # a proposal of the parents, off nonlinearly
    out = correct.fit(t, x, adj, _choice(400, 5), kind="linear")
    non_roots = int((adj.sum(0) > 0).sum())
    assert out.counts["linear"] == non_roots and out.plain >= non_roots - 1  # cross-validation may keep one close
    c = jax.tree.map(np.asarray, out.correction)
    for i in np.flatnonzero((adj.sum(0) > 0) & (c.scale == -1.0)):
        pa = np.flatnonzero(adj[:, i])
        design = np.concatenate([x[:, pa], np.ones((400, 1))], axis=1).astype(np.float64)
        pen = np.diag(np.r_[np.ones(pa.size), 0.0])
        fits = [
            np.linalg.solve(design.T @ design + lam * 400 * pen, design.T @ x[:, i]) for lam in (0.0, correct.RIDGES[0])
        ]
        beta = fits[int(np.argmin([np.abs(c.coef[i, : pa.size] - f[:-1]).max() for f in fits]))]
        np.testing.assert_allclose(c.coef[i, : pa.size], beta[:-1], rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(c.bias[i], beta[-1], atol=1e-4)
    z = jnp.asarray(np.random.default_rng(9).normal(size=(7, D)), jnp.float32)
    plain = (adj.sum(0) > 0) & (c.scale == -1.0)
    outs = [np.asarray(correct.corrected(prop, None, out.correction)[0](z)) for prop in (jnp.cos, jnp.sin)]
    np.testing.assert_array_equal(outs[0][:, plain], outs[1][:, plain])  # those nodes no longer read the proposal


def test_on_nearly_noiseless_linear_data_with_correlated_parents_the_fit_is_least_squares_not_ridge():
    """Where the noise is small and the parents correlated (a hub feeding a chain, as on scale-free graphs), the
    smallest ridge strength still shrinks visibly; the least-squares candidate is chosen and matches the float64
    least-squares fit, so the corrected mechanism is as exact as a per-dataset linear model."""
    n, rng = 400, np.random.default_rng(11)
    adj = np.zeros((D, D), np.float32)
    adj[0, 1:] = 1.0  # a hub
    adj[1, 2:] = adj[2, 3:] = adj[3, 4:] = 1.0
    w = adj * rng.uniform(0.5, 1.5, adj.shape) * rng.choice([-1, 1], adj.shape)
    x = np.zeros((n, D))
    for i in range(D):
        x[:, i] = x @ w[:, i] + (1.0 if i == 0 else 0.05) * rng.normal(size=n)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    t = (0.5 * x @ adj).astype(np.float32)  # a proposal that reads the right parents with the wrong weights
    out = correct.fit(t, x, adj, _choice(n, 5), kind="features", features=32)
    c = jax.tree.map(np.asarray, out.correction)
    gaps = []
    for i in range(1, D):
        pa = np.flatnonzero(adj[:, i])
        design = np.concatenate([x[:, pa], np.ones((n, 1))], axis=1).astype(np.float64)
        ls = np.linalg.lstsq(design, x[:, i].astype(np.float64), rcond=None)[0]
        pen = np.diag(np.r_[np.ones(pa.size), 0.0])
        ridge = np.linalg.solve(design.T @ design + correct.RIDGES[0] * n * pen, design.T @ x[:, i])
        gaps.append(np.abs(design @ ridge - design @ ls).max())
        assert c.scale[i] == -1.0 and (c.weight[i] == 0).all(), i  # without the proposal, no features
        np.testing.assert_allclose(c.coef[i, : pa.size], ls[:-1], rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(design @ np.r_[c.coef[i, : pa.size], c.bias[i]], design @ ls, atol=2e-3)
    assert max(gaps) > 1e-2  # the smallest ridge alone would be off by more than the tolerance above


def test_the_one_standard_error_rule_keeps_least_squares_on_linear_data_where_the_lowest_error_does_not():
    """On linear data the candidates with random features cross-validate within the folds' noise of least squares and
    the lowest held-out error picks some of them by chance; with ``prefer = 1`` (the refinement's default) every node
    takes the least-squares fit on its parents, as a per-dataset linear model would."""
    adj = _graph(2)
    x, _ = _linear_data(adj, 400, noise_scale=0.3, seed=2)
    t = (0.8 * x @ (adj * 0.9)).astype(np.float32)  # a proposal of the parents, nearly right
    held = correct.folds(400, 5, seed=1)
    lowest = correct.fit(t, x, adj, held, kind="features", features=32, prefer=0.0)
    assert lowest.counts["features"] >= 1
    out = correct.fit(t, x, adj, held, kind="features", features=32, prefer=1.0)
    assert out.counts == {"none": 0, "linear": int((adj.sum(0) > 0).sum()), "features": 0}
    c = jax.tree.map(np.asarray, out.correction)
    for i in np.flatnonzero(adj.sum(0) > 0):
        pa = np.flatnonzero(adj[:, i])
        design = np.concatenate([x[:, pa], np.ones((400, 1))], axis=1).astype(np.float64)
        ls = np.linalg.lstsq(design, x[:, i].astype(np.float64), rcond=None)[0]
        assert c.scale[i] == -1.0, i
        np.testing.assert_allclose(np.r_[c.coef[i, : pa.size], c.bias[i]], ls, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="prefer_linear"):
        correct.fit(t, x, adj, held, prefer=-1.0)


def test_fit_batch_is_fit_on_each_dataset():
    """Three datasets on one graph, each with its own folds (of different sizes, not covering every row): the batched
    fit makes each one's choice and coefficients, as :func:`correct.fit` does alone."""
    adj, n = _graph(), 120
    xs = np.stack([_nonlinear_data(adj, n, seed) for seed in range(3)])
    ts = (0.5 * xs + 0.1 * np.random.default_rng(5).normal(size=xs.shape)).astype(np.float32)
    held = [correct.folds(n, 4, seed=s) for s in range(2)]
    held.append([np.arange(0, 20), np.arange(30, 70), np.arange(80, 90), np.arange(100, 120)])  # 30 rows in none
    batch = correct.fit_batch(ts, xs, adj, held, seed=7, chunk=2)
    assert batch.scale.shape == (3, D)
    for b in range(3):
        one = correct.fit(ts[b], xs[b], adj, held[b], seed=7).correction
        np.testing.assert_array_equal(np.asarray(batch.pmask[b]), np.asarray(one.pmask))  # the same nodes corrected
        for field in ("scale", "coef", "bias", "weight", "omega"):
            np.testing.assert_allclose(getattr(batch, field)[b], getattr(one, field), rtol=2e-3, atol=2e-4)
    with pytest.raises(ValueError, match="same number of folds"):
        correct.fit_batch(ts, xs, adj, [held[0], held[1], held[2][:3]])
    with pytest.raises(ValueError, match="do not agree"):
        correct.fit_batch(ts, xs, adj, held[:2])
