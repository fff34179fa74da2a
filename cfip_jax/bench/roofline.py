"""The training step against this machine's roofline: where its FLOPs are, and how fast each kind runs.

First the machine's measured peak: a plain ``size × size × size`` dot in float32 and in bfloat16 (float32
accumulation), jitted, median of repeats. Then, for each stage of a run config (default ``configs/cpu.py``), the
compiled training step — the same function ``train.py`` runs, built by :mod:`cfip_jax.bench.train` — is traced with
``jax.profiler`` for a few steps, and every executed XLA operation is charged to an operation class and a direction:

- classes (from the operation's ``op_name``, :func:`cfip_jax.bench.train.part_of`): sample attention, node attention,
  MLPs and head, projections (the remaining operations that contain a matrix product), norms and elementwise (the
  rest of the network), the optimiser and EMA, and the sampler;
- direction: forward, or backward (operations under ``transpose(jvp(…))``).

Each operation's FLOPs are its matrix products' (``dot`` instructions, also inside the fusion it calls:
2 × output elements × contracted size), read from the compiled HLO; elementwise work is not counted, so the
"norms and elementwise" rows show time, not a rate. Per row: GFLOP per step, milliseconds per step (traced; the
profiler adds a little to each operation; operations that XLA runs at the same time on different threads share the
time they overlap, :func:`cfip_jax.bench.train.exclusive_durations`, so the rows sum to the traced wall time and a
rate is not halved by a neighbour), achieved GFLOP/s, share of the traced step, and the achieved rate as a
fraction of the float32 and the bfloat16 peaks. The step's whole rate from XLA's cost analysis (all FLOPs, untraced
time) closes each stage.

Usage: ``python -m cfip_jax.bench.roofline [--config cpu] [--steps 3] [--peak-size 2048] [--json PATH]``
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import re
import statistics
import time

import jax
import jax.numpy as jnp

from cfip_jax.bench import train as train_bench
from cfip_jax.train.step import make_train_step

CLASSES = ("sample attention", "node attention", "MLPs and head", "projections", "norms and elementwise")
_SHAPE = re.compile(r"^(?:\(.*\)|\w+)\[([\d,]*)\]")
_DEF = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\w+\[[\d,]*\])")
_PARAM = re.compile(r"([\w.\-]+): (\w+\[[\d,]*\])")


def dot_peak(dtype, size: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of a jitted ``size³`` dot in ``dtype`` (float32 accumulation), median of ``reps`` after a warm-up."""
    a = jnp.ones((size, size), dtype)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    jax.block_until_ready(f(a, a))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(f(a, a))
        times.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(times) / 1e9


def _dims(shape: str) -> list[int]:
    m = _SHAPE.match(shape)
    return [int(v) for v in m.group(1).split(",") if v] if m else []


def hlo_dot_flops(hlo_text: str) -> dict[str, float]:
    """Instruction name → the FLOPs of its matrix products, for every instruction of a compiled program's HLO text
    that runs as an operation of its own (not those inside a fusion: they are charged to the fusion).

    A ``dot`` costs 2 × (output elements) × (product of the left operand's contracting dimensions); a fusion costs
    the dots of the computation it calls (recursively). Loops (``while``) are not unrolled: their body's
    instructions are charged each time they run, which is how a trace sees them.
    """
    shapes: dict[str, list[int]] = {}
    own: dict[str, float] = {}
    calls: dict[str, list[str]] = {}
    members: dict[str, list[str]] = collections.defaultdict(list)  # computation → its instructions
    computation = None
    for line in hlo_text.splitlines():
        if not line.startswith(" ") and line.rstrip().endswith("{"):
            computation = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            for name, shape in _PARAM.findall(line.split(" -> ")[0]):
                shapes[name] = _dims(shape)
            continue
        m = _DEF.match(line)
        if not m:
            continue
        name, shape = m.group(1), m.group(2)
        shapes[name] = _dims(shape)
        members[computation].append(name)
        own[name] = 0.0
        if " dot(" in line:
            operands = re.search(r" dot\(([^)]*)\)", line).group(1)
            lhs = operands.split(",")[0].strip().split()[-1].lstrip("%")
            contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line)
            dims = [int(v) for v in contracting.group(1).split(",") if v] if contracting else []
            size = math.prod(shapes.get(lhs, [0])[d] for d in dims) if lhs in shapes else 0
            own[name] = 2.0 * math.prod(shapes[name]) * size
        called = re.search(r"\bcalls=%?([\w.\-]+)", line)
        if called and " fusion(" in line:
            calls[name] = [called.group(1)]

    def total(name: str, depth: int = 0) -> float:
        inner = sum(total(i, depth + 1) for c in calls.get(name, ()) for i in members.get(c, ())) if depth < 8 else 0
        return own.get(name, 0.0) + inner

    fused = {i for callees in calls.values() for c in callees for i in members.get(c, ())}
    return {name: total(name) for name in own if name not in fused}


