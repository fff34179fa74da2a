"""SCM prior library: noise laws, mechanisms, sampling, interventions, standardisation and batches.

Shapes are kept few and small (d = 6 real nodes padded to N = 8 wherever the size does not matter) so that each
jitted function compiles only a handful of times.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cfip_jax.scm import graphs, sampler
from cfip_jax.scm import noise as noise_lib
from cfip_jax.scm.batch import Batch, BatchSpec, combination_indices, sample_batch
from cfip_jax.scm.mechanisms import apply_mechanism, apply_node
from cfip_jax.scm.priors import scm_prior
from cfip_jax.scm.standardize import (
    standardize,
    standardize_values,
    unstandardize,
    unstandardize_noise,
    unstandardize_values,
)

D, N, NS = 6, 8, 64  # real nodes, padded size, samples
LINEAR = scm_prior("er", "linear", "gaussian", "in")
RFF = scm_prior("er", "rff", "gaussian", "in")
RFF_LAPLACE_OUT = scm_prior("er", "rff", "laplace", "out")


def _scm(prior, seed, d=D, max_nodes=N):
    return sampler.sample_scm(jax.random.key(seed), prior, d, max_nodes)


def _observe(scm, seed, n=NS):
    return tuple(np.asarray(a) for a in sampler.sample_observational(jax.random.key(seed), scm, n))


def _descendants(adj: np.ndarray, j: int) -> set[int]:
    out, frontier = set(), [j]
    while frontier:
        for c in np.flatnonzero(adj[frontier.pop()]):
            if c not in out:
                out.add(int(c))
                frontier.append(int(c))
    return out


def _rff_numpy(mech, adj, x):
    """SPEC.md §3.2 evaluated directly: loops over nodes j, features r and parents i (float64)."""
    omega, alpha, phi = (np.asarray(a, np.float64) for a in (mech.omega, mech.alpha, mech.phi))
    bias, length, scale = (np.asarray(a, np.float64) for a in (mech.bias, mech.length_scale, mech.output_scale))
    m = alpha.shape[0]
    out = np.zeros(x.shape, np.float64)
    for s in range(x.shape[0]):
        for j in range(x.shape[1]):
            total = 0.0
            for r in range(m):
                u = sum(omega[r, i] * x[s, i] for i in range(x.shape[1]) if adj[i, j])
                total += alpha[r] * math.cos(u / length[j] + phi[r])
            out[s, j] = bias[j] + math.sqrt(2.0 / m) * scale[j] * total
    return out


# --------------------------------------------------------------------------------------------------------------------
# mechanisms and the fixed point


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_samples_equal_closed_form(seed):
    scm = _scm(LINEAR, seed)
    x, eps = _observe(scm, 100 + seed)
    adj = np.asarray(scm.adj, np.float64)
    w = np.asarray(scm.mechanism.weights, np.float64) * adj
    b = np.asarray(scm.mechanism.bias, np.float64)
    # Column form: x = (I - W^T)^{-1} (b + n) for every sample.
    closed = np.linalg.solve(np.eye(N) - w.T, (b + eps.astype(np.float64)).T).T
    assert adj.sum() > 0
    np.testing.assert_allclose(x, closed, rtol=1e-4, atol=1e-3)
    assert np.all(x[:, D:] == 0)
    # Weights are signed-uniform in ±[1, 3] on real entries, biases in [-3, 3].
    real_w = np.abs(np.asarray(scm.mechanism.weights)[:D, :D])
    assert real_w.min() >= 1.0 and real_w.max() <= 3.0
    assert (np.asarray(scm.mechanism.weights)[:D, :D] < 0).any() and (np.asarray(scm.mechanism.weights) > 0).any()
    assert np.all(np.abs(b[:D]) <= 3.0) and np.all(b[D:] == 0)


def test_rff_matches_numpy_formula():
    scm = _scm(RFF_LAPLACE_OUT, 3)
    mech, adj = scm.mechanism, np.asarray(scm.adj)
    assert mech.omega.shape == (100, N) and bool(mech.is_rff)
    x = np.asarray(jax.random.normal(jax.random.key(9), (4, N)) * 5.0)  # arbitrary inputs, padded entries too
    x_real = x.copy()
    x_real[:, D:] = 0.0
    expected = _rff_numpy(mech, adj, x_real)
    for func in ("rff", None):
        np.testing.assert_allclose(np.asarray(apply_mechanism(mech, adj, x, func=func)), expected, rtol=1e-4, atol=1e-3)
    for j in range(N):
        got = np.asarray(apply_node(mech, jnp.asarray(adj[:, j]), x, j, func="rff"))
        np.testing.assert_allclose(got, expected[:, j], rtol=1e-4, atol=1e-3)
    # Roots get the random constant b + sqrt(2/M) s sum_r alpha_r cos(phi_r), not just b; padded nodes 0.
    roots = [j for j in range(D) if adj[:, j].sum() == 0]
    assert roots
    for j in roots:
        const = float(mech.bias[j]) + math.sqrt(2 / 100) * float(mech.output_scale[j]) * float(
            np.sum(np.asarray(mech.alpha) * np.cos(np.asarray(mech.phi)))
        )
        np.testing.assert_allclose(expected[:, j], const, rtol=1e-5)
    assert np.all(expected[:, D:] == 0)
    # Out-of-distribution ranges: length scale in [5, 12], output scale in [8, 22].
    assert np.all((np.asarray(mech.length_scale[:D]) >= 5) & (np.asarray(mech.length_scale[:D]) <= 12))
    assert np.all((np.asarray(mech.output_scale[:D]) >= 8) & (np.asarray(mech.output_scale[:D]) <= 22))


@pytest.mark.parametrize("prior", [LINEAR, RFF], ids=["linear", "rff"])
def test_samples_are_the_fixed_point(prior):
    scm = _scm(prior, 4)
    x, eps = _observe(scm, 5)
    fx = np.asarray(apply_mechanism(scm.mechanism, scm.adj, x))
    scale = np.abs(x).max()
    np.testing.assert_allclose(fx + eps, x, atol=1e-5 * scale)
    # The reference's d Jacobi passes from 0 reach the same point; the untyped (is_rff-selected) path too.
    # (RFF chains amplify float32 rounding by a few per edge, hence the looser tolerance between the two solvers.)
    jacobi = np.asarray(sampler.noise_to_sample(scm, eps, iterations=D))
    np.testing.assert_allclose(jacobi, x, atol=1e-4 * scale)
    depth = int(np.asarray(graphs.depth(scm.adj)).max())
    assert depth >= 1
    # Too few passes are not exact (the depth matters): depth passes leave the deepest node unfinished.
    short = np.asarray(sampler.noise_to_sample(scm, eps, iterations=depth))
    assert np.abs(short - x).max() > 1e-3


def test_padding_leaves_real_nodes_unchanged():
    small, big = _scm(RFF, 7, max_nodes=D), _scm(RFF, 7, max_nodes=N)
    np.testing.assert_array_equal(np.asarray(big.adj)[:D, :D], np.asarray(small.adj))
    for name in ("bias", "length_scale", "output_scale"):
        np.testing.assert_array_equal(getattr(big.mechanism, name)[:D], getattr(small.mechanism, name))
    np.testing.assert_array_equal(big.mechanism.omega[:, :D], small.mechanism.omega)
    np.testing.assert_array_equal(big.noise_scale[:D], small.noise_scale)
    lin_small, lin_big = _scm(LINEAR, 7, max_nodes=D), _scm(LINEAR, 7, max_nodes=N)
    np.testing.assert_array_equal(lin_big.mechanism.weights[:D, :D], lin_small.mechanism.weights)
    x_small, eps_small = _observe(small, 8)
    x_big, eps_big = _observe(big, 8)
    np.testing.assert_array_equal(eps_big[:, :D], eps_small)  # noise: same bits
    assert np.all(eps_big[:, D:] == 0) and np.all(x_big[:, D:] == 0)
    # Samples agree up to float summation order (the padded size changes the matmul's reduction length).
    np.testing.assert_allclose(x_big[:, :D], x_small, rtol=1e-5, atol=1e-5 * np.abs(x_small).max())
    # Garbage on padded inputs never reaches real nodes, and padded outputs stay 0.
    garbage = eps_big.copy()
    garbage[:, D:] = 1e3
    x_garbage = np.asarray(sampler.noise_to_sample(big, garbage))
    np.testing.assert_array_equal(x_garbage, x_big)
    x_in = x_big.copy()
    x_in[:, D:] = -7e2
    np.testing.assert_array_equal(
        np.asarray(apply_mechanism(big.mechanism, big.adj, x_in)),
        np.asarray(apply_mechanism(big.mechanism, big.adj, x_big)),
    )


def test_same_key_same_bits():
    a, b, c = _scm(RFF, 11), _scm(RFF, 11), _scm(RFF, 12)
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(leaf_a, leaf_b)
    np.testing.assert_array_equal(_observe(a, 1)[0], _observe(b, 1)[0])
    assert not np.array_equal(_observe(a, 1)[0], _observe(a, 2)[0])
    assert not np.array_equal(np.asarray(a.mechanism.omega), np.asarray(c.mechanism.omega))


def test_bad_arguments_raise_before_tracing():
    with pytest.raises(ValueError, match="d must be >= 2"):
        sampler.sample_scm(jax.random.key(0), LINEAR, 1)
    with pytest.raises(ValueError, match="edges_per_node"):
        sampler.sample_scm(jax.random.key(0), LINEAR, 3)
    with pytest.raises(ValueError, match="max_nodes"):
        sampler.sample_scm(jax.random.key(0), LINEAR, D, D - 1)
    scm = _scm(LINEAR, 0)
    with pytest.raises(ValueError, match="noise must have shape"):
        sampler.noise_to_sample(scm, jnp.zeros((3, N + 1)))
    with pytest.raises(ValueError, match="intervened"):
        sampler.noise_to_sample(scm, jnp.zeros((3, N)), intervened=jnp.zeros((N - 1,), bool))
    with pytest.raises(ValueError, match="num_nodes"):
        sampler.sample_intervention(jax.random.key(0), jnp.zeros((3, N)), num_nodes=0)


# --------------------------------------------------------------------------------------------------------------------
# noise


def test_noise_laws_and_scales():
    draw = jax.jit(noise_lib.sample_noise, static_argnums=3)
    scale = jnp.asarray([0.5, 1.0, 2.0, 0.0])
    n = 40_000
    gauss = np.asarray(draw(jax.random.key(0), noise_lib.noise_code("gaussian"), scale, n))
    laplace = np.asarray(draw(jax.random.key(1), noise_lib.noise_code("laplace"), scale, n))
    cauchy = np.asarray(draw(jax.random.key(2), noise_lib.noise_code("cauchy"), scale, n))
    np.testing.assert_allclose(gauss[:, :3].std(0), scale[:3], rtol=0.03)
    np.testing.assert_allclose(laplace[:, :3].std(0), math.sqrt(2) * np.asarray(scale[:3]), rtol=0.04)
    np.testing.assert_allclose(np.abs(laplace[:, :3]).mean(0), scale[:3], rtol=0.03)  # E|Laplace(0, b)| = b
    np.testing.assert_allclose(np.median(np.abs(cauchy[:, :3]), 0), scale[:3], rtol=0.04)  # median |Cauchy| = γ
    assert np.abs(cauchy).max() > 100 * np.abs(gauss).max()  # heavy tails
    for arr in (gauss, laplace, cauchy):
        assert np.all(arr[:, 3] == 0)
        assert abs(np.median(arr[:, 1])) < 0.03
    # Columns are independent of each other (different per-node keys).
    assert abs(np.corrcoef(gauss[:, 0], gauss[:, 1])[0, 1]) < 0.03


def test_noise_scales_shared_for_linear_gaussian_only():
    lin = _scm(LINEAR, 1)
    scales = np.asarray(lin.noise_scale)
    assert np.all(scales[:D] == scales[0]) and np.all(scales[D:] == 0)
    per_scm = [float(_scm(LINEAR, s).noise_scale[0]) for s in range(6)]
    assert len(set(per_scm)) == 6  # drawn per SCM (deliberate deviation from the reference's per-run constant)
    rff = np.asarray(_scm(RFF, 1).noise_scale)
    assert len(set(rff[:D].tolist())) == D and np.all(rff[D:] == 0)
    allr = np.concatenate([np.asarray(_scm(RFF, s).noise_scale[:D]) for s in range(6)] + [np.asarray(per_scm)])
    assert allr.min() >= 0.2 and allr.max() <= 2.0


# --------------------------------------------------------------------------------------------------------------------
# interventions and counterfactuals


@pytest.mark.parametrize("prior", [LINEAR, RFF], ids=["linear", "rff"])
def test_intervention_clamps_and_cuts(prior):
    scm = _scm(prior, 21)
    adj = np.asarray(scm.adj)
    x, eps = _observe(scm, 22)
    j = int(np.argmax([len(_descendants(adj, k)) for k in range(D)]))
    desc = _descendants(adj, j)
    assert desc
    intervened = np.zeros(N, bool)
    intervened[j] = True
    values = np.zeros(N, np.float32)
    values[j] = float(np.median(x[:, j])) + 3.0
    x_cf = np.asarray(sampler.counterfactual(scm, eps, intervened, values))
    assert np.all(x_cf[:, j] == values[j])
    others = [k for k in range(D) if k not in desc and k != j]
    tol = 1e-5 * np.abs(x).max()
    np.testing.assert_allclose(x_cf[:, others], x[:, others], atol=tol)
    for c in np.flatnonzero(adj[j]):
        assert np.abs(x_cf[:, c] - x[:, c]).mean() > 1e-3
    assert np.all(x_cf[:, D:] == 0)
    # Counterfactual = fixed point of the intervened SCM (edges into j cut, j's noise ignored).
    cut = adj * (1 - intervened[None, :])
    f_cf = np.asarray(apply_mechanism(scm.mechanism, cut, x_cf)) + eps
    np.testing.assert_allclose(np.where(intervened, values, f_cf)[:, :D], x_cf[:, :D], atol=tol)
    jacobi = np.asarray(sampler.counterfactual(scm, eps, intervened, values, iterations=D))
    np.testing.assert_allclose(jacobi, x_cf, atol=tol)
    # Per-sample values equal to the factual ones reproduce the factual sample.
    np.testing.assert_allclose(np.asarray(sampler.counterfactual(scm, eps, intervened, x)), x, atol=tol)
    # Several nodes at once: every one clamped.
    multi = np.zeros(N, bool)
    multi[[j, (j + 1) % D]] = True
    x_multi = np.asarray(sampler.counterfactual(scm, eps, multi, np.arange(N, dtype=np.float32)))
    assert np.all(x_multi[:, j] == j) and np.all(x_multi[:, (j + 1) % D] == (j + 1) % D)


def test_sample_intervention_rule():
    scm = _scm(RFF, 31)
    x, eps = _observe(scm, 32)
    keys = jax.random.split(jax.random.key(33), 300)
    intervened, values = jax.vmap(lambda k: sampler.sample_intervention(k, x, scm.node_mask))(keys)
    intervened, values = np.asarray(intervened), np.asarray(values)
    assert np.all(intervened.sum(1) == 1)
    idx = intervened.argmax(1)
    counts = np.bincount(idx, minlength=N)
    assert np.all(counts[D:] == 0) and np.all(counts[:D] > 20)  # uniform among the real nodes only
    q10, q90 = np.quantile(x, [0.1, 0.9], axis=0, method="linear")
    chosen = values[np.arange(len(idx)), idx]
    assert np.all(chosen >= q10[idx] - 1e-5) and np.all(chosen <= q90[idx] + 1e-5)
    assert np.all(values[~intervened] == 0)
    pair, pair_values = sampler.sample_intervention(jax.random.key(5), x, scm.node_mask, num_nodes=2)
    assert int(np.asarray(pair).sum()) == 2 and not np.asarray(pair)[D:].any()
    x_cf, chosen_mask, chosen_values = sampler.sample_counterfactual(jax.random.key(5), scm, x, eps, num_nodes=2)
    np.testing.assert_array_equal(chosen_mask, pair)
    np.testing.assert_array_equal(np.asarray(x_cf)[:, np.asarray(pair)], np.broadcast_to(pair_values[pair], (NS, 2)))


# --------------------------------------------------------------------------------------------------------------------
# standardisation


def test_standardize_statistics_and_round_trip():
    scm = _scm(LINEAR, 41)
    x, eps = _observe(scm, 42)
    x_const = x.copy()
    x_const[:, 2] = 4.0  # a constant real node: std 0 -> 1
    x_std, eps_std, stats = standardize(x_const, eps, scm.node_mask)
    x_std, eps_std = np.asarray(x_std), np.asarray(eps_std)
    real = [k for k in range(D) if k != 2]
    np.testing.assert_allclose(x_std[:, real].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x_std[:, real].std(0, ddof=1), 1, rtol=1e-5)
    assert np.all(x_std[:, 2] == 0) and float(stats.std[2]) == 1.0
    np.testing.assert_allclose(np.asarray(stats.std)[real], x[:, real].std(0, ddof=1), rtol=1e-5)
    assert np.all(np.asarray(stats.mean)[D:] == 0) and np.all(np.asarray(stats.std)[D:] == 1)
    assert np.all(x_std[:, D:] == 0)
    np.testing.assert_allclose(eps_std * np.asarray(stats.std), eps, rtol=1e-6)  # scaled, not centred
    np.testing.assert_allclose(np.asarray(unstandardize(x_std, stats)), x_const, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(unstandardize_noise(eps_std, stats)), eps, rtol=1e-6)
    # x - noise (the training target) maps with the same affine map; intervention values too.
    values = jnp.arange(N, dtype=jnp.float32)
    np.testing.assert_allclose(unstandardize_values(standardize_values(values, stats), stats), values, atol=1e-5)
    np.testing.assert_allclose(np.asarray(standardize_values(x_const[5], stats)), x_std[5], rtol=1e-5, atol=1e-5)
    _, _, stats0 = standardize(x, None, None, ddof=0)
    np.testing.assert_allclose(np.asarray(stats0.std)[:D], x[:, :D].std(0), rtol=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# batches


SPEC = BatchSpec(
    priors=[LINEAR, scm_prior("sf_in", "rff", "gaussian", "in")], node_counts=[4, 6], max_nodes=N, n=24, batch_size=6
)


def _affine_residual(x: np.ndarray, target: np.ndarray, parents: np.ndarray) -> float:
    design = np.concatenate([x[:, parents], np.ones((x.shape[0], 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return float(np.abs(design @ coef - target).max())


def test_batch_shapes_masks_and_mixing():
    batch = sample_batch(jax.random.key(0), SPEC)
    assert isinstance(batch, Batch)
    b, n = SPEC.batch_size, SPEC.n
    assert batch.x.shape == batch.noise.shape == (b, n, N) and batch.adj.shape == (b, N, N)
    assert batch.node_mask.shape == batch.mean.shape == batch.std.shape == (b, N)
    assert batch.x.dtype == jnp.float32 and batch.node_mask.dtype == jnp.bool_
    combos = np.asarray(combination_indices(jax.random.key(0), SPEC))
    x, eps, adj, mask = (np.asarray(a) for a in (batch.x, batch.noise, batch.adj, batch.node_mask))
    seen_rff_nonlinear = False
    for i in range(b):
        prior, d = SPEC.combinations[combos[i]]
        assert mask[i].sum() == d and np.all(mask[i, :d])
        assert np.all(x[i][:, d:] == 0) and np.all(eps[i][:, d:] == 0) and np.all(adj[i][d:] == 0)
        assert np.all(adj[i][:, d:] == 0)
        np.testing.assert_allclose(x[i][:, :d].mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(x[i][:, :d].std(0, ddof=1), 1, rtol=1e-4)
        assert np.all(np.asarray(batch.std)[i, d:] == 1) and np.all(np.asarray(batch.mean)[i, d:] == 0)
        target = x[i] - eps[i]  # F(x): affine in the parents for linear SCMs (also in standardised units)
        for j in range(d):
            parents = np.flatnonzero(adj[i][:, j])
            res = _affine_residual(x[i], target[:, j], parents)
            if prior.mechanism.func == "linear":
                assert res < 1e-3
            elif len(parents):
                seen_rff_nonlinear |= res > 1e-2
    assert seen_rff_nonlinear
    assert np.all(np.asarray(batch.std)[mask] > 0)


def test_batch_determinism_and_balance():
    a, b = sample_batch(jax.random.key(5), SPEC), sample_batch(jax.random.key(5), SPEC)
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(leaf_a, leaf_b)
    c = sample_batch(jax.random.key(6), SPEC)
    assert not np.array_equal(np.asarray(a.x), np.asarray(c.x))
    combos = np.stack([np.asarray(combination_indices(jax.random.key(s), SPEC)) for s in range(40)])
    num = len(SPEC.combinations)
    for row in combos:
        counts = np.bincount(row, minlength=num)
        assert counts.max() - counts.min() <= 1
    assert set(combos[:, 0].tolist()) == set(range(num))  # every combination can come first


def test_batch_spec_validation_and_hashing():
    same = BatchSpec(priors=(LINEAR, SPEC.priors[1]), node_counts=(4, 6), max_nodes=N, n=24, batch_size=6)
    assert same == SPEC and hash(same) == hash(SPEC)
    raw = BatchSpec(priors=[RFF], node_counts=[5], n=10, batch_size=1, standardize=False)
    assert raw.max_nodes == 5
    batch = jax.jit(lambda k: sample_batch(k, raw))(jax.random.key(1))  # traceable inside a caller's jit
    assert np.all(np.asarray(batch.mean) == 0) and np.all(np.asarray(batch.std) == 1)
    assert np.abs(np.asarray(batch.x)).std() > 2  # raw RFF units, not standardised
    for kwargs, field in [
        ({"n": 1}, "n"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_nodes": 5}, "max_nodes"),
        ({"priors": []}, "priors"),
        ({"node_counts": []}, "node_counts"),
        ({"node_counts": [3]}, "edges_per_node"),
    ]:
        args = {"priors": [LINEAR], "node_counts": [4, 6], "n": 4, "batch_size": 2, **kwargs}
        with pytest.raises(ValueError, match=field):
            BatchSpec(**args)
    with pytest.raises(ValueError, match="spec"):
        sample_batch(jax.random.key(0), {"n": 4})


def test_per_dataset_draw_equals_the_grouped_draw():
    """With B < C only the B datasets used are drawn (one switch branch each): the same datasets as drawing every
    combination and gathering."""
    from cfip_jax.scm import batch as batch_lib

    spec = BatchSpec(priors=(LINEAR, RFF, scm_prior("sf_in", "rff", "gaussian", "in")), node_counts=(4, 6),
                     max_nodes=N, n=24, batch_size=4)  # fmt: skip
    assert spec.batch_size < len(spec.combinations)
    for seed in range(3):
        key = jax.random.key(seed)
        data_key, combos = jax.random.split(key)[1], combination_indices(key, spec)
        a = batch_lib._per_dataset(data_key, combos, spec)
        b = batch_lib._grouped(data_key, combos, spec)
        for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(np.asarray(leaf_a, np.float64), np.asarray(leaf_b, np.float64), atol=1e-5)
        np.testing.assert_array_equal(np.asarray(a.adj), np.asarray(b.adj))


def test_packed_batch_holds_the_same_datasets_without_padding():
    """pack=True: every dataset of the unpacked batch appears whole in one packed row, the graph is block-diagonal
    over the row's datasets, and fewer rows are used (two 4-node datasets share a row of 8)."""
    import dataclasses

    spec = BatchSpec(priors=(LINEAR, RFF), node_counts=(4, 8), max_nodes=N, n=24, batch_size=4)
    packed_spec = dataclasses.replace(spec, pack=True)
    assert packed_spec.rows == 3 and packed_spec.segments == 2 and spec.rows == 4
    for seed in range(4):
        key = jax.random.key(seed)
        plain, packed = sample_batch(key, spec), sample_batch(key, packed_spec)
        assert packed.x.shape == (3, spec.n, N) and packed.segment.shape == (3, N) and packed.segments == 2
        seg, adj = np.asarray(packed.segment), np.asarray(packed.adj)
        np.testing.assert_array_equal(np.asarray(packed.node_mask), seg >= 0)
        assert not np.any(adj * (seg[:, :, None] != seg[:, None, :]))  # no edge between datasets
        assert np.all(np.asarray(packed.x).transpose(0, 2, 1)[seg < 0] == 0)  # unused places hold zeros
        found = []
        for i in range(spec.batch_size):
            d = int(np.asarray(plain.node_mask[i]).sum())
            hits = [
                (r, g)
                for r in range(3)
                for g in range(2)
                if (seg[r] == g).sum() == d
                and np.array_equal(np.asarray(packed.x[r])[:, seg[r] == g], np.asarray(plain.x[i])[:, :d])
            ]
            assert len(hits) >= 1, f"dataset {i} missing from the packed batch"
            r, g = hits[0]
            sel = seg[r] == g
            np.testing.assert_array_equal(adj[r][np.ix_(sel, sel)], np.asarray(plain.adj[i])[:d, :d])
            for name in ("noise", "mean", "std"):
                got = np.asarray(getattr(packed, name)[r])[..., sel]
                np.testing.assert_array_equal(got, np.asarray(getattr(plain, name)[i])[..., :d])
            found.append(hits[0])
        assert len(set(found)) == spec.batch_size  # each dataset in its own place
