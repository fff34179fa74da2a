"""Trained Cond-FiP models: export them compactly and load an export.

A :class:`~cfip_jax.model.TrainedModel` holds the two networks and their EMA parameters (what validation and inference
use).

- :func:`export` writes ``model.json`` (the model configs, provenance and each array's shape, dtype and SHA-256) and
  ``params.npz`` (every parameter under a ``/``-joined path; read back with ``allow_pickle=False``) — a few MB for
  the small model — whole or not at all.
- :func:`load_export` verifies an export before any compute (checksums, the parameter tree, finiteness).
- :func:`load` reads an export, or the one ``train.py`` wrote into a workdir (``{workdir}/export``). Reading raw
  training checkpoints belongs to training (:func:`cfip_jax.train.export.load_workdir`): inference needs neither
  Orbax nor the training package.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from cfip_jax import arrays_io
from cfip_jax.model import TrainedModel, check_variables
from cfip_jax.nn.arch import decoder_arch, encoder_arch
from cfip_jax.nn.decoder import CondFiPDecoder
from cfip_jax.nn.encoder import DatasetEncoder

WORKDIR_EXPORT = "export"  # where train.py writes its export inside the workdir
EXPORT_CONFIG = "model.json"
EXPORT_PARAMS = "params.npz"
PRETRAINED = "cfip_jax.assets.pretrained"


def export(model: TrainedModel, out_dir: str | os.PathLike, **extra_info: Any) -> pathlib.Path:
    """Write ``model.json`` (configs, provenance and the arrays' manifest) and ``params.npz`` into ``out_dir``,
    whole or not at all (an earlier export there is replaced only once the new one is complete); returns it."""
    flat = {}
    for name, tree in (("encoder", model.encoder_params), ("decoder", model.decoder_params)):
        for path, value in traverse_util.flatten_dict(jax.device_get(tree), sep="/").items():
            flat[f"{name}/{path}"] = np.asarray(value, np.float32)
    with arrays_io.atomic_directory(out_dir) as tmp:
        listed = arrays_io.write_npz(tmp / EXPORT_PARAMS, flat)
        meta = dict(
            encoder=model.encoder.config.to_dict(),
            decoder=model.decoder.config.to_dict(),
            info={**model.info, **extra_info},
            arrays=listed,
        )
        (tmp / EXPORT_CONFIG).write_text(json.dumps(meta, indent=1, default=str))
    return pathlib.Path(out_dir)


def load_export(path: str | os.PathLike) -> TrainedModel:
    """Load a directory written by :func:`export`, verified before any compute: its arrays against the manifest in
    ``model.json`` (:func:`cfip_jax.arrays_io.read_npz`) and against the parameter tree the architecture needs.

    Raises:
      ValueError: one line naming the file and the array (or field) at fault.
    """
    path = pathlib.Path(path)
    for name in (EXPORT_CONFIG, EXPORT_PARAMS):
        if not (path / name).is_file():
            raise ValueError(f"{path}: missing {name}")
    try:
        meta = json.loads((path / EXPORT_CONFIG).read_text())
        modules = (DatasetEncoder(config=encoder_arch("reference", **meta["encoder"])),
                   CondFiPDecoder(config=decoder_arch("reference", **meta["decoder"])))  # fmt: skip
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path / EXPORT_CONFIG}: not a model export ({str(err).splitlines()[0]})") from None
    flat = arrays_io.read_npz(path / EXPORT_PARAMS, meta.get("arrays"), listed_in=EXPORT_CONFIG)
    trees = {}
    for net, module in zip(("encoder", "decoder"), modules, strict=True):
        sub = {k[len(net) + 1 :]: v for k, v in flat.items() if k.startswith(net + "/")}
        trees[net] = traverse_util.unflatten_dict(sub, sep="/")
        check_variables(trees[net], module, f"{path / EXPORT_PARAMS}: array {net}/")
    others = sorted(k for k in flat if not k.startswith(("encoder/", "decoder/")))
    if others:
        raise ValueError(f"{path / EXPORT_PARAMS}: array {others[0]!r} belongs to neither network")
    trees = jax.tree.map(jnp.asarray, trees)
    return TrainedModel(modules[0], trees["encoder"], modules[1], trees["decoder"], meta.get("info", {}))


def load_pretrained() -> TrainedModel:
    """The model shipped inside the package (``cfip_jax/assets/pretrained``; see MODEL_CARD.md)."""
    files = importlib.resources.files(PRETRAINED)
    if not files.joinpath(EXPORT_PARAMS).is_file():
        raise ValueError("this installation ships no pretrained model")
    with importlib.resources.as_file(files) as directory:
        return load_export(directory)


def load(path: str | os.PathLike) -> TrainedModel:
    """Load an export directory (``model.json`` + ``params.npz``), or the export a ``train.py`` run wrote into its
    workdir (``{workdir}/export``). A workdir without one: ``python -m cfip_jax.train.export WORKDIR`` makes it."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise ValueError(f"checkpoint {path} is not a directory")
    if (path / EXPORT_CONFIG).is_file():
        return load_export(path)
    if (path / WORKDIR_EXPORT / EXPORT_CONFIG).is_file():
        return load_export(path / WORKDIR_EXPORT)
    raise ValueError(
        f"{path} holds no model export ({EXPORT_CONFIG} + {EXPORT_PARAMS}); for a train.py workdir, write one with "
        f"python -m cfip_jax.train.export {path}"
    )
