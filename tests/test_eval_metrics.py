"""Evaluation metrics, per-dataset baselines and the shipped real data."""

import numpy as np
import pytest

from cfip_jax.data import real
from cfip_jax.eval import baselines, metrics


def test_rmse_hand_computed():
    target = np.zeros((2, 2), np.float32)
    pred = np.array([[3.0, 4.0], [0.0, 2.0]], np.float32)
    # sample 0: sqrt((9 + 16) / 2); sample 1: sqrt(4 / 2)
    expected = (np.sqrt(12.5) + np.sqrt(2.0)) / 2
    np.testing.assert_allclose(float(metrics.rmse(target, pred)), expected, rtol=1e-6)
    # masking the second node leaves |3| and |0|
    np.testing.assert_allclose(float(metrics.rmse(target, pred, np.array([True, False]))), 1.5, rtol=1e-6)


def _mmd_numpy(x, y):
    z = np.concatenate([x, y]).astype(np.float64)
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    sigma2 = np.median(d2[~np.eye(len(z), dtype=bool)])
    k = np.exp(-d2 / (2 * sigma2))
    n = len(x)
    return np.sqrt(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())


def test_mmd_matches_direct_formula_and_is_zero_for_identical_samples():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3)).astype(np.float32)
    y = (rng.normal(size=(40, 3)) + 0.7).astype(np.float32)
    np.testing.assert_allclose(float(metrics.mmd(x, y)), _mmd_numpy(x, y), rtol=1e-4)
    np.testing.assert_allclose(float(metrics.mmd(y, x)), _mmd_numpy(x, y), rtol=1e-4)
    assert float(metrics.mmd(x, x)) < 1e-3
    # a larger shift gives a larger discrepancy
    assert float(metrics.mmd(x, x + 2.0)) > float(metrics.mmd(x, x + 0.5)) > 0.05


def test_mean_se():
    mean, se = metrics.mean_se([1.0, 2.0, 3.0, 6.0])
    assert mean == pytest.approx(3.0)
    assert se == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2)
    assert metrics.mean_se([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        metrics.mean_se([])


def _linear_scm(rng, n=400, d=6):
    adj = np.triu((rng.random((d, d)) < 0.5).astype(np.float32), 1)
    w = rng.uniform(1, 3, (d, d)) * rng.choice([-1, 1], (d, d)) * adj
    b = rng.uniform(-3, 3, d)
    noise = rng.normal(size=(n, d)) * 0.5
    x = np.linalg.solve(np.eye(d) - w.T, (b + noise).T).T
    return x.astype(np.float32), noise.astype(np.float32), adj, w, b


def test_linear_baseline_is_least_squares_and_recovers_noise():
    rng = np.random.default_rng(1)
    x, noise, adj, w, b = _linear_scm(rng)
    fit = baselines.fit_linear(x, adj)
    for j in range(adj.shape[0]):
        pa = np.flatnonzero(adj[:, j])
        design = np.c_[x[:, pa], np.ones(len(x))].astype(np.float64)
        beta = np.linalg.lstsq(design, x[:, j].astype(np.float64), rcond=None)[0]
        np.testing.assert_allclose(np.asarray(fit.coef)[pa, j], beta[:-1], atol=2e-4)
        np.testing.assert_allclose(float(fit.intercept[j]), beta[-1], atol=2e-4)
    assert np.all(np.asarray(fit.coef)[adj == 0] == 0)
    noise_hat = x - np.asarray(baselines.apply_linear(fit, x))
    assert float(metrics.rmse(noise, noise_hat)) < 0.05


def test_kernel_ridge_beats_linear_on_a_nonlinear_scm_and_respects_parents():
    rng = np.random.default_rng(2)
    n, d = 300, 4
    adj = np.zeros((d, d), np.float32)
    adj[0, 1] = adj[1, 2] = adj[0, 3] = 1
    noise = (rng.normal(size=(n, d)) * 0.3).astype(np.float32)
    x = np.zeros((n, d), np.float32)
    x[:, 0] = 2 * noise[:, 0] / 0.3
    x[:, 1] = 2 * np.sin(x[:, 0]) + noise[:, 1]
    x[:, 2] = np.tanh(2 * x[:, 1]) * 2 + noise[:, 2]
    x[:, 3] = np.cos(x[:, 0]) + noise[:, 3]
    krr = baselines.fit_kernel_ridge(x, adj)
    lin = baselines.fit_linear(x, adj)
    err_krr = float(metrics.rmse(noise[:, 1:], (x - baselines.apply_kernel_ridge(krr, x))[:, 1:]))
    err_lin = float(metrics.rmse(noise[:, 1:], (x - baselines.apply_linear(lin, x))[:, 1:]))
    assert err_krr < 0.6 * err_lin
    assert err_krr < 0.45
    # changing a non-parent input does not move a node's prediction
    z = x[:5].copy()
    z2 = z.copy()
    z2[:, 2] += 3.0  # node 2 is nobody's parent
    np.testing.assert_allclose(baselines.apply_kernel_ridge(krr, z), baselines.apply_kernel_ridge(krr, z2), atol=1e-5)


def test_sachs_is_the_observational_condition_with_an_acyclic_consensus_graph(shared_dir):
    data = real.load_sachs()
    assert data.x.shape == (853, 11)
    full = np.loadtxt(shared_dir / "data/real/sachs_cyto_full_data.csv", delimiter=",", skiprows=1, max_rows=853)
    np.testing.assert_array_equal(data.x, full.astype(np.float32))
    assert data.adj.sum() == 17
    i = data.nodes.index
    assert data.adj[i("PKA"), i("praf")] == 1 and data.adj[i("PIP2"), i("PIP3")] == 0


def test_ecoli70_sampling_matches_the_network_covariance():
    net = real.load_ecoli70()
    assert len(net.nodes) == 46 and net.adj.sum() == 70
    data = real.sample_ecoli70(n=20000, seed=3)
    d = len(net.nodes)
    inv = np.linalg.inv(np.eye(d) - net.coef)
    cov = inv.T @ np.diag(net.variance) @ inv
    mean = np.linalg.solve((np.eye(d) - net.coef).T, net.intercept)
    np.testing.assert_allclose(data.x.mean(0), mean, atol=0.05 * np.sqrt(np.diag(cov)).max())
    np.testing.assert_allclose(np.cov(data.x.T), cov, atol=0.06 * np.diag(cov).max())
