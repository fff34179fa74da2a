"""Flags made from a dataclass (cfip_jax.dataclass_flags): every RefineConfig field is a flag of both command lines,
values and None parse back into the dataclass, bad values are refused."""

import argparse
import dataclasses

import pytest

from cfip_jax import cli
from cfip_jax import dataclass_flags as flags
from cfip_jax.eval import cli as eval_cli
from cfip_jax.inference.correct import CorrectionConfig
from cfip_jax.inference.refine import RefineConfig


def _fit_parser() -> argparse.ArgumentParser:
    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["fit"]


@pytest.mark.parametrize("make", [eval_cli.parser, _fit_parser])
def test_every_refine_config_field_is_a_flag_with_its_default(make):
    parser = make()
    options = {opt: action for action in parser._actions for opt in action.option_strings}
    expected = {}
    for field in dataclasses.fields(RefineConfig):
        if field.name == "correction":  # the nested CorrectionConfig: its kind under the field's name, then its fields
            for inner in dataclasses.fields(CorrectionConfig):
                expected["correction" if inner.name == "kind" else inner.name] = inner.default
        else:
            expected[field.name] = field.default
    assert {"correction", "features", "folds", "members"} <= set(expected)
    for name, default in expected.items():
        flag = f"--refine-{name.replace('_', '-')}"
        assert flag in options, flag
        assert options[flag].default == default
        assert options[flag].help  # from the class docstring
    assert "none: no correction" in options["--refine-correction"].help


def test_flags_parse_back_into_the_dataclass_and_none_is_none():
    parser = argparse.ArgumentParser()
    flags.add_flags(parser, RefineConfig, "refine")
    args = parser.parse_args(["--refine-features", "64", "--refine-batch", "none", "--refine-lr", "0.01",
                              "--refine-correction", "none", "--refine-target", "decoder"])  # fmt: skip
    cfg = flags.from_flags(args, RefineConfig, "refine")
    assert cfg == RefineConfig(batch=None, lr=0.01, correction=None, target="decoder")
    args = parser.parse_args(["--refine-correction", "linear", "--refine-features", "64", "--refine-folds", "3"])
    assert flags.from_flags(args, RefineConfig, "refine") == RefineConfig(correction=CorrectionConfig("linear", 64, 3))
    args = parser.parse_args(["--refine-features", "64"])
    assert flags.from_flags(args, RefineConfig, "refine").correction == CorrectionConfig(features=64)
    assert flags.from_flags(parser.parse_args([]), RefineConfig, "refine") == RefineConfig()


def test_bad_values_are_refused(capsys):
    parser = argparse.ArgumentParser()
    flags.add_flags(parser, RefineConfig, "refine")
    with pytest.raises(SystemExit):
        parser.parse_args(["--refine-folds", "three"])
    assert "--refine-folds takes an int, got 'three'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="refine members"):
        flags.from_flags(parser.parse_args(["--refine-members", "0"]), RefineConfig, "refine")


def test_a_field_that_cannot_be_a_flag_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Odd:
        """Attributes:
        sizes: a tuple."""

        sizes: tuple = (1, 2)

    with pytest.raises(TypeError, match="Odd.sizes"):
        flags.add_flags(argparse.ArgumentParser(), Odd, "odd")
