"""The lineage of a model: every training run that made its weights, oldest first.

A run's record (``{workdir}/lineage.json``: ``{"runs": [...]}``, the source's runs then this one) holds:

- ``seed``, ``config`` (the run config as a dict), ``init_from`` (the source's path, or None for a random start) and
  ``start_sha256`` (:func:`cfip_jax.train.init_from.params_sha256` of the start weights, None for a random start);
- ``stages``: per stage trained, ``steps``, ``datasets`` (steps × datasets per step), ``cpu_s`` (the process's CPU
  seconds, all threads) and ``wall_s``, summed over the sessions that resumed it (each up to the checkpoint the
  next one resumed from: the stage's checkpoints carry the count, so a session stopped before the stage's end is
  counted too), and ``val`` (the last validation of its EMA parameters: the fixed-set means when ``eval.fixed``),
  ``val_set`` naming the set;
- ``val_before``: the fixed-set scores of the start weights (the source's last record's ``val``; None for a random
  start);
- ``stable_start`` (``init_stable`` runs only): per stage, the source's step at its stable checkpoint and the sha256
  of the EMA weights started from (``val_before`` is then the source's final scores, not the stable state's).

:func:`of_info` reads a model's lineage from its export info (an export written before lineages existed gives one
record rebuilt from its provenance fields); :func:`totals` sums steps, datasets and seconds over the runs.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

FILE = "lineage.json"


def _legacy_record(info: dict) -> dict:
    """One record from an export's provenance fields (before lineages were recorded)."""
    run_config = info.get("run_config") or {}
    steps = {"encoder": info.get("encoder_steps"), "decoder": info.get("decoder_steps", info.get("decoder_step"))}
    datasets = info.get("datasets_seen") or {}
    wall = info.get("wall_time_s") or {}
    final = info.get("final_validation") or {}
    stages = {}
    for name in ("encoder", "decoder"):
        if steps[name] is None:
            continue
        val = {}
        if name == "encoder" and "encoder_val_rmse" in final:
            val = {"val_rmse": final["encoder_val_rmse"]}
        elif name == "decoder":
            val = {k.replace("decoder_", ""): v for k, v in final.items() if k.startswith("decoder_val_rmse")}
        stages[name] = dict(steps=steps[name], datasets=datasets.get(name), cpu_s=None, wall_s=wall.get(name),
                            val=val or None, val_set=final.get("set"))  # fmt: skip
    return dict(seed=run_config.get("seed"), config=run_config, command=info.get("command"), init_from=None,
                start_sha256=None, val_before=None, stages=stages, finished=None)  # fmt: skip


def of_info(info: dict) -> list[dict]:
    """The lineage recorded in an export's (or a workdir's) info dict; [] when it records no training."""
    if info.get("lineage") is not None:
        return list(info["lineage"])
    if any(k in info for k in ("encoder_steps", "decoder_steps", "decoder_step")):
        return [_legacy_record(info)]
    return []


def read(workdir: str) -> list[dict]:
    """The runs of ``{workdir}/lineage.json`` ([] if there is none)."""
    path = os.path.join(workdir, FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(json.load(f)["runs"])


def _write(workdir: str, runs: list[dict]) -> None:
    path = os.path.join(workdir, FILE)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"runs": runs}, f, indent=1, default=str)
    os.replace(tmp, path)


def open_run(workdir: str, config, source, command: str | None = None) -> None:
    """Start (or, on a resume, keep) this workdir's record; the source's runs come first. ``source``: an
    :class:`cfip_jax.train.init_from.Source` or None."""
    if read(workdir):
        return
    before = None
    if source is not None and source.lineage:
        last = source.lineage[-1].get("stages", {})
        before = {name: s.get("val") for name, s in last.items()}
    record = dict(seed=int(config.seed), config=config.to_dict(), command=command,
                  init_from=None if source is None else source.path,
                  start_sha256=None if source is None else source.sha256, val_before=before, stages={},
                  finished=None)  # fmt: skip
    _write(workdir, ([] if source is None else list(source.lineage)) + [record])


def add_stage(workdir: str, name: str, *, steps: int, datasets: int, cpu_s: float, wall_s: float,
              val: dict | None, val_set: str, cumulative: bool = False) -> None:  # fmt: skip
    """Record stage ``name`` of this workdir's run: its totals. ``cumulative``: ``cpu_s`` and ``wall_s`` are the
    stage's own totals (from its checkpoints' ``spent`` record, every session included) and replace what the record
    holds; otherwise they are one session's and add to it."""
    runs = read(workdir)
    if not runs:
        raise ValueError(f"{workdir}: no {FILE} (open_run first)")
    stage = runs[-1]["stages"].get(name) or dict(cpu_s=0.0, wall_s=0.0)
    before = (0.0, 0.0) if cumulative else (float(stage.get("cpu_s") or 0.0), float(stage.get("wall_s") or 0.0))
    stage.update(steps=int(steps), datasets=int(datasets), cpu_s=round(before[0] + cpu_s, 1),
                 wall_s=round(before[1] + wall_s, 1), val=val, val_set=val_set)  # fmt: skip
    runs[-1]["stages"][name] = stage
    runs[-1]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write(workdir, runs)


def note_stable_start(workdir: str, name: str, *, step: int, sha256: str) -> None:
    """Record that this run's stage ``name`` started from its source's stable checkpoint (``init_stable``): the
    source's step there and the digest of its EMA weights (``stable_start`` of this run's record)."""
    runs = read(workdir)
    if not runs:
        raise ValueError(f"{workdir}: no {FILE} (open_run first)")
    runs[-1].setdefault("stable_start", {})[name] = dict(step=int(step), ema_sha256=sha256)
    _write(workdir, runs)


def last_validation(records: list[dict], stage: str) -> dict | None:
    """The validation values of the last ``metrics.jsonl`` record of ``stage`` that has any."""
    for r in reversed(records):
        if r.get("stage") == stage and any(k.startswith("val_") for k in r):
            return {k: v for k, v in r.items() if k.startswith("val_")}
    return None


def totals(runs: list[dict]) -> dict[str, Any]:
    """Steps, datasets, CPU and wall seconds per stage summed over ``runs`` (a None anywhere leaves that sum None
    for CPU seconds only: older runs measured wall time)."""
    out: dict[str, Any] = {}
    for name in ("encoder", "decoder"):
        acc = dict(steps=0, datasets=0, cpu_s=0.0, wall_s=0.0)
        for r in runs:
            s = r.get("stages", {}).get(name)
            if not s:
                continue
            for k in acc:
                if acc[k] is None or s.get(k) is None:
                    acc[k] = None if k == "cpu_s" else acc[k]
                else:
                    acc[k] += s[k]
        out[name] = acc
    return out
