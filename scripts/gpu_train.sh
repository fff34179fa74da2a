#!/usr/bin/env bash
# One-command accelerator run: train both Cond-FiP stages on one GPU within configs/gpu.py's wall-time budget
# (max_seconds, compilation included), export the model to OUT_DIR/model, evaluate it on the paper suite
# (d = 10, 20) and write OUT_DIR/{results.json,summary.md,metrics.jsonl,figures.json,log.txt}.
#
# Usage: scripts/gpu_train.sh OUT_DIR [--cpu] [--config FILE] [--train-arg=FLAG ...] [--eval-arg=FLAG ...]
#   --cpu          run on the CPU when no GPU is visible (the script's test does, with seconds-long budgets)
#   --train-arg    one extra train.py flag, e.g. --train-arg=--config.max_seconds=60
#
# Needs, all found locally (no network, nothing installed): Python 3.11+ with a CUDA JAX stack — jax (with its CUDA
# plugin), flax, optax, orbax-checkpoint, chex, absl-py, tqdm, numpy — and, for the evaluation's reports, matplotlib.
# Pure-Python packages that are missing (ml_collections on the H200 image) are read from wheels in ./.wheels or
# $CFIP_WHEELS (put there beforehand with `pip download --no-deps -d .wheels ml_collections`): a pure-Python wheel is
# importable straight from PYTHONPATH. This repository itself is used in place (PYTHONPATH=.).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: scripts/gpu_train.sh OUT_DIR [--cpu] [--config FILE] [--train-arg=FLAG ...] [--eval-arg=FLAG ...]" >&2
  exit 2
fi
PY=${PYTHON:-python3}
extra=""
for dir in "${CFIP_WHEELS:-}" .wheels; do
  [[ -n "$dir" && -d "$dir" ]] || continue
  for whl in "$dir"/*.whl; do [[ -e "$whl" ]] && extra="$extra:$(cd "$(dirname "$whl")" && pwd)/$(basename "$whl")"; done
done
export PYTHONPATH="$PWD${extra}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
missing=$("$PY" - <<'PY'
import importlib.util
need = ["jax", "flax", "optax", "orbax.checkpoint", "chex", "absl", "tqdm", "numpy", "ml_collections", "matplotlib"]
print(" ".join(n for n in need if importlib.util.find_spec(n.split(".")[0]) is None))
PY
)
if [[ -n "$missing" ]]; then
  echo "error: missing Python packages: $missing (pure-Python ones can be carried as wheels in .wheels/)" >&2
  exit 2
fi
exec "$PY" -m cfip_jax.bench.accelerator "$@"
