"""Arrays on disk that are verified when they are read back.

The library writes its arrays (a saved SCM's ``arrays.npz``, a model export's ``params.npz``) as a NumPy ``.npz``
archive — read with ``allow_pickle=False``, so no object arrays and no code — and records a **manifest** in the JSON
file beside it: per array its shape, dtype and SHA-256 (:func:`manifest`). :func:`read_npz` refuses, with one
``ValueError`` line naming the file and the array:

- an archive that cannot be opened or read (truncated, a flipped byte caught by the archive's CRC);
- an array listed in the manifest and missing from the archive, or present and not listed;
- a shape, dtype or SHA-256 that differs from the manifest (a damaged or edited file);
- a floating-point array holding NaN or infinity (checked with or without a manifest).

A file written before manifests existed (``manifest=None``) is still read, with one warning per file that its
checksums cannot be verified.

:func:`atomic_directory` writes a directory whole or not at all: into a temporary directory beside it, renamed into
place when complete (an earlier directory there is moved aside first and removed after), so a writer killed midway
leaves the earlier directory as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import shutil
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping

import numpy as np

_WARNED: set[str] = set()


def sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's C-order bytes."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def manifest(arrays: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """``{name: {"shape", "dtype", "sha256"}}`` of the arrays, as written beside them."""
    out = {}
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        out[name] = dict(shape=list(a.shape), dtype=a.dtype.str, sha256=sha256(a))
    return out


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """Write ``arrays`` as a compressed ``.npz`` at ``path``; returns their :func:`manifest`."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez_compressed(path, **arrays)
    return manifest(arrays)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _load(path: str) -> dict[str, np.ndarray]:
    name = os.path.basename(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"{path}: {name} cannot be read, the file is damaged ({_one_line(err)})") from None


def check_finite(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Refuse a floating-point array of ``arrays`` (read from ``path``) that holds NaN or infinity."""
    for name, a in arrays.items():
        if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
            raise ValueError(f"{path}: array {name!r} holds non-finite values (NaN or infinity)")


def read_npz(path: str | os.PathLike, expected: Mapping[str, Mapping] | None, *, listed_in: str) -> dict:
    """The arrays of the ``.npz`` at ``path``, verified against ``expected`` (its :func:`manifest`, from the JSON
    file named ``listed_in``; None for a file written before manifests: a warning, no checksums).

    Raises:
      ValueError: one line naming the file and the array (see the module docstring).
    """
    path = os.fspath(path)
    arrays = _load(path)
    if expected is None:
        if path not in _WARNED:
            _WARNED.add(path)
            warnings.warn(f"{path}: written before checksums were recorded in {listed_in}; its arrays cannot be "
                          "verified (save or export it again to add them)", stacklevel=3)  # fmt: skip
    else:
        if not isinstance(expected, Mapping):
            raise ValueError(f"{path}: the array manifest in {listed_in} is malformed")
        for name in sorted(set(expected) | set(arrays)):
            if name not in arrays:
                raise ValueError(f"{path}: array {name!r} listed in {listed_in} is missing")
            if name not in expected:
                raise ValueError(f"{path}: array {name!r} is not listed in {listed_in}")
            a, want = arrays[name], expected[name]
            try:
                shape, dtype, digest = tuple(want["shape"]), np.dtype(want["dtype"]), str(want["sha256"])
            except (KeyError, TypeError):
                raise ValueError(f"{path}: the entry of array {name!r} in {listed_in} is malformed") from None
            if a.shape != shape or a.dtype != dtype:
                raise ValueError(f"{path}: array {name!r} is {a.dtype.name}{list(a.shape)}, {listed_in} says "
                                 f"{dtype.name}{list(shape)}")  # fmt: skip
            if sha256(a) != digest:
                raise ValueError(f"{path}: array {name!r} fails its SHA-256 check (the file is damaged or was edited)")
    check_finite(path, arrays)
    return arrays


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yield a temporary directory beside ``out``; when the block completes it becomes ``out`` (replacing an earlier
    one), and when the block raises, or the process dies in it, ``out`` is left as it was."""
    out = pathlib.Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        yield tmp
        old = None
        if out.exists():
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.old", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
