"""The shipped pretrained model: the longest run that fits a 2-core CPU in about two hours.

Same small networks and reference-shaped optimiser as ``configs/default.py``, with the paper's data protocol where a
CPU can afford it:

- Data: SCMs with d = 10 or 20 nodes (mixed, padded to 20), n = 400 samples (stage 2: samples 0..199 are the encoder's
  context, 200..399 the decoder's queries, as in ``configs/paper.py``), linear and RFF mechanisms on ER / SF-in / SF-out
  graphs with Gaussian noise, in-distribution priors; 4 datasets per step.
- Steps: 1,000 (encoder) and 5,000 (decoder): 4,000 + 20,000 datasets.
- Learning rates as in the default run, warm-up 100 / 200 steps, cosine decay to 0 at the end of each stage.

Usage::

    python train.py --config configs/cpu.py --workdir workdir/cpu
    python -c "from cfip_jax import model_io; model_io.export(model_io.load_workdir('workdir/cpu'), 'out_dir')"
"""

from __future__ import annotations

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """The CPU pretraining config, locked: unknown keys raise."""
    c = default.get_config()
    c.checkpoint_every = 250
    c.eval_every = 500
    c.log_every = 50

    c.data.node_counts = (10, 20)
    c.data.max_nodes = 20
    c.data.n = 400
    c.data.n_context = 200
    c.data.batch_size = 4
    c.eval.batch_size = 12

    c.encoder.steps = 1000
    c.encoder.optim = default.optim(lr=1e-3, weight_decay=5e-4, warmup_steps=100, decay_steps=1000)
    c.decoder.steps = 5000
    c.decoder.optim = default.optim(lr=2e-3, weight_decay=1e-10, warmup_steps=200, decay_steps=5000)
    return c
