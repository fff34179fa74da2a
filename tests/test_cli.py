"""``python -m cfip_jax``: fit / sample / counterfactual on the shipped Sachs data, saved SCMs, and bad input (one
line on standard error, exit status 2, nothing written)."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from cfip_jax import cli
from cfip_jax.api import InferredSCM
from cfip_jax.data import real


def _read(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], np.asarray(rows[1:], np.float64)


def _write(path, header, rows):
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    return str(path)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The Sachs CSVs written by ``dataset`` and a zero-shot fit of them (``fit``)."""
    root = tmp_path_factory.mktemp("cli")
    assert cli.main(["dataset", "sachs", "--out", str(root / "data")]) == 0
    assert cli.main(["fit", str(root / "data/sachs.csv"), "--graph", str(root / "data/sachs_edges.csv"),
                     "--out", str(root / "scm")]) == 0  # fmt: skip
    return root


def test_dataset_writes_the_shipped_sachs_data_and_its_dag(fitted):
    header, x = _read(fitted / "data/sachs.csv")
    sachs = real.load_sachs()
    assert tuple(header) == sachs.nodes
    np.testing.assert_allclose(x, sachs.x, rtol=1e-6)
    edges = list(csv.reader((fitted / "data/sachs_edges.csv").read_text().splitlines()))
    assert len(edges) - 1 == int(sachs.adj.sum()) == 17


def test_fit_saves_the_scm_and_a_summary(fitted):
    summary = json.loads((fitted / "scm/summary.json").read_text())
    sachs = real.load_sachs()
    assert summary["rows"] == 853 and summary["rows_held_out"] == 85 and summary["graph_source"] == "given"
    assert summary["refine_members"] == 1 and summary["corrected_nodes"] is None  # zero-shot: one decoder
    by_node = {r["node"]: r for r in summary["nodes"]}
    assert set(by_node) == set(sachs.nodes)
    assert sorted(by_node["pmek"]["parents"]) == ["PKA", "PKC", "praf"]
    for row in by_node.values():
        assert row["noise_scale"] > 0 and row["held_out_rmse"] > 0
    scm = InferredSCM.load(fitted / "scm")
    assert scm.nodes == sachs.nodes and scm.refined_steps == 0


def test_sample_with_do_and_shift(fitted, tmp_path):
    out = tmp_path / "s.csv"
    assert cli.main(["sample", str(fitted / "scm"), "--n", "50", "--do", "PKA=500", "--shift", "PIP3=10",
                     "--seed", "3", "--out", str(out)]) == 0  # fmt: skip
    header, x = _read(out)
    assert x.shape == (50, 11) and np.all(x[:, header.index("PKA")] == 500.0)
    scm = InferredSCM.load(fitted / "scm").replace(kind="numpy")
    import jax

    again = scm.intervene({"PKA": 500.0}, 50, jax.random.key(3), shift={"PIP3": 10.0})
    np.testing.assert_allclose(x, again, rtol=1e-6, atol=1e-4)


def test_counterfactual_matches_the_api_on_the_saved_scm(fitted, tmp_path):
    sachs = real.load_sachs()
    rows = _write(tmp_path / "rows.csv", sachs.nodes[::-1], sachs.x[:4, ::-1])  # columns in another order
    out = tmp_path / "cf.csv"
    assert cli.main(["counterfactual", str(fitted / "scm"), rows, "--do", "PKA=500", "--out", str(out)]) == 0
    header, cf = _read(out)
    assert tuple(header) == sachs.nodes
    expected = InferredSCM.load(fitted / "scm").counterfactual(sachs.x[:4], {"PKA": 500.0})
    np.testing.assert_allclose(cf, expected, rtol=1e-6, atol=1e-4)
    assert np.all(cf[:, header.index("PKA")] == 500.0)
    untouched = [header.index(v) for v in ("plcg", "PIP2", "PIP3", "PKC")]  # not PKA's descendants: factual, exactly
    np.testing.assert_array_equal(cf[:, untouched].astype(np.float32), sachs.x[:4, untouched])


