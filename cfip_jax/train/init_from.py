"""Continued training: start a run's stages from the weights of an earlier model (``config.init_from``).

``python train.py --config configs/cpu.py --config.init_from=PATH --config.seed=1 --workdir workdir/next`` starts
each stage that has no checkpoint of its own from PATH — an export (``model.json`` + ``params.npz``, such as the
shipped model) or a ``train.py`` workdir — instead of a random initialisation:

- stage 1's parameters and EMA are the source's (EMA) encoder; stage 2's are the source's (EMA) decoder, and the
  encoder frozen inside stage 2 is this workdir's own stage-1 EMA encoder (or, when this run trains only stage 2 and
  has no stage-1 checkpoint, the source's encoder);
- the optimiser starts fresh and warms up again over ``optim.warmup_steps``: an export holds no optimiser state, and
  the source's Adam moments were measured for its own data stream and learning-rate schedule. With
  ``--config.init_moments`` and a workdir source, the Adam state (count, first and second moments) of the source's
  latest checkpoint of the stage is carried instead (:func:`carry_moments`); the schedule and its warm-up still start
  afresh. Adam forgets within about ``1 / (1 − b2)`` steps (20 at ``b2 = 0.95``), and measured over 400 continued
  steps carrying changed neither the training loss nor the fixed-set score beyond their scatter
  (docs/training_study.md): the fresh optimiser is the default;
- with ``--config.init_stable`` and a workdir source, each stage starts from the source's *stable* checkpoint
  instead (:func:`stable_state`): the state a budgeted stage saves when its learning-rate decay begins — parameters,
  EMA and the whole optimiser state (Adam's moments and the schedule's count, so there is no second warm-up). The run
  extends the source's constant-rate phase and anneals in its own decay (a warmup-stable-decay schedule continued
  across runs), instead of warming up again from the source's annealed end. Its step count, data stream and EMA
  warm-up start afresh (step 0, the run's own seed);
- the run's ``seed`` must differ from every seed of the source's lineage, so that the continuation draws new SCMs
  (the data stream is ``fold_in(key(seed), step)``; the same seed would replay the source's first datasets).

A source whose architecture differs from the config's (``encoder.model`` / ``decoder.model``) or whose parameter tree
does not match it is refused with one line naming the first difference, before anything is traced. The one exception
is growth in depth (``--config.init_grow``): the config's ``decoder.model.num_layers`` may exceed the source's, and
the extra adaLN layers are appended after the source's with their modulation (shift, scale and gate) at zero, so each
starts as the identity and the grown model computes the source's function exactly (adaLN-Zero); their attention and
MLP weights are freshly drawn, so the gates receive gradients from the first step. A grown run continues the source's
lineage. The source's lineage (:mod:`cfip_jax.train.lineage`) is carried into the run's export.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from cfip_jax import model_io
from cfip_jax.model import TrainedModel
from cfip_jax.nn.decoder import adaln_layer_index
from cfip_jax.train import checkpoint as ckpt_lib


class Source(NamedTuple):
    """A loaded ``init_from`` source.

    Attributes:
      path: its absolute path.
      model: its networks and (EMA) variables.
      sha256: :func:`params_sha256` of its variables.
      lineage: the runs that made it (oldest first; :func:`cfip_jax.train.lineage.of_info`).
    """

    path: str
    model: TrainedModel
    sha256: str
    lineage: list


def params_sha256(model: TrainedModel) -> str:
    """SHA-256 over every parameter of both networks (sorted ``/``-joined names, shapes and float32 bytes): the same
    weights give the same digest whether they come from an export or a workdir."""
    digest = hashlib.sha256()
    for net, tree in (("encoder", model.encoder_params), ("decoder", model.decoder_params)):
        flat = traverse_util.flatten_dict(jax.device_get(tree), sep="/")
        for name in sorted(flat):
            value = np.ascontiguousarray(np.asarray(flat[name], np.float32))
            digest.update(f"{net}/{name}:{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def _load(path: str) -> Source:
    from cfip_jax.train import export as export_lib
    from cfip_jax.train import lineage as lineage_lib

    model = export_lib.load_workdir(path) if is_workdir(path) else model_io.load_export(path)
    runs = lineage_lib.read(path) or lineage_lib.of_info(model.info)  # a workdir's own record first
    return Source(path, model, params_sha256(model), runs)


def load_source(path: str) -> Source:
    """The source at ``path`` (read once per process). Raises a one-line ``ValueError`` if it is not a model."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"init_from must be a path to an export or a workdir, got {path!r}")
    if not os.path.isdir(path):
        raise ValueError(f"init_from {path!r} is not a directory")
    return _load(os.path.abspath(path))


