"""One command for an accelerator run: train both stages against a time budget, export, evaluate, report figures.

``scripts/gpu_train.sh OUT_DIR`` runs this module. Steps, each timed:

1. ``train.py --config CONFIG --workdir OUT_DIR/workdir`` (default ``configs/gpu.py``: a ``max_seconds`` budget,
   compilation included);
2. export the trained model to ``OUT_DIR/model`` (``model.json`` + ``params.npz``);
3. ``eval.py --checkpoint OUT_DIR/model --suite paper --suite-d 10,20 --methods cond-fip`` into ``OUT_DIR/eval``;
4. ``OUT_DIR/results.json``, ``OUT_DIR/summary.md`` (copied from the evaluation), ``OUT_DIR/metrics.jsonl`` (the
   training records) and ``OUT_DIR/figures.json``: per stage, steps, datasets seen, steps/s and datasets/s (from the
   records, compilation excluded), the training step's FLOPs (XLA's cost analysis of the lowered step) and the model
   FLOP utilisation against the device's peak bfloat16 rate (``--peak-tflops``); the wall time of each step above; the
   exported size; the device.

Refuses to run without a GPU unless ``--cpu`` is given (the CPU test of the script uses it with seconds-long budgets).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H200_BF16_TFLOPS = 989.0  # dense bfloat16 peak of an H200 (SXM), the reference for the model FLOP utilisation


def _run(cmd: list[str], log: str) -> float:
    """Run ``cmd`` in the repository root, output to the console and appended to ``log``; returns its wall time."""
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            sys.stdout.write(line)
            f.write(line)
        if proc.wait() != 0:
            raise SystemExit(f"error: {cmd[1]} failed with exit status {proc.returncode} (log: {log})")
    return time.perf_counter() - start


def stage_figures(records: list[dict], stage: str, batch: int) -> dict:
    """Steps, datasets and mean rates of a stage from its ``metrics.jsonl`` records (compilation excluded)."""
    rows = [r for r in records if r.get("stage") == stage and "steps_per_sec" in r]
    if not rows:
        return {}
    steps = max(r["step"] for r in rows)
    rates = [float(r["steps_per_sec"]) for r in rows[1:] if isinstance(r["steps_per_sec"], (int, float))]
    rate = sum(rates) / len(rates) if rates else float("nan")
    return dict(steps=steps, datasets=steps * batch, steps_per_sec=round(rate, 3),
                datasets_per_sec=round(rate * batch, 1))  # fmt: skip


def step_gflop(config, stage: str) -> float:
    """GFLOP of one training step of ``stage`` (XLA's cost analysis of the lowered step; nothing is compiled)."""
    import jax
    import jax.numpy as jnp

    from cfip_jax.bench.train import build_step
    from cfip_jax.train.step import make_train_step

    mesh, cfg, state = build_step(config, stage)
    cost = make_train_step(cfg, mesh).lower(state, jnp.ones((), jnp.float32)).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    jax.clear_caches()
    return float((cost or {}).get("flops", 0.0)) / 1e9


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="gpu_train.sh", description=__doc__.splitlines()[0])
    p.add_argument("out", help="output directory (created)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU when no GPU is visible (tests)")
    p.add_argument("--config", default="configs/gpu.py", help="run config file (default configs/gpu.py)")
    p.add_argument("--peak-tflops", type=float, default=H200_BF16_TFLOPS, help="device peak for the utilisation")
    p.add_argument("--train-arg", action="append", default=[], help="extra train.py flag (repeatable)")
    p.add_argument("--eval-arg", action="append", default=[], help="extra eval.py flag (repeatable)")
    args = p.parse_args(argv)
    import jax

    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus and not args.cpu:
        p.exit(2, f"error: no GPU visible (jax.devices() = {jax.devices()}); pass --cpu to run on the CPU\n")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    log, workdir, model_dir, eval_dir = (os.path.join(out, n) for n in ("log.txt", "workdir", "model", "eval"))
    py = sys.executable
    seconds = {}
    seconds["train"] = _run([py, "train.py", f"--config={args.config}", f"--workdir={workdir}", *args.train_arg], log)
    export = ("from cfip_jax import model_io; from cfip_jax.train.export import load_workdir; import sys; "
              "model_io.export(load_workdir(sys.argv[1]), sys.argv[2], trained_on=sys.argv[3])")  # fmt: skip
    device = str(gpus[0].device_kind if gpus else jax.devices()[0].device_kind)
    seconds["export"] = _run([py, "-c", export, workdir, model_dir, device], log)
    seconds["eval"] = _run([py, "eval.py", f"--checkpoint={model_dir}", "--suite=paper", "--suite-d=10,20",
                            "--methods=cond-fip", f"--out={eval_dir}", *args.eval_arg], log)  # fmt: skip
    for name in ("results.json", "summary.md"):
        shutil.copy(os.path.join(eval_dir, name), os.path.join(out, name))
    shutil.copy(os.path.join(workdir, "metrics.jsonl"), os.path.join(out, "metrics.jsonl"))

    from cfip_jax.train.metrics_writer import read_metrics

    with open(os.path.join(workdir, "config.json")) as f:
        import ml_collections

        config = ml_collections.ConfigDict(json.load(f))
    records = read_metrics(workdir)
    figures: dict = dict(device=device, seconds={k: round(v, 1) for k, v in seconds.items()})
    for stage in ("encoder", "decoder"):
        fig = stage_figures(records, stage, int(config.data.batch_size) * int(config[stage].grad_accum))
        gflop = step_gflop(config, stage)
        fig["step_gflop"] = round(gflop, 4)
        if fig.get("steps_per_sec") == fig.get("steps_per_sec"):  # not NaN
            fig["tflops_per_sec"] = round(gflop * fig["steps_per_sec"] / 1e3, 4)
            fig["mfu"] = float(f"{gflop * fig['steps_per_sec'] / 1e3 / args.peak_tflops:.4g}")
        figures[stage] = fig
    figures["model_mb"] = round(os.path.getsize(os.path.join(model_dir, "params.npz")) / 1e6, 2)
    with open(os.path.join(out, "figures.json"), "w") as f:
        json.dump(figures, f, indent=1)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
