"""The reference's hyper-parameters (SPEC.md §5.3, §6.4–§6.7): an accelerator run.

- Data: d = 20 nodes, n = 400 samples (stage 2: samples 0..199 are the encoder's context, 200..399 the decoder's
  queries), linear and RFF mechanisms on ER / SF-in / SF-out graphs with Gaussian noise, in-distribution priors
  (``cfip_jax.scm.priors.scm_prior(..., "in")``), 4 datasets per micro-batch and 2 micro-batches per optimiser step
  (gradient accumulation inside the compiled step: the paper's effective batch of 8).
- Networks: the reference sizes (``cfip_jax.nn.arch`` size ``"reference"``; decoder dropout 0.1).
- Optimiser: Adam (b1 0.9, b2 0.95, eps 1e-8) with coupled L2 weight decay 5e-4 (encoder) / 1e-10 (decoder), lr 1e-4,
  linear warm-up over 1000 steps (step 0 uses lr 0), cosine decay to 0 at step 10 000. Deliberate deviation: the
  reference's cosine has no clamp and cycles with period 18 000 steps; here the learning rate stays at ``end_lr`` after
  ``decay_steps``, so each stage runs the 10 000 steps of one decay.
- EMA: decay 0.99, acting on every 10th update call (one call per micro-batch, as in the reference), copies for the
  first 100 calls, warm-up power 2/3.

Usage::

    python train.py --config configs/paper.py --workdir workdir/paper
    # N devices: the batch must divide, e.g. --config.data.batch_size=8 --config.encoder.grad_accum=1
"""

from __future__ import annotations

import ml_collections

from cfip_jax.nn.arch import decoder_arch, encoder_arch
from configs import default


def get_config() -> ml_collections.ConfigDict:
    """The reference-sized run config, locked: unknown keys raise."""
    c = default.get_config()
    c.checkpoint_every = 500
    c.keep_checkpoints = 3
    c.log_every = 50
    c.eval_every = 500

    c.data.graphs = ("er", "sf_in", "sf_out")
    c.data.funcs = ("linear", "rff")
    c.data.noises = ("gaussian",)
    c.data.prior = "in"
    c.data.node_counts = (20,)
    c.data.max_nodes = 20
    c.data.n = 400
    c.data.n_context = 200
    c.data.batch_size = 4

    c.eval.funcs = ("linear", "rff")
    c.eval.batch_size = 12
    c.eval.num_batches = 2

    for name, model, weight_decay in (
        ("encoder", encoder_arch("reference"), 5e-4),
        ("decoder", decoder_arch("reference"), 1e-10),
    ):
        stage = c[name]
        stage.steps = 10_000
        stage.grad_accum = 2
        for key, value in model.items():
            if key != "encoder_dim":  # a reference to encoder.model.d_model (see default.py)
                stage.model[key] = value
        stage.optim = default.optim(lr=1e-4, weight_decay=weight_decay, warmup_steps=1000, decay_steps=10_000)
        stage.ema = default.ema()
    return c
