"""Trained Cond-FiP models: load them from a training workdir, export them compactly, load an export.

A :class:`~cfip_jax.model.TrainedModel` holds the two networks and their EMA parameters (what validation and inference
use).

- :func:`load_workdir` reads the latest stage-2 checkpoint of a ``train.py`` workdir (it holds the frozen stage-1 EMA
  encoder and the decoder's EMA parameters) and the run config stored beside it.
- :func:`export` writes ``model.json`` (the model configs, provenance and each array's shape, dtype and SHA-256) and
  ``params.npz`` (every parameter under a ``/``-joined path; read back with ``allow_pickle=False``) — a few MB for
  the small model — whole or not at all.
- :func:`load_export` verifies an export before any compute (checksums, the parameter tree, finiteness).
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

from cfip_jax import arrays_io
from cfip_jax.model import TrainedModel, build_networks, check_variables
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
    """Load an export directory (``model.json`` + ``params.npz``) or a training workdir."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise ValueError(f"checkpoint {path} is not a directory")
    if (path / EXPORT_CONFIG).is_file():
        return load_export(path)
    return load_workdir(path)
