"""scripts/lineage_curve.py: an earlier output stands in for lost workdirs; a new run continues after it."""

import json
import os
import runpy

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = runpy.run_path(os.path.join(ROOT, "scripts", "lineage_curve.py"))["main"]


def _previous(tmp_path, runs):
    path = tmp_path / "prev.json"
    path.write_text(json.dumps(dict(runs=runs)))
    return str(path)


def test_a_new_run_continues_after_the_previous_output_and_the_law_is_exact_on_power_law_points(tmp_path):
    law = lambda n: 0.9 * n**-0.125  # noqa: E731
    first = [[n, law(n)] for n in (1000, 2000, 4000, 8000)]
    second = [[n, law(n)] for n in (9000, 16000)]
    work = tmp_path / "cont"
    work.mkdir()
    with open(work / "metrics.jsonl", "w") as f:  # the new run: 4 datasets per step, ends at 16,000 + 4 · 4,000
        f.write(json.dumps(dict(stage="encoder", step=10, val_rmse=9.0)) + "\n")
        for step in (2000, 4000):
            f.write(json.dumps(dict(stage="decoder", step=step, val_rmse=law(16000 + 4 * step))) + "\n")
    out = MAIN(["--previous", _previous(tmp_path, [first, second]), "--run", str(work), "--json", str(tmp_path / "o")])
    assert [n for n, _ in out["runs"][2]] == [24000, 32000]
    np.testing.assert_allclose([out["law"]["a"], out["law"]["b"]], [0.9, 0.125], rtol=1e-9)
    assert json.loads((tmp_path / "o").read_text())["runs"][:2] == [first, second]


@pytest.mark.parametrize("runs", [[], [[]], [[[1000, 0.3], [900, 0.2]]], [[[1000]]], [["a"]]])
def test_a_previous_output_that_is_empty_malformed_or_goes_backwards_is_refused(tmp_path, runs):
    with pytest.raises(SystemExit, match="datasets increasing"):
        MAIN(["--previous", _previous(tmp_path, runs)])


def test_a_run_cut_short_counts_its_datasets_but_not_its_end_in_the_fit_and_stays_unfitted_later(tmp_path):
    law = lambda n: 0.9 * n**-0.125  # noqa: E731
    first = [[n, law(n)] for n in (1000, 2000, 4000, 8000)]
    cut, cont = tmp_path / "cut", tmp_path / "cont"
    cut.mkdir()
    cont.mkdir()
    (cut / "metrics.jsonl").write_text(json.dumps(dict(stage="decoder", step=1000, val_rmse=0.5)) + "\n")
    # the continuation's points lie on the law at their cumulative datasets (after the cut run's 4,000)
    with open(cont / "metrics.jsonl", "w") as f:
        for step in (1000, 2000):
            f.write(json.dumps(dict(stage="decoder", step=step, val_rmse=law(12000 + 4 * step))) + "\n")
    out = MAIN(["--previous", _previous(tmp_path, [first]), "--cut-short", str(cut), "--run", str(cont),
                "--json", str(tmp_path / "o")])  # fmt: skip
    assert [n for n, _ in out["runs"][1]] == [12000] and [n for n, _ in out["runs"][2]] == [16000, 20000]
    assert out["fitted"] == [True, False, True]
    np.testing.assert_allclose([out["law"]["a"], out["law"]["b"]], [0.9, 0.125], rtol=1e-9)  # 0.5 would bend it
    again = MAIN(["--previous", str(tmp_path / "o")])
    assert again["fitted"] == [True, False, True]
    np.testing.assert_allclose([again["law"]["a"], again["law"]["b"]], [0.9, 0.125], rtol=1e-9)
