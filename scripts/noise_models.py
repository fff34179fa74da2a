"""Which noise model serves real data: MMD of generated samples to held-out rows, and values outside the data's range.

For Sachs (853 rows) and ecoli70 (800 rows drawn from its network), several random splits (70 % fitted, 30 % held
out): ``CondFiP.fit`` on the fitted rows (zero-shot and ``refine="closed-form"``), then as many samples as held-out
rows with each noise model (``"gaussian"``: a Gaussian per node fitted to the abducted noise; ``"empirical"``:
resampling it). Printed per dataset, method and noise model: the MMD to the held-out rows (standardised with the fitted
rows' statistics; ``cfip_jax.eval.metrics.mmd``), the share of generated values outside the fitted rows' range, and
for Sachs the share of negative values (protein levels are positive). Means over the splits.

    python scripts/noise_models.py [--splits 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np

from cfip_jax import CondFiP
from cfip_jax.data import real
from cfip_jax.eval.metrics import mmd


def score(model, data, splits: int, refine) -> dict:
    out = {"gaussian": [], "empirical": []}
    for s in range(splits):
        rng = np.random.default_rng(s)
        order = rng.permutation(len(data.x))
        cut = int(0.7 * len(order))
        fit_x, held = data.x[order[:cut]], data.x[order[cut:]]
        scm = model.fit(fit_x, data.adj, nodes=data.nodes, refine=refine)
        mu, sd = fit_x.mean(0), fit_x.std(0, ddof=1)
        lo, hi = fit_x.min(0), fit_x.max(0)
        for noise_model in out:
            gen = np.asarray(scm.with_noise_model(noise_model).sample(len(held), jax.random.key(s)))
            out[noise_model].append(dict(
                mmd=float(mmd((gen - mu) / sd, (held - mu) / sd)),
                outside=float(np.mean((gen < lo) | (gen > hi))),
                negative=float(np.mean(gen < 0)),
            ))  # fmt: skip
    return {k: {m: float(np.mean([r[m] for r in v])) for m in v[0]} for k, v in out.items()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--json")
    args = p.parse_args(argv)
    model = CondFiP.pretrained()
    datasets = {"sachs": real.load_sachs(), "ecoli70": real.sample_ecoli70(800, 0)}
    result = {}
    print("| data | fit | noise model | MMD to held-out rows | outside the data's range | negative |")
    print("|---|---|---|---|---|---|")
    for name, data in datasets.items():
        for label, refine in (("zero-shot", None), ("closed-form", "closed-form")):
            r = score(model, data, args.splits, refine)
            result[f"{name}/{label}"] = r
            for nm, v in r.items():
                print(f"| {name} | {label} | {nm} | {v['mmd']:.3f} | {v['outside']:.3f} | {v['negative']:.3f} |",
                      flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