def classify(op_name: str, flops: float) -> tuple[str, str]:
    """``(class, direction)`` of one operation (see the module docstring)."""
    part, component = train_bench.part_of(op_name)
    if part in ("sampler", "optimiser/EMA"):
        return part, ""
    if component == "projections/norms/other":
        component = "projections" if flops > 0 else "norms and elementwise"
    return component, "backward" if part == "backward" else "forward"


def stage_roofline(config, stage_name: str, steps: int) -> dict:
    """Rows ``{class, direction, gflop, ms, gflops, share}`` per step of one stage, and its whole-step rate."""
    mesh, cfg, state = train_bench.build_step(config, stage_name)
    scale = jnp.ones((), jnp.float32)
    compiled = make_train_step(cfg, mesh).lower(state, scale).compile()
    holder = {"state": compiled(state, scale)[0]}
    jax.block_until_ready(holder["state"])

    def one_step():
        holder["state"] = compiled(holder["state"], scale)[0]
        return holder["state"]

    step_s = train_bench.median_time(one_step, steps)
    text = compiled.as_text()
    names, flops = train_bench.op_names(text), hlo_dot_flops(text)
    time_us: collections.Counter = collections.Counter()
    work: collections.Counter = collections.Counter()
    for name, dur in train_bench.trace_ops(compiled, holder, scale, steps, names):
        key = classify(names[name], flops.get(name, 0.0))
        time_us[key] += dur / steps
        work[key] += flops.get(name, 0.0) / steps
    traced = sum(time_us.values()) or 1.0
    rows = [dict(cls=c, direction=d, gflop=work[(c, d)] / 1e9, ms=time_us[(c, d)] / 1e3,
                 gflops=work[(c, d)] / max(time_us[(c, d)], 1e-9) / 1e3, share=time_us[(c, d)] / traced)
            for c, d in sorted(time_us, key=lambda k: -time_us[k])]  # fmt: skip
    total_flops = train_bench.step_flops(compiled)
    return dict(stage=stage_name, rows=rows, step_s=step_s, step_gflop=total_flops / 1e9,
                step_gflops=total_flops / step_s / 1e9, traced_ms=traced / 1e3)  # fmt: skip


def _print_stage(result: dict, peaks: dict[str, float]) -> None:
    rate = result["step_gflops"]
    print(f"\n{result['stage']}: step {result['step_s'] * 1e3:.0f} ms, {result['step_gflop']:.1f} GFLOP (XLA cost "
          f"analysis) → {rate:.1f} GFLOP/s = {100 * rate / peaks['float32']:.0f} % of the float32 peak, "
          f"{100 * rate / peaks['bfloat16']:.0f} % of the bfloat16 peak")  # fmt: skip
    print(f"{'class':<24}{'direction':<10}{'GFLOP':>8}{'ms':>9}{'GFLOP/s':>9}{'share':>8}{'of f32':>8}{'of bf16':>8}")
    for r in result["rows"]:
        rate = f"{r['gflops']:9.1f}" if r["gflop"] > 0 else f"{'-':>9}"
        f32 = f"{100 * r['gflops'] / peaks['float32']:7.0f}%" if r["gflop"] > 0 else f"{'-':>8}"
        bf16 = f"{100 * r['gflops'] / peaks['bfloat16']:7.0f}%" if r["gflop"] > 0 else f"{'-':>8}"
        print(f"{r['cls']:<24}{r['direction']:<10}{r['gflop']:8.2f}{r['ms']:9.1f}{rate}{100 * r['share']:7.1f}%{f32}"
              f"{bf16}")  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m cfip_jax.bench.roofline", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="cpu", help="config name under configs/ (run from the repository root)")
    p.add_argument("--stages", default="encoder,decoder")
    p.add_argument("--steps", type=int, default=3, help="timed and traced steps per stage")
    p.add_argument("--peak-size", type=int, default=2048, help="side of the square dots of the peak (0: skip)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    if args.steps < 1 or args.peak_size < 0 or not stages or any(s not in ("encoder", "decoder") for s in stages):
        p.error("--steps must be >= 1, --peak-size >= 0, --stages from encoder,decoder")
    config = train_bench.run_config(args.config)
    peaks = {"float32": math.nan, "bfloat16": math.nan}
    if args.peak_size:
        peaks = {name: dot_peak(dt, args.peak_size) for name, dt in (("float32", jnp.float32),
                                                                       ("bfloat16", jnp.bfloat16))}  # fmt: skip
    print(f"peak (dot {args.peak_size}³, {jax.device_count()} device(s)): float32 {peaks['float32']:.0f} GFLOP/s, "
          f"bfloat16 {peaks['bfloat16']:.0f} GFLOP/s")  # fmt: skip
    out = dict(config=args.config, peaks=peaks, stages=[])
    for stage in stages:
        result = stage_roofline(config, stage, args.steps)
        _print_stage(result, peaks)
        out["stages"].append(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
