"""Time-budgeted stages (cfip_jax.train.budget): the schedule, the clock, and a run that stops, resumes and ends."""

import math
import os

import numpy as np
import pytest
from helpers import FakeClock, assert_trees_equal, tiny_config

from cfip_jax.train import budget as budget_lib
from cfip_jax.train import loop
from cfip_jax.train.metrics_writer import read_metrics
from cfip_jax.train.optim import learning_rate_schedule


def test_budget_fixes_the_decay_from_the_measured_rate_and_ends_at_the_budget():
    clock = FakeClock(1.0)
    budget = budget_lib.Budget(100.0, 0.2, end_scale=0.1, state=budget_lib.BudgetState(), clock=clock)
    budget.first_step_done(1)
    step = 1
    while not budget.due():
        step += 1
        assert budget.lr_scale(step) == 1.0 and not budget.done(step)
    assert 79 <= budget.elapsed() <= 81  # the decay is due after 1 − 0.2 of the budget
    start, length = budget.decay_plan(step)
    budget.start_decay(start, length)
    assert start == step and length >= 1
    assert budget.end_step() == start + length
    # The cosine: 1 at the start, end_scale at the end, monotone in between.
    scales = [budget.lr_scale(s) for s in range(start, start + length + 1)]
    assert scales[0] == pytest.approx(1.0) and scales[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(scales, scales[1:], strict=False))
    mid = start + length // 2
    cosine = 0.5 * (1 + math.cos(math.pi * (mid - start) / length))
    assert budget.lr_scale(mid) == pytest.approx(0.1 + 0.9 * cosine)
    assert budget.done(start + length) and not budget.done(start + length - 1)
    # A snapshot resumes the same schedule.
    snap = budget.snapshot(start + 1)
    again = budget_lib.Budget(100.0, 0.2, 0.1, budget_lib.BudgetState.from_dict(snap), clock=FakeClock(1.0))
    assert again.end_step() == budget.end_step() and again.lr_scale(start + 3) == budget.lr_scale(start + 3)
    assert again.elapsed() >= snap["elapsed"]
    assert budget.snapshot(start + length)["finished"]


def test_budgeted_schedule_is_warmup_then_constant():
    cfg = tiny_config().encoder.optim
    schedule = learning_rate_schedule(cfg, budgeted=True)
    assert float(schedule(0)) == 0.0
    assert float(schedule(cfg.warmup_steps)) == pytest.approx(cfg.lr)
    assert float(schedule(10**6)) == pytest.approx(cfg.lr)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"max_seconds": 0.0}, "max_seconds must be a finite number > 0"),
        ({"max_seconds": -5.0}, "max_seconds must be a finite number > 0"),
        ({"max_seconds": float("nan")}, "max_seconds must be a finite number > 0"),
        ({"encoder_share": 1.0}, "encoder_share"),
        ({"decoder.optim.decay_fraction": 0.0}, "decoder.optim.decay_fraction"),
    ],
)
def test_bad_budget_is_refused_before_training(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        loop.run(tiny_config(**overrides), str(tmp_path / "w"))
    assert not (tmp_path / "w" / "encoder").exists()


def test_budget_too_small_for_one_step(tmp_path, monkeypatch):
    monkeypatch.setattr(budget_lib, "CLOCK", FakeClock(1.0))
    with pytest.raises(ValueError, match="compiling and one step took"):
        loop.run(tiny_config(max_seconds=2.0), str(tmp_path), ("encoder",))
    assert not os.listdir(tmp_path / "encoder" / "checkpoints")  # nothing saved


def test_budgeted_run_stops_resumes_and_ends_its_schedule_at_the_budget(tmp_path, monkeypatch):
    """A run interrupted during its decay and resumed ends where the uninterrupted run ends, with the same weights."""
    config = tiny_config(max_seconds=40.0, encoder_share=0.5, log_every=1, checkpoint_every=1000)
    monkeypatch.setattr(budget_lib, "CLOCK", FakeClock(0.1))
    whole = loop.run(config, str(tmp_path / "whole"), ("encoder",))["encoder"]
    records = [r for r in read_metrics(str(tmp_path / "whole")) if "loss" in r]
    end = int(whole.step)
    assert end == records[-1]["step"] and end > 20
    lrs = np.asarray([r["lr"] for r in records])
    peak = config.encoder.optim.lr
    assert lrs.max() == pytest.approx(peak) and lrs[-1] < 0.02 * peak  # decayed to end_lr by the last step
    decay_from = int(np.argmax(lrs < 0.999 * peak)) + 1  # the first step with a reduced learning rate
    assert records[-1]["elapsed_s"] <= 20.0 + 1.0  # the stage's budget (half of 40 s), up to the last step's tick

    def interrupt_at(step):
        def hook(stage, done):
            if done == step:
                raise KeyboardInterrupt

        return hook

    monkeypatch.setattr(budget_lib, "CLOCK", FakeClock(0.1))
    with pytest.raises(KeyboardInterrupt):
        loop.run(config, str(tmp_path / "split"), ("encoder",), hooks=[interrupt_at(decay_from + 3)])
    resumed = loop.run(config, str(tmp_path / "split"), ("encoder",))["encoder"]
    assert int(resumed.step) == end
    assert_trees_equal(resumed.params, whole.params)
    # Rerunning a finished budgeted stage does nothing.
    again = loop.run(config, str(tmp_path / "split"), ("encoder",))["encoder"]
    assert int(again.step) == end