def test_save_and_load_give_the_same_scm(fitted, tmp_path):
    scm = InferredSCM.load(fitted / "scm")
    scm.save(tmp_path / "again")
    again = InferredSCM.load(tmp_path / "again")
    x = real.load_sachs().x[:8]
    np.testing.assert_array_equal(np.asarray(again.noise(x)), np.asarray(scm.noise(x)))
    np.testing.assert_array_equal(np.asarray(again.adj), np.asarray(scm.adj))
    with pytest.raises(ValueError, match="not empty and not a saved SCM"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other/notes.txt").write_text("x")
        scm.save(tmp_path / "other")


def _bad(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_bad_data_files(capsys, tmp_path, fitted):
    edges = str(fitted / "data/sachs_edges.csv")
    cases = {
        "non-numeric value 'high'": [["a", "b"], ["1", "2"], ["high", "3"], ["2", "5"]],
        "missing value in column 'b'": [["a", "b"], ["1", "2"], ["2", ""], ["2", "5"]],
        "duplicate column name 'a'": [["a", "a"], ["1", "2"], ["2", "3"], ["2", "5"]],
        "column 2 has no name": [["a", ""], ["1", "2"], ["2", "3"], ["2", "5"]],
    }
    for message, rows in cases.items():
        path = _write(tmp_path / "bad.csv", rows[0], rows[1:])
        assert message in _bad(capsys, ["fit", path, "--graph", "none", "--out", str(tmp_path / "never")])
    good = _write(tmp_path / "good.csv", ["a", "b", "c"], np.random.default_rng(0).normal(size=(20, 3)))
    unknown = _write(tmp_path / "e1.csv", ["parent", "child"], [["a", "b"], ["b", "zz"]])
    assert "unknown node 'zz'" in _bad(capsys, ["fit", good, "--graph", unknown, "--out", str(tmp_path / "never")])
    cyclic = _write(tmp_path / "e2.csv", ["parent", "child"], [["a", "b"], ["b", "c"], ["c", "a"]])
    assert "cycle: a -> b -> c -> a" in _bad(capsys, ["fit", good, "--graph", cyclic, "--out", str(tmp_path / "never")])
    sachs = str(fitted / "data/sachs.csv")
    assert "not a saved SCM" in _bad(capsys, ["fit", sachs, "--graph", edges, "--out", str(fitted / "data")])
    assert not (tmp_path / "never").exists()


def test_bad_interventions_and_saved_models(capsys, tmp_path, fitted):
    scm = str(fitted / "scm")
    assert "unknown node 'FOO'" in _bad(capsys, ["sample", scm, "--do", "FOO=1"])
    assert "'high' is not a number" in _bad(capsys, ["sample", scm, "--do", "PKA=high"])
    assert "expected NODE=NUMBER" in _bad(capsys, ["sample", scm, "--shift", "PKA"])
    assert "both clamped and shifted" in _bad(capsys, ["sample", scm, "--do", "PKA=1", "--shift", "PKA=2"])
    rows = _write(tmp_path / "r.csv", ["a"], [[1.0]])
    assert "differ from the SCM's nodes" in _bad(capsys, ["counterfactual", scm, rows, "--do", "PKA=1"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "scm.json").write_text((fitted / "scm/scm.json").read_text())
    assert "incomplete saved SCM (missing arrays.npz)" in _bad(capsys, ["sample", str(broken)])
    (broken / "arrays.npz").write_bytes((fitted / "scm/arrays.npz").read_bytes())
    meta = json.loads((broken / "scm.json").read_text())
    meta["format_version"] = 99
    (broken / "scm.json").write_text(json.dumps(meta))
    assert "format version 99" in _bad(capsys, ["sample", str(broken)])


def test_module_entry_point_and_argument_errors():
    ok = subprocess.run([sys.executable, "-m", "cfip_jax", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "fit" in ok.stdout and "counterfactual" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "cfip_jax", "fit", "x.csv"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--graph" in bad.stderr and "--out" in bad.stderr


def test_fit_without_a_graph_learns_one(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=600), rng.normal(size=600)
    data = _write(tmp_path / "c.csv", ["x", "y", "z"], np.stack([x, y, x + y + 0.5 * rng.normal(size=600)], 1))
    assert cli.main(["fit", data, "--graph", "none", "--structure", "pc", "--out", str(tmp_path / "scm")]) == 0
    summary = json.loads((tmp_path / "scm/summary.json").read_text())
    assert summary["graph_source"] == "pc" and summary["edges"] == 2
    assert {r["node"]: r["parents"] for r in summary["nodes"]}["z"] == ["x", "y"]
