"""Ship a continued run's export as the packaged model — only if it continues the packaged model and beats it.

python scripts/ship_model.py workdir/cont9/export [--dest cfip_jax/assets/pretrained] [--dry-run]

Each check is a one-line refusal (exit 2) that leaves the destination as it was:

1. the export loads verified (:func:`cfip_jax.model_io.load_export`: checksums, parameter tree, finiteness);
2. its lineage is the destination's followed by one or more new runs, the first of which started from the
   destination's weights (the record's ``start_sha256`` against the destination's parameters); or it forks the
   destination's lineage: the same runs up to one of them, that run cut short (same seed, command and start, fewer
   decoder steps: a checkpoint of it before its learning-rate decay, kept as an export to continue from), then one or
   more new runs. A fork's start weights are not packaged, so only its record vouches for them;
3. its last run's fixed-set stage-2 RMSE (EMA) is below the destination's: training ships only when the fixed set
   improves.

Then ``params.npz`` and ``model.json`` are written whole or not at all (the destination's other files kept), with the
summary fields a reader sees first re-derived from the lineage instead of typed: steps, datasets and wall seconds per
stage, the final validation, the last run's command and the run range of the hardware line. The result is read back
verified before the script reports it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import sys

from cfip_jax import arrays_io, model_io
from cfip_jax.train import init_from, lineage

DEST = "cfip_jax/assets/pretrained"


class Refused(ValueError):
    """A check failed; the message is one line."""


def _info(path: pathlib.Path) -> dict:
    return json.loads((path / model_io.EXPORT_CONFIG).read_text())["info"]


def _last_val(runs: list[dict], stage: str) -> dict | None:
    for r in reversed(runs):
        val = (r.get("stages", {}).get(stage) or {}).get("val")
        if val:
            return val
    return None


def _decoder_steps(run: dict) -> int:
    return int((run.get("stages", {}).get("decoder") or {}).get("steps") or 0)


def _cut_short(part: dict, whole: dict) -> bool:
    """Whether run record ``part`` is run ``whole`` stopped earlier (same seed, command and start; fewer steps)."""
    same = all(part.get(k) == whole.get(k) for k in ("seed", "command", "init_from", "start_sha256"))
    return same and 0 < _decoder_steps(part) < _decoder_steps(whole)


def _fork_index(old: list[dict], new: list[dict]) -> int | None:
    """``len(old)`` when ``new`` continues ``old`` with new runs; ``j < len(old)`` when ``new`` forks it at run j
    (runs 0..j−1 equal, run j cut short, new runs after it); None otherwise."""
    j = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
    if j == len(old):
        return j if len(new) > len(old) else None
    return j if j < len(new) - 1 and _cut_short(new[j], old[j]) else None


def check(export: pathlib.Path, dest: pathlib.Path) -> tuple[list[dict], list[dict]]:
    """The destination's runs and the export's, once every check above holds. Raises :class:`Refused`."""
    try:
        model_io.load_export(export)
        shipped = model_io.load_export(dest)
    except ValueError as err:
        raise Refused(str(err)) from None
    old, new = lineage.of_info(_info(dest)), lineage.of_info(_info(export))
    fork = _fork_index(old, new)
    if fork is None:
        raise Refused(f"{export}: its lineage ({len(new)} runs) does not continue {dest}'s ({len(old)} runs) "
                      "nor fork it from a run cut short")  # fmt: skip
    if fork == len(old):
        start, digest = new[len(old)].get("start_sha256"), init_from.params_sha256(shipped)
        if start != digest:
            raise Refused(f"{export}: run {len(old) + 1} started from weights {str(start)[:12]}, not {dest}'s "
                          f"({digest[:12]})")  # fmt: skip
    first_new = fork if fork == len(old) else fork + 1  # a fork's cut-short run is not new training
    before, after = _last_val(old, "decoder"), _last_val(new[first_new:], "decoder")
    if not after or "val_rmse" not in after:
        raise Refused(f"{export}: its last run records no fixed-set stage-2 validation")
    if before and after["val_rmse"] >= before["val_rmse"]:
        raise Refused(f"{export}: fixed-set stage-2 RMSE {after['val_rmse']:.5f} is not below the shipped "
                      f"{before['val_rmse']:.5f}; not shipped")  # fmt: skip
    return old, new


def summary(info: dict, previous: dict, runs: list[dict]) -> dict:
    """``info`` with the summary fields re-derived from ``runs``; ``previous`` (the destination's info) gives the
    fields that are not training's (name, config file, the validation set's name, the hardware line)."""
    tot = lineage.totals(runs)
    final = dict(set=(previous.get("final_validation") or {}).get("set", "fixed"))
    for stage in ("encoder", "decoder"):
        val = _last_val(runs, stage) or {}
        keys = ("val_rmse",) if stage == "encoder" else ("val_rmse", "val_rmse_linear", "val_rmse_rff")
        final.update({f"{stage}_{k}": val[k] for k in keys if k in val})
    hardware = re.sub(r"runs 2 to \d+", f"runs 2 to {len(runs)}", previous.get("hardware", ""))
    return {
        **info,
        "name": previous.get("name", "cfip-jax-cpu"),
        "command": runs[-1].get("command"),
        "config": previous.get("config"),
        "encoder_steps": tot["encoder"]["steps"],
        "decoder_steps": tot["decoder"]["steps"],
        "datasets_seen": {k: tot[k]["datasets"] for k in tot},
        "training_data": (runs[-1].get("config") or {}).get("data", previous.get("training_data")),
        "hardware": hardware,
        "wall_time_s": {k: round(tot[k]["wall_s"], 1) for k in tot},
        "final_validation": final,
        "totals": tot,
        "lineage": runs,
    }


def ship(export: str, dest: str = DEST, dry_run: bool = False) -> dict:
    """Check, then write ``export`` into ``dest``; returns the new info (nothing written when ``dry_run``)."""
    export_p, dest_p = pathlib.Path(export), pathlib.Path(dest)
    _, runs = check(export_p, dest_p)
    meta = json.loads((export_p / model_io.EXPORT_CONFIG).read_text())
    meta["info"] = summary(meta["info"], _info(dest_p), runs)
    if dry_run:
        return meta["info"]
    with arrays_io.atomic_directory(dest_p) as tmp:
        for f in dest_p.iterdir():
            if f.is_file() and f.name not in (model_io.EXPORT_CONFIG, model_io.EXPORT_PARAMS):
                shutil.copy2(f, tmp / f.name)
        shutil.copy2(export_p / model_io.EXPORT_PARAMS, tmp / model_io.EXPORT_PARAMS)
        (tmp / model_io.EXPORT_CONFIG).write_text(json.dumps(meta, indent=1, default=str))
        model_io.load_export(tmp)
    return meta["info"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/ship_model.py", description=__doc__.splitlines()[0])
    p.add_argument("export", help="a train.py export (WORKDIR/export) continued from the destination")
    p.add_argument("--dest", default=DEST, help=f"the packaged model (default {DEST})")
    p.add_argument("--dry-run", action="store_true", help="check and print the summary; write nothing")
    args = p.parse_args(argv)
    try:
        info = ship(args.export, args.dest, args.dry_run)
    except Refused as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    fv = info["final_validation"]
    verb = "would ship" if args.dry_run else "shipped"
    print(
        f"{verb} {args.export} -> {args.dest}: {len(info['lineage'])} runs, {info['decoder_steps']:,} decoder steps, "
        f"{info['datasets_seen']['decoder']:,} datasets; fixed set stage 2 {fv.get('decoder_val_rmse')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
