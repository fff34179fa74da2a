"""A tiny run for the tests: seconds per stage on a CPU (not a useful model).

Usage::

    python train.py --config configs/test.py --workdir /tmp/cfip_test
"""

from __future__ import annotations

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Tiny networks and SCMs (d = 5, n = 16), 8 steps per stage; locked."""
    c = default.get_config()
    c.checkpoint_every = 4
    c.keep_checkpoints = 2
    c.log_every = 2
    c.eval_every = 0  # validation only at the end of a stage

    c.data.graphs = ("er",)
    c.data.funcs = ("linear",)
    c.data.node_counts = (5,)
    c.data.max_nodes = 5
    c.data.n = 16
    c.data.n_context = 8
    c.data.batch_size = 4
    c.eval.funcs = ("linear",)
    c.eval.batch_size = 4
    c.eval.num_batches = 1

    sizes = dict(d_model=16, num_heads=2, key_dim=8, num_layers=1, mlp_dim=32)
    for name in ("encoder", "decoder"):
        stage = c[name]
        stage.steps = 8
        for key, value in sizes.items():
            stage.model[key] = value
        stage.optim = default.optim(lr=3e-3, weight_decay=1e-4, warmup_steps=1, decay_steps=100)
    c.encoder.model.head_dim = 32
    c.decoder.model.num_layers_dataset = 1
    c.decoder.model.dropout = 0.0
    return c
