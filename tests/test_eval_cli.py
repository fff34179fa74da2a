"""eval.py end to end: a tiny model trained here, reference-format data (one dataset broken), reports written."""

import importlib.util
import json
import pathlib
import shutil

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_eval_cli_end_to_end_with_a_checkpoint_trained_here(tmp_path, shared_dir, capsys):
    from cfip_jax.train import loop

    config = _load(ROOT / "configs" / "test.py", "cfip_test_config").get_config()
    workdir = tmp_path / "run"
    loop.run(config, str(workdir))

    data = tmp_path / "data"
    sample = shared_dir / "data" / "reference-sample"
    for rel in ("er_linear_gaussian_in/total_nodes_5/seed_901", "ws_rff_laplace_out/total_nodes_10/seed_901"):
        shutil.copytree(sample / rel, data / rel)
    broken = data / "er_rff_gaussian_in/total_nodes_5/seed_901"
    shutil.copytree(sample / "er_rff_gaussian_in/total_nodes_5/seed_901", broken)
    (broken / "train_x.npy").unlink()

    cli = _load(ROOT / "eval.py", "cfip_eval_cli")
    out = tmp_path / "out"
    records = cli.main(["--checkpoint", str(workdir), "--data-dir", str(data), "--methods", "cond-fip,linear",
                        "--out", str(out)])  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    assert saved == records and not (out / "results.partial.json").exists()
    errors = [r for r in saved if "error" in r]
    assert len(errors) == 1 and "train_x.npy" in errors[0]["error"] and "missing" in errors[0]["error"]
    scored = [r for r in saved if "rmse" in r]
    assert {(r["method"], r["task"]) for r in scored} == {
        (m, t) for m in ("cond-fip", "linear") for t in ("noise", "generation", "interventional", "counterfactual")
    }
    assert len(scored) == 2 * 2 * 4 and all(np.isfinite(r["rmse"]) and r["seconds"] > 0 for r in scored)
    summary = (out / "summary.md").read_text()
    assert "| cond-fip | 5 |" in summary and "| linear | 10 |" in summary and "Skipped datasets" in summary
    assert (out / "summary.csv").is_file() and (out / "rmse_noise.png").is_file()
    assert (out / "interventional_example.png").is_file()

    with pytest.raises(SystemExit):
        cli.main(["--data-dir", str(data), "--methods", "linear,magic", "--out", str(out)])
    assert "unknown method 'magic'" in capsys.readouterr().err

    merged = cli.main(["--data-dir", str(data), "--methods", "kernel-ridge", "--include", str(out / "results.json"),
                       "--out", str(tmp_path / "merged")])  # fmt: skip
    assert merged[: len(saved)] == saved and sum("error" in r for r in merged) == 1  # the skip is not repeated
    assert {r["method"] for r in merged if "rmse" in r} == {"cond-fip", "linear", "kernel-ridge"}
    assert "| kernel-ridge | 10 |" in (tmp_path / "merged" / "summary.md").read_text()
    rereported = cli.main(["--include", str(tmp_path / "merged" / "results.json"), "--out", str(tmp_path / "again")])
    assert rereported == merged  # reports only: no method runs
    assert (tmp_path / "again" / "summary.md").read_text() == (tmp_path / "merged" / "summary.md").read_text()
    resumed = cli.main(["--data-dir", str(data), "--methods", "linear", "--include", str(out / "results.json"),
                        "--out", str(tmp_path / "resumed")])  # fmt: skip
    assert [r for r in resumed if "rmse" in r] == scored  # already scored: nothing evaluated again

    refined = cli.main(["--checkpoint", str(workdir), "--data-dir", str(data), "--methods", "cond-fip-refined",
                        "--refine", "2", "--include", str(out / "results.json"),
                        "--out", str(tmp_path / "refined")])  # fmt: skip
    rows = [r for r in refined if r.get("method") == "cond-fip-refined" and "rmse" in r]
    assert len(rows) == 2 * 4 and all(np.isfinite(r["rmse"]) for r in rows)
    assert "cond-fip-refined" in (tmp_path / "refined" / "summary.md").read_text()


