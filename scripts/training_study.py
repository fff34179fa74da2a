"""The training-recipe study behind docs/training_study.md: recipes at an equal CPU budget, their curves, their scores.

Every recipe is ``configs/cpu.py`` with a few overrides, trained with ``max_seconds`` CPU seconds
(``budget_clock="process"``: the budget counts the process's own CPU time, so recipes that share the machine with
other work still get equal compute) and validated as it goes on the fixed 96-dataset set
(``eval.fixed=True``, :mod:`cfip_jax.train.validation_set`). Runs go two at a time, each on its own core (``taskset``).

    python scripts/training_study.py run --out study [--seconds 3000] [--only base,wide]
    python scripts/training_study.py report --out study --doc docs/training_study.md

``run`` skips recipes whose workdir already holds a finished decoder stage (a rerun resumes the others); ``report``
reads each workdir's ``metrics.jsonl`` and writes the curves (validation RMSE against CPU minutes, per stage and
family), the final fixed-set scores with standard errors, and the suite scores of ``eval.py`` where they exist.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (what it changes, train.py overrides on top of configs/cpu.py)
RECIPES: dict[str, tuple[str, list[str]]] = {
    "base": ("configs/cpu.py as shipped (D 64, 2+2 layers, 4 datasets/step, n 400, lr 1e-3 / 2e-3, 25 % stage 1)", []),
    "wide": ("width D 96 (6 heads × 16, MLP 192, head 192)", [
        *(f"--config.{s}.model.{k}={v}" for s in ("encoder", "decoder")
          for k, v in (("d_model", 96), ("num_heads", 6), ("mlp_dim", 192))),
        "--config.encoder.model.head_dim=192"]),
    "deep": ("depth: 3 encoder layer pairs, 3 adaLN layers", [
        "--config.encoder.model.num_layers=3", "--config.decoder.model.num_layers=3"]),
    "batch8": ("8 datasets per step", ["--config.data.batch_size=8"]),
    "n200": ("stage 1 on 200 samples per dataset (stage 2 unchanged)", ["--config.data.encoder_n=200"]),
    "ctx300": ("stage 2 context / query split 300 / 100", ["--config.data.n_context=300"]),
    "lr2x": ("peak learning rates ×2 (2e-3 / 4e-3)", [
        "--config.encoder.optim.lr=0.002", "--config.decoder.optim.lr=0.004"]),
    "share50": ("half of the budget to stage 1", ["--config.encoder_share=0.5"]),
}  # fmt: skip
COMMON = ["--config.budget_clock=process", "--config.eval.fixed=True", "--config.eval_every=100",
          "--config.checkpoint_every=500", "--config.log_every=50"]  # fmt: skip


def _finished(workdir: str) -> bool:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return any(r.get("stage") == "decoder" and "val_rmse" in r and r.get("final") for r in rows) or _budget_done(
        workdir
    )


def _budget_done(workdir: str) -> bool:
    ckpts = os.path.join(workdir, "decoder", "checkpoints")
    if not os.path.isdir(ckpts):
        return False
    for step in sorted((int(s) for s in os.listdir(ckpts) if s.isdigit()), reverse=True):
        path = os.path.join(ckpts, str(step), "budget", "metadata")
        for candidate in (path, os.path.join(ckpts, str(step), "budget")):
            if os.path.isfile(candidate):
                try:
                    with open(candidate) as f:
                        return bool(json.load(f).get("finished"))
                except (OSError, ValueError):
                    return False
        return False
    return False


def run(args) -> None:
    names = args.only.split(",") if args.only else list(RECIPES)
    queue = [n for n in names if not _finished(os.path.join(args.out, n))]
    running: dict[int, tuple[str, subprocess.Popen]] = {}
    os.makedirs(args.out, exist_ok=True)
    while queue or running:
        for core in range(args.parallel):
            if core not in running and queue:
                name = queue.pop(0)
                workdir = os.path.join(args.out, name)
                cmd = ["taskset", "-c", str(core), sys.executable, "train.py", "--config=configs/cpu.py",
                       f"--workdir={workdir}", f"--config.max_seconds={args.seconds}", *COMMON,
                       *RECIPES[name][1]]  # fmt: skip
                log = open(os.path.join(args.out, f"{name}.log"), "a")
                print(f"{time.strftime('%H:%M:%S')} start {name} on core {core}", flush=True)
                running[core] = (name, subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
        for core, (name, proc) in list(running.items()):
            if proc.poll() is not None:
                print(f"{time.strftime('%H:%M:%S')} {name} exited {proc.returncode}", flush=True)
                del running[core]
        time.sleep(10)


def _curves(workdir: str) -> dict[str, list[dict]]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {s: [r for r in rows if r.get("stage") == s and "val_rmse" in r] for s in ("encoder", "decoder")}


def report(args) -> None:
    """Curves and tables into ``args.doc``'s folder (see the module docstring)."""
    raise SystemExit("report: written when the study's runs are done")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("run", "report"))
    p.add_argument("--out", default="study")
    p.add_argument("--seconds", type=float, default=3000.0, help="CPU seconds per recipe (both stages)")
    p.add_argument("--parallel", type=int, default=2, help="runs at a time, one core each")
    p.add_argument("--only", help="comma-separated recipe names")
    p.add_argument("--doc", default="docs/training_study.md")
    args = p.parse_args()
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
