"""The training loop: ``run(config, workdir)`` trains stage 1 (encoder) and stage 2 (decoder) with resume.

Per stage: validate the config → open the stage's checkpoints and refuse an incompatible one → restore the latest
readable checkpoint or initialise (stage 2 loads the stage-1 EMA encoder) → compiled data-parallel steps, with a tqdm
bar, ``metrics.jsonl`` records every ``log_every`` steps, validation of the EMA parameters on fresh datasets every
``eval_every`` steps and a checkpoint every ``checkpoint_every`` steps and at the end.

Faults: a non-finite loss stops the run (:class:`NonFiniteLossError`) without saving; Ctrl-C saves a checkpoint of the
last completed step and re-raises ``KeyboardInterrupt``. A rerun of the same command resumes; a finished stage is
skipped.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from cfip_jax import checkpoint as ckpt_lib
from cfip_jax import validation as V
from cfip_jax.ema import EMAConfig
from cfip_jax.metrics_writer import MetricWriter
from cfip_jax.nn.configs import decoder_config, encoder_config
from cfip_jax.nn.decoder import CondFiPDecoder
from cfip_jax.nn.encoder import DatasetEncoder
from cfip_jax.optim import check_optim_config, learning_rate_schedule, make_optimizer
from cfip_jax.parallel import local_batch_size, make_mesh, replicated, to_host
from cfip_jax.scm.batch import BatchSpec
from cfip_jax.scm.priors import scm_prior
from cfip_jax.train_state import TrainState
from cfip_jax.train_step import (
    STREAM_INIT,
    Stage,
    StepConfig,
    eval_families,
    make_eval_step,
    make_train_step,
    stream_key,
)

STAGES = ("encoder", "decoder")
Hook = Callable[[str, int], None]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


# ---------------------------------------------------------------------------------------------------------------
# Building blocks from the config
# ---------------------------------------------------------------------------------------------------------------
def model_configs(config) -> tuple[Any, Any]:
    """The (validated, frozen) encoder and decoder model configs of a run config."""
    enc = encoder_config("reference", **dict(config.encoder.model))
    dec = decoder_config("reference", **dict(config.decoder.model))
    if dec.encoder_dim != enc.d_model:
        raise ValueError(
            f"decoder.model.encoder_dim ({dec.encoder_dim}) must equal encoder.model.d_model ({enc.d_model})"
        )
    return enc, dec


def build_stage(config, name: str) -> Stage:
    """The :class:`~cfip_jax.train_step.Stage` (networks and context split) of stage ``name``."""
    V.check_choice(name, STAGES, "stage")
    enc, dec = model_configs(config)
    encoder = DatasetEncoder(config=enc)
    if name == "encoder":
        return Stage(name="encoder", encoder=encoder)
    return Stage(name="decoder", encoder=encoder, decoder=CondFiPDecoder(config=dec), n_context=config.data.n_context)


def data_spec(config, batch_size: int, funcs: Sequence[str] | None = None, *, pack: bool = False) -> BatchSpec:
    """The :class:`BatchSpec` of the run's data (every graph × function × noise combination of ``config.data``).

    Args:
      config: the run config.
      batch_size: datasets per call (per device).
      funcs: restrict the mechanism families (validation per family); default: all of ``config.data.funcs``.
      pack: the packed layout (training batches when ``config.data.pack``); validation batches are not packed.
    """
    data = config.data
    funcs = tuple(data.funcs if funcs is None else funcs)
    priors = tuple(
        scm_prior(graph, func, noise, data.prior) for graph in data.graphs for func in funcs for noise in data.noises
    )
    return BatchSpec(
        priors=priors,
        node_counts=tuple(data.node_counts),
        max_nodes=data.max_nodes,
        n=data.n,
        batch_size=batch_size,
        standardize=True,
        pack=pack,
    )


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
    for name in ("batch_size",):
        b = V.check_int(data[name], f"data.{name}", minimum=1)
        if b % num_devices:
            raise ValueError(f"data.{name} {b} must be a multiple of the number of devices ({num_devices})")
    b = V.check_int(config.eval.batch_size, "eval.batch_size", minimum=1)
    if b % num_devices:
        raise ValueError(f"eval.batch_size {b} must be a multiple of the number of devices ({num_devices})")
    V.check_int(config.eval.num_batches, "eval.num_batches", minimum=1)
    for f in config.eval.funcs:
        V.check_choice(f, tuple(data.funcs), "eval.funcs entry (must be one of data.funcs)")
    data_spec(config, 1)  # validates graphs, funcs, noises, prior, node counts, max_nodes
    model_configs(config)
    for name in STAGES:
        stage = config[name]
        V.check_int(stage.steps, f"{name}.steps", minimum=0)
        V.check_int(stage.grad_accum, f"{name}.grad_accum", minimum=1)
        check_optim_config(stage.optim, f"{name}.optim")
        EMAConfig.from_config(stage.ema)


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


# ---------------------------------------------------------------------------------------------------------------
# Stage training
# ---------------------------------------------------------------------------------------------------------------
def _say(msg: str) -> None:
    if jax.process_index() == 0:
        tqdm.tqdm.write(msg)


def _num_params(tree: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def load_encoder_ema(config, workdir: str, mesh: jax.sharding.Mesh) -> Any:
    """The stage-1 encoder's EMA variables from the latest encoder checkpoint of ``workdir`` (replicated on ``mesh``).

    Raises:
      ValueError: no encoder checkpoint, or one whose encoder model config differs from ``config``'s.
    """
    current = ckpt_lib.config_to_dict(config)
    with ckpt_lib.StageCheckpointer(workdir, "encoder", config.keep_checkpoints) as enc_ckpt:
        latest = enc_ckpt.latest_config()
        if latest is None:
            raise ValueError(
                f"stage 2 needs a stage-1 encoder checkpoint in {enc_ckpt.directory}; "
                "run with --stage encoder (or --stage both) first"
            )
        step, saved = latest
        saved_model = {"encoder": {"model": saved.get("encoder", {}).get("model", {})}}
        now_model = {"encoder": {"model": current["encoder"]["model"]}}
        ckpt_lib.check_compatible(saved_model, now_model, "decoder", where=f"the encoder checkpoint at step {step}")
        if step < config.encoder.steps:
            _say(f"WARNING: the encoder checkpoint is at step {step} < encoder.steps = {config.encoder.steps}")
        restored = enc_ckpt.restore_latest(abstract_state(config, "encoder", mesh))
        if restored is None:
            raise ValueError(f"no readable stage-1 encoder checkpoint in {enc_ckpt.directory}")
        step, state, _ = restored
    _say(f"decoder: using the EMA encoder of the encoder checkpoint at step {step}")
    return state.ema_params


def abstract_state(config, name: str, mesh: jax.sharding.Mesh) -> TrainState:
    """The shapes, dtypes and (replicated) shardings of stage ``name``'s :class:`TrainState` (nothing computed)."""
    stage = build_stage(config, name)
    spec = data_spec(config, 1)
    tx = make_optimizer(config[name].optim)
    key = jax.random.key(0)
    frozen = jax.eval_shape(lambda: stage.init_frozen(key, spec)) if name == "decoder" else {}
    shapes = jax.eval_shape(lambda f: TrainState.create(stage.init(key, spec), tx, f), frozen)
    return ckpt_lib.abstract_like(shapes, replicated(mesh))


