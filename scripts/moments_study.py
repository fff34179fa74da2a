"""Continued training with and without the source's Adam moments, on the same data stream, side by side.

python scripts/moments_study.py --source WORKDIR --out workdir/moments [--steps 400] [--seed 10]

From one ``train.py`` workdir (its latest stage-2 checkpoint), stage 2 is continued ``--steps`` steps three ways, each
with the same seed (so the same datasets, step for step) and a constant learning rate after the warm-up (the run
config's peak; a step-based schedule, so nothing depends on timing):

- ``fresh``: today's behaviour, a fresh Adam and the config's warm-up;
- ``moments``: the source's Adam moments (``--config.init_moments``) and the same warm-up;
- ``moments_no_warmup``: the source's moments and no warm-up (what carrying them could save).

It prints, per arm, the mean training loss over windows of steps (paired: the same batches) and the fixed-set
validation RMSE of stage 2 every ``--eval-every`` steps, and writes them to ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ARMS = {
    "fresh": [],
    "moments": ["--config.init_moments=True"],
    "moments_no_warmup": ["--config.init_moments=True", "--config.decoder.optim.warmup_steps=0"],
}


def _records(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("stage") == "decoder"]


def summarise(workdir: str, windows: list[tuple[int, int]]) -> dict:
    """Mean training loss per window of steps ``(a, b]`` and the validation points of a finished arm."""
    recs = _records(workdir)
    loss = {}
    for a, b in windows:
        vals = [r["loss"] for r in recs if "loss" in r and a < r["step"] <= b]
        loss[f"{a}-{b}"] = sum(vals) / len(vals) if vals else None
    val = {r["step"]: r["val_rmse"] for r in recs if "val_rmse" in r}
    return dict(loss=loss, val=val)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/moments_study.py", description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, help="a train.py workdir with a stage-2 checkpoint")
    p.add_argument("--out", required=True, help="a directory for the arms' workdirs and summary.json")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=10, help="the continuation's seed (new to the source's lineage)")
    p.add_argument("--lr", type=float, default=2.5e-4, help="the peak (and constant) learning rate")
    p.add_argument("--config", default="configs/cpu.py:steps", help="a step-bounded config")
    args = p.parse_args(argv)
    out = {}
    for arm, extra in ARMS.items():
        workdir = os.path.join(args.out, arm)
        if not os.path.exists(os.path.join(workdir, "export")):
            cmd = [sys.executable, "train.py", "--config", args.config, "--workdir", workdir, "--stage", "decoder",
                   f"--config.init_from={args.source}", f"--config.seed={args.seed}",
                   f"--config.decoder.steps={args.steps}",
                   f"--config.decoder.optim.lr={args.lr}", "--config.decoder.optim.decay_steps=1000000",
                   "--config.log_every=10", f"--config.eval_every={args.eval_every}",
                   f"--config.checkpoint_every={args.steps}", *extra]  # fmt: skip
            print(" ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        quarter = args.steps // 4
        windows = [(0, quarter), (quarter, 2 * quarter), (2 * quarter, args.steps)]
        out[arm] = summarise(workdir, windows)
        print(arm, json.dumps(out[arm]), flush=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(dict(source=os.path.abspath(args.source), steps=args.steps, seed=args.seed, arms=out), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
