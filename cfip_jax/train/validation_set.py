"""A fixed validation set for recipe decisions, and the command that scores a model on it.

96 in-distribution datasets drawn once from a fixed seed: 8 of each of the 12 combinations of the training prior
(ER / SF-in / SF-out graphs × linear / RFF mechanisms × d = 10 and 20, Gaussian noise, the IN parameter ranges),
n = 400 samples, standardised. Every run and every model sees the same datasets, whatever its own training data.

Scores, per dataset (the training losses' measures, on the same data for every model):

- stage 1 (``encoder``): the mean over samples of the per-sample RMSE of the encoder's F(x) on all 400 samples (its
  noise prediction error, since the noise is x − F(x));
- stage 2 (``decoder``): the RMSE of the decoder's F(x) on samples 200..399, conditioned on samples 0..199.

They are summarised per mechanism family and node count (mean and standard error). The OUT generalisation check is
the suite's OUT half: ``eval.py --suite paper``.

Command line::

    python -m cfip_jax.train.validation_set WORKDIR_OR_EXPORT [--json OUT.json] [--against OTHER]

``--against OTHER`` scores a second model on the same datasets and prints the paired differences (this − other):
the way to tell whether a continued run moved the model by more than the set's resolution.

A training workdir is scored with the EMA parameters of its latest encoder checkpoint (stage 1) and, when there is
one, its latest decoder checkpoint (stage 2); an export (``model.json`` + ``params.npz``) on both stages.
Training can also validate on this set as it goes (``--config.eval.fixed=True``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cfip_jax.scm.batch import Batch, BatchSpec, combination_indices, sample_batch
from cfip_jax.scm.priors import scm_prior

SEED = 20261201
GRAPHS, FUNCS, NODE_COUNTS = ("er", "sf_in", "sf_out"), ("linear", "rff"), (10, 20)
N, N_CONTEXT, PER_COMBINATION, CHUNK = 400, 200, 8, 12


def spec() -> BatchSpec:
    """The set's :class:`~cfip_jax.scm.batch.BatchSpec` (96 datasets, padded to 20 nodes, not packed)."""
    priors = tuple(scm_prior(g, f, "gaussian", "in") for g in GRAPHS for f in FUNCS)
    return BatchSpec(priors=priors, node_counts=NODE_COUNTS, max_nodes=max(NODE_COUNTS), n=N,
                     batch_size=PER_COMBINATION * len(priors) * len(NODE_COUNTS))  # fmt: skip


@functools.lru_cache(maxsize=1)
def validation_batch() -> tuple[Batch, tuple[str, ...]]:
    """The 96 datasets (on the host) and each one's group label ``"{func}/{d}"``."""
    s = spec()
    key = jax.random.key(SEED)
    batch = jax.tree.map(np.asarray, sample_batch(key, s))
    combos = np.asarray(combination_indices(key, s))
    labels = tuple(f"{s.combinations[c][0].mechanism.func}/{s.combinations[c][1]}" for c in combos)
    return batch, labels


def _chunks(batch: Batch):
    for start in range(0, batch.x.shape[0], CHUNK):
        yield jax.tree.map(lambda a, s=start: jnp.asarray(a[s : s + CHUNK]), batch)


def errors(stage, variables: Any, frozen: Any = None) -> np.ndarray:
    """Per-dataset errors ``[96]`` of a :class:`cfip_jax.train.stage.Stage`'s network (stage 2: a context of 200).

    Args:
      stage: the :class:`cfip_jax.train.stage.Stage` (its ``n_context`` is replaced by the set's 200).
      variables: the trained network's (EMA) variables.
      frozen: stage 2: the encoder's variables.
    """
    stage = dataclasses.replace(stage, n_context=N_CONTEXT) if stage.name == "decoder" else stage
    fn = _errors_fn(stage)
    batch, _ = validation_batch()
    return np.concatenate([np.asarray(fn(variables, frozen, chunk)) for chunk in _chunks(batch)])


@functools.lru_cache(maxsize=8)
def _errors_fn(stage):
    return jax.jit(lambda v, f, b: stage.per_dataset_errors(v, f, b)["rmse"])