def load_state(config, workdir: str, name: str, mesh: jax.sharding.Mesh | None = None) -> tuple[int, TrainState]:
    """The latest readable checkpoint of stage ``name`` in ``workdir``: ``(step, state)``.

    Use ``state.ema_params`` (and, for the decoder, ``state.frozen``: the encoder) for inference.

    Raises:
      ValueError: no readable checkpoint, or one written with a config whose fields for this stage differ.
    """
    V.check_choice(name, STAGES, "stage")
    mesh = make_mesh() if mesh is None else mesh
    with ckpt_lib.StageCheckpointer(workdir, name, config.keep_checkpoints) as ckpt:
        latest = ckpt.latest_config()
        if latest is None:
            raise ValueError(f"no {name} checkpoint in {ckpt.directory}")
        ckpt_lib.check_compatible(latest[1], ckpt_lib.config_to_dict(config), name, where=f"the {name} checkpoint")
        restored = ckpt.restore_latest(abstract_state(config, name, mesh))
        if restored is None:
            raise ValueError(f"no readable {name} checkpoint in {ckpt.directory}")
    return restored[0], restored[1]


def train_stage(config, workdir: str, name: str, *, hooks: Sequence[Hook] = ()) -> TrainState:
    """Train (or resume) one stage to ``config[name].steps`` steps and return the final state.

    Args:
      config: the run config (see ``configs/default.py``).
      workdir: the run directory (checkpoints in ``{workdir}/{name}/checkpoints``, ``metrics.jsonl``).
      name: ``"encoder"`` or ``"decoder"``.
      hooks: callables ``hook(stage, steps_done)`` run on the host after every step.

    Raises:
      ValueError: invalid or incompatible config, missing stage-1 checkpoint.
      NonFiniteLossError: the loss became non-finite (nothing is saved; the last good checkpoint stays).
      KeyboardInterrupt: after saving a checkpoint of the last completed step.
    """
    mesh = make_mesh()
    stage = build_stage(config, name)
    scfg = config[name]
    total = int(scfg.steps)
    spec = data_spec(
        config, local_batch_size(config.data.batch_size, mesh, "data.batch_size"), pack=bool(config.data.pack)
    )
    tx = make_optimizer(scfg.optim)
    schedule = learning_rate_schedule(scfg.optim)
    step_cfg = StepConfig(
        stage=stage,
        spec=spec,
        tx=tx,
        schedule=schedule,
        ema=EMAConfig.from_config(scfg.ema),
        grad_accum=int(scfg.grad_accum),
        seed=int(config.seed),
    )
    cfg_dict = ckpt_lib.config_to_dict(config)
    rep = replicated(mesh)

    ckpt = ckpt_lib.StageCheckpointer(workdir, name, config.keep_checkpoints)
    try:
        latest = ckpt.latest_config()
        if latest is not None:
            ckpt_lib.check_compatible(
                latest[1], cfg_dict, name, where=f"the {name} checkpoint at step {latest[0]} in {ckpt.directory}"
            )

        init_key = stream_key(config.seed, name, STREAM_INIT)

        def init(frozen):
            return TrainState.create(stage.init(init_key, spec), tx, frozen)

        restored = ckpt.restore_latest(abstract_state(config, name, mesh)) if latest is not None else None
        if restored is not None:
            start, state, _ = restored
            _say(f"{name}: resumed from the checkpoint at step {start} in {ckpt.directory}")
            if start >= total:
                _say(f"{name}: already complete ({start}/{total} steps); nothing to do")
                return state
        else:
            frozen = load_encoder_ema(config, workdir, mesh) if name == "decoder" else {}
            state = jax.jit(init, out_shardings=rep)(frozen)
            start = 0
            _say(
                f"{name}: new run, {_num_params(state.params):,} parameters, {total} steps, "
                f"{jax.device_count()} device(s) in {jax.process_count()} process(es), "
                f"batch {config.data.batch_size} × {scfg.grad_accum} micro-batch(es)"
            )
        return _train_loop(config, workdir, name, stage, step_cfg, state, start, total, ckpt, cfg_dict, mesh, hooks)
    finally:
        ckpt.close()


