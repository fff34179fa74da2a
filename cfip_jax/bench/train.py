"""Training throughput: steps/s, datasets/s and where a step's time goes, per config and stage.

For each config (``configs/NAME.py``, imported as ``configs.NAME``: run from the repository root) and stage, on this
machine's devices, the compiled training step (sampling included, the same function ``train.py`` runs) is timed over a
few steps after compilation, and so is the data sampler alone (the same jitted, data-parallel call that the step
makes). The stage-2 step uses a randomly initialised frozen encoder (same cost as a trained one). Times are medians
with ``block_until_ready``. Ends with one JSON line.

``--breakdown``: the share of a step taken by each part, from a ``jax.profiler`` trace of a few steps. Every XLA
operation of the trace is mapped to the operation of the compiled program it ran (by name) and from there to the
source it came from (its ``op_name``, which carries the Flax module path and the ``jax.named_scope`` of the attention
kernels): the sampler (``_sample_batch``), the backward pass (ops under ``transpose(jvp(…))``), the optimiser and EMA
(ops outside the loss), and the forward pass split into sample attention (``sample_attention``), node attention
(``dag_attention``: the encoder's node blocks and the decoder's adaLN blocks), MLPs and head (``mlp``, ``norm_mlp``,
``head_*``, the decoder's ``out``) and the rest (projections, norms, modulation, embeddings). Shares are of the traced
wall time: XLA runs independent operations on several threads at once, so each operation is charged its share of the
time it ran alongside others, and a loop its time outside its body's operations (:func:`exclusive_durations`; the
profiler adds a little time to each operation, so many small ones weigh somewhat more than in an untraced step); the
backward pass is split the same way.

``--against PATH``: the same figures for a second checkout (e.g. a worktree of an older commit), measured in turns with
this one — A, B, A, B, … in separate processes, ``--rounds`` times — and the ratio of the medians.

``--set KEY=VALUE`` (repeatable): an override applied to every config before it is measured, as ``train.py``'s
``--config.KEY=VALUE`` (e.g. ``--set encoder.model.num_heads=3 --set encoder.model.key_dim=32``): how the training
study measures a variant's speed.

Usage: ``python -m cfip_jax.bench.train [--configs default,paper] [--steps 5] [--paper_steps 2] [--breakdown]
[--against PATH --rounds 3] [--stages encoder,decoder] [--set KEY=VALUE ...]``
"""

from __future__ import annotations

import argparse
import ast
import collections
import glob
import gzip
import importlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

from cfip_jax.train.ema import EMAConfig
from cfip_jax.train.optim import learning_rate_schedule, make_optimizer
from cfip_jax.train.parallel import local_batch_size, make_mesh, replicated
from cfip_jax.train.stage import build_stage, data_spec
from cfip_jax.train.state import create_state
from cfip_jax.train.step import STREAM_TRAIN, StepConfig, make_sampler, make_train_step, stream_key

PARTS = ("sampler", "sample attention", "node attention", "MLPs and head", "projections/norms/other", "backward",
         "optimiser/EMA")  # fmt: skip


def run_config(name: str):
    """``configs.{name}.get_config()`` (run from the repository root, where ``configs/`` is)."""
    try:
        module = importlib.import_module(f"configs.{name}")
    except ModuleNotFoundError as err:
        raise SystemExit(f"error: config {name!r} not found ({err}); run from the repository root") from None
    return module.get_config()


