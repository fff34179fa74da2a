"""Trained Cond-FiP models: load them from a training workdir, export them compactly, load an export.

A :class:`~cfip_jax.model.TrainedModel` holds the two networks and their EMA parameters (what validation and inference
use).

- :func:`load_workdir` reads the latest stage-2 checkpoint of a ``train.py`` workdir (it holds the frozen stage-1 EMA
  encoder and the decoder's EMA parameters) and the run config stored beside it.
- :func:`export` writes ``model.json`` (the model configs and provenance) and ``params.npz`` (every parameter under a
  ``/``-joined path; read back with ``allow_pickle=False``) — a few MB for the small model.
- :func:`load` accepts either kind of directory.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from cfip_jax.model import TrainedModel, build_networks
from cfip_jax.nn.arch import decoder_arch, encoder_arch
from cfip_jax.nn.decoder import CondFiPDecoder
from cfip_jax.nn.encoder import DatasetEncoder

EXPORT_CONFIG = "model.json"
EXPORT_PARAMS = "params.npz"
PRETRAINED = "cfip_jax.assets.pretrained"


def load_workdir(workdir: str | os.PathLike) -> TrainedModel:
    """The EMA encoder and decoder of the latest readable stage-2 checkpoint of a training workdir."""
    from cfip_jax.train import checkpoint as ckpt_lib
    from cfip_jax.train.parallel import make_mesh, replicated
    from cfip_jax.train.state import abstract_state

    workdir = os.fspath(workdir)
    with ckpt_lib.StageCheckpointer(workdir, "decoder", keep=1000, async_save=False) as ck:
        latest = ck.latest_config()
        if latest is None:
            raise ValueError(f"{workdir}: no decoder checkpoint (train both stages with train.py first)")
        config = ml_collections.ConfigDict(latest[1])
        restored = ck.restore_latest(abstract_state(config, "decoder", replicated(make_mesh())))
        if restored is None:
            raise ValueError(f"{workdir}: no readable decoder checkpoint")
        step, state, saved = restored
    encoder, decoder = build_networks(config)
    info = dict(source=os.path.abspath(workdir), decoder_step=int(step), run_config=saved)
    to_np = lambda tree: jax.tree.map(np.asarray, jax.device_get(tree))  # noqa: E731
    return TrainedModel(encoder, to_np(state.frozen), decoder, to_np(state.ema_params), info)


def export(model: TrainedModel, out_dir: str | os.PathLike, **extra_info: Any) -> pathlib.Path:
    """Write ``model.json`` and ``params.npz`` into ``out_dir`` (created); returns the directory."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flat = {}
    for name, tree in (("encoder", model.encoder_params), ("decoder", model.decoder_params)):
        for path, value in traverse_util.flatten_dict(jax.device_get(tree), sep="/").items():
            flat[f"{name}/{path}"] = np.asarray(value, np.float32)
    np.savez_compressed(out / EXPORT_PARAMS, **flat)
    meta = dict(
        encoder=model.encoder.config.to_dict(),
        decoder=model.decoder.config.to_dict(),
        info={**model.info, **extra_info},
    )
    (out / EXPORT_CONFIG).write_text(json.dumps(meta, indent=1, default=str))
    return out


def load_export(path: str | os.PathLike) -> TrainedModel:
    """Load a directory written by :func:`export`."""
    path = pathlib.Path(path)
    for name in (EXPORT_CONFIG, EXPORT_PARAMS):
        if not (path / name).is_file():
            raise ValueError(f"{path}: missing {name}")
    meta = json.loads((path / EXPORT_CONFIG).read_text())
    with np.load(path / EXPORT_PARAMS, allow_pickle=False) as npz:
        flat = {key: jnp.asarray(npz[key]) for key in npz.files}
    trees = {}
    for net in ("encoder", "decoder"):
        sub = {k[len(net) + 1 :]: v for k, v in flat.items() if k.startswith(net + "/")}
        trees[net] = traverse_util.unflatten_dict(sub, sep="/")
    return TrainedModel(
        DatasetEncoder(config=encoder_arch("reference", **meta["encoder"])),
        trees["encoder"],
        CondFiPDecoder(config=decoder_arch("reference", **meta["decoder"])),
        trees["decoder"],
        meta.get("info", {}),
    )


def load_pretrained() -> TrainedModel:
    """The model shipped inside the package (``cfip_jax/assets/pretrained``; see MODEL_CARD.md)."""
    files = importlib.resources.files(PRETRAINED)
    if not files.joinpath(EXPORT_PARAMS).is_file():
        raise ValueError("this installation ships no pretrained model")
    with importlib.resources.as_file(files) as directory:
        return load_export(directory)


def load(path: str | os.PathLike) -> TrainedModel:
    """Load an export directory (``model.json`` + ``params.npz``) or a training workdir."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise ValueError(f"checkpoint {path} is not a directory")
    if (path / EXPORT_CONFIG).is_file():
        return load_export(path)
    return load_workdir(path)
