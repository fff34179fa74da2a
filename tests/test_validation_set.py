"""The fixed validation set's paired comparison (``--against``): its arithmetic and its bad input."""

import numpy as np
import pytest

from cfip_jax.train import validation_set


def test_paired_differences_are_per_dataset():
    _, labels = validation_set.validation_batch()
    rng = np.random.default_rng(0)
    a = rng.uniform(0.1, 0.3, len(labels))
    shift = np.where(np.char.startswith(np.asarray(labels), "linear/"), 0.01, 0.02)
    b = a + shift  # the same datasets, every error moved by its family's constant
    out = validation_set.paired({"encoder": a, "decoder": a}, {"decoder": b})
    assert set(out) == {"decoder"}  # only the stages both models hold
    d = out["decoder"]
    assert d["linear"]["mean"] == pytest.approx(-0.01) and d["rff"]["mean"] == pytest.approx(-0.02)
    # a constant difference within a group has no paired spread, while each model's own spread is large
    assert d["linear"]["se"] == pytest.approx(0.0, abs=1e-12) and d["rff/20"]["se"] == pytest.approx(0.0, abs=1e-12)
    assert validation_set.summarize(a)["linear"]["se"] > 0.005
    c = rng.uniform(0.1, 0.3, len(labels))
    diff = validation_set.paired({"decoder": a}, {"decoder": c})["decoder"]["all"]
    assert diff["mean"] == pytest.approx(np.mean(a - c))
    assert diff["se"] == pytest.approx(np.std(a - c, ddof=1) / np.sqrt(len(a)))
    assert diff["count"] == len(labels) == 96


def test_against_a_missing_directory_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        validation_set.main([str(tmp_path), "--against", str(tmp_path / "nope")])
    assert err.value.code == 2
    msg = capsys.readouterr().err.strip().splitlines()[-1]
    assert "nope is not a directory" in msg