def _validate(eval_fn, families, variables, frozen, step: int, num_batches: int) -> dict[str, float]:
    totals: dict[str, np.ndarray] = {}
    for index in range(num_batches):
        for k, v in to_host(eval_fn(variables, frozen, step, index)).items():
            totals[k] = totals.get(k, 0.0) + np.asarray(v, np.float64)
    out = {}
    for i, func in enumerate(families):
        if totals["count"][i] > 0:
            out[f"val_rmse_{func}"] = float(totals["rmse"][i] / totals["count"][i])
            out[f"val_zero_rmse_{func}"] = float(totals["rmse_zero"][i] / totals["count"][i])
    return out


def _train_loop(config, workdir, name, stage, step_cfg, state, start, total, ckpt, cfg_dict, mesh, hooks):
    main = jax.process_index() == 0
    train_step = make_train_step(step_cfg, mesh)
    eval_spec = data_spec(config, local_batch_size(config.eval.batch_size, mesh, "eval.batch_size"), config.eval.funcs)
    eval_fn = make_eval_step(stage, eval_spec, config.seed, mesh)
    families = eval_families(eval_spec)

    writer = MetricWriter(workdir, name)
    writer.truncate_after(start)
    last_saved = start if start > 0 else None
    pending: list[tuple[int, dict]] = []
    bar = tqdm.tqdm(total=total, initial=start, desc=name, unit="step", disable=not main, dynamic_ncols=True)
    log_t, log_step = time.perf_counter(), start
    first = True

    def check_pending() -> dict | None:
        """Fetch the metrics of the steps since the last check; raise on a non-finite loss; return the last."""
        if not pending:
            return None
        host = to_host([m for _, m in pending])
        for (s, _), m in zip(pending, host, strict=True):
            if not (math.isfinite(float(m["loss"])) and bool(m["finite"])):
                pending.clear()
                what = "loss" if not math.isfinite(float(m["loss"])) else "parameters after the update"
                where = f"step {last_saved} in {ckpt.directory}" if last_saved else "none (no checkpoint yet)"
                raise NonFiniteLossError(
                    f"{name}: non-finite {what} at step {s + 1} (loss {float(m['loss'])}); training stopped. "
                    f"Last good checkpoint: {where}. Lower the learning rate or check the data before resuming."
                )
        last = host[-1]
        pending.clear()
        return last

    def save(step: int) -> None:
        nonlocal last_saved
        if ckpt.save(step, state, cfg_dict):
            last_saved = step

    try:
        with _InterruptFlag() as interrupt:
            for step in range(start, total):
                state, metrics = train_step(state)
                done = step + 1
                pending.append((step, metrics))
                if first:
                    jax.block_until_ready(metrics)
                    _say(f"{name}: compiled and ran the first step in {time.perf_counter() - log_t:.1f} s")
                    log_t, log_step, first = time.perf_counter(), done, False
                bar.update(1)
                for hook in hooks:
                    hook(name, done)
                at_end = done == total
                is_log = done % config.log_every == 0 or at_end
                is_eval = at_end or (config.eval_every > 0 and done % config.eval_every == 0)
                is_ckpt = done % config.checkpoint_every == 0 or at_end
                stop = interrupt.set if jax.process_count() == 1 else (is_log and _any_process(interrupt.set))
                if not (is_log or is_eval or is_ckpt or stop):
                    continue
                last = check_pending()
                record = {}
                if is_log and last is not None:
                    now = time.perf_counter()
                    rate = (done - log_step) / max(now - log_t, 1e-9) if done > log_step else float("nan")
                    record.update(
                        loss=float(last["loss"]),
                        lr=float(last["lr"]),
                        grad_norm=float(last["grad_norm"]),
                        steps_per_sec=rate,
                    )
                    bar.set_postfix(loss=f"{float(last['loss']):.4f}", lr=f"{float(last['lr']):.2e}")
                if is_log:
                    log_t, log_step = time.perf_counter(), done
                busy = time.perf_counter()  # validation and checkpoints do not count towards steps/s
                if is_eval:
                    val = _validate(eval_fn, families, state.ema_params, state.frozen, done, config.eval.num_batches)
                    record.update(val)
                    _say(f"{name} step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
                if record:
                    writer.write(done, record)
                if is_ckpt or stop:
                    save(done)
                log_t += time.perf_counter() - busy
                if stop:
                    ckpt.wait()
                    _say(f"{name}: interrupted; checkpoint saved at step {done}. Rerun the same command to resume.")
                    raise KeyboardInterrupt
            ckpt.wait()
    except KeyboardInterrupt:
        # A Ctrl-C that arrived outside the flag's reach (e.g. during compilation or a hook): save if possible.
        done = int(to_host(state.step)) if not _deleted(state) else None
        if done is not None and done != last_saved and done > 0:
            with contextlib.suppress(NonFiniteLossError):
                check_pending()
                save(done)
                ckpt.wait()
                _say(f"{name}: interrupted; checkpoint saved at step {done}. Rerun the same command to resume.")
        raise
    finally:
        bar.close()
        writer.close()
    return state


def _deleted(state: Any) -> bool:
    return any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves(state))


def run(config: ml_collections.ConfigDict, workdir: str, stages: Sequence[str] = STAGES, *, hooks=()) -> dict:
    """Train the requested stages in order; returns ``{stage: final TrainState}``.

    Args:
      config: the run config.
      workdir: the run directory (created if needed; must be writable).
      stages: a subset of ``("encoder", "decoder")``.
      hooks: see :func:`train_stage`.
    """
    for s in stages:
        V.check_choice(s, STAGES, "stage")
    check_config(config)
    ckpt_lib.check_writable(workdir)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json(indent=2))
    return {s: train_stage(config, workdir, s, hooks=hooks) for s in stages}
