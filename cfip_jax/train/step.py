"""The training and validation steps of both stages, written for one device and wrapped once with ``jax.shard_map``.

What each stage computes is :class:`cfip_jax.train.stage.Stage`; this module turns it into compiled steps.

Randomness: step ``t`` draws everything from ``fold_in(stream_key, t)``. Micro-batch ``m`` of a step (gradient
accumulation) uses ``fold_in(·, m)``; device ``i`` of the ``data`` axis then draws its own share of the datasets from
``fold_in(·, i)`` (and its dropout masks likewise), so no data crosses the host and a run is a deterministic function of
``(seed, step)`` for a given number of devices. (The datasets a step sees therefore depend on the device count; the
step itself does not: on the same global batch, N devices and 1 device give the same update.)

Structure of the compiled training step (:func:`make_train_step`, one ``jax.jit``): the per-device sampler
(:func:`make_sampler`, a ``shard_map`` with ``check_vma=False``, since the SCM code has no collectives and does not
annotate its loop carries as device-varying) feeds the per-device update (``shard_map`` with the default
``check_vma=True``). Each device computes the ``lax.pmean`` of the loss over ``data`` and differentiates that (the
pattern that gives the full-batch gradient under ``check_vma=True``); accumulation averages the micro-batch gradients
in a ``lax.scan`` inside the step, so one call is one optimiser step and the optax/schedule step count is the
optimiser step count. The step also takes ``lr_scale``, a host-computed factor on the update (1 except during the
decay phase of a time-budgeted run, :mod:`cfip_jax.train.budget`), so the schedule can end with the budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import PartitionSpec as P

from cfip_jax.scm.batch import Batch, BatchSpec, combination_indices, sample_batch
from cfip_jax.train.ema import EMAConfig, ema_update
from cfip_jax.train.parallel import DATA_AXIS
from cfip_jax.train.stage import STAGES, Stage
from cfip_jax.train.state import TrainState

# fold_in constants naming the random streams.
STREAM_TRAIN, STREAM_EVAL, STREAM_INIT = 0, 1, 2
SUB_DATA, SUB_DROPOUT = 0, 1


def stream_key(seed: int, stage: str, stream: int) -> jax.Array:
    """The base key of one random stream of one stage: ``fold_in(fold_in(key(seed), stage), stream)``."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), STAGES.index(stage)), stream)


def loss_and_grads(stage: Stage, params: Any, frozen: Any, batch: Batch, dropout_key: jax.Array):
    """Per-device: ``(pmean'd loss, gradient of the pmean'd loss)`` — the full-batch loss and gradient."""

    def global_loss(p):
        return lax.pmean(stage.loss(p, frozen, batch, dropout_key), DATA_AXIS)

    return jax.value_and_grad(global_loss)(params)


def _update(
    state: TrainState,
    micro_grads: Callable[[jax.Array], tuple[jax.Array, Any]],
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    ema_cfg: EMAConfig,
    grad_accum: int,
    lr_scale: jax.Array,
) -> tuple[TrainState, dict[str, jax.Array], Any]:
    """One optimiser step from ``micro_grads(m) -> (loss, grads)`` averaged over ``grad_accum`` micro-batches; the
    update is multiplied by ``lr_scale`` (float32 scalar; 1 leaves it exactly as the optimiser made it).

    Returns:
      ``(new_state, metrics, grads)`` with the averaged gradients.
    """
    if grad_accum == 1:
        loss, grads = micro_grads(jnp.zeros((), jnp.int32))
    else:

        def body(carry, m):
            loss_sum, grad_sum = carry
            loss, grads = micro_grads(m)
            return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (loss_sum, grad_sum), _ = lax.scan(body, (jnp.zeros((), jnp.float32), zeros), jnp.arange(grad_accum))
        loss = loss_sum / grad_accum
        grads = jax.tree.map(lambda g: g / grad_accum, grad_sum)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u: u * lr_scale.astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    # The reference updates its EMA once per micro-batch, before the optimiser step, with the pre-step parameters.
    ema_params = ema_update(state.ema_params, state.params, state.step * grad_accum, ema_cfg, calls=grad_accum)
    finite = jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))
    metrics = {
        "finite": finite,  # the loss and every new parameter are finite
        "loss": loss,
        "lr": schedule(_schedule_count(state)) * lr_scale,
        "grad_norm": optax.tree.norm(grads),
        "update_norm": optax.tree.norm(updates),
        "param_norm": optax.tree.norm(params),
    }
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params)
    return new_state, metrics, grads