def _first_difference(source: dict, config: dict, prefix: str) -> str | None:
    for name in sorted(set(source) | set(config)):
        a, b = source.get(name, "<absent>"), config.get(name, "<absent>")
        if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
            a, b = (list(a) if isinstance(a, (list, tuple)) else a), (list(b) if isinstance(b, (list, tuple)) else b)
        if a != b:
            return f"{prefix}.{name} is {a!r} there and {b!r} in the config"
    return None


def is_workdir(path: str) -> bool:
    """Whether ``path`` is a ``train.py`` workdir (not an export)."""
    return not os.path.isfile(os.path.join(path, model_io.EXPORT_CONFIG))


def _check_workdir_for_moments(path: str) -> None:
    if not is_workdir(path):
        raise ValueError(f"init_moments needs a workdir as init_from (an export holds no optimiser state): {path}")


def check(config) -> Source | None:
    """Validate ``config.init_from`` (None: nothing to do): the source loads, its architecture is the config's and its
    lineage did not use this run's seed. Returns the source. Raises a one-line ``ValueError``."""
    path = config.get("init_from")
    if path is None:
        if config.get("init_grow"):
            raise ValueError("init_grow needs init_from: the source whose decoder is grown")
        return None
    source = load_source(path)
    grow = bool(config.get("init_grow"))
    for net in ("encoder", "decoder"):
        have = dict(getattr(source.model, net).config.to_dict())
        want = dict(config[net]["model"])
        if grow and net == "decoder":
            _check_growth(path, have.get("num_layers"), want.get("num_layers"))
            have["num_layers"] = want["num_layers"]
        diff = _first_difference(have, want, f"{net}.model")
        if diff is not None:
            raise ValueError(f"init_from {path}: its architecture differs: {diff}" + (
                " (init_grow adds decoder layers only)" if grow else ""))  # fmt: skip
    if config.get("init_moments"):
        if grow:
            raise ValueError("init_moments and init_grow exclude each other: a grown decoder has no moments to carry")
        _check_workdir_for_moments(path)
    if config.get("init_stable"):
        if grow or config.get("init_moments"):
            raise ValueError("init_stable excludes init_grow and init_moments: it carries the source's whole state")
        if not is_workdir(path):
            raise ValueError(f"init_stable needs a workdir as init_from (an export holds no stable checkpoint): {path}")
    used = sorted({int(r["seed"]) for r in source.lineage if r.get("seed") is not None})
    if int(config.seed) in used:
        raise ValueError(
            f"init_from {path}: seed {config.seed} was already used to train it (seeds {used}); pass another "
            "--config.seed so that the continuation draws new datasets"
        )
    return source


def _check_growth(path: str, have: Any, want: Any) -> None:
    if not (isinstance(have, int) and isinstance(want, int) and want > have):
        raise ValueError(
            f"init_from {path}: init_grow needs decoder.model.num_layers above the source's {have}, got {want}"
        )


def _grown_value(source: Source, name: str, key: str, fresh: dict | None) -> np.ndarray | None:
    """The start value of parameter ``key`` of a decoder layer the source lacks (``fresh``: a random initialisation's
    flat parameters), or None when ``key`` is not such a parameter."""
    if fresh is None or name != "decoder" or key not in fresh:
        return None
    parts = key.split("/")
    layer = adaln_layer_index(parts)
    if layer is None or layer < source.model.decoder.config.num_layers:
        return None
    value = np.asarray(fresh[key], np.float32)
    return np.zeros_like(value) if "modulation" in parts else value


