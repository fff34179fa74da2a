"""The training-recipe study behind docs/training_study.md: recipes at an equal CPU budget, their curves, their scores.

Every recipe is the study's base — ``configs/cpu.py`` as it was when the study ran (:data:`BASE`: D 64, stage 1 on
400 samples, lr 1e-3 / 2e-3, 25 % of the budget to stage 1; the shipped config has since become the recipe the study
chose) — with a few overrides, trained with ``max_seconds`` CPU seconds
(``budget_clock="process"``: the budget counts the process's own CPU time, so recipes that share the machine with
other work still get equal compute) and validated as it goes on the fixed 96-dataset set
(``eval.fixed=True``, :mod:`cfip_jax.train.validation_set`). Runs go two at a time, each on its own core (``taskset``).

    python scripts/training_study.py run --out study [--seconds 3000] [--only base,wide]
    python scripts/training_study.py score --out study     # fixed-set scores with standard errors (NAME/fixed.json)
    python scripts/training_study.py report --out study --doc docs/training_study.md
    python scripts/training_study.py run --base cpu --out heads --seconds 1200   # variants of today's configs/cpu.py

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

# configs/cpu.py as the study measured it: every recipe starts from these overrides.
BASE = [
    *(f"--config.{s}.model.{k}={v}" for s in ("encoder", "decoder")
      for k, v in (("d_model", 64), ("num_heads", 4), ("mlp_dim", 128))),
    "--config.encoder.model.head_dim=128", "--config.data.encoder_n=400", "--config.decoder.optim.lr=0.002",
    "--config.encoder_share=0.25",
]  # fmt: skip
# name -> (what it changes, train.py overrides on top of BASE)
RECIPES: dict[str, tuple[str, list[str]]] = {
    "base": ("the study's base (D 64, 2+2 layers, 4 datasets/step, n 400, lr 1e-3 / 2e-3, 25 % stage 1)", []),
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
# Variants of today's configs/cpu.py (``--base cpu``: no BASE overrides) for the step's shape: fewer, wider heads at the
# same width D = 96 (the attention's products contract over 48 instead of 16), and fewer, wider layers.
CPU_RECIPES: dict[str, tuple[str, list[str]]] = {
    "cpu": ("configs/cpu.py as it is (D 96, 6 heads × 16, n200, lr 1e-3 / 4e-3, 30 % stage 1; since 2026-12-07 100 "
            "stage-2 queries per dataset)", []),
    "q200": ("configs/cpu.py with 200 stage-2 queries per dataset (data.n 400: the recipe before 2026-12-07)",
             ["--config.data.n=400"]),
    "heads2x48": ("configs/cpu.py with 2 heads × 48 in both networks (same width)", [
        f"--config.{s}.model.{k}={v}" for s in ("encoder", "decoder") for k, v in (("num_heads", 2), ("key_dim", 48))]),
    "wide1": ("wider and shallower at about today's FLOPs per step: one layer pair / one adaLN layer at D 128 (8 heads "
              "× 16, MLP 256, encoder head 256)", [
        *(f"--config.{s}.model.{k}={v}" for s in ("encoder", "decoder")
          for k, v in (("num_layers", 1), ("d_model", 128), ("num_heads", 8), ("mlp_dim", 256))),
        "--config.encoder.model.head_dim=256"]),
    "q100": ("configs/cpu.py with 100 stage-2 queries per dataset instead of 200 (data.n 300; the frozen encoder still "
             "reads 200 context rows; stage 1 unchanged)", ["--config.data.n=300"]),
    "q50": ("configs/cpu.py with 50 stage-2 queries per dataset (data.n 250)", ["--config.data.n=250"]),
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


def _recipes(args) -> tuple[dict[str, tuple[str, list[str]]], list[str]]:
    """The recipe table and the overrides under every recipe, for ``--base``."""
    return (CPU_RECIPES, []) if args.base == "cpu" else (RECIPES, BASE)


def run(args) -> None:
    recipes, base = _recipes(args)
    names = args.only.split(",") if args.only else list(recipes)
    queue = [n for n in names if not _finished(os.path.join(args.out, n))]
    running: dict[int, tuple[str, subprocess.Popen]] = {}
    os.makedirs(args.out, exist_ok=True)
    while queue or running:
        for core in range(args.parallel):
            if core not in running and queue:
                name = queue.pop(0)
                workdir = os.path.join(args.out, name)
                cmd = ["taskset", "-c", str(core), sys.executable, "train.py", "--config=configs/cpu.py",
                       f"--workdir={workdir}", f"--config.max_seconds={args.seconds}", *COMMON, *base,
                       *recipes[name][1]]  # fmt: skip
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


def _last(rows: list[dict], key: str):
    return rows[-1].get(key) if rows else None


def _batch(name: str, recipes: dict) -> int:
    flags = dict(f.split("=", 1) for f in recipes[name][1])
    return int(flags.get("--config.data.batch_size", 4))


def score(args) -> None:
    """Score every finished recipe on the fixed validation set (means with standard errors) into ``NAME/fixed.json``."""
    for name in _recipes(args)[0]:
        workdir = os.path.join(args.out, name)
        target = os.path.join(workdir, "fixed.json")
        if _finished(workdir) and not os.path.exists(target):
            print(f"{time.strftime('%H:%M:%S')} scoring {name}", flush=True)
            subprocess.run([sys.executable, "-m", "cfip_jax.train.validation_set", workdir, "--json", target],
                           cwd=REPO, check=True)  # fmt: skip


def report(args) -> None:
    """Curves (``DOC_DIR/training_study/curves.png``) and the table (``…/table.md``; ``curves_cpu.png`` and
    ``table_cpu.md`` with ``--base cpu``) of every recipe with a run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = _recipes(args)[0]
    names = [n for n in recipes if os.path.exists(os.path.join(args.out, n, "metrics.jsonl"))]
    folder = os.path.join(os.path.dirname(os.path.abspath(args.doc)), "training_study")
    os.makedirs(folder, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    lines = ["| recipe | what | stage 1 steps (datasets) | stage 1 val | stage 2 steps (datasets) | stage 2 val: LIN | "
             "RFF | all |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in names:
        workdir = os.path.join(args.out, name)
        curves = _curves(workdir)
        enc, dec = curves["encoder"], curves["decoder"]
        enc_minutes = (_last(enc, "elapsed_s") or 0.0) / 60
        axes[0].plot([r["elapsed_s"] / 60 for r in enc], [r["val_rmse"] for r in enc], "o-", label=name)
        for ax, key in ((axes[1], "val_rmse_linear"), (axes[2], "val_rmse_rff")):
            ax.plot([enc_minutes + r["elapsed_s"] / 60 for r in dec], [r[key] for r in dec], "o-", label=name)
        fixed = {}
        if os.path.exists(os.path.join(workdir, "fixed.json")):
            with open(os.path.join(workdir, "fixed.json")) as f:
                fixed = json.load(f)

        def cell(stage: str, family: str, rows: list[dict], key: str, fixed=fixed) -> str:
            entry = fixed.get(stage, {}).get(family)
            if entry:
                return f"{entry['mean']:.3f} ± {entry['se']:.3f}"
            value = _last(rows, key)
            return "–" if value is None else f"{value:.3f}"

        batch = _batch(name, recipes)
        steps = [(_last(enc, "step") or 0), (_last(dec, "step") or 0)]
        lines.append(f"| {name} | {recipes[name][0]} | {steps[0]:,} ({steps[0] * batch:,}) | "
                     f"{cell('encoder', 'all', enc, 'val_rmse')} | {steps[1]:,} ({steps[1] * batch:,}) | "
                     f"{cell('decoder', 'linear', dec, 'val_rmse_linear')} | "
                     f"{cell('decoder', 'rff', dec, 'val_rmse_rff')} | "
                     f"{cell('decoder', 'all', dec, 'val_rmse')} |")  # fmt: skip
    titles = ("stage 1: noise RMSE (fixed set)", "stage 2: mechanism RMSE, LIN", "stage 2: mechanism RMSE, RFF")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("CPU minutes (process time, both stages)" if ax is not axes[0] else "CPU minutes (stage 1)")
        ax.set_ylabel("validation RMSE")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    suffix = "" if args.base == "study" else f"_{args.base}"  # the study's own figure and table stay as they are
    fig.savefig(os.path.join(folder, f"curves{suffix}.png"), dpi=110)
    with open(os.path.join(folder, f"table{suffix}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("run", "score", "report"))
    p.add_argument("--out", default="study")
    p.add_argument("--seconds", type=float, default=3000.0, help="CPU seconds per recipe (both stages)")
    p.add_argument("--parallel", type=int, default=2, help="runs at a time, one core each")
    p.add_argument("--only", help="comma-separated recipe names")
    p.add_argument(
        "--base",
        choices=("study", "cpu"),
        default="study",
        help="study: the recipes over the study's base (BASE); cpu: variants of today's configs/cpu.py",
    )
    p.add_argument("--doc", default="docs/training_study.md")
    args = p.parse_args()
    {"run": run, "score": score, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
