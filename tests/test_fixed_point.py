"""Tests of the fixed-point solvers: exactness with true mechanisms, interventions, abduction, gradients, caching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from cfip_jax import fixed_point as fp
from cfip_jax.nn import CondFiPDecoder, decoder_arch, decoder_mechanism
from cfip_jax.scm import graphs
from cfip_jax.scm.mechanisms import apply_mechanism
from cfip_jax.scm.priors import scm_prior
from cfip_jax.scm.sampler import noise_to_sample, sample_intervention, sample_observational, sample_scm

TRACES = {"linear": 0}


def linear_mechanism(weights, bias, adj, z):
    """f(z)_j = b_j + Σ_i z_i W_ij A_ij, batched: ``weights, adj [..., N, N]``, ``bias [..., N]``, ``z [..., n, N]``."""
    TRACES["linear"] += 1
    return bias[..., None, :] + jnp.einsum("...si,...ij->...sj", z, weights * adj)


def numpy_linear_solve(weights, bias, adj, noise, intervened=None, values=None):
    """Exact float64 solution of x = f(x) + ε by a topological sweep (optionally clamping intervened nodes)."""
    x = np.zeros_like(noise)
    for b in range(adj.shape[0]):
        done = np.zeros(adj.shape[-1], bool)
        while not done.all():
            for j in np.flatnonzero(~done):
                parents = adj[b, :, j] != 0
                if done[parents].all():
                    x[b, :, j] = bias[b, j] + x[b][:, parents] @ weights[b, parents, j] + noise[b, :, j]
                    if intervened is not None and intervened[b, j]:
                        x[b, :, j] = values[b, j]
                    done[j] = True
    return x


@pytest.fixture(scope="module")
def linear_scm():
    rng = np.random.default_rng(0)
    batch, n, d = 3, 7, 6
    adj = np.zeros((batch, d, d), np.float32)
    adj[0, [0, 1, 2, 3, 4], [1, 2, 3, 4, 5]] = 1  # a chain: longest path 5
    adj[1] = np.triu(rng.random((d, d)) < 0.4, 1)
    adj[2, 3, 0] = 1  # one edge: longest path 1
    weights = rng.uniform(0.5, 1.5, size=(batch, d, d)) * rng.choice([-1, 1], size=(batch, d, d))
    bias = rng.normal(size=(batch, d))
    noise = rng.normal(size=(batch, n, d))
    return weights, bias, adj, noise


def as_mech(weights, bias, adj):
    return Partial(linear_mechanism, jnp.asarray(weights, jnp.float32), jnp.asarray(bias, jnp.float32),
                   jnp.asarray(adj, jnp.float32))  # fmt: skip


def test_linear_scm_exact_in_d_and_depth_steps(linear_scm):
    weights, bias, adj, noise = linear_scm
    mech = as_mech(weights, bias, adj)
    expected = numpy_linear_solve(weights, bias, adj, noise)
    depth = int(fp.host_longest_path(adj).max())
    assert depth == 5
    np.testing.assert_array_equal(fp.host_longest_path(adj), np.asarray(graphs.longest_path(jnp.asarray(adj))))
    eps = jnp.asarray(noise, jnp.float32)
    for iterations in (None, "depth", depth + 1):
        x = fp.generate(mech, eps, adj=adj, iterations=iterations)
        np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-5, atol=1e-4)
    short = np.asarray(fp.generate(mech, eps, adj=adj, iterations=depth))
    assert not np.allclose(short[0], expected[0], atol=1e-3)  # the chain's last node needs depth + 1 steps
    np.testing.assert_allclose(short[2], expected[2], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(fp.abduct(mech, expected)), noise, rtol=1e-5, atol=1e-4)


def test_interventions_clamp_and_counterfactuals(linear_scm):
    weights, bias, adj, noise = linear_scm
    mech = as_mech(weights, bias, adj)
    intervened = np.zeros(adj.shape[:2], bool)
    intervened[:, 2] = True
    values = np.full(adj.shape[:2], 1.75)
    expected = numpy_linear_solve(weights, bias, adj, noise, intervened, values)
    x_do = np.asarray(fp.intervene(mech, noise, intervened, values, adj=adj, iterations="depth"))
    np.testing.assert_allclose(x_do, expected, rtol=1e-5, atol=1e-4)
    assert np.all(x_do[..., 2] == np.float32(1.75))
    assert not np.allclose(x_do[0, :, 3], numpy_linear_solve(weights, bias, adj, noise)[0, :, 3])  # child moved
    x = numpy_linear_solve(weights, bias, adj, noise)
    x_cf = fp.counterfactual(mech, x, intervened, values, adj=adj)
    np.testing.assert_allclose(np.asarray(x_cf), expected, rtol=1e-5, atol=1e-4)
    # a [N] intervention broadcasts over the batch
    x_one = fp.intervene(mech, noise, intervened[0], values[0], adj=adj)
    np.testing.assert_allclose(np.asarray(x_one), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("func", ["linear", "rff"])
def test_oracle_reproduces_the_sampler(func):
    """With the true mechanism as T, the solver reproduces the SCM sampler's samples, interventions, noise."""
    scm = sample_scm(jax.random.key(3), scm_prior("er", func, "gaussian"), 6, max_nodes=8)
    x, eps = sample_observational(jax.random.key(4), scm, 16)
    mech = Partial(apply_mechanism, scm.mechanism, scm.adj)
    depth = int(fp.host_longest_path(np.asarray(scm.adj)))
    assert depth >= 1
    for iterations in (None, "depth"):
        got = fp.generate(mech, eps, adj=scm.adj, node_mask=scm.node_mask, iterations=iterations)
        np.testing.assert_allclose(np.asarray(got), np.asarray(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(fp.abduct(mech, x)), np.asarray(eps), rtol=1e-5, atol=1e-5)
    intervened, values = sample_intervention(jax.random.key(5), x, scm.node_mask)
    x_do = noise_to_sample(scm, eps, intervened=intervened, values=values)
    got = fp.intervene(mech, eps, intervened, values, adj=scm.adj, iterations="depth")
    np.testing.assert_allclose(np.asarray(got), np.asarray(x_do), rtol=1e-5, atol=1e-5)
    got = fp.counterfactual(mech, x, intervened, values, adj=scm.adj, node_mask=scm.node_mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(x_do), rtol=1e-5, atol=1e-5)


def test_gradient_through_the_scan_matches_closed_form(linear_scm):
    """x = (ε + b)(I − W∘A)⁻¹ for a linear SCM: reverse mode through the scan gives its gradient."""
    weights, bias, adj, noise = linear_scm
    w, b, a, eps = (jnp.asarray(t, jnp.float32) for t in (weights, bias, adj, noise))

    def loss_scan(w):
        return jnp.sum(jnp.sin(fp.generate(Partial(linear_mechanism, w, b, a), eps, adj=adj, iterations="depth")))

    def loss_closed(w):
        eye = jnp.eye(a.shape[-1])[None]  # [1, d, d] against the batch of graphs
        x = jnp.linalg.solve(jnp.swapaxes(eye - w * a, -1, -2), jnp.swapaxes(eps + b[:, None, :], -1, -2))
        return jnp.sum(jnp.sin(jnp.swapaxes(x, -1, -2)))

    np.testing.assert_allclose(float(loss_scan(w)), float(loss_closed(w)), rtol=1e-5)
    g_scan, g_closed = jax.grad(loss_scan)(w), jax.grad(loss_closed)(w)
    np.testing.assert_allclose(np.asarray(g_scan), np.asarray(g_closed), rtol=1e-4, atol=1e-4)
    assert float(jnp.abs(g_scan).max()) > 0


def test_traced_graph_uses_a_bounded_scan(linear_scm):
    """Inside jit (adj a tracer) the depth is found on device; results and gradients match the host path."""
    weights, bias, adj, noise = linear_scm
    w, b, eps = (jnp.asarray(t, jnp.float32) for t in (weights, bias, noise))

    @jax.jit
    def run(w, a):
        return fp.generate(Partial(linear_mechanism, w, b, a), eps, adj=a, iterations="depth")

    host = fp.generate(Partial(linear_mechanism, w, b, jnp.asarray(adj)), eps, adj=adj, iterations="depth")
    np.testing.assert_allclose(np.asarray(run(w, jnp.asarray(adj))), np.asarray(host), rtol=1e-6, atol=1e-6)
    g = jax.grad(lambda w: jnp.sum(run(w, jnp.asarray(adj)) ** 2))(w)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


def test_no_recompilation_for_new_values(linear_scm):
    weights, bias, adj, noise = linear_scm
    eps = jnp.asarray(noise, jnp.float32)
    fp.generate(as_mech(weights, bias, adj), eps, adj=adj)
    before = TRACES["linear"]
    fp.generate(as_mech(weights * 0.5, bias + 1.0, adj), eps + 1.0, adj=adj)  # new values, same shapes and steps
    assert TRACES["linear"] == before
    fp.intervene(as_mech(weights, bias, adj), eps, np.eye(6, dtype=bool)[1], np.ones(6), adj=adj)
    after_first = TRACES["linear"]
    fp.intervene(as_mech(weights, bias, adj), eps, np.eye(6, dtype=bool)[4], np.zeros(6), adj=adj)
    assert TRACES["linear"] == after_first


def test_decoder_mechanism_fixed_point_and_caching():
    """The decoder is DAG-structured, so depth + 1 steps reach its exact fixed point; one compilation per shape."""
    rng = np.random.default_rng(1)
    batch, n, d, pad = 2, 6, 5, 1
    adj = np.zeros((batch, d + pad, d + pad), np.float32)
    adj[:, :d, :d] = np.triu(rng.random((batch, d, d)) < 0.6, 1)
    node_mask = np.arange(d + pad) < d
    node_mask = np.broadcast_to(node_mask, (batch, d + pad))
    noise = rng.normal(size=(batch, n, d + pad)).astype(np.float32) * node_mask[:, None, :]
    model = CondFiPDecoder(decoder_arch("small"))
    enc = jnp.asarray(rng.normal(size=(batch, n, d + pad, 64)), jnp.float32)
    params = model.init(jax.random.key(0), noise, enc, adj, node_mask)
    embed = jax.jit(lambda p, e: model.apply(p, e, adj, node_mask, method="embed"))
    mech = decoder_mechanism(model, params, embed(params, enc), adj, node_mask)
    x_d = fp.generate(mech, noise, adj=adj, node_mask=node_mask)
    x_depth = fp.generate(mech, noise, adj=adj, iterations="depth")
    np.testing.assert_allclose(np.asarray(x_depth), np.asarray(x_d), rtol=1e-5, atol=1e-5)
    residual = np.asarray(x_d - (mech(x_d) + noise))
    np.testing.assert_allclose(residual, 0.0, atol=1e-5)  # a fixed point of z ↦ T(z) + ε
    assert np.all(np.asarray(x_d)[..., d:] == 0.0)
    cache = fp._solve._cache_size()
    params2 = jax.tree.map(lambda t: t * 1.1, params)
    mech2 = decoder_mechanism(model, params2, embed(params2, enc * 2.0), adj, node_mask)
    x2 = fp.generate(mech2, noise, adj=adj, node_mask=node_mask)
    assert fp._solve._cache_size() == cache
    assert not np.allclose(np.asarray(x2), np.asarray(x_d))


def test_bad_inputs_raise(linear_scm):
    weights, bias, adj, noise = linear_scm
    mech = as_mech(weights, bias, adj)
    cyclic = adj.copy()
    cyclic[0, 5, 0] = 1
    loop = adj.copy()
    loop[1, 2, 2] = 1
    nonbinary = adj * 0.5
    nan_noise = noise.copy()
    nan_noise[0, 0, 0] = np.nan
    cases = [
        (dict(adj=cyclic), "cyclic"),
        (dict(adj=loop), "self-loop"),
        (dict(adj=nonbinary), "binary"),
        (dict(adj=adj[:, :5, :]), "square"),
        (dict(adj=adj[:, :5, :5]), "5 nodes"),
        (dict(iterations="depth"), "needs the graph"),
        (dict(adj=adj, iterations="deep"), "iterations"),
        (dict(adj=adj, iterations=-1), "iterations"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            fp.generate(mech, noise, **kwargs)
    with pytest.raises(ValueError, match="NaN"):
        fp.generate(mech, nan_noise)
    with pytest.raises(ValueError, match="intervened"):
        fp.intervene(mech, noise, np.ones(5, bool), np.ones(6))
    with pytest.raises(ValueError, match="inf"):
        fp.counterfactual(mech, noise, np.ones(6, bool), np.full(6, np.inf))
    with pytest.raises(ValueError, match="callable"):
        fp.abduct(3.0, noise)


def _check_schedule(adj, keep, roots, steps):
    """Every kept node set once after its kept parents (roots apart, first); returns the first step of each."""
    edges, keep = np.asarray(adj) != 0, np.ones(len(adj), bool) if keep is None else keep
    parentless = keep & ~edges.any(0)
    assert sorted(roots.tolist() if roots is not None else []) == np.flatnonzero(parentless).tolist()
    first = {}
    for t, row in enumerate(steps.tolist()):
        assert set(row) <= set(steps[t - 1].tolist()) or row[0] not in first  # padding: a row's own or the last
        for i in row:
            first.setdefault(i, t)
    assert sorted(first) == np.flatnonzero(keep & ~parentless).tolist()
    for j, t in first.items():
        assert all(first[i] < t for i in np.flatnonzero(edges[:, j]) if i in first), (j, t)
    return first


def test_host_schedule_sets_each_node_after_its_parents_in_few_padded_steps():
    adj = np.zeros((6, 6))
    adj[0, 2] = adj[1, 2] = adj[2, 3] = adj[0, 4] = 1  # parentless {0, 1, 5}; then {2, 4}, then {3}
    roots, steps = fp.host_schedule(adj)
    assert steps.dtype == np.int32 and _check_schedule(adj, None, roots, steps) == {2: 0, 4: 0, 3: 1}
    assert fp.host_schedule(np.zeros((3, 3)))[1].shape == (0, 1)
    star = np.zeros((12, 12))  # ten roots feed node 10, which feeds 11: levels of 10, 1 and 1 nodes
    star[:10, 10] = star[10, 11] = 1
    assert fp.host_schedule(star)[1].tolist() == [[10], [11]]  # not two steps of width 10
    rng = np.random.default_rng(0)
    for trial in range(60):
        d = int(rng.integers(2, 30))
        adj = np.triu(rng.random((d, d)) < rng.uniform(0.05, 0.6), 1)
        perm = rng.permutation(d)
        adj = adj[np.ix_(perm, perm)]
        keep = None if trial % 3 else rng.random(d) < 0.7
        for bucket in (False, True):
            roots, steps = fp.host_schedule(adj, keep, bucket)
            first = _check_schedule(adj, keep, roots, steps)
            if bucket:
                assert all(n & (n - 1) == 0 for n in steps.shape)
            elif first:  # never costlier than one step per topological level at the widest level's width
                sub = adj[np.ix_(sorted(first), sorted(first))]
                level = fp._host_node_levels(sub)
                c = fp.STEP_COST_IN_NODES
                assert steps.shape[0] * (steps.shape[1] + c) <= (level.max() + 1) * (np.bincount(level).max() + c)


def test_host_ancestral_set_follows_paths_and_stops_at_cut_nodes():
    adj = np.zeros((6, 6))
    adj[0, 2] = adj[1, 2] = adj[2, 3] = adj[0, 4] = adj[4, 5] = 1
    assert fp.host_ancestral_set(adj, [3]).tolist() == [True, True, True, True, False, False]
    assert fp.host_ancestral_set(adj, [5]).tolist() == [True, False, False, False, True, True]
    cut = np.zeros(6, bool)
    cut[2] = True  # do(2): 0 and 1 no longer reach 3
    assert fp.host_ancestral_set(adj, [3], cut).tolist() == [False, False, True, True, False, False]
    roots, steps = fp.host_schedule(adj, fp.host_ancestral_set(adj, [3], cut))
    assert roots is None and steps.tolist() == [[2], [3]]  # 2's parents are not kept, but it has some: not a root


def test_solve_by_level_targets_solves_only_their_ancestors_exactly(linear_scm):
    weights, bias, adj, noise = linear_scm
    calls = []
    for b in range(adj.shape[0]):
        mech = as_mech(weights[b], bias[b], adj[b])
        at = Partial(lambda m, z, nodes: m(z)[..., nodes], mech)
        level = fp._host_node_levels(adj[b])
        target = int(np.argmax(level))  # a deepest node
        anc = fp.host_ancestral_set(adj[b], [target])
        anc[target] = False
        clamp = np.zeros(adj.shape[-1], bool)
        clamp[int(np.argmax(np.where(anc, level, -1)))] = True  # its deepest ancestor: the cut drops the rest
        values = np.linspace(-2.0, 2.0, adj.shape[-1]).astype(np.float32)
        for args in ((), (clamp, values)):
            full = np.asarray(fp.solve_by_level(at, noise[b], adj[b], *args))
            part = np.asarray(fp.solve_by_level(at, noise[b], adj[b], *args, targets=[target]))
            keep = fp.host_ancestral_set(adj[b], [target], args[0] if args else None)
            np.testing.assert_allclose(part[..., keep], full[..., keep], rtol=1e-6, atol=1e-6)
            start = (np.where(clamp, values, noise[b]) if args else noise[b]).astype(np.float32)
            np.testing.assert_array_equal(part[..., ~keep], np.asarray(start)[..., ~keep])  # left unsolved
            calls.append(int(keep.sum()) < adj.shape[-1])
    assert any(calls)  # the fixture has targets with fewer ancestors than nodes: the test saw a reduced solve
    with pytest.raises(ValueError, match="targets must be node indices"):
        fp.solve_by_level(at, noise[0], adj[0], targets=[adj.shape[-1]])


def test_parentless_nodes_are_solved_on_one_row_for_all():
    """The first level's nodes have no parents: their mechanism value is a constant, computed on one row. A mechanism
    that adds each row's index to every output shows it: the roots get row 0's value in every row, the rest their own
    (a valid mechanism never reads the row; this one exposes which rows the solver evaluated)."""
    adj = np.zeros((3, 3))
    adj[0, 2] = adj[1, 2] = 1
    roots, rest = fp.host_schedule(adj)
    assert roots.tolist() == [0, 1] and rest.tolist() == [[2]]
    cut = fp.host_schedule(adj, fp.host_ancestral_set(adj, [2], np.array([False, False, True])))
    assert cut[0] is None and cut[1].tolist() == [[2]]  # a node with parents is never a root, kept or not
    alone, nothing = fp.host_schedule(np.zeros((3, 3)))
    assert alone.tolist() == [0, 1, 2] and nothing.shape == (0, 1)

    def row(z, nodes):
        return jnp.arange(z.shape[-2], dtype=z.dtype)[:, None] + 10.0 * nodes[None, :].astype(z.dtype)

    z = np.asarray(fp.solve_by_level(Partial(row), jnp.zeros((4, 3)), adj))
    np.testing.assert_array_equal(z[:, :2], np.broadcast_to([0.0, 10.0], (4, 2)))  # row 0's value in every row
    np.testing.assert_array_equal(z[:, 2], np.arange(4) + 20.0)


def test_known_nodes_are_taken_from_another_solve_and_not_recomputed(linear_scm):
    """An effect's two arms: the nodes neither intervention reaches come from the control's solve; the treated arm
    then equals its own full solve, and a mechanism that returns NaN at the known nodes shows they were skipped."""
    weights, bias, adj, noise = linear_scm
    adj0 = np.zeros((5, 5))
    adj0[0, 1] = adj0[1, 2] = adj0[3, 2] = adj0[2, 4] = 1
    assert fp.host_unaffected(adj0, np.eye(5, dtype=bool)[1]).tolist() == [True, False, False, True, False]
    assert fp.host_unaffected(adj0, None, np.eye(5, dtype=bool)[[3]]).tolist() == [True, True, False, False, False]
    for b in range(adj.shape[0]):
        mech = as_mech(weights[b], bias[b], adj[b])
        at = Partial(lambda m, z, nodes: m(z)[..., nodes], mech)
        level = fp._host_node_levels(adj[b])
        target = int(np.argmax(level))
        ancestors = np.flatnonzero(fp.host_ancestral_set(adj[b], [target]))
        treat = np.zeros(adj.shape[-1], bool)
        treat[ancestors[len(ancestors) // 2]] = True  # an ancestor (or the target itself)
        values = np.full(adj.shape[-1], 1.5, np.float32)
        control = fp.solve_by_level(at, noise[b], adj[b], targets=[target])
        same = fp.host_unaffected(adj[b], treat)
        full = np.asarray(fp.solve_by_level(at, noise[b], adj[b], treat, values, targets=[target]))
        poison = lambda m, skip, z, nodes: m(z)[..., nodes] + jnp.where(skip[nodes], jnp.nan, 0.0)[None]  # noqa: E731
        poisoned = Partial(poison, mech, jnp.asarray(same))
        part = fp.solve_by_level(poisoned, noise[b], adj[b], treat, values, targets=[target], known=(control, same))
        np.testing.assert_allclose(np.asarray(part)[..., target], full[..., target], rtol=1e-6, atol=1e-6)
        assert np.isnan(np.asarray(fp.solve_by_level(poisoned, noise[b], adj[b], targets=[target]))).any() == bool(
            (same & fp.host_ancestral_set(adj[b], [target])).any()
        )  # the poison shows where it is evaluated
    given = (np.asarray(noise[0]) + 7.0).astype(np.float32)
    nothing = fp.solve_by_level(at, noise[0], adj[0], targets=[0], known=(given, np.ones(adj.shape[-1], bool)))
    np.testing.assert_array_equal(np.asarray(nothing), given)  # all known: nothing solved
    with pytest.raises(ValueError, match="known's node mask"):
        fp.solve_by_level(at, noise[0], adj[0], known=(noise[0], np.ones(3, bool)))


def test_solve_by_level_is_exact_for_linear_scms_and_interventions(linear_scm):
    weights, bias, adj, noise = linear_scm
    for b in range(adj.shape[0]):
        mech = as_mech(weights[b], bias[b], adj[b])
        at = Partial(lambda m, z, nodes: m(z)[..., nodes], mech)
        x = fp.solve_by_level(at, noise[b], adj[b])
        exact = numpy_linear_solve(weights[b : b + 1], bias[b : b + 1], adj[b : b + 1], noise[b : b + 1])[0]
        np.testing.assert_allclose(np.asarray(x), exact, rtol=1e-4, atol=1e-4)
        clamp = np.zeros(adj.shape[-1], bool)
        clamp[[0, 3]] = True
        values = np.linspace(-2.0, 2.0, adj.shape[-1]).astype(np.float32)
        x = fp.solve_by_level(at, noise[b], adj[b], clamp, values)
        exact = numpy_linear_solve(weights[b : b + 1], bias[b : b + 1], adj[b : b + 1], noise[b : b + 1],
                                   clamp[None], values[None])[0]  # fmt: skip
        np.testing.assert_allclose(np.asarray(x), exact, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="adj is cyclic"):
        fp.solve_by_level(at, noise[0], np.ones((6, 6)) - np.eye(6))
