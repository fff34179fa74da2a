"""Metric records of a run: one JSON line per record in ``{workdir}/metrics.jsonl`` and, when the ``tensorboard``
package can be imported, TensorBoard scalar summaries in ``{workdir}/tensorboard/{stage}``. Only process 0 writes."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np


def _plain(value: Any) -> Any:
    """A JSON-friendly Python scalar (non-finite floats become strings ``"nan"``/``"inf"``)."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = np.asarray(value).item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _tensorboard_writer(logdir: str):
    """A minimal scalar writer on the ``tensorboard`` package (no TensorFlow needed), or None if not importable."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except Exception:  # noqa: BLE001 - optional dependency, any import problem means "absent"
        return None

    class _Writer:
        def __init__(self):
            self.writer = EventFileWriter(logdir)

        def scalars(self, step: int, values: Mapping[str, float]) -> None:
            summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
            self.writer.add_event(Event(wall_time=time.time(), step=int(step), summary=summary))

        def flush(self):
            self.writer.flush()

        def close(self):
            self.writer.close()

    return _Writer()


class MetricWriter:
    """Appends metric records of one stage to ``metrics.jsonl`` (and TensorBoard when available)."""

    def __init__(self, workdir: str, stage: str, *, enabled: bool | None = None):
        """Args:
        workdir: the run directory.
        stage: the stage name stored in every record.
        enabled: write at all (default: only on process 0).
        """
        self.stage = stage
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb = _tensorboard_writer(os.path.join(workdir, "tensorboard", stage)) if self.enabled else None

    def truncate_after(self, step: int) -> None:
        """Drop this stage's records with a step > ``step`` (they belong to a run that is being resumed)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            lines = f.readlines()
        kept = []
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a half-written last line of an interrupted run
            if not (rec.get("stage") == self.stage and rec.get("step", -1) > step):
                kept.append(line if line.endswith("\n") else line + "\n")
        with open(self.path, "w") as f:
            f.writelines(kept)

    def write(self, step: int, values: Mapping[str, Any]) -> None:
        """Append ``{"step", "stage", "time", **values}``."""
        if not self.enabled:
            return
        record = {"step": int(step), "stage": self.stage, "time": round(time.time(), 3)}
        record.update({k: _plain(v) for k, v in values.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            numeric = {k: v for k, v in record.items() if k not in ("step", "stage", "time")}
            self.tb.scalars(step, {k: v for k, v in numeric.items() if isinstance(v, (int, float))})

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def read_metrics(workdir: str) -> list[dict]:
    """All records of ``{workdir}/metrics.jsonl`` (skipping an unreadable last line)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out
