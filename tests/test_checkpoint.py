"""Checkpoints: exact resume after an interrupt, fallback from a corrupt checkpoint, config checks, non-finite loss."""

import glob
import os
import shutil
import signal

import helpers
import jax
import numpy as np
import pytest
from helpers import assert_trees_equal, saved_steps

from cfip_jax.train import checkpoint as ckpt_lib
from cfip_jax.train import loop
from cfip_jax.train.checkpoint import StageCheckpointer
from cfip_jax.train.parallel import to_host

STEPS = 6


def tiny_config(**overrides):
    return helpers.tiny_config(**{"encoder.steps": STEPS, "checkpoint_every": 2, "log_every": 1, **overrides})


def train_encoder(config, workdir, hooks=()):
    return loop.run(config, str(workdir), ("encoder",), hooks=hooks)["encoder"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of STEPS encoder steps: (workdir, final state)."""
    workdir = tmp_path_factory.mktemp("reference")
    return workdir, train_encoder(tiny_config(), workdir)


def test_interrupted_run_resumes_bit_identically(reference, tmp_path, capsys):
    _, full = reference
    assert int(to_host(full.step)) == STEPS

    def sigint_after(k):
        def hook(stage, done):
            if done == k:
                signal.raise_signal(signal.SIGINT)  # Ctrl-C: handled between steps

        return hook

    def keyboard_interrupt_after(k):
        def hook(stage, done):
            if done == k:
                raise KeyboardInterrupt  # an interrupt outside the handler's reach

        return hook

    with pytest.raises(KeyboardInterrupt):
        train_encoder(tiny_config(), tmp_path, hooks=[sigint_after(1)])
    assert saved_steps(tmp_path) == [1]
    assert "checkpoint saved at step 1" in capsys.readouterr().out

    with pytest.raises(KeyboardInterrupt):
        train_encoder(tiny_config(), tmp_path, hooks=[keyboard_interrupt_after(3)])
    assert saved_steps(tmp_path) == [2, 3]  # step 2 by schedule, step 3 on the interrupt; keep 2
    out = capsys.readouterr().out
    assert "resumed from the checkpoint at step 1" in out and "checkpoint saved at step 3" in out

    resumed = train_encoder(tiny_config(), tmp_path)
    assert "resumed from the checkpoint at step 3" in capsys.readouterr().out
    assert_trees_equal(resumed, full)  # params, optimiser state, EMA and step
    assert saved_steps(tmp_path) == [4, 6]


# A failed Orbax read leaves asyncio clean-up errors behind ("Event loop is closed"); they are Orbax-internal.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_latest_checkpoint_falls_back_to_previous(reference, tmp_path, capsys):
    ref_dir, full = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    assert saved_steps(workdir) == [4, 6]
    for path in glob.glob(str(workdir / "encoder" / "checkpoints" / "6" / "state" / "**" / "d" / "*"), recursive=True):
        with open(path, "r+b") as f:
            f.truncate(7)
    resumed = train_encoder(tiny_config(), workdir)
    out = capsys.readouterr().out
    assert "step 6" in out and "unreadable" in out
    assert "resumed from the checkpoint at step 4" in out
    assert os.listdir(workdir / "encoder" / "corrupt")
    assert saved_steps(workdir) == [4, 6]
    assert_trees_equal(resumed, full)


def test_incompatible_config_is_refused_and_run_length_may_change(reference, tmp_path, capsys):
    ref_dir, full = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    with pytest.raises(ValueError, match="config field 'encoder.optim.lr' differs"):
        train_encoder(tiny_config(**{"encoder.optim.lr": 1e-2}), workdir)
    with pytest.raises(ValueError, match="config field 'data.node_counts' differs"):
        train_encoder(tiny_config(**{"data.node_counts": (4,), "data.max_nodes": 5}), workdir)
    assert saved_steps(workdir) == [4, 6]
    longer = train_encoder(tiny_config(**{"encoder.steps": STEPS + 2, "checkpoint_every": 4}), workdir)
    assert "resumed from the checkpoint at step 6" in capsys.readouterr().out
    assert int(to_host(longer.step)) == STEPS + 2
    assert saved_steps(workdir) == [6, 8]
    step, loaded = loop.load_state(tiny_config(), str(workdir), "encoder")
    assert step == STEPS + 2
    assert_trees_equal(loaded, longer)


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(**{"checkpoint_every": 1, "encoder.optim.lr": 1e30})
    with pytest.raises(loop.NonFiniteLossError, match="non-finite .* at step 3.*Last good checkpoint: step 2"):
        train_encoder(config, tmp_path)
    assert saved_steps(tmp_path) == [1, 2]
    step, state = loop.load_state(config, str(tmp_path), "encoder")
    assert step == 2
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(to_host(state.params)))


def test_decoder_stage_needs_the_encoder_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="needs a stage-1 encoder checkpoint"):
        loop.run(tiny_config(), str(tmp_path), ("decoder",))
    with StageCheckpointer(str(tmp_path), "decoder", 2) as ckpt:
        assert ckpt.steps() == []


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


@pytest.mark.parametrize("record", [{"cpu_s": float("nan"), "wall_s": 1.0}, {"cpu_s": -1.0, "wall_s": 1.0},
                                    {"wall_s": 1.0}, {"cpu_s": "a", "wall_s": 1.0}])  # fmt: skip
def test_a_seconds_record_that_is_not_two_finite_non_negative_numbers_reads_as_unknown(tmp_path, capsys, record):
    with StageCheckpointer(str(tmp_path), "encoder", keep=3, async_save=False) as ck:
        ck.save(1, {"a": np.zeros(2)}, {"seed": 0}, spent={"cpu_s": 2.5, "wall_s": 3.0})
        ck.save(2, {"a": np.zeros(2)}, {"seed": 0}, spent=record)
        ck.save(3, {"a": np.zeros(2)}, {"seed": 0})
        assert ck.read_spent(1) == {"cpu_s": 2.5, "wall_s": 3.0}
        assert ck.read_spent(2) is None and ck.read_spent(3) is None
    assert "step 2: its seconds record is unreadable" in capsys.readouterr().out
