"""scripts/ship_model.py: a run ships only when it continues the packaged model and beats it on the fixed set."""

import copy
import json
import os
import pathlib
import runpy
import shutil

import pytest

from cfip_jax import model_io
from cfip_jax.train import lineage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = runpy.run_path(os.path.join(ROOT, "scripts", "ship_model.py"))
PRETRAINED = os.path.join(ROOT, "cfip_jax", "assets", "pretrained")


def _info(path):
    return json.loads((path / model_io.EXPORT_CONFIG).read_text())["info"]


def _set_lineage(path, runs):
    meta = json.loads((path / model_io.EXPORT_CONFIG).read_text())
    meta["info"]["lineage"] = runs
    (path / model_io.EXPORT_CONFIG).write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def shipped_digest():
    from cfip_jax.train import init_from

    return init_from.params_sha256(model_io.load_export(PRETRAINED))


@pytest.fixture
def dirs(tmp_path, shipped_digest):
    """A copy of the packaged model (the destination) and an "export" whose lineage adds one run started from it."""
    dest, export = tmp_path / "dest", tmp_path / "export"
    shutil.copytree(PRETRAINED, dest)
    shutil.copytree(PRETRAINED, export)
    old = lineage.of_info(_info(dest))
    run = copy.deepcopy(old[-1])
    run.update(seed=99, command="python train.py --config.seed=99", start_sha256=shipped_digest)
    before = old[-1]["stages"]["decoder"]["val"]["val_rmse"]
    val = dict(val_rmse=before - 0.001, val_rmse_linear=0.1, val_rmse_rff=0.2)
    run["stages"]["decoder"].update(steps=1000, datasets=4000, wall_s=10.0, val=val)
    _set_lineage(export, old + [run])
    return dest, export, old, run


def test_the_summary_fields_of_the_packaged_model_are_what_its_lineage_says():
    info = _info(pathlib.Path(PRETRAINED))
    derived = SCRIPT["summary"](info, info, lineage.of_info(info))
    for field in ("encoder_steps", "decoder_steps", "datasets_seen", "wall_time_s", "final_validation", "command",
                  "training_data", "hardware"):  # fmt: skip
        assert derived[field] == info[field], field


def test_a_better_continuation_ships_with_its_totals_and_reads_back(dirs):
    dest, export, old, run = dirs
    assert SCRIPT["main"]([str(export), "--dest", str(dest)]) == 0
    info = _info(dest)
    assert info["decoder_steps"] == sum(r["stages"]["decoder"]["steps"] for r in old) + 1000
    assert info["datasets_seen"]["decoder"] == sum(r["stages"]["decoder"]["datasets"] for r in old) + 4000
    assert info["final_validation"]["decoder_val_rmse"] == run["stages"]["decoder"]["val"]["val_rmse"]
    assert info["command"] == run["command"] and len(info["lineage"]) == len(old) + 1
    assert f"runs 2 to {len(old) + 1}" in info["hardware"]
    assert (dest / "__init__.py").is_file()  # the package marker survives the swap
    model_io.load_export(dest)


@pytest.mark.parametrize("case", ["worse", "not_from_dest", "same_lineage", "corrupt"])
def test_a_bad_export_is_refused_in_one_line_and_the_destination_is_untouched(dirs, case, capsys):
    dest, export, old, run = dirs
    if case == "worse":
        run["stages"]["decoder"]["val"]["val_rmse"] = old[-1]["stages"]["decoder"]["val"]["val_rmse"]
        _set_lineage(export, old + [run])
    elif case == "not_from_dest":
        _set_lineage(export, old + [dict(run, start_sha256="0" * 64)])
    elif case == "same_lineage":
        _set_lineage(export, old)
    else:
        with open(export / model_io.EXPORT_PARAMS, "r+b") as f:
            f.seek(200)
            f.write(b"\xff\xff\xff\xff")
    before = (dest / model_io.EXPORT_CONFIG).read_bytes()
    assert SCRIPT["main"]([str(export), "--dest", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    expected = {"worse": "is not below", "not_from_dest": "started from weights", "same_lineage": "does not continue",
                "corrupt": "params.npz"}[case]  # fmt: skip
    assert expected in err
    assert (dest / model_io.EXPORT_CONFIG).read_bytes() == before


def _fork(old, run, **cut):
    """A lineage forking ``old`` at its last run: that run cut to half its steps (``cut`` changes it further), then
    ``run`` started from the cut run's weights (not packaged, so any digest)."""
    part = copy.deepcopy(old[-1])
    part["stages"]["decoder"].update(steps=old[-1]["stages"]["decoder"]["steps"] // 2, val=None)
    part.update(cut)
    return old[:-1] + [part, dict(run, start_sha256="f" * 64)]


def test_a_better_fork_from_a_run_cut_short_ships_with_its_own_totals(dirs):
    dest, export, old, run = dirs
    runs = _fork(old, run)
    _set_lineage(export, runs)
    assert SCRIPT["main"]([str(export), "--dest", str(dest)]) == 0
    info = _info(dest)
    assert info["lineage"] == runs
    assert info["decoder_steps"] == sum(r["stages"]["decoder"]["steps"] for r in runs)
    assert info["decoder_steps"] < sum(r["stages"]["decoder"]["steps"] for r in old) + 1000  # the cut half is gone
    model_io.load_export(dest)


@pytest.mark.parametrize("cut", [dict(seed=12345), dict(command="python train.py --other"), "longer", "no_new_run"])
def test_a_fork_that_is_not_a_cut_of_the_packaged_run_is_refused(dirs, cut, capsys):
    dest, export, old, run = dirs
    if cut == "longer":
        runs = _fork(old, run)
        runs[-2]["stages"]["decoder"]["steps"] = old[-1]["stages"]["decoder"]["steps"] + 1
    elif cut == "no_new_run":
        runs = _fork(old, run)[:-1]
    else:
        runs = _fork(old, run, **cut)
    _set_lineage(export, runs)
    before = (dest / model_io.EXPORT_CONFIG).read_bytes()
    assert SCRIPT["main"]([str(export), "--dest", str(dest)]) == 2
    assert "does not continue" in capsys.readouterr().err
    assert (dest / model_io.EXPORT_CONFIG).read_bytes() == before


def test_a_worse_fork_is_refused(dirs, capsys):
    dest, export, old, run = dirs
    run["stages"]["decoder"]["val"]["val_rmse"] = old[-1]["stages"]["decoder"]["val"]["val_rmse"] + 0.01
    _set_lineage(export, _fork(old, run))
    assert SCRIPT["main"]([str(export), "--dest", str(dest)]) == 2
    assert "is not below" in capsys.readouterr().err
