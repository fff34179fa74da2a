"""Files that cannot lie (cfip_jax.arrays_io): saved SCMs and model exports are verified when read — damaged,
edited, incomplete or non-finite arrays are refused with one line naming the file and the array — and are written
whole or not at all."""

import json
import pathlib
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, random_model

from cfip_jax import arrays_io, cli, model_io
from cfip_jax.api import CondFiP, InferredSCM


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    rng = np.random.default_rng(0)
    a = rng.normal(5.0, 1.0, 60)
    frame = pd.DataFrame({"a": a, "b": 0.5 * a + rng.normal(0, 1, 60), "c": rng.normal(0, 1, 60)})
    root = tmp_path_factory.mktemp("files")
    model.fit(frame, [("a", "b"), ("b", "c")]).save(root / "scm")
    model_io.export(model.model, root / "model")
    return root


def _copy(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _one_line(err):
    text = str(err.value)
    assert "\n" not in text
    return text


def _rewrite(path, change):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    np.savez_compressed(path, **arrays)
    return arrays


def _cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------------------------
# The saved SCM
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage, message", [(_cut, "cannot be read"), (_flip, "arrays.npz")])
def test_damaged_scm_archive_is_refused(saved, tmp_path, capsys, damage, message):
    scm = _copy(saved / "scm", tmp_path / "scm")
    damage(scm / "arrays.npz")
    with pytest.raises(ValueError, match=message) as err:
        InferredSCM.load(scm)
    assert str(scm / "arrays.npz") in _one_line(err)
    assert cli.main(["sample", str(scm), "--n", "5"]) == 2
    out = capsys.readouterr()
    assert out.err.startswith("error: ") and out.err.count("\n") == 1 and out.out == ""


def test_nan_in_the_saved_std_is_refused(saved, tmp_path, capsys):
    scm = _copy(saved / "scm", tmp_path / "scm")
    arrays = _rewrite(scm / "arrays.npz", lambda a: a.__setitem__("std", np.full_like(a["std"], np.nan)))
    with pytest.raises(ValueError, match="array 'std' fails its SHA-256 check"):
        InferredSCM.load(scm)
    # With the manifest brought up to date (an edit that keeps the checksums consistent), finiteness still holds.
    meta = json.loads((scm / "scm.json").read_text())
    meta["arrays"] = arrays_io.manifest(arrays)
    (scm / "scm.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="array 'std' holds non-finite values") as err:
        InferredSCM.load(scm)
    _one_line(err)
    assert cli.main(["sample", str(scm), "--n", "5"]) == 2
    assert "non-finite" in capsys.readouterr().err


def test_missing_unlisted_and_reshaped_arrays_are_refused(saved, tmp_path):
    scm = _copy(saved / "scm", tmp_path / "scm")
    meta = json.loads((scm / "scm.json").read_text())
    _rewrite(scm / "arrays.npz", lambda a: a.pop("mean"))
    with pytest.raises(ValueError, match="array 'mean' listed in scm.json is missing"):
        InferredSCM.load(scm)
    _rewrite(scm / "arrays.npz", lambda a: a.update(mean=np.zeros(3, np.float32), extra=np.zeros(2)))
    with pytest.raises(ValueError, match="array 'extra' is not listed in scm.json"):
        InferredSCM.load(scm)
    _rewrite(scm / "arrays.npz", lambda a: (a.pop("extra"), a.update(mean=np.zeros(4, np.float32))))
    with pytest.raises(ValueError, match=r"array 'mean' is float32\[4\], scm.json says float32\[3\]"):
        InferredSCM.load(scm)
    # A decoder weight dropped from the archive and its manifest alike: the decoder's own parameter tree refuses it.
    arrays = _rewrite(
        scm / "arrays.npz",
        lambda a: (a.update(mean=np.zeros(3, np.float32)), a.pop(sorted(k for k in a if k.startswith("decoder/"))[0])),
    )
    meta["arrays"] = arrays_io.manifest(arrays)
    (scm / "scm.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"array decoder/params/.*: missing \(the CondFiPDecoder needs it\)"):
        InferredSCM.load(scm)


def test_scm_written_before_manifests_loads_with_one_warning(saved, tmp_path):
    scm = _copy(saved / "scm", tmp_path / "scm")
    meta = json.loads((scm / "scm.json").read_text())
    del meta["arrays"]
    (scm / "scm.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="written before checksums"):
        old = InferredSCM.load(scm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        InferredSCM.load(scm)  # said once per file
    new = InferredSCM.load(saved / "scm")
    np.testing.assert_array_equal(old.noise(np.ones((2, 3))), new.noise(np.ones((2, 3))))


# ---------------------------------------------------------------------------------------------------------------
# The model export
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage, message", [(_cut, "cannot be read"), (_flip, "params.npz")])
def test_damaged_model_archive_is_refused(saved, tmp_path, capsys, damage, message):
    export = _copy(saved / "model", tmp_path / "model")
    damage(export / "params.npz")
    with pytest.raises(ValueError, match=message) as err:
        CondFiP.load(export)
    assert str(export / "params.npz") in _one_line(err)
    data = tmp_path / "d.csv"
    pd.DataFrame(np.random.default_rng(0).normal(size=(30, 2)), columns=["a", "b"]).to_csv(data, index=False)
    assert cli.main(["fit", str(data), "--graph", "none", "--model", str(export), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_nan_weight_and_dropped_weight_are_refused(saved, tmp_path):
    export = _copy(saved / "model", tmp_path / "model")
    meta = json.loads((export / "model.json").read_text())
    name = sorted(k for k in meta["arrays"] if k.startswith("decoder/"))[0]

    def poison(a):
        a[name] = a[name].copy()
        a[name].flat[0] = np.nan

    arrays = _rewrite(export / "params.npz", poison)
    with pytest.raises(ValueError, match=f"array '{name}' fails its SHA-256 check"):
        CondFiP.load(export)
    meta["arrays"] = arrays_io.manifest(arrays)
    (export / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"array '{name}' holds non-finite values"):
        CondFiP.load(export)
    arrays = _rewrite(export / "params.npz", lambda a: a.pop(name))
    meta["arrays"] = arrays_io.manifest(arrays)
    (export / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"array {name}: missing") as err:
        CondFiP.load(export)
    _one_line(err)
    del meta["arrays"]  # an export from before manifests: the parameter tree still refuses it
    (export / "model.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=f"array {name}: missing"):
        CondFiP.load(export)


def test_export_round_trip_is_bit_identical(model, saved):
    loaded = CondFiP.load(saved / "model").model
    for a, b in ((model.model.encoder_params, loaded.encoder_params), (model.model.decoder_params,
                                                                         loaded.decoder_params)):  # fmt: skip
        fa, fb = arrays_io.manifest(_flat(a)), arrays_io.manifest(_flat(b))
        assert fa == fb


def _flat(tree):
    from flax import traverse_util

    return {k: np.asarray(v, np.float32) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


# ---------------------------------------------------------------------------------------------------------------
# Writes that cannot be half-done
# ---------------------------------------------------------------------------------------------------------------
_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    real = np.savez_compressed

    def dying(path, **arrays):  # write part of the archive, then die as a killed process would
        real(path, **dict(list(arrays.items())[:1]))
        os.kill(os.getpid(), signal.SIGKILL)

    np.savez_compressed = dying
    from cfip_jax import model_io
    from cfip_jax.api import CondFiP, InferredSCM
    what, src, dst = sys.argv[1:]
    if what == "scm":
        InferredSCM.load(src).save(dst)
    else:
        model_io.export(CondFiP.load(src).model, dst)
    """
)


@pytest.mark.parametrize("what, name", [("scm", "arrays.npz"), ("model", "params.npz")])
def test_writer_killed_midway_leaves_the_old_files_intact(saved, tmp_path, what, name):
    target = _copy(saved / what, tmp_path / what)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    result = subprocess.run([sys.executable, "-c", _KILLER, what, str(saved / what), str(target)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    (InferredSCM if what == "scm" else CondFiP).load(target)


def test_closed_form_ensemble_keeps_one_decoder_and_says_so(model, saved, tmp_path):
    """A closed-form ensemble is saved with one decoder (``shared_decoder``); a file whose flag disagrees with its
    arrays, or is not a boolean, is refused with one line."""
    rng = np.random.default_rng(0)
    a = rng.normal(5.0, 1.0, 60)
    frame = pd.DataFrame({"a": a, "b": 0.5 * a + rng.normal(0, 1, 60), "c": np.sin(a) + rng.normal(0, 1, 60)})
    scm = pathlib.Path(model.fit(frame, [("a", "b"), ("a", "c")], refine="closed-form").save(tmp_path / "scm"))
    meta = json.loads((scm / "scm.json").read_text())
    assert meta["members"] == 2 and meta["shared_decoder"] is True
    with np.load(scm / "arrays.npz", allow_pickle=False) as npz:
        assert npz["cond/c"].ndim == 4 and npz["correction/scale"].shape == (2, 3)  # one conditioning, two corrections
    for value, message in ((False, "array decoder/"), ("yes", "shared_decoder must be true or false")):
        (scm / "scm.json").write_text(json.dumps(dict(meta, shared_decoder=value)))
        with pytest.raises(ValueError, match=message) as err:
            InferredSCM.load(scm)
        _one_line(err)