def parse_override(text: str) -> tuple[str, object]:
    """``"a.b.c=VALUE"`` → ``("a.b.c", value)``: the value as a Python literal where it is one, else the string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {text!r}: expected KEY=VALUE")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def apply_overrides(config, overrides: list[tuple[str, object]]):
    """``config`` with each ``(dotted key, value)`` set; a key the config does not have is refused (one line)."""
    for key, value in overrides:
        *path, leaf = key.split(".")
        node = config
        for part in path:
            if part not in node:
                raise SystemExit(f"error: --set {key}: the config has no {part!r}")
            node = node[part]
        if leaf not in node:
            raise SystemExit(f"error: --set {key}: the config has no {leaf!r}")
        try:
            node[leaf] = value
        except TypeError as err:
            raise SystemExit(f"error: --set {key}: {err}") from None
    return config


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_step(config, stage_name: str):
    """``(mesh, StepConfig, fresh state)`` of a stage of a run config, as train.py builds them (fixed-step schedule)."""
    mesh = make_mesh()
    scfg = config[stage_name]
    spec = data_spec(config, local_batch_size(config.data.batch_size, mesh, "data.batch_size"),
                     pack=bool(config.data.pack), stage=stage_name)  # fmt: skip
    cfg = StepConfig(
        stage=build_stage(config, stage_name),
        spec=spec,
        tx=make_optimizer(scfg.optim),
        schedule=learning_rate_schedule(scfg.optim),
        ema=EMAConfig.from_config(scfg.ema),
        grad_accum=int(scfg.grad_accum),
        seed=int(config.seed),
    )
    state = jax.jit(lambda: create_state(config, stage_name, jax.random.key(0)), out_shardings=replicated(mesh))()
    return mesh, cfg, state


def step_flops(compiled) -> float:
    """FLOPs of one call of a compiled step, from XLA's cost analysis (0 when the backend gives none)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))


def bench_stage(config, stage_name: str, steps: int, breakdown: bool = False) -> dict:
    """Time one stage's training step and its sampler (and, with ``breakdown``, its parts)."""
    mesh, cfg, state = build_step(config, stage_name)
    train_step = make_train_step(cfg, mesh)
    sampler = jax.jit(make_sampler(cfg.spec, stream_key(config.seed, stage_name, STREAM_TRAIN), mesh, cfg.grad_accum))
    scale = jnp.ones((), jnp.float32)
    start = time.perf_counter()
    compiled = train_step.lower(state, scale).compile()
    state, metrics = compiled(state, scale)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    holder = {"state": state}

    def one_step():
        holder["state"], m = compiled(holder["state"], scale)
        return m

    step_s = median_time(one_step, steps)
    jax.block_until_ready(sampler(holder["state"].step))  # compile
    sample_s = median_time(lambda: sampler(holder["state"].step), max(steps, 3))
    datasets = config.data.batch_size * int(cfg.grad_accum)
    flops = step_flops(compiled)
    out = {
        "gflops": flops / step_s / 1e9,
        "steps_per_sec": 1.0 / step_s,
        "datasets_per_sec": datasets / step_s,
        "sample_share": sample_s / step_s,
        "step_s": step_s,
        "sample_s": sample_s,
        "compile_s": compile_s,
        "n": int(cfg.spec.n),
    }
    if breakdown:
        out["parts"], out["backward_parts"] = profile_parts(compiled, holder, scale, steps=max(2, min(steps, 4)))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The breakdown
# ---------------------------------------------------------------------------------------------------------------
def op_names(hlo_text: str) -> dict[str, str]:
    """Instruction name → ``op_name`` metadata, for every instruction of the compiled program (nested ones too)."""
    names = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{[^}]*op_name=\"([^\"]*)\"", line)
        if m:
            names[m.group(1)] = m.group(2)
    return names


def part_of(op_name: str) -> tuple[str, str]:
    """``(part, component)`` of one operation from its ``op_name`` (see the module docstring)."""
    if "_sample_batch" in op_name:
        return "sampler", "sampler"
    if "jvp(" not in op_name:
        return "optimiser/EMA", "optimiser/EMA"
    if "sample_attention" in op_name:
        component = "sample attention"
    elif "dag_attention" in op_name:
        component = "node attention"
    elif re.search(r"/(mlp|norm_mlp|head_\w+)/", op_name) or re.search(r"CondFiPDecoder\.decode/(out|norm)/", op_name):
        component = "MLPs and head"
    else:
        component = "projections/norms/other"
    return ("backward" if "transpose(jvp(" in op_name else component), component


