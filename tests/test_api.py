"""The notebook API (cfip_jax.api): inputs of every supported type, round trips, interventions by name, units, bad
input, refinement."""

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pandas as pd
import pytest
from helpers import four_node_frame, linear_inferred_scm, random_model

from cfip_jax.api import InferredSCM, graph_to_adjacency
from cfip_jax.inference.refine import RefineConfig

NODES = ("a", "b", "c", "d")
EDGES = [("a", "b"), ("b", "c"), ("a", "d")]


@pytest.fixture(scope="module")
def model():
    """A small model with random weights: every property tested here holds for any DAG-respecting mechanism."""
    return random_model()


@pytest.fixture(scope="module")
def frame():
    return four_node_frame()


def test_graph_forms_agree():
    adj = np.zeros((4, 4), np.float32)
    adj[0, 1] = adj[1, 2] = adj[0, 3] = 1
    g = nx.DiGraph(EDGES)
    g.add_nodes_from(NODES)
    for form in (adj, adj.tolist(), EDGES, [(0, 1), (1, 2), (0, 3)], g, jnp.asarray(adj)):
        np.testing.assert_array_equal(graph_to_adjacency(form, NODES), adj)


def test_pandas_in_pandas_out_and_round_trips(model, frame):
    scm = model.fit(frame, EDGES)
    noise = scm.noise(frame)
    assert isinstance(noise, pd.DataFrame) and list(noise.columns) == list(NODES)
    regenerated = scm.generate(noise)
    np.testing.assert_allclose(regenerated.to_numpy(), frame.to_numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(scm.noise(regenerated).to_numpy(), noise.to_numpy(), rtol=1e-4, atol=1e-3)
    # mechanism + noise = data, in the user's units
    np.testing.assert_allclose((scm.mechanism(frame) + noise).to_numpy(), frame.to_numpy(), rtol=1e-4, atol=1e-3)


def test_samples_are_in_user_units_and_noise_models_differ(model, frame):
    assert model.fit(frame, EDGES).noise_model == "empirical"  # the default: what serves real data
    scm = model.fit(frame, EDGES, noise_model="gaussian")
    sample = scm.sample(500, jax.random.key(0))
    assert isinstance(sample, pd.DataFrame) and sample.shape == (500, 4)
    # root 'a' is a constant plus Gaussian noise fitted to its abducted noise: its mean and spread match the data
    assert abs(sample["a"].mean() - frame["a"].mean()) < 0.5
    assert abs(sample["a"].std() / frame["a"].std() - 1) < 0.15
    empirical = scm.with_noise_model("empirical").sample(500, jax.random.key(0))
    assert not np.allclose(empirical.to_numpy(), sample.to_numpy())
    # empirical noise of a root reproduces data values exactly (resampled rows of 'a')
    gap = np.abs(empirical["a"].to_numpy()[:, None] - frame["a"].to_numpy()[None, :]).min(axis=1)
    assert gap.max() < 1e-3


def test_interventions_by_name_and_index_clamp_and_spare_non_descendants(model, frame):
    scm = model.fit(frame, EDGES)
    by_name = scm.intervene({"b": 3.5}, 200, jax.random.key(2))
    by_index = scm.intervene({1: 3.5}, 200, jax.random.key(2))
    np.testing.assert_allclose(by_name.to_numpy(), by_index.to_numpy())
    np.testing.assert_allclose(by_name["b"], 3.5, rtol=1e-5)
    observational = scm.sample(200, jax.random.key(2))
    np.testing.assert_allclose(by_name[["a", "d"]], observational[["a", "d"]], rtol=1e-5)  # not descendants of b
    cf = scm.counterfactual(frame.iloc[:10], {"a": 12.0})
    np.testing.assert_allclose(cf["a"], 12.0, rtol=1e-5)
    same = scm.counterfactual(frame.iloc[:10], {"a": frame["a"].iloc[0]})
    np.testing.assert_allclose(same.iloc[0].to_numpy(), frame.iloc[0].to_numpy(), rtol=1e-4, atol=1e-3)


def test_numpy_and_jax_inputs_keep_their_type(model, frame):
    x = frame.to_numpy()
    adj = graph_to_adjacency(EDGES, NODES)
    assert isinstance(model.fit(x, adj).sample(5, jax.random.key(0)), np.ndarray)
    out = model.fit(jnp.asarray(x), adj).noise(jnp.asarray(x))
    assert isinstance(out, jax.Array)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(graph=[("a", "b"), ("b", "a")]), "cyclic"),
        (dict(graph=[("a", "zz")]), "unknown node 'zz'"),
        (dict(graph=np.zeros((3, 3))), "3 nodes but the data has 4"),
        (dict(graph=[("a", "a")]), "self-loop"),
    ],
)
def test_bad_graphs(model, frame, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.fit(frame, **kwargs)


def test_bad_data_and_interventions(model, frame):
    bad = frame.copy()
    bad.iloc[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, EDGES)
    const = frame.copy()
    const["c"] = 1.0
    with pytest.raises(ValueError, match="constant column"):
        model.fit(const, EDGES)
    with pytest.raises(ValueError, match="at least 2 rows"):
        model.fit(frame.iloc[:1], EDGES)
    scm = model.fit(frame, EDGES)
    with pytest.raises(ValueError, match="unknown node 'q'"):
        scm.intervene({"q": 1.0}, 10, jax.random.key(0))
    with pytest.raises(ValueError, match="node index 7"):
        scm.counterfactual(frame, {7: 1.0})
    with pytest.raises(ValueError, match="unknown noise model"):
        model.fit(frame, EDGES, noise_model="uniform")


def test_max_context_limits_the_encoded_rows_only(model, frame):
    """The encoder reads a fixed random subset of ``max_context`` rows; the noise is still abducted from every row."""
    n = len(frame)
    assert model.training_context is None and model.context_rows(n) is None  # not recorded: all rows
    everything = [model.fit(frame, EDGES, max_context=m).noise(frame).to_numpy() for m in (None, n, 10 * n)]
    np.testing.assert_array_equal(everything[0], everything[1])
    np.testing.assert_array_equal(everything[0], everything[2])
    rows = model.context_rows(n, 40)
    assert len(rows) == 40 and len(set(rows.tolist())) == 40 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, model.context_rows(n, 40))  # fixed seed
    subset = model.fit(frame, EDGES, max_context=40)
    assert subset.noise_data.shape == (n, 4)
    assert not np.allclose(subset.noise(frame).to_numpy(), everything[0], atol=1e-4)
    np.testing.assert_array_equal(subset.noise(frame).to_numpy(), model.fit(frame, EDGES, max_context=40).noise(frame))
    for bad, message in ((1, "max_context must be >= 2"), ("all", "unknown max_context"), (2.5, "must be an integer")):
        with pytest.raises(ValueError, match=message):
            model.fit(frame, EDGES, max_context=bad)


