"""The one-command accelerator run (scripts/gpu_train.sh → cfip_jax.bench.accelerator), on the CPU with seconds."""

import json
import os
import subprocess

import pytest
from helpers import REPO

SCRIPT = os.path.join(REPO, "scripts", "gpu_train.sh")


def _run(*args, env=None):
    env = dict(os.environ, **(env or {}))
    env.pop("XLA_FLAGS", None)  # one CPU device, as on a plain machine
    return subprocess.run([SCRIPT, *args], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)


def test_script_refuses_without_gpu_or_output_directory(tmp_path):
    usage = _run()
    assert usage.returncode == 2 and "usage: scripts/gpu_train.sh OUT_DIR" in usage.stderr
    no_gpu = _run(str(tmp_path / "out"), env={"JAX_PLATFORMS": "cpu"})
    assert no_gpu.returncode == 2 and "no GPU visible" in no_gpu.stderr and "--cpu" in no_gpu.stderr
    assert not (tmp_path / "out" / "workdir").exists()


@pytest.mark.slow
def test_script_trains_exports_and_evaluates_on_cpu(tmp_path):
    out = tmp_path / "out"
    # 50 s a stage: compiling and the first step take up to ~40 s on a loaded 2-core CPU, which a stage's budget must
    # leave room for (train.py refuses a budget that the first step alone overran).
    seconds = 100
    budget = [f"--train-arg=--config.max_seconds={seconds}", "--train-arg=--config.encoder_share=0.5"]
    args = [str(out), "--cpu", "--config", "configs/test.py", *budget, "--eval-arg=--per-graph=1", "--peak-tflops=0.1"]
    done = _run(*args, env={"JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for name in ("results.json", "summary.md", "metrics.jsonl", "figures.json", "log.txt"):
        assert (out / name).is_file(), name
    assert (out / "model" / "model.json").is_file() and (out / "model" / "params.npz").is_file()
    figures = json.loads((out / "figures.json").read_text())
    for stage in ("encoder", "decoder"):
        assert figures[stage]["steps"] > 0 and figures[stage]["datasets_per_sec"] > 0
        assert figures[stage]["step_gflop"] > 0 and 0 < figures[stage]["mfu"] < 1
    assert figures["seconds"]["train"] > 0.8 * seconds  # the budget was used, not cut short
    records = json.loads((out / "results.json").read_text())
    scored = {(r["d"], r["task"]) for r in records if r.get("method") == "cond-fip" and "rmse" in r}
    assert {(10, "noise"), (20, "noise"), (20, "counterfactual")} <= scored
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in metrics if r["stage"] == "decoder" and "lr" in r][-1]
    assert last["lr"] < 0.05 * 3e-3  # the schedule ended with the budget