def _schedule_count(state: TrainState) -> jax.Array:
    """The optimiser's own step count (its learning-rate schedule's): the state's step, except in a run started from
    a stable checkpoint (``init_stable``), whose optimiser state carries the source's count."""
    counts = [s.count for s in state.opt_state if isinstance(s, optax.ScaleByScheduleState)]
    return counts[0] if len(counts) == 1 else state.step


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Everything static about a training step."""

    stage: Stage
    spec: BatchSpec  # the *per-device* batch spec (batch_size = datasets per device per micro-batch)
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    ema: EMAConfig
    grad_accum: int
    seed: int


def make_sampler(spec: BatchSpec, base_key: jax.Array, mesh: jax.sharding.Mesh, micro_batches: int) -> Callable:
    """The data-parallel batch sampler ``step -> Batch`` with leaves ``[micro_batches, B_global, ...]``.

    Device ``i`` draws its ``spec.batch_size`` datasets of micro-batch ``m`` from
    ``fold_in(fold_in(fold_in(fold_in(base_key, step), m), SUB_DATA), i)``; the result is sharded ``P(None, "data")``.
    The sampler is its own ``shard_map`` with ``check_vma=False``: it has no collectives, and the SCM code need not
    annotate its loop carries as device-varying.
    """

    def per_device(step):
        device = lax.axis_index(DATA_AXIS)

        def one(m):
            key = jax.random.fold_in(jax.random.fold_in(base_key, step), m)
            return sample_batch(jax.random.fold_in(jax.random.fold_in(key, SUB_DATA), device), spec)

        # lax.map, not vmap: the sampler's per-dataset lax.switch would run every branch under a batched index.
        return lax.map(one, jnp.arange(micro_batches))

    return jax.shard_map(per_device, mesh=mesh, in_specs=P(), out_specs=P(None, DATA_AXIS), check_vma=False)


def _batch_step(cfg: StepConfig, mesh: jax.sharding.Mesh) -> Callable:
    """``shard_map``'d ``(state, batch, lr_scale) -> (state, metrics, grads)``; ``batch`` leaves ``[grad_accum, B,
    ...]``."""
    base = stream_key(cfg.seed, cfg.stage.name, STREAM_TRAIN)

    def per_device_step(state: TrainState, batch: Batch, lr_scale: jax.Array):
        step_key = jax.random.fold_in(base, state.step)
        device = lax.axis_index(DATA_AXIS)

        def micro_grads(m):
            micro_key = jax.random.fold_in(step_key, m)
            dropout_key = jax.random.fold_in(jax.random.fold_in(micro_key, SUB_DROPOUT), device)
            local = jax.tree.map(lambda leaf: leaf[m], batch)
            return loss_and_grads(cfg.stage, state.params, state.frozen, local, dropout_key)

        return _update(state, micro_grads, cfg.tx, cfg.schedule, cfg.ema, cfg.grad_accum, lr_scale)

    return jax.shard_map(per_device_step, mesh=mesh, in_specs=(P(), P(None, DATA_AXIS), P()), out_specs=P())


def make_train_step(cfg: StepConfig, mesh: jax.sharding.Mesh) -> Callable[..., tuple[TrainState, dict]]:
    """The jitted data-parallel training step ``(state, lr_scale=1) -> (state, metrics)``; the state is donated.

    One XLA program: every device samples its ``cfg.spec.batch_size`` datasets per micro-batch (:func:`make_sampler`),
    then runs the per-device step (``shard_map``, ``check_vma=True``, gradient of the ``pmean``'d loss).
    """
    sampler = make_sampler(cfg.spec, stream_key(cfg.seed, cfg.stage.name, STREAM_TRAIN), mesh, cfg.grad_accum)
    step = _batch_step(cfg, mesh)

    def train_step(state: TrainState, lr_scale: jax.Array | float = 1.0):
        new_state, metrics, _ = step(state, sampler(state.step), jnp.asarray(lr_scale, jnp.float32))
        return new_state, metrics

    return jax.jit(train_step, donate_argnums=0)


def make_batch_train_step(cfg: StepConfig, mesh: jax.sharding.Mesh) -> Callable:
    """The same step on a given global batch (no sampling): ``(state, batch, lr_scale=1) -> (state, metrics, grads)``.

    ``batch`` leaves are ``[grad_accum, B_global, ...]`` sharded as ``P(None, "data")``; ``grads`` are the averaged
    full-batch gradients. Used to check the data-parallel step against a single device on identical data.
    """
    step = _batch_step(cfg, mesh)
    return jax.jit(lambda state, batch, lr_scale=1.0: step(state, batch, jnp.asarray(lr_scale, jnp.float32)))


def make_eval_step(stage: Stage, spec: BatchSpec, seed: int, mesh: jax.sharding.Mesh) -> Callable:
    """The jitted data-parallel validation step ``(variables, frozen, step, index) -> {metric: [F]}``.

    Each device draws ``spec.batch_size`` fresh datasets from ``fold_in(eval_key, step, index, device)``. The result
    holds, per mechanism family ``f`` of ``spec`` (in :func:`eval_families` order), the sums over all devices' datasets
    of that family of the per-dataset errors (``"rmse"``, ``"rmse_zero"``; see :meth:`Stage.per_dataset_errors`) and
    their ``"count"``. ``variables`` are normally the EMA parameters. No gradients, so ``check_vma=False`` (see
    :func:`make_sampler`).
    """
    base = stream_key(seed, stage.name, STREAM_EVAL)
    families = eval_families(spec)
    family_of_combination = jnp.asarray([families.index(p.mechanism.func) for p, _ in spec.combinations], jnp.int32)

    def per_device_eval(variables, frozen, step, index):
        key = jax.random.fold_in(jax.random.fold_in(base, step), index)
        key = jax.random.fold_in(key, lax.axis_index(DATA_AXIS))
        batch = sample_batch(key, spec)
        family = family_of_combination[combination_indices(key, spec)]  # [B]
        onehot = (family[:, None] == jnp.arange(len(families))[None, :]).astype(jnp.float32)  # [B, F]
        errors = stage.per_dataset_errors(variables, frozen, batch)
        sums = {k: v @ onehot for k, v in errors.items()}
        sums["count"] = jnp.sum(onehot, axis=0)
        return jax.tree.map(lambda a: lax.psum(a, DATA_AXIS), sums)

    return jax.jit(jax.shard_map(per_device_eval, mesh=mesh, in_specs=(P(),) * 4, out_specs=P(), check_vma=False))


def eval_families(spec: BatchSpec) -> tuple[str, ...]:
    """The mechanism families of a spec's priors, in first-appearance order."""
    return tuple(dict.fromkeys(p.mechanism.func for p in spec.priors))