def exclusive_durations(events: list[tuple[str, float, float, object]]) -> list[tuple[str, float]]:
    """Each operation's share of the wall time, from trace events ``(name, start µs, duration µs, thread)``.

    XLA's CPU runtime runs independent operations on several threads at once, and a loop's event contains its body's
    events on the same thread, so summed durations count some wall time twice. Here an event's own time excludes the
    events nested in it on its thread, and where ``k`` operations run at once each is charged ``1/k`` of that time:
    the charges sum to the time during which any operation ran.

    Returns:
      ``(name, µs)`` per event, in the order given.
    """
    segments = []  # (start, end, event index): the parts of each event not covered by an event nested in it
    threads = collections.defaultdict(list)
    for i, (_, start, dur, thread) in enumerate(events):
        threads[thread].append((start, -dur, i))
    for items in threads.values():
        stack = []  # [end, index, cursor] of the open events, innermost last
        for start, neg_dur, i in sorted(items) + [(math.inf, 0.0, None)]:  # the sentinel closes every event
            while stack and stack[-1][0] <= start:
                end, j, cursor = stack.pop()
                segments.append((cursor, end, j))
                if stack:
                    stack[-1][2] = end
            if i is not None:
                if stack:
                    segments.append((stack[-1][2], start, stack[-1][1]))
                stack.append([start - neg_dur, i, start])
    marks = sorted([(a, 1, j) for a, b, j in segments if b > a] + [(b, -1, j) for a, b, j in segments if b > a])
    charged, active, last = [0.0] * len(events), collections.Counter(), None
    for t, change, j in marks:
        if active and last is not None and t > last:
            share = (t - last) / sum(active.values())
            for k, count in active.items():
                charged[k] += share * count
        active[j] += change
        if active[j] == 0:
            del active[j]
        last = t
    return [(name, charged[i]) for i, (name, *_) in enumerate(events)]