def stage_variables(source: Source, abstract: Any, name: str, fresh: Any = None) -> Any:
    """The source's (EMA) variables of stage ``name``'s network, in the structure of ``abstract`` (the stage's
    abstract ``params``), as float32 device arrays.

    Args:
      source: the loaded source.
      abstract: the stage's abstract parameters (the target structure).
      name: ``"encoder"`` or ``"decoder"``.
      fresh: growth (``init_grow``): a random initialisation of the config's network; a decoder layer the source
        lacks (index ≥ its ``num_layers``) takes these weights with its ``modulation`` zeroed (the identity).

    Raises:
      ValueError: a parameter missing from either side, or a shape that differs.
    """
    tree = source.model.encoder_params if name == "encoder" else source.model.decoder_params
    have = traverse_util.flatten_dict(jax.device_get(tree), sep="/")
    fresh_flat = None if fresh is None else traverse_util.flatten_dict(jax.device_get(fresh), sep="/")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    out = []
    for path, leaf in leaves:
        key = "/".join(str(getattr(p, "key", getattr(p, "name", p))) for p in path)
        if key not in have:
            grown = _grown_value(source, name, key, fresh_flat)
            if grown is None:
                raise ValueError(f"init_from {source.path}: the {name} has no parameter {key!r}")
            have[key] = grown
        value = np.asarray(have.pop(key))
        if value.shape != tuple(leaf.shape):
            raise ValueError(
                f"init_from {source.path}: {name} parameter {key!r} has shape {value.shape}, the config's is "
                f"{tuple(leaf.shape)}"
            )
        out.append(jnp.asarray(value, leaf.dtype))
    if have:
        raise ValueError(f"init_from {source.path}: the {name} has a parameter the config lacks: {sorted(have)[0]!r}")
    return jax.tree_util.tree_unflatten(treedef, out)


def _adam_index(opt_state: Any) -> int:
    found = [k for k, s in enumerate(opt_state) if isinstance(s, optax.ScaleByAdamState)]
    if len(found) != 1:
        raise ValueError(f"the optimiser state holds {len(found)} Adam states; init_moments needs exactly one")
    return found[0]


def carry_moments(source: Source, name: str, abstract: Any, opt_state: Any) -> Any:
    """``opt_state`` (a fresh optimiser state of stage ``name``) with its Adam state replaced by the one in the
    latest checkpoint of stage ``name`` in the workdir ``source``; every other part (the schedule's count) kept.

    Args:
      source: a workdir source (:func:`load_source`).
      name: ``"encoder"`` or ``"decoder"``.
      abstract: the stage's abstract train state with shardings (the restore target).
      opt_state: the fresh optimiser state (an ``optax.chain`` state).

    Raises:
      ValueError: the source is an export or has no readable checkpoint of the stage.
    """
    _check_workdir_for_moments(source.path)
    with ckpt_lib.StageCheckpointer(source.path, name, keep=1000, async_save=False) as ck:
        restored = ck.restore_latest(abstract)
    if restored is None:
        raise ValueError(f"init_moments: {source.path} has no readable {name} checkpoint")
    k = _adam_index(opt_state)
    return tuple(restored[1].opt_state[k] if j == k else s for j, s in enumerate(opt_state))


def stable_state(source: Source, name: str, abstract: Any) -> tuple[int, Any]:
    """``(step, state)``: the stable checkpoint of stage ``name`` in the workdir ``source`` (its state when its decay
    began, :data:`cfip_jax.train.checkpoint.STABLE`), restored into ``abstract`` (the stage's abstract train state
    with shardings). Raises a one-line ``ValueError`` when there is none."""
    if is_workdir(source.path) and ckpt_lib.has_checkpoints(source.path, name, ckpt_lib.STABLE):
        with ckpt_lib.StageCheckpointer(source.path, name, keep=1000, async_save=False, subdir=ckpt_lib.STABLE) as ck:
            restored = ck.restore_latest(abstract)
        if restored is not None:
            return restored[0], restored[1]
    raise ValueError(
        f"init_stable: {source.path} has no stable {name} checkpoint (a budgeted stage saves one when its decay begins)"
    )