def summarize(values: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean, standard error and count per group (``"linear/10"``, …), per family (``"linear"``) and overall."""
    _, labels = validation_batch()
    labels_arr = np.asarray(labels)
    groups = {"all": np.ones(len(labels), bool)}
    for func in FUNCS:
        groups[func] = np.char.startswith(labels_arr, func + "/")
        for d in NODE_COUNTS:
            groups[f"{func}/{d}"] = labels_arr == f"{func}/{d}"
    return {name: _mean_se(values[sel]) for name, sel in groups.items()}


def _mean_se(v: np.ndarray) -> dict[str, float]:
    return dict(mean=float(v.mean()), se=float(v.std(ddof=1) / np.sqrt(len(v))), count=int(len(v)))


def score(path: str) -> dict[str, dict]:
    """Stage-1 and stage-2 summaries of a training workdir or an export (see the module docstring)."""
    return {stage: summarize(values) for stage, values in per_dataset(path).items()}


def paired(values: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, dict]:
    """Summaries of the per-dataset differences ``values − other`` for the stages both hold: the same 96 datasets
    score both models, so the standard error is the paired one (smaller than either model's own when the two models'
    errors move together)."""
    return {stage: summarize(values[stage] - other[stage]) for stage in values if stage in other}


def largest(values: dict[str, np.ndarray], other: dict[str, np.ndarray], k: int = 3) -> dict[str, dict]:
    """Per stage both hold, the ``k`` datasets whose errors differ most (``values − other``, by magnitude) and the
    paired mean of the rest without the largest one: a mean over 96 datasets that one dataset moves shows it here.

    Returns:
      ``{stage: {"datasets": [{"index", "group", "this", "other", "diff"}, …], "without_largest": {"mean", "se",
      "count"}}}``.
    """
    _, labels = validation_batch()
    out = {}
    for stage in (s for s in values if s in other):
        diff = np.asarray(values[stage] - other[stage], np.float64)
        order = np.argsort(-np.abs(diff), kind="stable")
        rows = [dict(index=int(i), group=labels[i], this=float(values[stage][i]), other=float(other[stage][i]),
                     diff=float(diff[i])) for i in order[:k]]  # fmt: skip
        out[stage] = dict(datasets=rows, without_largest=_mean_se(np.delete(diff, order[0])))
    return out


def per_dataset(path: str) -> dict[str, np.ndarray]:
    """``{stage: errors [96]}`` of a training workdir or an export (stage 2 only when it has a decoder)."""
    from cfip_jax import model_io
    from cfip_jax.train.stage import Stage

    if os.path.isfile(os.path.join(path, model_io.EXPORT_CONFIG)):
        m = model_io.load_export(path)
        enc, dec, enc_vars, dec_vars = m.encoder, m.decoder, m.encoder_params, m.decoder_params
    else:
        enc, dec, enc_vars, dec_vars = _from_workdir(path)
    out = {"encoder": errors(Stage("encoder", enc), enc_vars)}
    if dec_vars is not None:
        out["decoder"] = errors(Stage("decoder", enc, dec, N_CONTEXT), dec_vars, enc_vars)
    return out


def _from_workdir(path: str):
    import ml_collections

    from cfip_jax import model as model_lib
    from cfip_jax.train import checkpoint as ckpt_lib
    from cfip_jax.train.restore import load_state

    with ckpt_lib.StageCheckpointer(path, "encoder", keep=1000, async_save=False) as ck:
        latest = ck.latest_config()
    if latest is None:
        raise ValueError(f"{path}: neither an export nor a workdir with an encoder checkpoint")
    config = ml_collections.ConfigDict(latest[1])
    enc, dec = model_lib.build_networks(config)
    _, enc_state = load_state(config, path, "encoder")
    dec_vars = None
    with ckpt_lib.StageCheckpointer(path, "decoder", keep=1000, async_save=False) as ck:
        has_decoder = ck.latest_config() is not None
    if has_decoder:
        _, dec_state = load_state(config, path, "decoder")
        dec_vars = dec_state.ema_params
        enc_vars = dec_state.frozen  # the encoder the decoder was trained with
    else:
        enc_vars = enc_state.ema_params
    return enc, dec, enc_vars, dec_vars


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m cfip_jax.train.validation_set", description=__doc__.splitlines()[0])
    p.add_argument("path", help="training workdir or exported model directory")
    p.add_argument("--json", help="also write the summaries to this file")
    p.add_argument("--against", metavar="OTHER", help="also score OTHER (workdir or export) and print the paired "
                   "per-dataset differences PATH − OTHER (mean ± paired standard error)")  # fmt: skip
    args = p.parse_args(argv)
    for path in (args.path, args.against):
        if path is not None and not os.path.isdir(path):
            p.error(f"{path} is not a directory")
    try:
        values = per_dataset(args.path)
        other = per_dataset(args.against) if args.against else None
    except ValueError as err:
        p.exit(2, f"error: {err}\n")
    result = {stage: summarize(v) for stage, v in values.items()}
    sections = [("", dict(result), False)]
    if other is not None:
        result["paired"] = paired(values, other)
        result["against"] = {stage: summarize(v) for stage, v in other.items()}
        sections.append((" (--against)", result["against"], False))
        sections.append((" (this − --against, paired)", result["paired"], True))
    for suffix, tables, signed in sections:
        for stage, table in tables.items():
            print(f"{stage}{suffix}: {_row(table, signed)}")
    if other is not None:
        result["largest"] = largest(values, other)
        for stage, top in result["largest"].items():
            rows = "; ".join(f"#{r['index']} {r['group']} {r['other']:.4f} → {r['this']:.4f} ({r['diff']:+.4f})"
                             for r in top["datasets"])  # fmt: skip
            rest = top["without_largest"]
            print(
                f"{stage} (largest differences, --against → this): {rows}; the other {rest['count']}: "
                f"{rest['mean']:+.4f} ± {rest['se']:.4f}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


def _row(table: dict[str, dict], signed: bool = False) -> str:
    fmt = "+.4f" if signed else ".4f"
    return ", ".join(f"{k} {v['mean']:{fmt}} ± {v['se']:.4f}" for k, v in table.items())


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
