"""scripts/compare_cells.py: cell means, counts against the reference column and the paper, one-line errors."""

import json
import os
import runpy

import pytest

from cfip_jax.eval import paper

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "compare_cells.py")


MAIN = runpy.run_path(SCRIPT)["main"]


def _run(argv, capsys):
    MAIN(argv)
    return capsys.readouterr().out if capsys else None


def _record(method, dataset, rmse, n_context=400):
    return dict(dataset=dataset, method=method, task="noise", n_context=n_context, rmse=rmse, graph="er",
                func="linear", noise="gaussian", prior="in", d=10)  # fmt: skip


def test_means_and_counts(tmp_path, capsys):
    records = [_record("a", "s0", 0.10), _record("a", "s1", 0.20), _record("b", "s0", 0.30), _record("b", "s1", 0.10),
               _record("a", "s0", 0.50, n_context=200), _record("a", "s1", 0.70, n_context=200)]  # fmt: skip
    path = tmp_path / "r.json"
    path.write_text(json.dumps(records))
    out = _run([f"{path}:a", f"{path}:b=bee", f"{path}:a@200=small"], capsys)
    row = next(line for line in out.splitlines() if line.startswith("| noise | 10 | LIN IN"))
    want = paper.cond_fip("noise", "LIN IN", 10)
    assert row == f"| noise | 10 | LIN IN | 0.150 | 0.200 | 0.600 | {want:.2f} |"
    assert "a: mean 0.1500; cells <= a: 1/1" in out
    assert "bee: mean 0.2000; cells <= a: 0/1" in out
    assert "small: mean 0.6000; cells <= a: 0/1" in out
    assert "n_context: a 400, bee 400, small 200" in out
    out = _run([f"{path}:a", f"{path}:b=bee", "--ref", "bee"], capsys)
    assert "a: mean 0.1500; cells <= bee: 1/1" in out


def test_matched_scores_each_cell_on_the_datasets_every_column_scores(tmp_path, capsys):
    # b ran on s0 only: unmatched, a's cell is the mean over s0 and s1; matched, over s0 alone
    records = [_record("a", "s0", 0.10), _record("a", "s1", 0.50), _record("b", "s0", 0.20)]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(records))
    out = _run([f"{path}:b", f"{path}:a"], capsys)
    assert "a: mean 0.3000; cells <= b: 0/1" in out
    out = _run([f"{path}:b", f"{path}:a", "--matched"], capsys)
    assert "a: mean 0.1000; cells <= b: 1/1" in out and "b: mean 0.2000" in out


def test_paired_differences_per_d_over_the_scores_both_columns_have(tmp_path, capsys):
    # b - a on s0 and s1 (+0.2, +0.0); s2 is a's alone and does not count
    records = [_record("a", "s0", 0.10), _record("a", "s1", 0.20), _record("a", "s2", 0.90),
               _record("b", "s0", 0.30), _record("b", "s1", 0.20)]  # fmt: skip
    path = tmp_path / "r.json"
    path.write_text(json.dumps(records))
    out = _run([f"{path}:a", f"{path}:b", "--paired"], capsys)
    assert "paired b - a, d = 10: +0.1000 ± 0.1000 over 2 scores" in out
    assert "paired a - a" not in out
    assert "paired" not in _run([f"{path}:a", f"{path}:b"], capsys)


def test_bad_columns_are_one_line_errors(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([_record("a", "s0", 0.1)]))
    with pytest.raises(SystemExit, match="is not RESULTS.json:METHOD"):
        _run([f"{path}:a@x"], None)
    with pytest.raises(SystemExit, match="is not a column label"):
        _run([f"{path}:a", "--ref", "nope"], None)
    with pytest.raises(SystemExit, match="missing.json"):
        _run([f"{tmp_path / 'missing.json'}:a"], None)