def trace_ops(compiled, holder: dict, scale, steps: int, names: dict[str, str]) -> list[tuple[str, float]]:
    """``(instruction name, µs)`` of every operation of ``names`` (:func:`op_names`) executed in ``steps`` traced
    steps (``jax.profiler``), each charged its share of the wall time (:func:`exclusive_durations`)."""
    with tempfile.TemporaryDirectory() as logdir:
        with jax.profiler.trace(logdir, create_perfetto_trace=True):
            for _ in range(steps):
                holder["state"], m = compiled(holder["state"], scale)
                jax.block_until_ready(m)
        (path,) = glob.glob(os.path.join(logdir, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    ops = [(e["name"], float(e["ts"]), float(e["dur"]), (e.get("pid"), e.get("tid"))) for e in events
           if e.get("ph") == "X" and e.get("name") in names and "dur" in e and "ts" in e]  # fmt: skip
    return exclusive_durations(ops)


def profile_parts(compiled, holder: dict, scale, steps: int) -> tuple[dict[str, float], dict[str, float]]:
    """Shares of the traced time by part, and of the backward pass by component (each summing to 1)."""
    names = op_names(compiled.as_text())
    parts: collections.Counter = collections.Counter()
    backward: collections.Counter = collections.Counter()
    for name, dur in trace_ops(compiled, holder, scale, steps, names):
        part, component = part_of(names[name])
        parts[part] += dur
        if part == "backward":
            backward[component] += dur
    total, total_bwd = sum(parts.values()) or 1.0, sum(backward.values()) or 1.0
    return ({p: parts[p] / total for p in PARTS}, {c: v / total_bwd for c, v in sorted(backward.items())})


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def _against(args, names: list[str]) -> dict:
    """Alternate processes of this checkout and ``args.against``; medians of datasets/s and their ratio."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    trees = {"new": here, "old": os.path.abspath(args.against)}
    cmd = [sys.executable, "-m", "cfip_jax.bench.train", "--configs", ",".join(names), "--steps", str(args.steps),
           "--paper_steps", str(args.paper_steps)]  # fmt: skip
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    for r in range(args.rounds):
        for label, tree in trees.items():
            env = dict(os.environ, PYTHONPATH=tree)
            done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True)
            runs[label].append(json.loads(done.stdout.strip().splitlines()[-1]))
            rates = (f"{k} {v}" for k, v in runs[label][-1].items() if k.endswith("datasets_per_sec"))
            print(f"round {r + 1} {label}: " + ", ".join(rates), flush=True)
    out = {}
    for key in (k for k in runs["new"][0] if k.endswith("datasets_per_sec")):
        new = statistics.median(r[key] for r in runs["new"])
        old = statistics.median(r[key] for r in runs["old"] if key in r)
        out.update({f"{key}_new": round(new, 3), f"{key}_old": round(old, 3), f"{key}_ratio": round(new / old, 3)})
        print(f"{key}: new {new:.2f}, old {old:.2f} (medians of {args.rounds} turns each) → {new / old:.2f}×")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="default,paper", help="comma-separated config names under configs/")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per stage (after compilation)")
    parser.add_argument("--paper_steps", type=int, default=2, help="timed steps per stage for the paper config")
    parser.add_argument("--breakdown", action="store_true", help="profile the step and print the share of each part")
    parser.add_argument("--against", help="a second checkout to measure in turns with this one")
    parser.add_argument("--rounds", type=int, default=3, help="turns per checkout with --against")
    parser.add_argument("--stages", default="encoder,decoder", help="comma-separated stages to measure")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every config (repeatable)"
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.paper_steps < 1 or args.rounds < 1:
        parser.error("--steps, --paper_steps and --rounds must be >= 1")
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if not stages or not set(stages) <= {"encoder", "decoder"}:
        parser.error(f"--stages {args.stages!r}: expected encoder, decoder or both")
    try:
        overrides = [parse_override(t) for t in args.set]
    except ValueError as err:
        parser.error(str(err))
    if args.against:
        if overrides:
            parser.error("--set applies to this checkout only; it cannot be combined with --against")
        if not os.path.isdir(os.path.join(args.against, "cfip_jax")):
            parser.error(f"--against {args.against}: not a checkout of this project")
        results = _against(args, names)
        print(json.dumps(results))
        return results
    devices = jax.devices()
    print(f"devices: {len(devices)} × {devices[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} CPU cores")
    results: dict = {"backend": jax.default_backend(), "devices": len(devices)}
    for name in names:
        config = apply_overrides(run_config(name), overrides)
        steps = args.paper_steps if name == "paper" else args.steps
        for stage_name in stages:
            r = bench_stage(config, stage_name, steps, breakdown=args.breakdown)
            batch = f"{config.data.batch_size}×{config[stage_name].grad_accum}"
            print(
                f"{name:>8} {stage_name:>7} (batch {batch}, d {max(config.data.node_counts)}, n {r['n']}): "
                f"{r['steps_per_sec']:8.3f} steps/s  {r['datasets_per_sec']:8.2f} datasets/s  "
                f"{r['gflops']:6.1f} GFLOP/s  sampling {100 * r['sample_share']:5.1f}% of a step  "
                f"(step {r['step_s']:.3f} s, "
                f"sampler {r['sample_s']:.4f} s, compile {r['compile_s']:.1f} s)",
                flush=True,
            )
            for k in ("steps_per_sec", "datasets_per_sec", "sample_share", "gflops"):
                results[f"{name}_{stage_name}_{k}"] = round(r[k], 4)
            if args.breakdown:
                print("         parts: " + ", ".join(f"{p} {100 * s:.1f}%" for p, s in r["parts"].items()))
                bwd = r["backward_parts"].items()
                print("         backward: " + ", ".join(f"{p} {100 * s:.1f}%" for p, s in bwd))
                for p, s in r["parts"].items():
                    results[f"{name}_{stage_name}_share_{p.split()[0].split('/')[0].lower()}"] = round(s, 4)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
