"""Stages bounded by wall time, with a learning-rate schedule that ends at the budget.

With ``config.max_seconds`` set, stage 1 gets ``encoder_share`` of it and stage 2 the rest (:func:`stage_seconds`);
a stage's ``steps`` are then not used. The elapsed time counts everything the stage does (compilation, validation,
checkpoints) and carries over a resume. It is wall time, or with ``budget_clock="process"`` the CPU seconds of the
process (all threads): equal budgets for runs that share a machine with other work.

Schedule (warm-up, constant, decay): the optimiser's own schedule warms up linearly over ``optim.warmup_steps`` and
then stays at ``optim.lr`` (:func:`cfip_jax.train.optim.learning_rate_schedule` with ``budgeted=True``). When
``1 − optim.decay_fraction`` of the stage's budget has elapsed, the decay is fixed: it starts at that step and lasts as
many steps as the remaining time allows at the rate measured since the first step of this session; over it the update
is multiplied by a cosine from 1 down to ``end_lr / lr`` (the step's ``lr_scale``). The stage ends when the decay is
done — at the budget, up to changes in the machine's speed after the decay was fixed.

The decay's start and length, the elapsed time and whether the stage has finished (:class:`BudgetState`) are saved with
every checkpoint, so a resumed run continues the same schedule, step for step.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

from cfip_jax import validation as V

CLOCK: Callable[[], float] = time.perf_counter  # the budget's clock (tests replace it with a deterministic one)


@dataclasses.dataclass
class BudgetState:
    """What a checkpoint records of a budgeted stage (JSON-able).

    Attributes:
      elapsed: seconds spent in the stage up to the checkpoint.
      decay_start: the step at which the decay began (None: not yet).
      decay_steps: its length in steps.
      finished: the decay is done (the stage is complete).
    """

    elapsed: float = 0.0
    decay_start: int | None = None
    decay_steps: int | None = None
    finished: bool = False

    @classmethod
    def from_dict(cls, record: dict | None) -> BudgetState:
        """From a checkpoint's record (None or {}: a fresh stage)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (record or {}).items() if k in fields})


def check_budget_config(config) -> None:
    """Validate ``max_seconds``, ``encoder_share`` and each stage's ``optim.decay_fraction``; one-line errors."""
    if config.max_seconds is not None:
        V.check_positive(config.max_seconds, "max_seconds")
    if config.budget_clock not in ("wall", "process"):
        raise ValueError(f"budget_clock must be 'wall' or 'process', got {config.budget_clock!r}")
    share = config.encoder_share
    if not isinstance(share, (int, float)) or not 0.0 < share < 1.0:
        raise ValueError(f"encoder_share must be a fraction in (0, 1), got {share!r}")
    for name in ("encoder", "decoder"):
        fraction = config[name].optim.decay_fraction
        if not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
            raise ValueError(f"{name}.optim.decay_fraction must be in (0, 1], got {fraction!r}")


def clock_of(config) -> Callable[[], float] | None:
    """The budget's clock: wall time (:data:`CLOCK`, None) or the process's CPU time (``budget_clock="process"``)."""
    return time.process_time if config.budget_clock == "process" else None


def stage_seconds(config, name: str) -> float | None:
    """The wall-time budget of stage ``name`` (None when the run is bounded by steps)."""
    if config.max_seconds is None:
        return None
    share = float(config.encoder_share)
    return float(config.max_seconds) * (share if name == "encoder" else 1.0 - share)


class Budget:
    """The clock and the decay of one budgeted stage (host-side; no JAX).

    Args:
      seconds: the stage's budget.
      decay_fraction: the final fraction of the budget spent decaying.
      end_scale: ``end_lr / lr``, the factor reached at the end of the decay.
      state: the :class:`BudgetState` restored from the checkpoint (fresh: ``BudgetState()``).
      clock: seconds, monotonic (default :data:`CLOCK`).
    """

    def __init__(
        self,
        seconds: float,
        decay_fraction: float,
        end_scale: float,
        state: BudgetState,
        clock: Callable[[], float] | None = None,
    ):
        self.seconds = V.check_positive(seconds, "max_seconds")
        self.decay_fraction = float(decay_fraction)
        self.end_scale = float(end_scale)
        self.state = dataclasses.replace(state)
        self._clock = clock or CLOCK
        self._start = self._clock()
        self._rate_from: tuple[int, float] | None = None  # (step, time) of the first completed step of this session

    # -- the clock -----------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds spent in the stage, resumed sessions included."""
        return self.state.elapsed + (self._clock() - self._start)

    def remaining(self) -> float:
        """Seconds left of the budget (negative when overrun)."""
        return self.seconds - self.elapsed()

    def first_step_done(self, step: int) -> None:
        """Mark the end of the session's first step (compilation): steps/s is measured from here."""
        self._rate_from = (int(step), self._clock())

    def steps_per_second(self, step: int) -> float | None:
        """The session's rate since its first step, or None before two steps."""
        if self._rate_from is None or step <= self._rate_from[0]:
            return None
        return (step - self._rate_from[0]) / max(self._clock() - self._rate_from[1], 1e-9)

    # -- the schedule --------------------------------------------------------------------------------------------
    @property
    def decaying(self) -> bool:
        """The decay has been fixed."""
        return self.state.decay_start is not None

    def due(self) -> bool:
        """Time to fix the decay: ``1 − decay_fraction`` of the budget has elapsed and it is not fixed yet."""
        return not self.decaying and self.elapsed() >= (1.0 - self.decay_fraction) * self.seconds

    def decay_plan(self, step: int) -> tuple[int, int]:
        """``(start, length)`` of a decay beginning at ``step``: the remaining time at the measured rate (≥ 1)."""
        rate = self.steps_per_second(step)
        length = 1 if rate is None else max(1, int(self.remaining() * rate))
        return int(step), length

    def start_decay(self, start: int, length: int) -> None:
        """Fix the decay (process 0's plan, shared by every process)."""
        self.state.decay_start, self.state.decay_steps = int(start), int(length)

    def end_step(self) -> int | None:
        """The step at which the stage ends, once the decay is fixed."""
        if not self.decaying:
            return None
        return self.state.decay_start + self.state.decay_steps

    def lr_scale(self, step: int) -> float:
        """The factor on the update of step ``step``: 1 before the decay, then a cosine to ``end_scale``."""
        if not self.decaying:
            return 1.0
        progress = min(max(step - self.state.decay_start, 0) / self.state.decay_steps, 1.0)
        return self.end_scale + (1.0 - self.end_scale) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def done(self, step: int) -> bool:
        """The stage is complete after ``step`` steps."""
        end = self.end_step()
        return self.state.finished or (end is not None and step >= end)

    def snapshot(self, step: int) -> dict:
        """The :class:`BudgetState` to save with the checkpoint of ``step``."""
        return dataclasses.asdict(
            dataclasses.replace(self.state, elapsed=round(self.elapsed(), 3), finished=self.done(step))
        )
