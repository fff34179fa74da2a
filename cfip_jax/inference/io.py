"""The on-disk form of a fitted SCM (:meth:`cfip_jax.api.InferredSCM.save` / ``load``): a directory with

- ``scm.json``: ``{"format": "cfip_jax.InferredSCM", "format_version": 1, "cfip_jax": version, ...}`` and the SCM's
  metadata (node names, noise model, how it was made, the decoder's architecture);
- ``arrays.npz``: every array under a ``/``-joined name (read back with ``allow_pickle=False``), its manifest (each
  array's shape, dtype and SHA-256) under ``"arrays"`` in ``scm.json`` (:mod:`cfip_jax.arrays_io`).

:func:`write` builds the directory beside its destination and moves it into place, so a failure leaves nothing
half-written; it replaces an earlier saved SCM but refuses any other non-empty directory. :func:`read` raises one
``ValueError`` for a directory that is missing, incomplete, not a saved SCM, or of another format version, and for
arrays that are damaged, edited, missing, unlisted or not finite (:func:`cfip_jax.arrays_io.read_npz`). A saved SCM
written before manifests is read with a warning.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import numpy as np
from flax import traverse_util

import cfip_jax
from cfip_jax import arrays_io

FORMAT = "cfip_jax.InferredSCM"
FORMAT_VERSION = 1
META = "scm.json"
ARRAYS = "arrays.npz"
SUMMARY = "summary.json"
FILES = (META, ARRAYS)  # required
OPTIONAL = (SUMMARY,)  # written when given (the command line's fit summary)


def flatten(prefix: str, tree: Any) -> dict[str, np.ndarray]:
    """``{prefix/path: array}`` of a nested dict of arrays (e.g. Flax variables)."""
    flat = traverse_util.flatten_dict(jax.device_get(tree), sep="/")
    return {f"{prefix}/{k}": np.asarray(v) for k, v in flat.items()}


def unflatten(prefix: str, arrays: dict[str, np.ndarray]) -> dict:
    """The nested dict that :func:`flatten` wrote under ``prefix`` (empty names raise ``KeyError``)."""
    sub = {k[len(prefix) + 1 :]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
    if not sub:
        raise KeyError(prefix)
    return traverse_util.unflatten_dict(sub, sep="/")


def check_target(path: str | os.PathLike) -> pathlib.Path:
    """``path`` if a saved SCM may be written there: absent, empty, or an earlier saved SCM (one ``ValueError``
    otherwise). :func:`write` checks it; callers with costly work before writing can check first."""
    out = pathlib.Path(path)
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"{out} exists and is not a directory")
        extra = sorted(p.name for p in out.iterdir() if p.name not in FILES + OPTIONAL)
        if extra:
            raise ValueError(f"{out} is not empty and not a saved SCM (holds {', '.join(extra[:3])}); choose another")
    return out


def write(
    path: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray], summary: dict | None = None
) -> pathlib.Path:
    """Write ``meta`` and ``arrays`` (and ``summary`` as ``summary.json``) as a saved SCM at ``path`` (see the module
    docstring); returns the directory."""
    out = check_target(path)
    with arrays_io.atomic_directory(out) as tmp:
        listed = arrays_io.write_npz(tmp / ARRAYS, arrays)
        record = dict(format=FORMAT, format_version=FORMAT_VERSION, cfip_jax=cfip_jax.__version__, **meta,
                      arrays=listed)  # fmt: skip
        (tmp / META).write_text(json.dumps(record, indent=1))
        if summary is not None:
            (tmp / SUMMARY).write_text(json.dumps(summary, indent=1))
    return out


def read(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a saved SCM, checked for completeness and format version."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory (a saved SCM is one)")
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise ValueError(f"{path}: incomplete saved SCM (missing {', '.join(missing)})")
    try:
        meta = json.loads((path / META).read_text())
    except ValueError:
        raise ValueError(f"{path}: {META} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a saved cfip_jax SCM ({META} has no format {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: saved with format version {meta.get('format_version')!r} (cfip_jax {meta.get('cfip_jax')}); "
            f"this cfip_jax {cfip_jax.__version__} reads version {FORMAT_VERSION}"
        )
    arrays = arrays_io.read_npz(path / ARRAYS, meta.pop("arrays", None), listed_in=META)
    return meta, arrays
