"""Orbax checkpoints of one training stage, with the config stored beside the state and a compatibility check.

Layout: ``{workdir}/{stage}/checkpoints/{step}/{state,config[,budget][,spent]}``. ``state`` is the
:class:`~cfip_jax.train.state.TrainState` (arrays only); ``config`` is the full run config as JSON; ``budget`` (time-
budgeted runs only, :class:`~cfip_jax.train.budget.BudgetState`) the clock and the decay of the stage; ``spent`` the
process CPU seconds and wall seconds the stage took to reach the checkpoint, every session that resumed it included
(absent when a session resumed a checkpoint written before it was recorded: the count would be partial). The latest
``keep`` checkpoints are kept.

Resume rule: the latest checkpoint that can be read is restored. An unreadable one (truncated or corrupt files) is
reported, moved to ``{workdir}/{stage}/corrupt/{step}``, and the previous one is tried.

Compatibility: a run may resume a checkpoint only if every field that shapes the model, the data stream or the
optimisation is unchanged (see :func:`relevant_fields`). Run-length and bookkeeping fields may differ: the stages'
``steps``, ``checkpoint_every``, ``keep_checkpoints``, ``log_every``, ``eval_every``, the ``eval`` block,
``data.pack`` and the time budget (``max_seconds``, ``encoder_share``, ``optim.decay_fraction``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from cfip_jax.train.stage import STAGES

# Fields that may change between a checkpoint and the run that resumes it (dotted prefixes).
MAY_DIFFER = (
    "encoder.steps",
    "decoder.steps",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "eval_every",
    "eval",
    "data.pack",  # a layout of the same datasets: the same losses and updates
    "init_moments",  # read only when a stage starts; a resume restores the checkpoint's own optimiser state
    "init_grow",  # read only when a stage starts from init_from
    "init_stable",  # read only when a stage starts from init_from
    # The time budget: once a stage's decay is fixed, its checkpointed BudgetState governs.
    "max_seconds",
    "encoder_share",
    "budget_clock",
    "encoder.optim.decay_fraction",
    "decoder.optim.decay_fraction",
)


def config_to_dict(config) -> dict:
    """A JSON-compatible nested dict of an ml_collections config (tuples become lists)."""
    if isinstance(config, Mapping) and not hasattr(config, "to_json"):
        return json.loads(json.dumps(config))
    return json.loads(config.to_json())


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _matches(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def relevant_fields(flat: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The fields that must match to resume ``stage``: top-level fields, ``data``, the stage's block and, for the
    decoder, the encoder's model; minus :data:`MAY_DIFFER`."""
    other = [s for s in STAGES if s != stage]
    keep = {}
    for name, value in flat.items():
        if _matches(name, MAY_DIFFER):
            continue
        if _matches(name, other) and not (stage == "decoder" and _matches(name, ["encoder.model"])):
            continue
        keep[name] = value
    return keep


def check_compatible(saved: Mapping, current: Mapping, stage: str, where: str = "the checkpoint") -> None:
    """Raise a ``ValueError`` naming the first field that differs between two config dicts for ``stage``.

    Args:
      saved: the config stored with a checkpoint (nested dict).
      current: the config of this run (nested dict).
      stage: ``"encoder"`` or ``"decoder"``.
      where: how to name the checkpoint in the message.
    """
    a = relevant_fields(flatten(saved), stage)
    b = relevant_fields(flatten(current), stage)
    for name in sorted(set(a) | set(b)):
        if a.get(name) is None and b.get(name) is None:
            continue  # a field added after the checkpoint was written, left unset (None) now
        if name not in a or name not in b or a[name] != b[name]:
            old = a.get(name, "<absent>")
            new = b.get(name, "<absent>")
            raise ValueError(
                f"config field {name!r} differs from {where}: saved {old!r}, now {new!r}; "
                "use a new --workdir or the saved value to resume"
            )


def check_writable(directory: str) -> None:
    """Create ``directory`` and check that files can be written there; raises a one-line ``ValueError``."""
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, f".write_test_{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"workdir {directory!r} is not writable: {e.strerror or e}") from None


STABLE = "stable"  # a budgeted stage's last state before its decay: ``{workdir}/{stage}/stable``


def has_checkpoints(workdir: str, stage: str, subdir: str = "checkpoints") -> bool:
    """Whether ``{workdir}/{stage}/{subdir}`` holds a checkpoint (creates nothing)."""
    directory = os.path.join(workdir, stage, subdir)
    if not os.path.isdir(directory):
        return False
    with StageCheckpointer(workdir, stage, keep=1000, async_save=False, subdir=subdir) as ck:
        return bool(ck.steps())


