"""The notebook API: inputs of every supported type, round trips, interventions by name, units, bad input, export."""

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pandas as pd
import pytest

from cfip_jax import model_io
from cfip_jax.api import CondFiP, InferredSCM, graph_to_adjacency
from cfip_jax.inference.refine import RefineConfig
from cfip_jax.nn.arch import decoder_arch, encoder_arch
from cfip_jax.nn.decoder import CondFiPDecoder
from cfip_jax.nn.encoder import DatasetEncoder

NODES = ("a", "b", "c", "d")
EDGES = [("a", "b"), ("b", "c"), ("a", "d")]


@pytest.fixture(scope="module")
def model():
    """A small model with random weights: every property tested here holds for any DAG-respecting mechanism."""
    enc_cfg = encoder_arch("small")
    dec_cfg = decoder_arch("small", encoder_dim=enc_cfg.d_model, dropout=0.0)
    enc, dec = DatasetEncoder(config=enc_cfg), CondFiPDecoder(config=dec_cfg)
    x = jnp.zeros((1, 8, 4))
    adj = jnp.zeros((1, 4, 4))
    mask = jnp.ones((1, 4), bool)
    enc_params = enc.init(jax.random.key(0), x, adj, mask)
    encoding = enc.apply(enc_params, x, adj, mask, method="encode")
    dec_params = dec.init(jax.random.key(1), x, encoding, adj, mask)
    return CondFiP(model_io.TrainedModel(enc, enc_params, dec, dec_params, {"note": "random weights"}))


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    a = rng.normal(10.0, 2.0, 120)
    b = 0.5 * a + rng.normal(0, 1, 120)
    c = np.sin(b) + rng.normal(0, 0.3, 120)
    d = -a + rng.normal(0, 0.5, 120)
    return pd.DataFrame({"a": a, "b": b, "c": c, "d": d})


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


def test_export_round_trip(model, frame, tmp_path):
    model_io.export(model.model, tmp_path / "m")
    loaded = CondFiP.load(tmp_path / "m")
    a = model.fit(frame, EDGES).noise(frame)
    b = loaded.fit(frame, EDGES).noise(frame)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    with pytest.raises(ValueError, match="not a directory"):
        CondFiP.load(tmp_path / "missing")


def test_pretrained_loads_from_the_package_and_beats_predicting_zero():
    import jax

    from cfip_jax.eval import tasks
    from cfip_jax.scm import sampler
    from cfip_jax.scm.priors import scm_prior

    model = CondFiP.pretrained()
    assert model.info["config"] == "configs/cpu.py" and model.info["decoder_steps"] > 0
    k1, k2 = jax.random.split(jax.random.key(7))
    scm = sampler.sample_scm(k1, scm_prior("er", "linear", "gaussian"), 10)
    x, noise = (np.asarray(a) for a in sampler.sample_observational(k2, scm, 300))
    assert model.training_context == 200 and len(model.context_rows(300)) == 200
    inferred = model.fit(x, np.asarray(scm.adj))
    np.testing.assert_array_equal(inferred.noise(x), model.fit(x, np.asarray(scm.adj), max_context=200).noise(x))
    std = x.std(0, ddof=1)
    err = float(tasks.rmse(noise / std, np.asarray(inferred.noise(x)) / std))
    zero = float(tasks.rmse(noise / std, (x - x.mean(0)) / std))  # T = mean: the noise is the centred data
    assert err < 0.6 * zero


@pytest.mark.slow
def test_quickstart_runs_offline_and_writes_its_figure(tmp_path):
    import pathlib
    import runpy

    script = pathlib.Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    module = runpy.run_path(str(script), run_name="quickstart")
    result = module["main"](["--out", str(tmp_path / "fig.png")])
    assert (tmp_path / "fig.png").stat().st_size > 10_000
    assert result["mmd_generated"] >= result["mmd_floor"] > 0


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
    from jax.tree_util import Partial

    from cfip_jax.api import InferredSCM

    rng = np.random.default_rng(seed)
    w = np.triu(rng.uniform(0.5, 1.5, (d, d)) * (rng.random((d, d)) < 0.7), 1).astype(np.float32)
    w[0, 1] = 1.2  # 0 -> 1 for sure
    noise = rng.normal(size=(50, d)).astype(np.float32)
    scm = InferredSCM(
        mechanism_fn=Partial(_matmul, jnp.asarray(w)),
        adj=jnp.asarray((w != 0).astype(np.float32)),
        mean=jnp.zeros(d, jnp.float32),
        std=jnp.ones(d, jnp.float32),
        noise_data=jnp.asarray(noise),
        nodes=tuple(f"x{i}" for i in range(d)),
    )
    return scm, w


def _matmul(w, z):
    return z @ w


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


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path):
    import pathlib

    import nbclient
    import nbformat

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "MMD(zero-shot samples, held-out)" in text and "MMD(refined samples, held-out)" in text
    assert "empirical noise: MMD" in text and "gaussian  noise: MMD" in text
    assert "95 % bootstrap interval" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3


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
    np.testing.assert_array_equal(again.mechanism(frame).to_numpy(), fast.mechanism(frame).to_numpy())
    cf = again.counterfactual(frame.iloc[:5], {"b": 3.0})
    np.testing.assert_allclose(cf["d"], frame["d"].iloc[:5], rtol=1e-6)  # d is not a descendant of b
    plain = model.fit(frame, EDGES, refine=3, refine_config=RefineConfig(correction=None))
    assert plain.correction is None and plain.corrected_nodes is None


def test_closed_form_refinement_needs_a_correction(model, frame):
    with pytest.raises(ValueError, match="closed-form.*correction"):
        model.fit(frame, EDGES, refine="closed-form", refine_config=RefineConfig(correction=None))
