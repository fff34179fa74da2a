"""The training loop (cfip_jax.train.loop): config checks, the command line, the compiled step, an end-to-end
smoke run with resume."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import REPO, assert_trees_equal, saved_steps, tiny_config

from cfip_jax.train import loop
from cfip_jax.train.ema import EMAConfig
from cfip_jax.train.metrics_writer import read_metrics
from cfip_jax.train.optim import learning_rate_schedule, make_optimizer
from cfip_jax.train.parallel import local_batch_size, make_mesh, replicated, to_host
from cfip_jax.train.state import TrainState
from cfip_jax.train.step import StepConfig, make_train_step


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data.batch_size": 6}, "multiple of the number of devices"),
        ({"data.n_context": 16}, "data.n_context"),
        ({"encoder.optim.warmup_steps": 200}, "warmup_steps"),
        ({"encoder.grad_accum": 0}, "encoder.grad_accum"),
        ({"data.graphs": ("lattice",)}, "graph family"),
        ({"eval.funcs": ("rff",)}, "eval.funcs"),
        ({"encoder.optim.layer_lr_factor": 8.0}, "only the decoder's adaLN layers"),
        ({"decoder.optim.layer_lr_factor": 8.0, "decoder.optim.layer_lr_from": 9}, "layer_lr_from \\(9\\)"),
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