def _whole(mech, z):
    return mech(z)


def test_level_by_level_solver_matches_the_iterated_fixed_point(model, frame):
    scm = model.fit(frame, EDGES)
    # the same mechanism as a plain callable pytree (no node form): depth + 1 full decoder passes
    iterated = scm.replace(mechanism_fn=jax.tree_util.Partial(_whole, scm.mechanism_fn))
    key = jax.random.key(3)
    for a, b in ((scm.sample(64, key), iterated.sample(64, key)),
                 (scm.intervene({"b": 1.5}, 64, key), iterated.intervene({"b": 1.5}, 64, key)),
                 (scm.counterfactual(frame, {"a": 9.0}), iterated.counterfactual(frame, {"a": 9.0}))):  # fmt: skip
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-5, atol=1e-4)
    # under jit the graph is a tracer: the solver takes the iterated path and agrees
    noise = jnp.asarray(np.random.default_rng(1).normal(size=(16, 4)), jnp.float32)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda s, n: s._solve(n))(scm, noise)),
                               np.asarray(scm._solve(noise)), rtol=1e-5, atol=1e-5)  # fmt: skip


# ---------------------------------------------------------------- shift interventions and refinement


def _linear_scm(d=4, seed=0):
    """An InferredSCM with a known linear mechanism F(x) = x W (standardised units = user units: mean 0, std 1)."""
    rng = np.random.default_rng(seed)
    w = np.triu(rng.uniform(0.5, 1.5, (d, d)) * (rng.random((d, d)) < 0.7), 1).astype(np.float32)
    w[0, 1] = 1.2  # 0 -> 1 for sure
    noise = rng.normal(size=(50, d)).astype(np.float32)
    return linear_inferred_scm(w, np.zeros(d), np.ones(d), noise), w


