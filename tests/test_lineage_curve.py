"""scripts/lineage_curve.py: an earlier output stands in for lost workdirs; a new run continues after it."""

import json
import os
import runpy

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = runpy.run_path(os.path.join(ROOT, "scripts", "lineage_curve.py"))["main"]


def _workdir(path, batch_size=4):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(dict(data=dict(batch_size=batch_size), decoder=dict(grad_accum=1))))
    return path


def _previous(tmp_path, runs):
    path = tmp_path / "prev.json"
    path.write_text(json.dumps(dict(runs=runs)))
    return str(path)


def test_a_new_run_continues_after_the_previous_output_and_the_law_is_exact_on_power_law_points(tmp_path):
    law = lambda n: 0.9 * n**-0.125  # noqa: E731
    first = [[n, law(n)] for n in (1000, 2000, 4000, 8000)]
    second = [[n, law(n)] for n in (9000, 16000)]
    work = _workdir(tmp_path / "cont")
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
    cut, cont = _workdir(tmp_path / "cut"), _workdir(tmp_path / "cont")
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


def test_each_run_counts_the_datasets_per_step_of_its_own_config_and_a_run_without_one_is_refused(tmp_path):
    first = [[1000, 0.3], [2000, 0.25]]
    small, large = _workdir(tmp_path / "small"), _workdir(tmp_path / "large", batch_size=16)
    for work in (small, large):
        (work / "metrics.jsonl").write_text(json.dumps(dict(stage="decoder", step=100, val_rmse=0.2)) + "\n")
    out = MAIN(["--previous", _previous(tmp_path, [first]), "--run", str(small), "--run", str(large)])
    assert [run[-1][0] for run in out["runs"]] == [2000, 2400, 4000]
    forced = MAIN(["--previous", _previous(tmp_path, [first]), "--run", str(large), "--per-step", "4"])
    assert forced["runs"][1][0][0] == 2400
    (large / "config.json").unlink()
    with pytest.raises(SystemExit, match="no datasets per step"):
        MAIN(["--previous", _previous(tmp_path, [first]), "--run", str(large)])
