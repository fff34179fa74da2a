"""Training carried between machines: a workdir's resumable state packed into one verified file.

A machine that trains may not keep its ``workdir/`` for the next session; a repository does. ::

    python -m cfip_jax.train.carry pack workdir/run runs/run.tar      # after the run stopped (SIGINT saves)
    python -m cfip_jax.train.carry unpack runs/run.tar workdir/run    # then rerun the printed command: it resumes
    python -m cfip_jax.train.carry verify runs/run.tar                # check it without unpacking

``pack`` writes what ``train.py`` needs to go on where the run stopped — ``config.json``, ``lineage.json``,
``metrics.jsonl``, each stage's latest checkpoint, its stable checkpoint (the state a budgeted stage saved when its
decay began: the start of an ``--config.init_stable`` continuation) and the export when there is one — as an
uncompressed tar whose first member, :data:`MANIFEST`, lists every other member with its size and sha256. Older
checkpoints, quarantined ones and anything else in the workdir stay behind. The tar is deterministic (sorted members,
no times or owners), so packing the same state twice gives the same bytes.

``unpack`` reads the manifest, then checks each member's name (a relative path the manifest lists, nothing else),
type (regular file), size and sha256 before writing it; a missing, extra, truncated or altered member is refused in one
line and nothing of it is kept. It refuses a workdir that already holds checkpoints. Everything it writes goes to a
temporary directory first, renamed into place once all members check out.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile

from cfip_jax.train import checkpoint as ckpt_lib
from cfip_jax.train.stage import STAGES

MANIFEST = "carry.json"
FORMAT = "cfip_jax.carry/1"
PART_BYTES = 16 * 2**20  # a larger carry is written as FILE.000, FILE.001, …: files a repository and a transfer take
_TOP = ("config.json", "lineage.json", "metrics.jsonl")


def _files_under(root: str, rel: str) -> list[str]:
    out = []
    for directory, _, names in os.walk(os.path.join(root, rel)):
        for name in names:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and not os.path.islink(path):
                out.append(os.path.relpath(path, root).replace(os.sep, "/"))
    return out


def _latest_step(directory: str) -> int | None:
    """The largest finished Orbax step under ``directory`` (unfinished saves carry a suffix and are skipped)."""
    if not os.path.isdir(directory):
        return None
    steps = [int(n) for n in os.listdir(directory) if n.isdigit() and os.path.isdir(os.path.join(directory, n))]
    return max(steps) if steps else None


def select(workdir: str) -> tuple[list[str], dict]:
    """The files of ``workdir`` a packed run needs (relative, ``/``-separated, sorted) and a summary of them:
    ``{stage: {"checkpoint": step | None, "stable": step | None}, "export": bool}``."""
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise ValueError(f"{workdir!r} is not a train.py workdir (no config.json)")
    files = [name for name in _TOP if os.path.isfile(os.path.join(workdir, name))]
    summary: dict = {}
    for stage in STAGES:
        summary[stage] = {}
        for key, subdir in (("checkpoint", "checkpoints"), ("stable", ckpt_lib.STABLE)):
            step = _latest_step(os.path.join(workdir, stage, subdir))
            summary[stage][key] = step
            if step is not None:
                files += _files_under(workdir, f"{stage}/{subdir}/{step}")
    summary["export"] = os.path.isdir(os.path.join(workdir, "export"))
    if summary["export"]:
        files += _files_under(workdir, "export")
    if not any(summary[s]["checkpoint"] is not None for s in STAGES):
        raise ValueError(f"{workdir!r} holds no checkpoint to carry")
    return sorted(files), summary


def _sha256(path: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o644, 0, 0, "", ""
    return info


def _command(workdir: str) -> str | None:
    try:
        with open(os.path.join(workdir, "lineage.json")) as f:
            return json.load(f)["runs"][-1].get("command")
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def pack(workdir: str, out: str, part_bytes: int = PART_BYTES) -> dict:
    """Pack ``workdir``'s resumable state into the tar ``out`` — or, when it is larger than ``part_bytes``, into its
    consecutive pieces ``out.000``, ``out.001``, … (:func:`unpack` and :func:`verify` take ``out`` either way).

    Every member is read back and checked against the manifest before this returns; a workdir whose files change
    meanwhile (a run still saving) is refused in one line and nothing is left at ``out``.

    Returns:
      the manifest: ``{"format", "files": {name: {"sha256", "bytes"}}, "summary", "command"}``.
    """
    if part_bytes < 1:
        raise ValueError(f"part_bytes must be positive, got {part_bytes}")
    names, summary = select(workdir)
    files = {}
    try:
        for name in names:
            sha, size = _sha256(os.path.join(workdir, name))
            files[name] = {"sha256": sha, "bytes": size}
        _write_tar(workdir, names, files, summary, out, part_bytes)
    except OSError as e:
        raise ValueError(f"{workdir!r} changed while it was packed ({e.strerror or e}); stop the run first") from None
    try:
        return verify(out)
    except ValueError as e:
        _remove(out)
        raise ValueError(f"{workdir!r} changed while it was packed; stop the run first ({e})") from None


def _parts(path: str) -> list[str]:
    """The files of the carry ``path``: ``[path]``, or its pieces ``path.000``, ``path.001``, … in order."""
    if os.path.isfile(path):
        return [path]
    pieces = []
    while os.path.isfile(f"{path}.{len(pieces):03d}"):
        pieces.append(f"{path}.{len(pieces):03d}")
    return pieces


def _remove(out: str) -> None:
    """Delete the carry ``out``: the file and every piece ``out.NNN``, a gap in their numbering included."""
    for path in [out, *glob.glob(f"{glob.escape(out)}.[0-9][0-9][0-9]")]:
        if os.path.isfile(path):
            os.remove(path)


def _split(tmp: str, out: str, part_bytes: int) -> None:
    with open(tmp, "rb") as f:
        for index, block in enumerate(iter(lambda: f.read(part_bytes), b"")):
            with open(f"{out}.{index:03d}", "wb") as piece:
                piece.write(block)


class _Concat(io.RawIOBase):
    """The files ``paths`` read as one stream, in order."""

    def __init__(self, paths: list[str]):
        self._paths, self._file = list(paths), None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self._file is None:
                if not self._paths:
                    return 0
                self._file = open(self._paths.pop(0), "rb")  # noqa: SIM115 - closed when exhausted or in close()
            count = self._file.readinto(buffer)
            if count:
                return count
            self._file.close()
            self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


def _write_tar(workdir: str, names: list[str], files: dict, summary: dict, out: str, part_bytes: int) -> None:
    manifest = {"format": FORMAT, "files": files, "summary": summary, "command": _command(workdir)}
    blob = json.dumps(manifest, indent=1, sort_keys=True).encode()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp{os.getpid()}"
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_tarinfo(MANIFEST, len(blob)), io.BytesIO(blob))
            for name in names:
                with open(os.path.join(workdir, name), "rb") as f:
                    tar.addfile(_tarinfo(name, files[name]["bytes"]), f)
        _remove(out)  # an earlier carry of the same name, whole or in pieces: kept until this one is written
        if os.path.getsize(tmp) > part_bytes:
            _split(tmp, out, part_bytes)
        else:
            os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _bad(path: str, why: str) -> ValueError:
    return ValueError(f"carry file {path!r} is damaged or not one this library wrote: {why}")


def _read_manifest(tar: tarfile.TarFile, path: str) -> dict:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile():
        raise _bad(path, f"its first member is not {MANIFEST}")
    try:
        manifest = json.loads(tar.extractfile(first).read())
    except ValueError as e:
        raise _bad(path, f"{MANIFEST} is not JSON ({e})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise _bad(path, f"{MANIFEST} is not a {FORMAT} manifest")
    for name, entry in manifest["files"].items():
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
            raise _bad(path, f"member name {name!r} is not a plain relative path")
        if not (
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(entry.get("bytes"), int)
        ):
            raise _bad(path, f"member {name!r} has no sha256 and size in {MANIFEST}")
    return manifest


def _extract_checked(tar: tarfile.TarFile, manifest: dict, path: str, dest: str | None) -> None:
    """Check every member against ``manifest`` and write it under ``dest`` (None: check only)."""
    want, seen = manifest["files"], set()
    for member in tar:  # iterates from the first member again: skip the manifest read already
        if member.offset == 0:
            continue
        name = member.name
        if name not in want or name in seen or not member.isfile():
            raise _bad(path, f"member {name!r} is not listed in its manifest (or repeated, or not a file)")
        data = tar.extractfile(member).read()
        if len(data) != want[name]["bytes"] or hashlib.sha256(data).hexdigest() != want[name]["sha256"]:
            raise _bad(path, f"member {name!r} does not match its size or sha256")
        seen.add(name)
        if dest is None:
            continue
        target = os.path.join(dest, *name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
    if seen != set(want):
        raise _bad(path, f"{len(set(want) - seen)} listed member(s) missing, e.g. {sorted(set(want) - seen)[0]!r}")


def _read_checked(path: str, dest: str | None) -> dict:
    parts = _parts(path)
    if not parts:
        raise ValueError(f"carry file {path!r} does not exist (nor its pieces {path}.000, …)")
    try:
        with _Concat(parts) as raw, tarfile.open(fileobj=io.BufferedReader(raw), mode="r|") as tar:
            manifest = _read_manifest(tar, path)
            _extract_checked(tar, manifest, path, dest)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise _bad(path, f"{type(e).__name__}: {e}") from None
    return manifest


def verify(path: str) -> dict:
    """Check every member of the carry file ``path`` against its manifest (nothing is written). Returns the manifest;
    raises a one-line ``ValueError`` naming the first problem."""
    return _read_checked(path, None)


def unpack(path: str, workdir: str) -> dict:
    """Check and unpack the carry file ``path`` into ``workdir`` (created; must not hold checkpoints already).

    Returns:
      its manifest. Raises a one-line ``ValueError`` for a damaged file or an occupied workdir.
    """
    if not _parts(path):
        raise ValueError(f"carry file {path!r} does not exist (nor its pieces {path}.000, …)")
    for stage in STAGES:
        if _latest_step(os.path.join(workdir, stage, "checkpoints")) is not None:
            raise ValueError(f"workdir {workdir!r} already holds {stage} checkpoints; unpack into a new workdir")
    parent = os.path.dirname(os.path.abspath(workdir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".carry_", dir=parent)
    try:
        manifest = _read_checked(path, staging)
        for name in manifest["files"]:  # file by file: folders a failed start left (empty stage dirs) are merged into
            target = os.path.join(workdir, *name.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(staging, *name.split("/")), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _describe(manifest: dict) -> str:
    summary = manifest["summary"]
    parts = [
        f"{stage} step {s['checkpoint']}" + (f" (stable {s['stable']})" if s["stable"] is not None else "")
        for stage in STAGES
        if (s := summary[stage])["checkpoint"] is not None
    ]
    size = sum(f["bytes"] for f in manifest["files"].values())
    return f"{len(manifest['files'])} files, {size / 2**20:.1f} MiB: " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfip_jax.train.carry", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="pack a stopped workdir into one verified tar")
    p.add_argument("workdir")
    p.add_argument("out")
    u = sub.add_parser("unpack", help="check a carry tar and unpack it into a new workdir")
    u.add_argument("file")
    u.add_argument("workdir")
    v = sub.add_parser("verify", help="check every member of a carry tar against its manifest")
    v.add_argument("file")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "pack":
            print(f"packed {args.workdir} into {args.out}: {_describe(pack(args.workdir, args.out))}")
        elif args.cmd == "verify":
            print(f"{args.file}: every member matches its manifest; {_describe(verify(args.file))}")
        else:
            manifest = unpack(args.file, args.workdir)
            print(f"unpacked {args.file} into {args.workdir}: {_describe(manifest)}")
            if manifest.get("command"):
                print(f"resume with: {manifest['command']}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
