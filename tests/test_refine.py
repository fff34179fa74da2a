"""Semi-amortized refinement (cfip_jax.inference.refine): what each target may change, the objective falls, the
hold-out split."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_equal

from cfip_jax import model as model_lib
from cfip_jax import model_io
from cfip_jax.inference import refine as refine_lib
from cfip_jax.inference.correct import CorrectionConfig
from cfip_jax.nn.arch import decoder_arch, encoder_arch
from cfip_jax.nn.decoder import CondFiPDecoder
from cfip_jax.nn.encoder import DatasetEncoder

D, N = 4, 48


@pytest.fixture(scope="module")
def setup():
    """A small random-weight model, a linear-SCM dataset (a → b → c, a → d) and its zero-shot conditioning."""
    enc_cfg = encoder_arch("small")
    dec_cfg = decoder_arch("small", encoder_dim=enc_cfg.d_model, dropout=0.0)
    enc, dec = DatasetEncoder(config=enc_cfg), CondFiPDecoder(config=dec_cfg)
    adj = np.zeros((D, D), np.float32)
    adj[0, 1] = adj[1, 2] = adj[0, 3] = 1.0
    rng = np.random.default_rng(0)
    x = np.zeros((N, D), np.float32)
    x[:, 0] = rng.normal(size=N)
    x[:, 1] = 0.8 * x[:, 0] + 0.5 * rng.normal(size=N)
    x[:, 2] = -0.7 * x[:, 1] + 0.5 * rng.normal(size=N)
    x[:, 3] = 0.6 * x[:, 0] + 0.5 * rng.normal(size=N)
    z = jnp.asarray((x - x.mean(0)) / x.std(0, ddof=1))
    adj_b = jnp.asarray(adj)[None]
    mask = jnp.ones((1, D), bool)
    enc_params = enc.init(jax.random.key(0), z[None], adj_b, mask)
    encoding = enc.apply(enc_params, z[None], adj_b, mask, method="encode")
    dec_params = dec.init(jax.random.key(1), z[None], encoding, adj_b, mask)
    model = model_io.TrainedModel(enc, enc_params, dec, dec_params, {})
    cond = model_lib.condition_jit(model, z[None], adj_b)
    return model, cond, z, adj_b


@pytest.mark.parametrize("target", refine_lib.TARGETS)
def test_split_then_merge_is_the_identity(setup, target):
    model, cond, _, _ = setup
    refined, fixed = refine_lib.split(model.decoder_params, cond, target)
    params, back = refine_lib.merge(refined, fixed, target)
    assert_trees_equal(params, model.decoder_params)
    assert_trees_equal(back, cond)


@pytest.mark.parametrize("target", refine_lib.TARGETS)
def test_refinement_lowers_the_objective_and_changes_only_its_target(setup, target):
    model, cond, z, adj = setup
    cfg = refine_lib.RefineConfig(target=target, lr=3e-3, batch=None, members=1)
    out = refine_lib.refine(model, cond, z, adj, 8, cfg)
    assert out.finite and out.steps == 8 and out.loss_on == "fitted rows"
    assert out.loss_after < out.loss_before
    new, old = out.model.decoder_params["params"], model.decoder_params["params"]
    changed = {
        path
        for path, a, b in zip(
            [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(new)],
            jax.tree.leaves(new),
            jax.tree.leaves(old),
            strict=True,
        )
        if not np.array_equal(np.asarray(a), np.asarray(b))
    }
    cond_changed = {k for k in ("v", "p", "c") if not np.array_equal(getattr(out.cond, k), getattr(cond, k))}
    if target == "embedding":
        assert not changed and cond_changed == {"v", "p", "c"}
    elif target == "adaln":
        assert changed and all("modulation" in p for p in changed) and cond_changed == {"c"}
    else:
        assert any("modulation" not in p for p in changed) and cond_changed == {"v", "p", "c"}
    assert_trees_equal(out.model.encoder_params, model.encoder_params)  # the encoder is never refined


def test_auto_stops_early_and_never_ends_worse_than_it_started(setup):
    model, cond, z, adj = setup
    cfg = refine_lib.RefineConfig(lr=3e-3, max_steps=60, eval_every=5, patience=2, holdout=0.25)
    out = refine_lib.refine(model, cond, z, adj, "auto", cfg)
    assert out.loss_on == "held-out rows" and 0 < out.steps <= 60 and out.steps % 5 == 0
    assert out.loss_after <= out.loss_before  # the best held-out parameters are kept (the zero-shot ones at worst)


def test_pull_keeps_the_refined_decoder_closer_to_the_zero_shot_one(setup):
    model, cond, z, adj = setup

    def distance(pull):
        cfg = refine_lib.RefineConfig(target="decoder", lr=3e-3, batch=None, pull=pull, members=1)
        out = refine_lib.refine(model, cond, z, adj, 10, cfg)
        diffs = jax.tree.map(lambda a, b: jnp.sum(jnp.square(a - b)), out.model.decoder_params, model.decoder_params)
        return float(sum(jax.tree.leaves(diffs)))

    assert distance(1e4) < distance(0.0)


def test_closed_form_refinement_only_corrects_and_a_config_without_correction_adds_none(setup):
    model, cond, z, adj = setup
    out = refine_lib.refine(model, cond, z, adj, "closed-form", refine_lib.RefineConfig(members=1))
    assert out.steps == 0 and out.loss_on == "held-out rows" and out.correction is not None
    assert out.loss_after < out.loss_before and sum(out.corrected_nodes.values()) == 3
    assert_trees_equal(out.model.decoder_params, model.decoder_params)
    assert_trees_equal(out.cond, cond)
    mech = out.mechanism(adj)
    at = mech.at
    nodes = jnp.asarray([3, 1])
    np.testing.assert_allclose(at(z, nodes), mech(z)[:, nodes], rtol=1e-5, atol=1e-5)
    plain = refine_lib.refine(model, cond, z, adj, 4, refine_lib.RefineConfig(correction=None))
    assert plain.correction is None and plain.corrected_nodes is None
    with pytest.raises(ValueError, match="closed-form"):
        refine_lib.refine(model, cond, z, adj, "closed-form", refine_lib.RefineConfig(correction=None))


@pytest.mark.parametrize("steps", ["auto", 4, "closed-form"])
def test_an_ensemble_is_the_mean_of_its_members_each_refined_alone_with_its_own_seed(setup, steps):
    """members = 3: member k is the single refinement with seed 2 + k (its own split, batches, features, folds)."""
    model, cond, z, adj = setup
    cfg = refine_lib.RefineConfig(lr=3e-3, batch=16, max_steps=20, eval_every=5, patience=2, holdout=0.25, seed=2)
    ens = refine_lib.refine(model, cond, z, adj, steps, dataclasses.replace(cfg, members=3))
    alone = [refine_lib.refine(model, cond, z, adj, steps, dataclasses.replace(cfg, seed=2 + k, members=1))
             for k in range(3)]  # fmt: skip
    assert ens.members == 3 and ens.finite and all(a.finite for a in alone)
    assert ens.shared == (steps == "closed-form")  # closed-form members hold one decoder: evaluated once
    assert ens.steps == max(a.steps for a in alone)
    assert ens.corrected_nodes == {k: sum(a.corrected_nodes[k] for a in alone) for k in ens.corrected_nodes}
    np.testing.assert_allclose(ens.loss_after, np.mean([a.loss_after for a in alone]), rtol=1e-6)
    mech = ens.mechanism(adj)
    at = mech.at
    singles = [a.mechanism(adj)(z) for a in alone]
    assert not np.allclose(singles[0], singles[1], atol=1e-4)  # the members differ, so the mean is not any of them
    np.testing.assert_allclose(mech(z), sum(singles) / 3, rtol=1e-5, atol=1e-6)
    nodes = jnp.asarray([2, 0])
    np.testing.assert_allclose(at(z, nodes), mech(z)[:, nodes], rtol=1e-5, atol=1e-6)


def test_held_out_rows_split_is_fixed_disjoint_and_complete():
    cfg = refine_lib.RefineConfig(holdout=0.2, seed=3)
    fit, held = refine_lib.held_out_rows(100, cfg)
    assert len(held) == 20 and len(fit) == 80
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(100))
    again = refine_lib.held_out_rows(100, cfg)
    np.testing.assert_array_equal(again[1], held)
    assert len(refine_lib.held_out_rows(40, cfg)[1]) == refine_lib.MIN_HELD_OUT  # at least 10 rows held out
    with pytest.raises(ValueError, match="needs at least 30 rows"):
        refine_lib.held_out_rows(29, cfg)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(target="everything"), "refine target"),
        (dict(lr=0.0), "refine lr"),
        (dict(pull=-1.0), "pull"),
        (dict(holdout=1.0), "holdout"),
        (dict(batch=0), "refine batch"),
        (dict(correction="quadratic"), "unknown correction"),
        (dict(correction=5), "refine correction must be a CorrectionConfig, a kind or None"),
        (dict(members=0), "refine members"),
        (dict(seed=-1), "refine seed"),
    ],
)
def test_bad_refine_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        refine_lib.RefineConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="quadratic"), "unknown correction"),
        (dict(kind=None), "correction kind must be features or linear"),
        (dict(features=0), "refine features"),
        (dict(folds=0), "refine folds"),
        (dict(folds=2.5), "refine folds"),
    ],
)
def test_bad_correction_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CorrectionConfig(**kwargs)


def test_a_correction_kind_is_short_for_its_config():
    assert refine_lib.RefineConfig(correction="linear").correction == CorrectionConfig(kind="linear")
    assert refine_lib.RefineConfig().correction == CorrectionConfig()
    assert hash(refine_lib.RefineConfig(correction="linear")) == hash(refine_lib.RefineConfig(correction="linear"))


@pytest.mark.parametrize("rows", [N, N - 1])
def test_objective_is_the_row_mean_of_per_row_rmse_however_the_rows_are_batched(setup, rows):
    """Even row counts go through the decoder as two datasets: the value and the gradient must not change."""
    model, cond, z, adj = setup
    x = z[:rows]

    def direct(c):
        pred = model.decoder.apply(model.decoder_params, x[None], c, adj, None, method="decode")[0]
        return jnp.mean(jnp.sqrt(jnp.mean(jnp.square(x - pred), axis=-1) + 1e-12))

    def batched(c):
        return refine_lib.objective(model.decoder, model.decoder_params, c, x, adj)

    np.testing.assert_allclose(batched(cond), direct(cond), rtol=1e-6)
    grads = [jax.tree.leaves(jax.grad(f)(cond)) for f in (batched, direct)]
    for got, want in zip(*grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
