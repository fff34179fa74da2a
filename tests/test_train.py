"""Training building blocks (schedule, optimiser, EMA, losses, config checks) and an end-to-end smoke run."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import REPO, assert_trees_equal, saved_steps, tiny_config

from cfip_jax.train import checkpoint as ckpt_lib
from cfip_jax.train import loop, losses
from cfip_jax.train.ema import EMAConfig, ema_decay, ema_update
from cfip_jax.train.metrics_writer import read_metrics
from cfip_jax.train.optim import learning_rate_schedule, make_optimizer
from cfip_jax.train.parallel import local_batch_size, make_mesh, replicated, to_host
from cfip_jax.train.state import TrainState
from cfip_jax.train.step import StepConfig, make_train_step
from configs import paper


# ---------------------------------------------------------------------------------------------------------------
# Schedule and optimiser
# ---------------------------------------------------------------------------------------------------------------
def reference_lambda(t: int) -> float:
    """SPEC.md §6.7: t/1000 during warm-up, then 0.5(1 + cos(π(t − 1000)/9000)) (unclamped in the reference)."""
    if t < 1000:
        return t / 1000
    return 0.5 * (1 + math.cos(math.pi * (t - 1000) / 9000))


def test_paper_schedule_matches_reference_then_floors():
    cfg = paper.get_config()
    for name in ("encoder", "decoder"):
        schedule = learning_rate_schedule(cfg[name].optim)
        assert float(schedule(0)) == 0.0  # the first step does not move the parameters
        for t in (1, 250, 999, 1000, 1001, 3000, 5500, 9999, 10_000):
            np.testing.assert_allclose(float(schedule(t)), 1e-4 * reference_lambda(t), rtol=1e-4, atol=1e-12)
        # The reference's cosine would climb back to the peak at t = 19000; ours stays at end_lr = 0.
        for t in (10_001, 14_500, 19_000, 50_000):
            assert float(schedule(t)) == 0.0
            assert reference_lambda(t) > 0


def test_optimizer_is_adam_with_coupled_l2():
    """Adam on g + wd·θ (torch.optim.Adam(weight_decay=…)), not AdamW: compare with a NumPy transcription."""
    cfg = ml_collections.ConfigDict(
        dict(lr=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.3, warmup_steps=2, decay_steps=10, end_lr=0.01)
    )
    tx = make_optimizer(cfg)
    schedule = learning_rate_schedule(cfg)
    theta = jnp.array([1.0, -2.0, 0.5])
    state = tx.init(theta)
    th, m, v = np.array(theta, np.float64), np.zeros(3), np.zeros(3)
    rng = np.random.default_rng(0)
    for t in range(5):
        g = rng.normal(size=3)
        updates, state = tx.update(jnp.asarray(g, jnp.float32), state, theta)
        theta = theta + updates
        gg = g + 0.3 * th
        m = 0.9 * m + 0.1 * gg
        v = 0.95 * v + 0.05 * gg**2
        mhat, vhat = m / (1 - 0.9 ** (t + 1)), v / (1 - 0.95 ** (t + 1))
        th = th - float(schedule(t)) * mhat / (np.sqrt(vhat) + 1e-8)
        np.testing.assert_allclose(np.asarray(theta), th, rtol=1e-5, atol=1e-6)
    # AdamW would give a different trajectory: the decay term matters.
    assert not np.allclose(th, np.asarray(theta) + 0.01)


# ---------------------------------------------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------------------------------------------
def test_ema_reference_warmup_rule():
    cfg = EMAConfig()
    # δ = 1 − (1 + c − 100)^(−2/3) after the copy phase, capped at 0.99.
    assert float(ema_decay(100, cfg)) == 0.0
    np.testing.assert_allclose(float(ema_decay(110, cfg)), 1 - 11 ** (-2 / 3), rtol=1e-6)
    np.testing.assert_allclose(float(ema_decay(600, cfg)), 1 - 501 ** (-2 / 3), rtol=1e-6)
    assert float(ema_decay(5000, cfg)) == pytest.approx(0.99)

    ema = {"w": jnp.float32(0.0)}
    for c, theta in [(0, 5.0), (3, 7.0), (10, 2.0), (95, 9.0), (100, 4.0)]:
        new = ema_update(ema, {"w": jnp.float32(theta)}, c, cfg)
        if c % 10:
            assert float(new["w"]) == float(ema["w"])  # non-acting call
        else:
            assert float(new["w"]) == theta  # exact copy while c <= 100
        ema = new
    new = ema_update(ema, {"w": jnp.float32(14.0)}, 110, cfg)
    delta = 1 - 11 ** (-2 / 3)
    np.testing.assert_allclose(float(new["w"]), delta * 4.0 + (1 - delta) * 14.0, rtol=1e-6)


def test_ema_calls_accumulate_like_single_calls():
    cfg = EMAConfig(every=3, update_after=4)
    ema = {"a": jnp.arange(3.0)}
    params = {"a": jnp.array([5.0, -1.0, 2.0])}
    one = ema
    for c in range(7, 14):
        one = ema_update(one, params, c, cfg)
    many = ema_update(ema, params, 7, cfg, calls=7)
    np.testing.assert_allclose(np.asarray(many["a"]), np.asarray(one["a"]), rtol=1e-6)
    assert not np.allclose(np.asarray(many["a"]), np.asarray(ema["a"]))


# ---------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------
def test_losses_closed_form_and_padding_ignored():
    # B = 2 datasets, n = 2 samples, N = 3 nodes; dataset 1 has a padded node 2 with a huge error.
    pred = jnp.array([[[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], [[3.0, 4.0, 1e6], [0.0, 0.0, -1e6]]])
    target = jnp.zeros_like(pred)
    mask = jnp.array([[True, True, True], [True, True, False]])
    per_sample = losses.per_sample_rmse(pred, target, mask)
    np.testing.assert_allclose(
        np.asarray(per_sample), [[math.sqrt(5 / 3), math.sqrt(3)], [math.sqrt(25 / 2), 0.0]], rtol=1e-6
    )
    np.testing.assert_allclose(float(losses.encoder_loss(pred, target, mask)), float(np.mean(per_sample)), rtol=1e-6)
    per_dataset = losses.per_dataset_rmse(pred, target, mask)
    np.testing.assert_allclose(np.asarray(per_dataset), [math.sqrt(14 / 6), math.sqrt(25 / 4)], rtol=1e-6)
    np.testing.assert_allclose(float(losses.decoder_loss(pred, target, mask)), float(np.mean(per_dataset)), rtol=1e-6)
    # The two stage losses differ: root per sample vs root per dataset.
    enc, dec = float(losses.encoder_loss(pred, target, mask)), float(losses.decoder_loss(pred, target, mask))
    assert enc != pytest.approx(dec)
    # Exactly zero error: gradient 0, not NaN.
    g = jax.grad(lambda p: losses.encoder_loss(p, jnp.zeros_like(p), mask) + losses.decoder_loss(p, 0 * p, mask))(
        jnp.zeros_like(pred)
    )
    assert np.all(np.isfinite(np.asarray(g)))


def test_segment_losses_equal_the_losses_of_the_datasets_apart():
    """A packed row holding two datasets has the loss of the two datasets laid out one per row."""
    rng = np.random.default_rng(0)
    pred, target = (jnp.asarray(rng.normal(size=(3, 5, 6)), jnp.float32) for _ in range(2))
    mask = jnp.asarray([[True] * 6, [True] * 4 + [False] * 2, [True] * 3 + [False] * 3])
    packed_pred = jnp.concatenate([pred[1, :, :4], pred[2, :, :2]], axis=-1)[None]  # [1, 5, 6]: 4 + 2 nodes
    packed_target = jnp.concatenate([target[1, :, :4], target[2, :, :2]], axis=-1)[None]
    segment = jnp.asarray([[0, 0, 0, 0, 1, 1]])
    apart_mask = jnp.asarray([[True] * 4 + [False] * 2, [True] * 2 + [False] * 4])
    apart_pred = jnp.stack([pred[1], jnp.pad(pred[2, :, :2], ((0, 0), (0, 4)))])
    apart_target = jnp.stack([target[1], jnp.pad(target[2, :, :2], ((0, 0), (0, 4)))])
    for fn in (losses.encoder_loss, losses.decoder_loss):
        expected = float(fn(apart_pred, apart_target, apart_mask))
        got = float(fn(packed_pred, packed_target, packed_pred[..., 0, :] == packed_pred[..., 0, :], segment, 2))
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        # one dataset per row, written as segments: the plain loss
        plain = float(fn(pred, target, mask))
        seg = jnp.where(mask, 0, -1)
        np.testing.assert_allclose(float(fn(pred, target, mask, seg, 1)), plain, rtol=1e-6)


@pytest.mark.parametrize("stage_name", ["encoder", "decoder"])
def test_packed_batches_give_the_same_loss_and_gradients(stage_name):
    """A configs/cpu.py-style mixture (d = 4 and 8 in rows of 8), tiny networks: packing only changes the layout."""
    import dataclasses

    from cfip_jax.scm.batch import sample_batch

    c = tiny_config(**{"data.node_counts": (4, 8), "data.max_nodes": 8, "data.n": 12, "data.n_context": 6})
    stage = loop.build_stage(c, stage_name)
    spec = loop.data_spec(c, 4)
    params = stage.init(jax.random.key(1), spec)
    frozen = stage.init_frozen(jax.random.key(2), spec) if stage_name == "decoder" else {}
    for seed in range(2):
        key = jax.random.key(10 + seed)
        plain, packed = sample_batch(key, spec), sample_batch(key, dataclasses.replace(spec, pack=True))
        assert packed.x.shape[0] == 3 < plain.x.shape[0]
        la, ga = jax.value_and_grad(lambda p, b=plain: stage.loss(p, frozen, b, None))(params)
        lb, gb = jax.value_and_grad(lambda p, b=packed: stage.loss(p, frozen, b, None))(params)
        np.testing.assert_allclose(float(lb), float(la), rtol=1e-5)
        scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ga))
        for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-5 * scale)


# ---------------------------------------------------------------------------------------------------------------
# Config checks
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data.batch_size": 6}, "multiple of the number of devices"),
        ({"data.n_context": 16}, "data.n_context"),
        ({"encoder.optim.warmup_steps": 200}, "warmup_steps"),
        ({"encoder.grad_accum": 0}, "encoder.grad_accum"),
        ({"data.graphs": ("lattice",)}, "graph family"),
        ({"eval.funcs": ("rff",)}, "eval.funcs"),
    ],
)
def test_bad_config_is_refused_before_training(overrides, message, tmp_path):
    config = tiny_config(**overrides)
    with pytest.raises(ValueError, match=message):
        loop.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_unwritable_workdir_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        loop.run(tiny_config(), str(blocker / "run"))


def test_config_compatibility_rules():
    base = ckpt_lib.config_to_dict(tiny_config())
    for key in ("encoder.steps", "decoder.steps", "checkpoint_every", "log_every", "eval.batch_size"):
        changed = ckpt_lib.config_to_dict(tiny_config(**{key: 2 * int(ckpt_lib.flatten(base)[key])}))
        ckpt_lib.check_compatible(base, changed, "encoder")
        ckpt_lib.check_compatible(base, changed, "decoder")
    for key, value, stage, field in [
        ("encoder.optim.lr", 1.0, "encoder", "encoder.optim.lr"),
        ("seed", 3, "encoder", "seed"),
        ("data.n", 32, "decoder", "data.n"),
        # the frozen encoder must match (decoder.model.encoder_dim follows encoder.model.d_model)
        ("encoder.model.d_model", 32, "decoder", "decoder.model.encoder_dim"),
        ("encoder.model.num_layers", 2, "decoder", "encoder.model.num_layers"),
        ("decoder.ema.decay", 0.5, "decoder", "decoder.ema.decay"),
    ]:
        changed = ckpt_lib.config_to_dict(tiny_config(**{key: value}))
        with pytest.raises(ValueError, match=f"config field '{field}' differs"):
            ckpt_lib.check_compatible(base, changed, stage)
    # Decoder settings do not concern the encoder stage.
    ckpt_lib.check_compatible(base, ckpt_lib.config_to_dict(tiny_config(**{"decoder.optim.lr": 1.0})), "encoder")


def test_cli_rejects_unknown_config_key(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "--config=configs/test.py", f"--workdir={tmp_path}", "--config.encoder.stepz=3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "stepz" in result.stderr
    assert not (tmp_path / "encoder").exists()


# ---------------------------------------------------------------------------------------------------------------
# Compiled step and end-to-end runs
# ---------------------------------------------------------------------------------------------------------------
def test_no_recompilation_after_first_step():
    config = tiny_config()
    mesh = make_mesh()
    stage = loop.build_stage(config, "encoder")
    spec = loop.data_spec(config, local_batch_size(config.data.batch_size, mesh))
    tx = make_optimizer(config.encoder.optim)
    cfg = StepConfig(stage, spec, tx, learning_rate_schedule(config.encoder.optim), EMAConfig(), 1, 0)
    init = lambda: TrainState.create(stage.init(jax.random.key(0), spec), tx)
    state = jax.jit(init, out_shardings=replicated(mesh))()
    step = make_train_step(cfg, mesh)
    state, metrics = step(state)
    to_host(metrics)
    events = []

    def listener(name, *args, **kwargs):
        if name.startswith("/jax/core/compile/"):
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for _ in range(4):
            state, metrics = step(state)
            to_host(metrics)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert events == []
    assert step._cache_size() == 1
    assert int(to_host(state.step)) == 5


def test_smoke_run_lowers_loss_and_resumes(tmp_path, capsys):
    steps = {"encoder": 60, "decoder": 100}
    config = tiny_config(
        **{"encoder.steps": steps["encoder"], "decoder.steps": steps["decoder"], "checkpoint_every": 50, "log_every": 5}
    )
    workdir = str(tmp_path / "run")
    states = loop.run(config, workdir)
    records = read_metrics(workdir)
    for stage in ("encoder", "decoder"):
        curve = [r["loss"] for r in records if r["stage"] == stage and "loss" in r]
        assert len(curve) == steps[stage] // 5
        assert np.mean(curve[-4:]) < 0.9 * np.mean(curve[:2]), (stage, curve)
        final = [r for r in records if r["stage"] == stage and "val_rmse_linear" in r][-1]
        assert final["step"] == steps[stage]
        assert final["val_rmse_linear"] < 0.9 * final["val_zero_rmse_linear"], final
        assert saved_steps(workdir, stage) == [50, steps[stage]]  # every 50 steps and at the end; keep 2
    # Stage 2 froze the stage-1 EMA encoder, bit for bit.
    assert_trees_equal(states["encoder"].ema_params, states["decoder"].frozen)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["decoder"]["steps"] == steps["decoder"]
    # A second run of the same command resumes, finds both stages complete and does nothing.
    capsys.readouterr()
    again = loop.run(config, workdir)
    out = capsys.readouterr().out
    assert f"encoder: resumed from the checkpoint at step {steps['encoder']}" in out
    assert "already complete" in out
    assert len(read_metrics(workdir)) == len(records)
    assert_trees_equal(again["decoder"].params, states["decoder"].params)
