"""The training loop: ``run(config, workdir)`` trains stage 1 (encoder) and stage 2 (decoder) with resume.

Per stage, :func:`train_stage` starts the stage in this order (:func:`start_state`):

1. open the stage's checkpoints and refuse one written with an incompatible config;
2. the latest readable checkpoint of the stage → resume there (with its time-budget record);
3. otherwise a fresh state: stage 1 from a random initialisation, stage 2 with the stage-1 EMA encoder of the encoder
   checkpoints frozen inside it.

Then compiled data-parallel steps until the stage's end (``steps``, or the time budget of ``max_seconds``: see
:mod:`cfip_jax.train.budget`), each step followed by the loop's actions (:class:`StageRun`): **log** (a
``metrics.jsonl`` record every ``log_every`` steps), **validate** (the EMA parameters on fresh datasets every
``eval_every`` steps and at the end), **checkpoint** (every ``checkpoint_every`` steps and at the end) and **stop**
(the end of the stage, or Ctrl-C).

Faults: a non-finite loss stops the run (:class:`NonFiniteLossError`) without saving; Ctrl-C saves a checkpoint of the
last completed step and re-raises ``KeyboardInterrupt``. A rerun of the same command resumes; a finished stage is
skipped.

Each run records itself in ``{workdir}/lineage.json`` (:mod:`cfip_jax.train.lineage`) and, after stage 2, writes
``{workdir}/export`` (:mod:`cfip_jax.train.export`): what ``CondFiP.load(workdir)`` reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from cfip_jax import model as model_lib
from cfip_jax import validation as V
from cfip_jax.train import budget as budget_lib
from cfip_jax.train import checkpoint as ckpt_lib
from cfip_jax.train import export as export_lib
from cfip_jax.train import init_from as init_lib
from cfip_jax.train import lineage as lineage_lib
from cfip_jax.train import validation_set
from cfip_jax.train.ema import EMAConfig
from cfip_jax.train.metrics_writer import MetricWriter, read_metrics
from cfip_jax.train.optim import check_optim_config, learning_rate_schedule, make_optimizer
from cfip_jax.train.parallel import compiled_together, local_batch_size, make_mesh, replicated, to_host
from cfip_jax.train.restore import load_encoder_ema, load_state  # noqa: F401  (load_state: part of the loop's API)
from cfip_jax.train.stage import STAGES, build_stage, data_spec
from cfip_jax.train.state import TrainState, abstract_state, create_state, stage_parts
from cfip_jax.train.step import STREAM_INIT, StepConfig, eval_families, make_eval_step, make_train_step, stream_key

Hook = Callable[[str, int], None]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


# ---------------------------------------------------------------------------------------------------------------
# The config
# ---------------------------------------------------------------------------------------------------------------
def check_config(config, num_devices: int | None = None) -> None:
    """Validate a run config on the host before anything is traced; raises a one-line ``ValueError``."""
    num_devices = jax.device_count() if num_devices is None else num_devices
    V.check_int(config.seed, "seed", minimum=0)
    V.check_int(config.checkpoint_every, "checkpoint_every", minimum=1)
    V.check_int(config.keep_checkpoints, "keep_checkpoints", minimum=1)
    V.check_int(config.log_every, "log_every", minimum=1)
    V.check_int(config.eval_every, "eval_every", minimum=0)
    data = config.data
    V.check_int(data.n, "data.n", minimum=2)
    V.check_int(data.n_context, "data.n_context", minimum=1, maximum=data.n - 1)
    if data.encoder_n is not None:
        V.check_int(data.encoder_n, "data.encoder_n", minimum=2)
    for name, b in (("data.batch_size", data.batch_size), ("eval.batch_size", config.eval.batch_size)):
        if V.check_int(b, name, minimum=1) % num_devices:
            raise ValueError(f"{name} {b} must be a multiple of the number of devices ({num_devices})")
    V.check_int(config.eval.num_batches, "eval.num_batches", minimum=1)
    for f in config.eval.funcs:
        V.check_choice(f, tuple(data.funcs), "eval.funcs entry (must be one of data.funcs)")
    data_spec(config, 1)  # validates graphs, funcs, noises, prior, node counts, max_nodes
    model_lib.arch_of(config)
    budget_lib.check_budget_config(config)
    for name in STAGES:
        stage = config[name]
        V.check_int(stage.steps, f"{name}.steps", minimum=0)
        V.check_int(stage.grad_accum, f"{name}.grad_accum", minimum=1)
        check_optim_config(stage.optim, f"{name}.optim")
        _check_layer_rate_target(config, name)
        EMAConfig.from_config(stage.ema)


def _check_layer_rate_target(config, name: str) -> None:
    """A layer-rate factor must scale some layer: only the decoder's adaLN layers ``layers_k`` take one."""
    optim = config[name].optim
    if float(optim.get("layer_lr_factor", 1.0)) == 1.0:
        return
    first = int(optim.get("layer_lr_from", 0))
    if name != "decoder":
        raise ValueError(f"{name}.optim.layer_lr_factor: only the decoder's adaLN layers take a layer rate")
    if first >= int(config.decoder.model.num_layers):
        raise ValueError(f"decoder.optim.layer_lr_from ({first}) must be below decoder.model.num_layers "
                         f"({config.decoder.model.num_layers}): no layer would be scaled")  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Interrupts