def test_shift_and_hard_interventions_follow_the_linear_closed_form():
    """x = x W + n: a shift δ on node i adds δ e_i (I − W)⁻¹ to every sample and counterfactual; a hard do(x_j = a)
    with a shift on another node solves the cut system exactly."""
    scm, w = _linear_scm()
    d = w.shape[0]
    total = np.linalg.inv(np.eye(d) - w)  # rows: total effects of each node's noise
    key = jax.random.key(0)
    base = np.asarray(scm.sample(64, key))
    shifted = np.asarray(scm.intervene(shift={"x0": 2.0}, n=64, key=key))
    np.testing.assert_allclose(shifted - base, np.broadcast_to(2.0 * total[0], base.shape), atol=1e-4)
    x = np.asarray(scm.generate(np.asarray(scm.noise_data)))
    cf = np.asarray(scm.counterfactual(x, shift={1: -1.5}))
    np.testing.assert_allclose(cf - x, np.broadcast_to(-1.5 * total[1], x.shape), atol=1e-4)
    # hard on x1 and shift on x0: x0 moves by δ, x1 is a, x2.. follow the cut system
    both = np.asarray(scm.counterfactual(x, {"x1": 0.5}, shift={"x0": 1.0}))
    noise = x - x @ w
    cut = w.copy()
    cut[:, 1] = 0.0
    expect = np.zeros_like(x)
    for j in range(d):  # nodes are in topological order (W upper triangular)
        expect[:, j] = 0.5 if j == 1 else expect @ cut[:, j] + noise[:, j] + (1.0 if j == 0 else 0.0)
    np.testing.assert_allclose(both, expect, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(shift={"nope": 1.0}), "unknown node 'nope'"),
        (dict(shift={"x0": float("nan")}), "shift for x0 is not finite"),
        (dict(shift={"x0": "big"}), "shift for x0 must be a number"),
        (dict(values={"x0": 1.0}, shift={"x0": 1.0}), "both clamped and shifted"),
        (dict(), "needs values"),
    ],
)
def test_bad_interventions_are_refused(kwargs, message):
    scm, _ = _linear_scm()
    with pytest.raises(ValueError, match=message):
        scm.intervene(n=4, key=jax.random.key(0), **kwargs)


def test_refinement_improves_the_fit_and_records_how(model, frame):
    zero = model.fit(frame, EDGES)
    assert zero.refined_steps == 0 and zero.refine_loss is None
    auto = model.fit(frame, EDGES, refine="auto")
    before, after = auto.refine_loss
    assert auto.refine_loss_on == "held-out rows" and 0 < auto.refined_steps <= RefineConfig().max_steps
    assert after <= before
    fixed = model.fit(frame, EDGES, refine=5)
    assert fixed.refined_steps == 5 and fixed.refine_loss_on == "fitted rows"
    # the refined SCM's mechanism differs from the zero-shot one; same API
    assert not np.allclose(fixed.mechanism(frame).to_numpy(), zero.mechanism(frame).to_numpy())
    assert fixed.sample(8, jax.random.key(0)).shape == (8, 4)


@pytest.mark.parametrize(
    "refine, message",
    [(-1, ">= 0 steps"), (2.5, "whole number"), ("fast", "'auto'"), (True, "whole number")],
)
def test_bad_refine_is_refused_before_tracing(model, frame, refine, message):
    with pytest.raises(ValueError, match=message):
        model.fit(frame, EDGES, refine=refine)


def test_auto_refinement_needs_enough_rows(model, frame):
    with pytest.raises(ValueError, match="needs at least 30 rows"):
        model.fit(frame.iloc[:25], EDGES, refine="auto")


def test_diverging_refinement_returns_the_zero_shot_scm(model, frame):
    zero = model.fit(frame, EDGES)
    with pytest.warns(UserWarning, match="non-finite"):
        blown = model.fit(frame, EDGES, refine=3, refine_config=RefineConfig(lr=1e30))
    assert blown.refined_steps == 0
    np.testing.assert_allclose(blown.mechanism(frame).to_numpy(), zero.mechanism(frame).to_numpy(), rtol=1e-6)


def test_closed_form_refinement_corrects_without_gradient_steps_and_survives_save_and_load(model, frame, tmp_path):
    zero = model.fit(frame, EDGES)
    fast = model.fit(frame, EDGES, refine="closed-form")
    assert fast.refined_steps == 0 and fast.refine_loss_on == "held-out rows"
    before, after = fast.refine_loss
    assert after < before  # a random-weight decoder: the per-node correction fixes much of it
    kept, linear, features = fast.corrected_nodes
    assert fast.members == RefineConfig().members == 2  # the default ensemble: the counts are summed over members
    assert kept + linear + features == 3 * 2  # b, c and d have parents; a is a root
    np.testing.assert_array_equal(fast.mechanism(frame)["a"], zero.mechanism(frame)["a"])  # roots are left alone
    again = InferredSCM.load(fast.save(tmp_path / "scm"))
    assert again.corrected_nodes == fast.corrected_nodes and again.members == 2
    assert fast.decoder_mechanism.shared and again.decoder_mechanism.shared  # one decoder kept, saved and loaded
    np.testing.assert_array_equal(again.mechanism(frame).to_numpy(), fast.mechanism(frame).to_numpy())
    cf = again.counterfactual(frame.iloc[:5], {"b": 3.0})
    np.testing.assert_allclose(cf["d"], frame["d"].iloc[:5], rtol=1e-6)  # d is not a descendant of b
    plain = model.fit(frame, EDGES, refine=3, refine_config=RefineConfig(correction=None))
    assert plain.correction is None and plain.corrected_nodes is None


def test_closed_form_refinement_needs_a_correction(model, frame):
    with pytest.raises(ValueError, match="closed-form.*correction"):
        model.fit(frame, EDGES, refine="closed-form", refine_config=RefineConfig(correction=None))
