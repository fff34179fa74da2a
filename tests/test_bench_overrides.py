"""The training benchmark's ``--set`` overrides: how a variant of a config is measured (docs/training_study.md)."""

import pytest

from cfip_jax.bench.train import apply_overrides, parse_override
from configs import cpu


def test_values_parse_as_literals_else_strings():
    assert parse_override("encoder.model.num_heads=3") == ("encoder.model.num_heads", 3)
    assert parse_override("decoder.optim.lr=5e-4") == ("decoder.optim.lr", 5e-4)
    assert parse_override("decoder.model.dtype=bfloat16") == ("decoder.model.dtype", "bfloat16")
    for bad in ("num_heads", "=3"):
        with pytest.raises(ValueError, match="expected KEY=VALUE"):
            parse_override(bad)


def test_overrides_reach_nested_fields_and_leave_the_rest():
    config = apply_overrides(cpu.get_config(), [("encoder.model.num_heads", 2), ("encoder.model.key_dim", 48),
                                                ("data.batch_size", 8)])  # fmt: skip
    base = cpu.get_config()
    assert (config.encoder.model.num_heads, config.encoder.model.key_dim, config.data.batch_size) == (2, 48, 8)
    assert config.decoder.model.num_heads == base.decoder.model.num_heads  # only what was named changes
    assert config.encoder.model.d_model == base.encoder.model.d_model


@pytest.mark.parametrize(("key", "value", "message"), [("data.nope", 1, "has no 'nope'"),
                                                       ("nothing.batch_size", 1, "has no 'nothing'"),
                                                       ("data.batch_size", "eight", "batch_size")])  # fmt: skip
def test_a_key_the_config_lacks_or_a_wrong_type_is_refused(key, value, message):
    with pytest.raises(SystemExit, match=message):
        apply_overrides(cpu.get_config(), [(key, value)])


def test_the_cpu_config_steps_mode_is_the_same_run_without_a_time_budget():
    budget, steps = cpu.get_config().to_dict(), cpu.get_config("steps").to_dict()
    assert budget.pop("max_seconds") == 7200.0 and steps.pop("max_seconds") is None
    assert budget == steps
    with pytest.raises(ValueError, match="mode must be one of"):
        cpu.get_config("step")