# ---------------------------------------------------------------------------------------------------------------
class _InterruptFlag:
    """Turns the first SIGINT into a flag checked between steps (the second one raises immediately)."""

    def __init__(self):
        self.set = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        print("\nInterrupt received: saving a checkpoint after this step (Ctrl-C again to abort now).", flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _any_process(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def _say(msg: str) -> None:
    if jax.process_index() == 0:
        tqdm.tqdm.write(msg)


def _num_params(tree: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


# ---------------------------------------------------------------------------------------------------------------
# Loading states
# ---------------------------------------------------------------------------------------------------------------
def start_state(config, workdir, name, ckpt, mesh) -> tuple[int, TrainState, budget_lib.BudgetState]:
    """The resume order (see the module docstring): ``(start step, state, budget record)``."""
    # 1. An existing checkpoint must come from a compatible config.
    latest = ckpt.latest_config()
    if latest is not None:
        where = f"the {name} checkpoint at step {latest[0]} in {ckpt.directory}"
        ckpt_lib.check_compatible(latest[1], ckpt_lib.config_to_dict(config), name, where=where)
        # 2. The latest readable checkpoint of this stage.
        restored = ckpt.restore_latest_with_budget(abstract_state(config, name, replicated(mesh)))
        if restored is not None:
            start, state, _, budget = restored
            _say(f"{name}: resumed from the checkpoint at step {start} in {ckpt.directory}")
            return start, state, budget_lib.BudgetState.from_dict(budget)
    # 3. A fresh state (stage 2: the stage-1 EMA encoder frozen inside it), from config.init_from's weights if set.
    if config.get("init_from") is not None:
        return 0, state_from_source(config, workdir, name, mesh), budget_lib.BudgetState()
    frozen = load_encoder_ema(config, workdir, mesh) if name == "decoder" else None
    key = stream_key(config.seed, name, STREAM_INIT)
    state = jax.jit(lambda f: create_state(config, name, key, f), out_shardings=replicated(mesh))(frozen)
    return 0, state, budget_lib.BudgetState()


def _has_checkpoint(workdir: str, name: str) -> bool:
    with ckpt_lib.StageCheckpointer(workdir, name, keep=1000, async_save=False) as ck:
        return ck.latest_config() is not None


def state_from_source(config, workdir: str, name: str, mesh: jax.sharding.Mesh) -> TrainState:
    """Stage ``name``'s first state from ``config.init_from`` (:mod:`cfip_jax.train.init_from`): the source's EMA
    weights as parameters and EMA (with ``init_grow``, the decoder's extra layers as identities), a fresh optimiser;
    stage 2 freezes this workdir's stage-1 EMA encoder, or the source's when this workdir has no stage-1 checkpoint."""
    source = init_lib.load_source(config.init_from)
    abstract = abstract_state(config, name)
    frozen = None
    if name == "decoder":
        if _has_checkpoint(workdir, "encoder"):
            frozen = load_encoder_ema(config, workdir, mesh)
        else:
            frozen = init_lib.stage_variables(source, abstract.frozen, "encoder")
            _say("decoder: no stage-1 checkpoint here; the source's encoder is frozen inside stage 2")
    if config.get("init_stable"):  # the whole state from the source's stable checkpoint, not its final weights
        return _stable_start(config, workdir, name, mesh, source, frozen)
    stage, spec, tx = stage_parts(config, name)
    fresh = None
    if config.get("init_grow") and name == "decoder":  # the layers the source lacks: drawn, then zero-modulated
        fresh = jax.jit(lambda k: stage.init(k, spec))(stream_key(config.seed, name, STREAM_INIT))
    params = init_lib.stage_variables(source, abstract.params, name, fresh)
    state = jax.jit(lambda p, f: TrainState.create(p, tx, f), out_shardings=replicated(mesh))(params, frozen)
    how = "fresh optimiser"
    if config.get("init_moments"):
        abstract = abstract_state(config, name, replicated(mesh))
        state = state.replace(opt_state=init_lib.carry_moments(source, name, abstract, state.opt_state))
        how = "its Adam moments, a fresh schedule"
    _say(f"{name}: starting from the weights of {source.path} (sha256 {source.sha256[:12]}…), {how}")
    return state


def _stable_start(config, workdir: str, name: str, mesh, source, frozen) -> TrainState:
    """``init_stable``: the source's stable checkpoint of stage ``name`` (parameters, EMA, optimiser state) at step 0,
    with ``frozen`` as the frozen encoder; the start is noted in this workdir's lineage."""
    at, state = init_lib.stable_state(source, name, abstract_state(config, name, replicated(mesh)))
    state = state.replace(step=jnp.zeros_like(state.step), frozen=frozen if name == "decoder" else state.frozen)
    ema = _with_params(source.model, name, state.ema_params)
    digest = init_lib.params_sha256(ema)
    if jax.process_index() == 0:
        lineage_lib.note_stable_start(workdir, name, step=at, sha256=digest)
    _say(f"{name}: starting from the stable checkpoint at step {at} of {source.path} (EMA sha256 {digest[:12]}…): "
         "its parameters, EMA and optimiser state, no warm-up")  # fmt: skip
    return state


def _with_params(model: model_lib.TrainedModel, name: str, params: Any) -> model_lib.TrainedModel:
    """``model`` with stage ``name``'s network variables replaced by ``params``."""
    return dataclasses.replace(model, **{f"{name}_params": params})


# ---------------------------------------------------------------------------------------------------------------
# One stage
# ---------------------------------------------------------------------------------------------------------------
class StageRun:
    """The host side of a stage's loop: its end, and the actions after each step (log, validate, checkpoint)."""

    def __init__(self, config, workdir, name, state, start, ckpt, mesh, budget_state, clock0=None):
        self.config, self.name, self.state, self.ckpt, self.workdir = config, name, state, ckpt, workdir
        # The stage's seconds (the lineage's record): the resumed checkpoint's, then this session's from ``clock0``.
        self.spent_before = ckpt.read_spent(start) if start > 0 else {"cpu_s": 0.0, "wall_s": 0.0}
        self.clock0 = clock0 or (time.process_time(), time.perf_counter())
        self.main = jax.process_index() == 0
        self.cfg_dict = ckpt_lib.config_to_dict(config)
        seconds = budget_lib.stage_seconds(config, name)
        optim = config[name].optim
        end_scale = float(optim.end_lr) / float(optim.lr) if float(optim.lr) > 0 else 0.0
        clock = budget_lib.clock_of(config)
        self.budget = None if seconds is None else budget_lib.Budget(seconds, optim.decay_fraction, end_scale,
                                                                     budget_state, clock=clock)  # fmt: skip
        self.total = int(config[name].steps)
        self.last_saved = start if start > 0 else None
        self.pending: list[tuple[int, dict]] = []
        self.writer = MetricWriter(workdir, name)
        self.writer.truncate_after(start)
        self.stage = stage = build_stage(config, name)
        eval_spec = data_spec(config, local_batch_size(config.eval.batch_size, mesh, "eval.batch_size"),
                              config.eval.funcs)  # fmt: skip
        self.eval_fn = make_eval_step(stage, eval_spec, config.seed, mesh)
        self.eval_compiled = False  # passed through parallel.compiled_together before its first call
        self.families = eval_families(eval_spec)
        self.log_t, self.log_step = time.perf_counter(), start
        if self.budget is None:
            self.bar = tqdm.tqdm(total=self.total, initial=start, desc=name, unit="step", disable=not self.main,
                                 dynamic_ncols=True)  # fmt: skip
        else:  # the bar counts the budget's seconds: its ETA is the budget's
            self.bar = tqdm.tqdm(total=round(self.budget.seconds), initial=round(budget_state.elapsed), desc=name,
                                 unit="s", disable=not self.main, dynamic_ncols=True)  # fmt: skip

    # -- the end -------------------------------------------------------------------------------------------------
    def complete(self, done: int) -> bool:
        """The stage has reached its end after ``done`` steps."""
        return self.budget.done(done) if self.budget is not None else done >= self.total

    def lr_scale(self, step: int) -> jax.Array:
        return jnp.asarray(1.0 if self.budget is None else self.budget.lr_scale(step), jnp.float32)

    def update_budget(self, done: int, first: bool, at_log: bool) -> None:
        """Mark the first step; fix the decay when it is due (in multi-process runs: at log steps, process 0's
        plan); refuse a budget that the first step alone overran."""
        if self.budget is None:
            return
        if first:
            self.budget.first_step_done(done)
            if done == 1 and self.budget.remaining() <= 0:
                raise ValueError(
                    f"{self.name}: max_seconds leaves {self.budget.seconds:.1f} s for this stage, but compiling and "
                    f"one step took {self.budget.elapsed():.1f} s; give a larger budget"
                )
        if jax.process_count() > 1 and not at_log:
            return
        due = self.budget.due() and self.budget.steps_per_second(done) is not None
        plan = np.asarray(self.budget.decay_plan(done) if due else (-1, 0), np.int64)
        if jax.process_count() > 1:
            plan = np.asarray(multihost_utils.broadcast_one_to_all(plan))
        if plan[0] >= 0 and not self.budget.decaying:
            self.save_stable(done)
            self.budget.start_decay(int(plan[0]), int(plan[1]))
            _say(f"{self.name}: learning-rate decay over the last {int(plan[1])} steps (from step {int(plan[0])}, "
                 f"{self.budget.remaining():.0f} s left)")  # fmt: skip

    def advance_bar(self) -> None:
        if self.budget is None:
            self.bar.update(1)
        else:
            self.bar.update(max(0, min(round(self.budget.elapsed()), self.bar.total) - self.bar.n))

    # -- the actions ---------------------------------------------------------------------------------------------
    def check_pending(self) -> dict | None:
        """Fetch the metrics of the steps since the last check; raise on a non-finite loss; return the last."""
        if not self.pending:
            return None
        host = to_host([m for _, m in self.pending])
        for (s, _), m in zip(self.pending, host, strict=True):
            if not (math.isfinite(float(m["loss"])) and bool(m["finite"])):
                self.pending.clear()
                what = "loss" if not math.isfinite(float(m["loss"])) else "parameters after the update"
                where = "none (no checkpoint yet)"
                if self.last_saved:
                    where = f"step {self.last_saved} in {self.ckpt.directory}"
                raise NonFiniteLossError(
                    f"{self.name}: non-finite {what} at step {s + 1} (loss {float(m['loss'])}); training stopped. "
                    f"Last good checkpoint: {where}. Lower the learning rate or check the data before resuming."
                )
        self.pending.clear()
        return host[-1]

    def log(self, done: int, last: dict | None, record: dict) -> None:
        if last is not None:
            now = time.perf_counter()
            rate = (done - self.log_step) / max(now - self.log_t, 1e-9) if done > self.log_step else float("nan")
            record.update(loss=float(last["loss"]), lr=float(last["lr"]), grad_norm=float(last["grad_norm"]),
                          steps_per_sec=rate)  # fmt: skip
            if self.budget is not None:
                record["elapsed_s"] = round(self.budget.elapsed(), 1)
            self.bar.set_postfix(step=done, loss=f"{float(last['loss']):.4f}", lr=f"{float(last['lr']):.2e}")
        self.log_t, self.log_step = time.perf_counter(), done

    def validate(self, done: int, record: dict) -> None:
        if self.config.eval.fixed:
            return self.validate_fixed(done, record)
        totals: dict[str, np.ndarray] = {}
        if not self.eval_compiled:
            args = (self.state.ema_params, self.state.frozen, done, 0)
            self.eval_fn = compiled_together(self.eval_fn, *args, name=f"{self.name}_eval_step")
            self.eval_compiled = True
        for index in range(self.config.eval.num_batches):
            out = to_host(self.eval_fn(self.state.ema_params, self.state.frozen, done, index))
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + np.asarray(v, np.float64)
        val = {}
        for i, func in enumerate(self.families):
            if totals["count"][i] > 0:
                val[f"val_rmse_{func}"] = float(totals["rmse"][i] / totals["count"][i])
                val[f"val_zero_rmse_{func}"] = float(totals["rmse_zero"][i] / totals["count"][i])
        record.update(val)
        _say(f"{self.name} step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))

    def validate_fixed(self, done: int, record: dict) -> None:
        """The EMA parameters on the fixed validation set: ``val_rmse_{family}`` and ``val_rmse_{family}_{d}``."""
        errors = validation_set.errors(self.stage, self.state.ema_params, self.state.frozen)
        val = {}
        for group, v in validation_set.summarize(errors).items():
            val["val_rmse" if group == "all" else f"val_rmse_{group.replace('/', '_')}"] = round(v["mean"], 5)
        record.update(val)
        _say(f"{self.name} step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items() if k.count("_") < 3))

    def spent(self) -> dict | None:
        """The stage's process CPU and wall seconds so far, every session included; None when it resumed a
        checkpoint that does not record them."""
        if self.spent_before is None:
            return None
        now = (time.process_time(), time.perf_counter())
        return {k: round(self.spent_before[k] + now[i] - self.clock0[i], 1) for i, k in enumerate(("cpu_s", "wall_s"))}

    def save_stable(self, done: int) -> None:
        """Save the state after step ``done``, the last before the decay, as the stage's stable checkpoint
        (``{workdir}/{name}/stable``, one kept): where a continued run with ``init_stable`` starts."""
        with ckpt_lib.StageCheckpointer(self.workdir, self.name, keep=1, async_save=False,
                                        subdir=ckpt_lib.STABLE) as ck:  # fmt: skip
            ck.save(done, self.state, self.cfg_dict, self.budget.snapshot(done), self.spent())
        _say(f"{self.name}: stable checkpoint (the state before the decay) saved at step {done} in {ck.directory}")

    def checkpoint(self, done: int) -> None:
        snapshot = None if self.budget is None else self.budget.snapshot(done)
        if self.ckpt.save(done, self.state, self.cfg_dict, snapshot, self.spent()):
            self.last_saved = done

    def after_step(self, done: int, first: bool, stop_requested: bool) -> bool:
        """The actions due after step ``done``; returns whether the loop stops (the stage's end or an interrupt)."""
        cfg = self.config
        is_log = done % cfg.log_every == 0
        self.update_budget(done, first, is_log)
        at_end = self.complete(done)
        is_log = is_log or at_end
        is_eval = at_end or (cfg.eval_every > 0 and done % cfg.eval_every == 0)
        is_ckpt = done % cfg.checkpoint_every == 0 or at_end
        stop = stop_requested if jax.process_count() == 1 else (is_log and _any_process(stop_requested))
        if not (is_log or is_eval or is_ckpt or stop):
            return False
        last = self.check_pending()
        record: dict = {}
        if is_log:
            self.log(done, last, record)
        busy = time.perf_counter()  # validation and checkpoints do not count towards steps/s
        if is_eval:
            self.validate(done, record)
        if record:
            self.writer.write(done, record)
        if is_ckpt or stop:
            self.checkpoint(done)
        self.log_t += time.perf_counter() - busy
        if stop:
            self.ckpt.wait()
            _say(f"{self.name}: interrupted; checkpoint saved at step {done}. Rerun the same command to resume.")
            raise KeyboardInterrupt
        return at_end

    def close(self) -> None:
        self.bar.close()
        self.writer.close()


def train_stage(config, workdir: str, name: str, *, hooks: Sequence[Hook] = ()) -> TrainState:
    """Train (or resume) one stage to its end and return the final state.

    Args:
      config: the run config (see ``configs/default.py``).
      workdir: the run directory (checkpoints in ``{workdir}/{name}/checkpoints``, ``metrics.jsonl``).
      name: ``"encoder"`` or ``"decoder"``.
      hooks: callables ``hook(stage, steps_done)`` run on the host after every step.

    Raises:
      ValueError: invalid or incompatible config, missing stage-1 checkpoint, a budget too small for one step.
      NonFiniteLossError: the loss became non-finite (nothing is saved; the last good checkpoint stays).
      KeyboardInterrupt: after saving a checkpoint of the last completed step.
    """
    clock0 = (time.process_time(), time.perf_counter())
    mesh = make_mesh()
    with ckpt_lib.StageCheckpointer(workdir, name, config.keep_checkpoints) as ckpt:
        start, state, budget_state = start_state(config, workdir, name, ckpt, mesh)
        run = StageRun(config, workdir, name, state, start, ckpt, mesh, budget_state, clock0)
        if start > 0 and run.complete(start):
            _say(f"{name}: already complete (step {start}); nothing to do")
            run.close()
            return state
        if start == 0:
            _say(
                f"{name}: new run, {_num_params(state.params):,} parameters, "
                + (f"{run.total} steps" if run.budget is None else f"{run.budget.seconds:.0f} s budget")
                + f", {jax.device_count()} device(s) in {jax.process_count()} process(es), "
                f"batch {config.data.batch_size} × {config[name].grad_accum} micro-batch(es)"
            )
        try:
            return _train_loop(run, _step_fn(config, name, mesh), start, hooks)
        finally:
            run.close()


def _step_fn(config, name: str, mesh: jax.sharding.Mesh) -> Callable:
    budgeted = config.max_seconds is not None
    scfg = config[name]
    spec = data_spec(config, local_batch_size(config.data.batch_size, mesh, "data.batch_size"),
                     pack=bool(config.data.pack), stage=name)  # fmt: skip
    step_cfg = StepConfig(
        stage=build_stage(config, name),
        spec=spec,
        tx=make_optimizer(scfg.optim, budgeted=budgeted),
        schedule=learning_rate_schedule(scfg.optim, budgeted=budgeted),
        ema=EMAConfig.from_config(scfg.ema),
        grad_accum=int(scfg.grad_accum),
        seed=int(config.seed),
    )
    return make_train_step(step_cfg, mesh)


def _train_loop(run: StageRun, train_step: Callable, start: int, hooks: Sequence[Hook]) -> TrainState:
    done, first, t0 = start, True, time.perf_counter()
    train_step = compiled_together(train_step, run.state, run.lr_scale(done), name=f"{run.name}_train_step")
    try:
        with _InterruptFlag() as interrupt:
            while True:
                run.state, metrics = train_step(run.state, run.lr_scale(done))
                run.pending.append((done, metrics))
                done += 1
                if first:
                    jax.block_until_ready(metrics)
                    _say(f"{run.name}: compiled and ran the first step in {time.perf_counter() - t0:.1f} s")
                    run.log_t, run.log_step = time.perf_counter(), done
                run.advance_bar()
                for hook in hooks:
                    hook(run.name, done)
                if run.after_step(done, first, interrupt.set):
                    break
                first = False
            run.ckpt.wait()
    except KeyboardInterrupt:
        # A Ctrl-C that arrived outside the flag's reach (e.g. during compilation or a hook): save if possible.
        done = int(to_host(run.state.step)) if not _deleted(run.state) else None
        if done is not None and done != run.last_saved and done > 0:
            with contextlib.suppress(NonFiniteLossError):
                run.check_pending()
                run.checkpoint(done)
                run.ckpt.wait()
                _say(f"{run.name}: interrupted; checkpoint saved at step {done}. Rerun the same command to resume.")
        raise
    return run.state


def _deleted(state: Any) -> bool:
    return any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves(state))


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    stages: Sequence[str] = STAGES,
    *,
    hooks=(),
    command: str | None = None,
) -> dict:
    """Train the requested stages in order; returns ``{stage: final TrainState}``.

    Args:
      config: the run config.
      workdir: the run directory (created if needed; must be writable).
      stages: a subset of ``("encoder", "decoder")``.
      hooks: see :func:`train_stage`.
      command: the command line, recorded in the workdir's lineage (:mod:`cfip_jax.train.lineage`).
    """
    for s in stages:
        V.check_choice(s, STAGES, "stage")
    check_config(config)
    source = init_lib.check(config)
    if source is not None and config.get("init_moments"):
        for s in stages:
            if not (ckpt_lib.has_checkpoints(source.path, s) or ckpt_lib.has_checkpoints(workdir, s)):
                raise ValueError(f"init_moments: {source.path} has no {s} checkpoint to carry Adam's moments from")
    if source is not None and config.get("init_stable"):
        for s in stages:
            if not (ckpt_lib.has_checkpoints(source.path, s, ckpt_lib.STABLE) or ckpt_lib.has_checkpoints(workdir, s)):
                raise ValueError(f"init_stable: {source.path} has no stable {s} checkpoint (a budgeted stage saves one "
                                 "when its decay begins)")  # fmt: skip
    ckpt_lib.check_writable(workdir)
    main = jax.process_index() == 0
    if main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json(indent=2))
        lineage_lib.open_run(workdir, config, source, command)
    out = {}
    for s in stages:
        wall, cpu = time.perf_counter(), time.process_time()
        out[s] = train_stage(config, workdir, s, hooks=hooks)
        # The stage's seconds from its last checkpoint (every session that resumed it; read by every process, as
        # checkpoints are); a stage resumed from a checkpoint without that record adds this session's seconds.
        spent = _spent(workdir, s)
        if main:
            steps = int(to_host(out[s].step))
            val_set = "fixed" if config.eval.fixed else "fresh in-distribution datasets"
            val = lineage_lib.last_validation(read_metrics(workdir), s)
            seconds = spent or dict(cpu_s=time.process_time() - cpu, wall_s=time.perf_counter() - wall)
            lineage_lib.add_stage(workdir, s, steps=steps, datasets=steps * _datasets_per_step(config, s),
                                  **seconds, val=val, val_set=val_set, cumulative=spent is not None)  # fmt: skip
    if "decoder" in out:  # what inference loads: CondFiP.load(workdir) finds it; every process reads, one writes
        path = export_lib.export_workdir(workdir, write=main)
        _say(f"export (weights, model.json with the lineage): {path}")
    return out


def _spent(workdir: str, name: str) -> dict | None:
    """The ``spent`` record of stage ``name``'s latest checkpoint (None: none, or it has none)."""
    with ckpt_lib.StageCheckpointer(workdir, name, keep=1000, async_save=False) as ck:
        steps = ck.steps()
        return ck.read_spent(steps[-1]) if steps else None


def _datasets_per_step(config, name: str) -> int:
    return int(config.data.batch_size) * int(config[name].grad_accum)