class StageCheckpointer:
    """The Orbax ``CheckpointManager`` of one stage, with fallback to the previous checkpoint on read errors."""

    def __init__(self, workdir: str, stage: str, keep: int, *, async_save: bool = True, subdir: str = "checkpoints"):
        """Open (and create) ``{workdir}/{stage}/{subdir}``.

        Args:
          workdir: the run directory.
          stage: ``"encoder"`` or ``"decoder"``.
          keep: how many of the latest checkpoints to keep.
          async_save: write checkpoints in a background thread.
          subdir: ``"checkpoints"`` (the stage's own), or :data:`STABLE` (its state when the decay began).
        """
        self.stage = stage
        self.stage_dir = os.path.abspath(os.path.join(workdir, stage))
        self.directory = os.path.join(self.stage_dir, subdir)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save, save_interval_steps=1
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    # -- reading -------------------------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """The steps of the stored checkpoints, ascending."""
        return sorted(self.manager.all_steps())

    def _quarantine(self, step: int, error: BaseException) -> None:
        msg = (
            f"checkpoint {self.stage} step {step} in {self.directory} is unreadable "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}); "
            "moving it aside and using the previous one"
        )
        if jax.process_index() == 0:
            print(f"WARNING: {msg}", flush=True)
            src = os.path.join(self.directory, str(step))
            dst = os.path.join(self.stage_dir, "corrupt", f"{step}_{int(time.time())}")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.exists(src):
                shutil.move(src, dst)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"cfip_quarantine_{self.stage}_{step}")
        self.manager.reload()

    def read_config(self, step: int) -> dict:
        """The config dict stored with checkpoint ``step``."""
        restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return dict(restored["config"])

    def latest_config(self) -> tuple[int, dict] | None:
        """``(step, config)`` of the latest checkpoint whose config is readable, or None when there is none."""
        for step in reversed(self.steps()):
            try:
                return step, self.read_config(step)
            except Exception as e:  # noqa: BLE001 - any read error means a damaged checkpoint
                self._quarantine(step, e)
        return None

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """Restore the latest readable checkpoint into ``abstract_state`` (shapes, dtypes and shardings).

        Returns:
          ``(step, state, config)``, or None when no readable checkpoint exists.
        """
        restored = self.restore_latest_with_budget(abstract_state)
        return None if restored is None else restored[:3]

    def restore_latest_with_budget(self, abstract_state: Any) -> tuple[int, Any, dict, dict] | None:
        """As :meth:`restore_latest`, with the checkpoint's budget record (``{}`` when it has none)."""
        for step in reversed(self.steps()):
            try:
                items = {"state": ocp.args.StandardRestore(abstract_state), "config": ocp.args.JsonRestore()}
                has_budget = os.path.isdir(os.path.join(self.directory, str(step), "budget"))
                if has_budget:
                    items["budget"] = ocp.args.JsonRestore()
                restored = self.manager.restore(step, args=ocp.args.Composite(**items))
                budget = dict(restored["budget"]) if has_budget else {}
                return step, restored["state"], dict(restored["config"]), budget
            except Exception as e:  # noqa: BLE001 - any read error means a damaged checkpoint
                self._quarantine(step, e)
        return None

    def read_spent(self, step: int) -> dict | None:
        """Checkpoint ``step``'s ``spent`` record (``{"cpu_s", "wall_s"}``: the stage's seconds up to it), or None
        when it has none — or one that is unreadable or not two finite non-negative numbers (with a warning): the
        seconds are then unknown, never guessed."""
        if not os.path.isdir(os.path.join(self.directory, str(step), "spent")):
            return None
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(spent=ocp.args.JsonRestore()))
            spent = {k: float(restored["spent"][k]) for k in ("cpu_s", "wall_s")}
            if not all(math.isfinite(v) and v >= 0 for v in spent.values()):
                raise ValueError(f"not finite non-negative seconds: {spent}")
        except Exception as e:  # noqa: BLE001 - any read error: the count is unknown
            if jax.process_index() == 0:
                print(f"WARNING: checkpoint {self.stage} step {step}: its seconds record is unreadable ({e}); "
                      "the stage's seconds are counted from this session only", flush=True)  # fmt: skip
            return None
        return spent

    # -- writing -------------------------------------------------------------------------------------------------
    def save(
        self, step: int, state: Any, config: Mapping, budget: Mapping | None = None, spent: Mapping | None = None
    ) -> bool:
        """Save ``state``, ``config`` (and a budget record, and the seconds spent) as checkpoint ``step`` (no-op if it
        exists). Returns whether it saved."""
        if step in self.manager.all_steps():
            return False
        items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(dict(config))}
        if budget is not None:
            items["budget"] = ocp.args.JsonSave(dict(budget))
        if spent is not None:
            items["spent"] = ocp.args.JsonSave(dict(spent))
        self.manager.save(int(step), args=ocp.args.Composite(**items))
        return True

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self) -> StageCheckpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
