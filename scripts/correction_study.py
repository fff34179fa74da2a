"""The closed-form correction's settings on the fixed 96-dataset validation set: accuracy and time, paired.

For each of the set's datasets (:mod:`cfip_jax.train.validation_set`: linear and RFF mechanisms, d = 10 and 20,
n = 400, standardised), the shipped model is conditioned on samples 0..199 and ``refine="closed-form"`` fits its
correction there (:func:`cfip_jax.inference.fit.infer`, the pipeline of ``CondFiP.fit``); the score is the RMSE of the
inferred mechanism F(x) against the true one on samples 200..399 (the set's stage-2 measure). Every variant is scored
on the same datasets, so differences are paired: the table gives each variant's mean, its mean difference to the
first variant with the standard error of that difference, and the median seconds of one fit (after compilation).

    python scripts/correction_study.py [--variants default,f100,f50,f100-k3] [--limit 96] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import numpy as np

from cfip_jax import model_io
from cfip_jax.inference import fit as fit_lib
from cfip_jax.inference.correct import CorrectionConfig
from cfip_jax.inference.refine import RefineConfig
from cfip_jax.train import validation_set as vs

VARIANTS = {
    "zero-shot": None,
    "default": RefineConfig(),
    "f100": RefineConfig(correction=CorrectionConfig(features=100)),
    "f50": RefineConfig(correction=CorrectionConfig(features=50)),
    "f100-k3": RefineConfig(correction=CorrectionConfig(features=100, folds=3)),
    "f200-k3": RefineConfig(correction=CorrectionConfig(folds=3)),
    "linear": RefineConfig(correction="linear"),
    "f100-m1": RefineConfig(correction=CorrectionConfig(features=100), members=1),
}


@jax.jit
def _apply(mech, z):
    return mech(z)


def _score(model, batch, b: int, cfg: RefineConfig | None) -> tuple[float, float]:
    """(mechanism RMSE on samples 200..399, seconds of the fit) of dataset ``b``."""
    d = int(batch.node_mask[b].sum())
    x, noise = batch.x[b, :, :d], batch.noise[b, :, :d]
    adj = batch.adj[b, :d, :d]
    ctx, query = x[: vs.N_CONTEXT], x[vs.N_CONTEXT :]
    start = time.perf_counter()
    out = fit_lib.infer(model, ctx, adj, refine=None if cfg is None else "closed-form", cfg=cfg)
    pred = np.asarray(_apply(out.mechanism, query))
    seconds = time.perf_counter() - start
    truth = query - noise[vs.N_CONTEXT :]
    return float(np.sqrt(np.mean(np.square(pred - truth)))), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="zero-shot,default,f100,f50,f100-k3")
    p.add_argument("--checkpoint", default=None, help="model directory (default: the shipped model)")
    p.add_argument("--limit", type=int, default=96, help="datasets (the first LIMIT of the set)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    model = model_io.load(args.checkpoint) if args.checkpoint else model_io.load_pretrained()
    batch, labels = vs.validation_batch()
    rows = range(min(args.limit, len(labels)))
    rmse = {n: np.zeros(len(rows)) for n in names}
    secs = {n: [] for n in names}
    for b in rows:
        for n in names:
            rmse[n][b], s = _score(model, batch, b, VARIANTS[n])
            secs[n].append(s)
        print(f"{b:3d} {labels[b]:10s} " + " ".join(f"{n}={rmse[n][b]:.4f}" for n in names), flush=True)
    base = names[0] if names[0] != "zero-shot" or len(names) == 1 else names[1]
    fams = np.asarray([labels[b].split("/")[0] for b in rows])
    out = {}
    print(f"\n| variant | mean | LIN | RFF | − {base} (± se) | s per fit (median) |\n|---|---|---|---|---|---|")
    for n in names:
        diff = rmse[n] - rmse[base]
        out[n] = dict(mean=rmse[n].mean(), linear=rmse[n][fams == "linear"].mean(), rff=rmse[n][fams == "rff"].mean(),
                      diff=diff.mean(), diff_se=diff.std(ddof=1) / np.sqrt(len(diff)),
                      seconds=float(np.median(secs[n][1:])),
                      config=None if VARIANTS[n] is None else dataclasses.asdict(VARIANTS[n]))  # fmt: skip
        o = out[n]
        print(f"| {n} | {o['mean']:.4f} | {o['linear']:.4f} | {o['rff']:.4f} | {o['diff']:+.4f} ± {o['diff_se']:.4f} "
              f"| {o['seconds']:.3f} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(datasets=len(rows), variants=out), f, indent=1)


if __name__ == "__main__":
    main()
