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


def test_largest_differences_name_the_dataset_that_moves_the_mean():
    _, labels = validation_set.validation_batch()
    rng = np.random.default_rng(1)
    b = rng.uniform(0.1, 0.3, len(labels))
    a = b + rng.normal(0.0, 0.001, len(labels))
    a[7] += 0.4  # one dataset breaks: the mean moves by 0.004, the others do not
    a[50] -= 0.05
    out = validation_set.largest({"decoder": a}, {"decoder": b, "encoder": b})
    assert set(out) == {"decoder"}
    first, second, _ = out["decoder"]["datasets"]
    assert (first["index"], first["group"], second["index"]) == (7, labels[7], 50)
    assert first["diff"] == pytest.approx(a[7] - b[7]) and first["this"] == pytest.approx(a[7])
    rest = np.delete(a - b, 7)
    w = out["decoder"]["without_largest"]
    assert w["count"] == len(labels) - 1 and w["mean"] == pytest.approx(rest.mean())
    assert w["se"] == pytest.approx(rest.std(ddof=1) / np.sqrt(len(rest)))
    assert abs(w["mean"]) < abs(np.mean(a - b)) / 5


def test_against_a_missing_directory_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        validation_set.main([str(tmp_path), "--against", str(tmp_path / "nope")])
    assert err.value.code == 2
    msg = capsys.readouterr().err.strip().splitlines()[-1]
    assert "nope is not a directory" in msg
