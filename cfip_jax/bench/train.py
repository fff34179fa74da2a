"""Training throughput: steps/s, datasets/s and the share of a step spent sampling SCM data, per config and stage.

For each config (``configs/default.py``, ``configs/paper.py``) and stage, on this machine's devices, the compiled
training step (sampling included, the same function ``train.py`` runs) is timed over a few steps after compilation,
and so is the data sampler alone (the same jitted, data-parallel ``sample_batch`` call that the step makes). The
stage-2 step uses a randomly initialised frozen encoder (same cost as a trained one). Times are medians with
``block_until_ready``. Ends with one JSON line.

Usage: ``python -m cfip_jax.bench.train [--configs default,paper] [--steps 5] [--paper_steps 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time

import jax

from cfip_jax import loop
from cfip_jax.config_files import load_module
from cfip_jax.ema import EMAConfig
from cfip_jax.optim import learning_rate_schedule, make_optimizer
from cfip_jax.parallel import local_batch_size, make_mesh, replicated
from cfip_jax.train_state import TrainState
from cfip_jax.train_step import STREAM_TRAIN, StepConfig, make_sampler, make_train_step, stream_key


def load_config(name: str):
    """``get_config()`` of ``configs/{name}.py`` (beside the package in a source checkout, else under the cwd)."""
    candidates = [pathlib.Path(__file__).resolve().parents[2] / "configs", pathlib.Path.cwd() / "configs"]
    for folder in candidates:
        path = folder / f"{name}.py"
        if path.exists():
            return load_module(path).get_config()
    raise ValueError(f"config {name!r} not found in {', '.join(map(str, candidates))}")


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_stage(config, stage_name: str, steps: int) -> dict[str, float]:
    """Time one stage's training step and its sampler; returns the figures of that stage."""
    mesh = make_mesh()
    stage = loop.build_stage(config, stage_name)
    scfg = config[stage_name]
    spec = loop.data_spec(
        config, local_batch_size(config.data.batch_size, mesh, "data.batch_size"), pack=bool(config.data.pack)
    )
    tx = make_optimizer(scfg.optim)
    cfg = StepConfig(
        stage=stage,
        spec=spec,
        tx=tx,
        schedule=learning_rate_schedule(scfg.optim),
        ema=EMAConfig.from_config(scfg.ema),
        grad_accum=int(scfg.grad_accum),
        seed=int(config.seed),
    )
    key = jax.random.key(0)

    def init():
        frozen = stage.init_frozen(key, spec) if stage_name == "decoder" else {}
        return TrainState.create(stage.init(key, spec), tx, frozen)

    state = jax.jit(init, out_shardings=replicated(mesh))()
    train_step = make_train_step(cfg, mesh)
    sampler = jax.jit(make_sampler(spec, stream_key(config.seed, stage_name, STREAM_TRAIN), mesh, cfg.grad_accum))

    start = time.perf_counter()
    state, metrics = train_step(state)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    holder = {"state": state}

    def one_step():
        holder["state"], m = train_step(holder["state"])
        return m

    step_s = _median_time(one_step, steps)
    jax.block_until_ready(sampler(holder["state"].step))  # compile
    sample_s = _median_time(lambda: sampler(holder["state"].step), max(steps, 3))
    datasets = config.data.batch_size * int(scfg.grad_accum)
    return {
        "steps_per_sec": 1.0 / step_s,
        "datasets_per_sec": datasets / step_s,
        "sample_share": sample_s / step_s,
        "step_s": step_s,
        "sample_s": sample_s,
        "compile_s": compile_s,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="default,paper", help="comma-separated config names under configs/")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per stage (after compilation)")
    parser.add_argument("--paper_steps", type=int, default=2, help="timed steps per stage for the paper config")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.paper_steps < 1:
        parser.error("--steps and --paper_steps must be >= 1")
    devices = jax.devices()
    print(f"devices: {len(devices)} × {devices[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} CPU cores")
    results: dict[str, float | str] = {"backend": jax.default_backend(), "devices": len(devices)}
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        config = load_config(name)
        steps = args.paper_steps if name == "paper" else args.steps
        for stage_name in ("encoder", "decoder"):
            r = bench_stage(config, stage_name, steps)
            batch = f"{config.data.batch_size}×{config[stage_name].grad_accum}"
            print(
                f"{name:>8} {stage_name:>7} (batch {batch}, d {max(config.data.node_counts)}, n {config.data.n}): "
                f"{r['steps_per_sec']:8.3f} steps/s  {r['datasets_per_sec']:8.2f} datasets/s  "
                f"sampling {100 * r['sample_share']:5.1f}% of a step  (step {r['step_s']:.3f} s, "
                f"sampler {r['sample_s']:.4f} s, compile {r['compile_s']:.1f} s)",
                flush=True,
            )
            for k in ("steps_per_sec", "datasets_per_sec", "sample_share"):
                results[f"{name}_{stage_name}_{k}"] = round(r[k], 4)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