def test_eval_cli_names_a_missing_optional_baseline(tmp_path, monkeypatch, capsys):
    from cfip_jax.eval import runner

    cli = _load(ROOT / "eval.py", "cfip_eval_cli_optional")
    monkeypatch.setitem(runner.OPTIONAL, "dowhy", (lambda: False, "the dowhy baseline needs DoWhy: pip install x"))
    with pytest.raises(SystemExit):
        cli.main(["--real", "sachs", "--methods", "linear,dowhy", "--out", str(tmp_path)])
    assert "the dowhy baseline needs DoWhy" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--refine", "-3"], "--refine must be a number of steps >= 1, 'auto' or 'closed-form'"),
        (["--refine", "soon"], "--refine must be a number of steps >= 1, 'auto' or 'closed-form'"),
        (["--refine-correction", "quadratic"], "unknown correction 'quadratic'"),
        (["--refine", "closed-form", "--refine-correction", "none"], "closed-form is the correction alone"),
        (["--refine-target", "everything"], "refine target"),
        (["--refine-lr", "0"], "refine lr"),
        (["--refine-features", "0"], "refine features"),
        (["--refine-members", "0"], "refine members"),
    ],
)
def test_eval_cli_refuses_bad_refine_flags(tmp_path, capsys, flags, message):
    cli = _load(ROOT / "eval.py", "cfip_eval_cli_refine")
    with pytest.raises(SystemExit):
        cli.main(["--real", "sachs", "--methods", "cond-fip-refined", *flags, "--out", str(tmp_path)])
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any work


def test_eval_cli_with_learned_graphs(tmp_path, shared_dir, capsys):
    from cfip_jax.data import io
    from cfip_jax.inference import structure

    data = tmp_path / "data"
    rel = "er_linear_gaussian_in/total_nodes_5/seed_901"
    shutil.copytree(shared_dir / "data" / "reference-sample" / rel, data / rel)
    cli = _load(ROOT / "eval.py", "cfip_eval_cli")
    out = tmp_path / "out"
    records = cli.main(["--data-dir", str(data), "--methods", "linear", "--graph", "pc", "--out", str(out)])
    scored = [r for r in records if "rmse" in r]
    assert {r["method"] for r in scored} == {"linear@pc"} and len(scored) == 4
    dataset = io.load_dataset(data / rel)
    learned, _ = structure.discover(dataset.train_x, "pc")
    assert {r["shd"] for r in scored} == {structure.shd(learned, dataset.adj)}
    assert all(r["edges"] == int(learned.sum()) and r["graph_used"] == "pc" for r in scored)
    assert "| pc | 5 | 1 |" in (out / "summary.md").read_text()
    with pytest.raises(SystemExit):
        cli.main(["--real", "sachs", "--methods", "linear", "--graph", "pc", "--out", str(out)])
    assert "not --real" in capsys.readouterr().err
    if importlib.util.find_spec("lingam") is None:
        with pytest.raises(SystemExit):
            cli.main(["--data-dir", str(data), "--methods", "linear", "--graph", "lingam", "--out", str(out)])
        assert "pip install lingam" in capsys.readouterr().err


def test_eval_cli_refine_flags_reach_the_config():
    from cfip_jax.eval import cli
    from cfip_jax.inference.correct import CorrectionConfig
    from cfip_jax.inference.refine import RefineConfig

    p = cli.parser()
    argv = ["--real", "sachs", "--refine", "closed-form", "--refine-features", "64", "--refine-folds", "3"]
    argv += ["--refine-batch", "17", "--refine-patience", "5", "--refine-eval-every", "7", "--refine-members", "3"]
    steps, cfg = cli.refine_settings(p, p.parse_args([*argv, "--out", "x"]))
    assert steps == "closed-form" and cfg.correction == CorrectionConfig(kind="features", features=64, folds=3)
    assert (cfg.batch, cfg.patience, cfg.eval_every, cfg.members) == (17, 5, 7, 3)
    _, default_cfg = cli.refine_settings(p, p.parse_args(["--real", "sachs", "--out", "x"]))
    assert default_cfg.correction.features == CorrectionConfig.features != 64
    assert default_cfg.correction.folds == CorrectionConfig.folds != 3
    assert (default_cfg.batch, default_cfg.patience, default_cfg.eval_every, default_cfg.members) == (
        RefineConfig.batch, RefineConfig.patience, RefineConfig.eval_every, RefineConfig.members)  # fmt: skip
    assert (RefineConfig.batch, RefineConfig.patience, RefineConfig.eval_every, RefineConfig.members) != (17, 5, 7, 3)
