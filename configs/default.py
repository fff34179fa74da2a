"""Default run: trains both Cond-FiP stages in a few minutes on a 2-core CPU.

Small networks (``cfip_jax.nn.arch`` size ``"small"``), SCMs with d = 10 nodes and n = 200 samples (100 context /
100 query in stage 2), linear and RFF mechanisms on ER / SF-in / SF-out graphs with Gaussian noise, all drawn on
device inside the training step. The optimiser, schedule shape and EMA rule are the reference's (see
``configs/paper.py``) with larger learning rates and schedules compressed to the run lengths: the encoder converges in
a few hundred steps, the decoder gets most of the time. About 5–9 minutes for both stages on 2 cores (compilation
included); the stage-2 validation RMSE on linear SCMs ends near 0.26, against about 0.78 for predicting zero.

Usage (from the repository root)::

    python train.py                                   # this config, workdir workdir/default
    python train.py --config configs/default.py --workdir workdir/run1 --config.encoder.steps=500 --config.seed=1
"""

from __future__ import annotations

import ml_collections

from cfip_jax.nn.arch import decoder_arch, encoder_arch


def optim(lr: float, weight_decay: float, warmup_steps: int, decay_steps: int) -> ml_collections.ConfigDict:
    """An ``optim`` block: Adam (b1 0.9, b2 0.95, eps 1e-8) with coupled L2 ``weight_decay``; linear warm-up from 0
    over ``warmup_steps``, cosine decay to ``end_lr`` at ``decay_steps``, then constant."""
    return ml_collections.ConfigDict(
        dict(
            lr=lr,  # peak learning rate
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            weight_decay=weight_decay,  # coupled L2, added to the gradient before Adam
            warmup_steps=warmup_steps,  # step 0 uses lr 0
            decay_steps=decay_steps,  # the cosine reaches end_lr here (includes the warm-up)
            end_lr=0.0,  # floor after decay_steps (the reference's cosine cycles instead)
            decay_fraction=0.2,  # time-budgeted runs (max_seconds): the final share of the budget spent decaying
            layer_lr_from=0,  # with layer_lr_factor != 1: the first adaLN layer (layers_k, k >= it) to scale
            layer_lr_factor=1.0,  # e.g. 8 on a grown decoder's new layers (init_grow) so that they open
        )
    )


def ema() -> ml_collections.ConfigDict:
    """The reference's EMA: decay 0.99 every 10 update calls, copies for calls ≤ 100, warm-up power 2/3."""
    return ml_collections.ConfigDict(
        dict(decay=0.99, every=10, update_after=100, power=2.0 / 3.0, inv_gamma=1.0, min_decay=0.0)
    )


def get_config() -> ml_collections.ConfigDict:
    """The default (CPU-sized) run config, locked: unknown keys raise."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # every random stream derives from key(seed)
    c.checkpoint_every = 200  # steps between checkpoints (and one at the end of each stage)
    c.keep_checkpoints = 3  # latest checkpoints kept per stage
    c.log_every = 25  # steps between metrics.jsonl records
    c.eval_every = 250  # steps between validations of the EMA parameters (0: only at the end of a stage)
    # Wall-time bound of the run (None: each stage runs its `steps`). With it, stage 1 gets `encoder_share` of the
    # seconds and stage 2 the rest, `steps` are not used, and each stage's learning rate decays over the last
    # `optim.decay_fraction` of its budget (cfip_jax.train.budget).
    c.max_seconds = ml_collections.config_dict.placeholder(float)
    c.encoder_share = 0.25
    c.budget_clock = "wall"  # "process": count the process's CPU seconds instead (fair budgets on a shared machine)
    # Continued training: start each stage without a checkpoint of its own from this export or workdir's weights
    # (cfip_jax.train.init_from); its lineage is carried into this run's export. The seed must be a new one.
    c.init_from = ml_collections.config_dict.placeholder(str)
    # With a workdir as init_from: also carry its latest checkpoint's Adam moments (count, mu, nu) into each stage
    # started from it; the learning-rate schedule (its warm-up included) starts afresh either way.
    c.init_moments = False
    # With init_from: the config's decoder.model.num_layers may exceed the source's; the extra adaLN layers are
    # appended after the source's with zero modulation (zero gates: each starts as the identity, so the grown model
    # computes the source's function) and their other weights freshly drawn. Every other field must still match.
    c.init_grow = False
    # With a workdir as init_from: start each stage from the source's *stable* checkpoint — its state when its
    # learning-rate decay began (saved by budgeted runs in {workdir}/{stage}/stable): parameters, EMA and the whole
    # optimiser state (moments and schedule count: no warm-up), so that runs extend one constant-rate phase and only
    # each run's own decay is annealed (warmup-stable-decay across runs). Excludes init_moments and init_grow.
    c.init_stable = False

    c.data = ml_collections.ConfigDict(
        dict(
            graphs=("er", "sf_in", "sf_out"),
            funcs=("linear", "rff"),
            noises=("gaussian",),
            prior="in",  # the reference's training-distribution hyper-parameters
            node_counts=(10,),  # d; several values are mixed, padded to max_nodes
            max_nodes=10,
            n=200,  # samples per dataset (stage 1 trains on all of them)
            encoder_n=ml_collections.config_dict.placeholder(int),  # stage 1's samples per dataset if not n
            n_context=100,  # stage 2: samples 0..n_context-1 are the encoder's context, the rest the queries
            batch_size=6,  # datasets per micro-batch, over all devices (a multiple of the device count)
            pack=True,  # several small datasets share a row of max_nodes nodes (no compute on padding; same losses)
        )
    )
    c.eval = ml_collections.ConfigDict(
        dict(
            funcs=("linear", "rff"),  # mechanism families validated (one figure each; graphs/noise as in data)
            batch_size=24,  # fresh in-distribution datasets per call, all families mixed (multiple of the devices)
            num_batches=2,  # calls per validation
            fixed=False,  # validate on the fixed 96-dataset set instead (cfip_jax.train.validation_set)
        )
    )

    enc = encoder_arch("small")
    c.encoder = ml_collections.ConfigDict(
        dict(
            steps=300,  # optimiser steps of stage 1
            grad_accum=1,  # micro-batches per optimiser step
            model=enc.as_configdict(),
            optim=optim(lr=1e-3, weight_decay=5e-4, warmup_steps=50, decay_steps=300),
            ema=ema(),
        )
    )
    dec = decoder_arch("small")
    c.decoder = ml_collections.ConfigDict(
        dict(
            steps=800,  # optimiser steps of stage 2
            grad_accum=1,
            model=dec.as_configdict(),
            optim=optim(lr=2e-3, weight_decay=1e-10, warmup_steps=100, decay_steps=800),
            ema=ema(),
        )
    )
    c.decoder.model.encoder_dim = c.encoder.model.get_ref("d_model")
    c.lock()
    return c
