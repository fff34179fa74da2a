"""Shared test helpers: the tiny run config, tree comparisons, checkpoint listings, a fake clock."""

import itertools
import os

import jax
import numpy as np

from cfip_jax.train.parallel import to_host
from configs import test

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
    """``configs/test.py`` (tiny networks and SCMs) with dotted-key overrides, e.g. ``**{"encoder.steps": 6}``."""
    c = test.get_config()
    for key, value in overrides.items():
        node = c
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return c


class FakeClock:
    """Advances by ``tick`` seconds at every reading: deterministic elapsed times (a budget's clock in tests)."""

    def __init__(self, tick: float):
        self.ticks = itertools.count()
        self.tick = tick

    def __call__(self) -> float:
        return next(self.ticks) * self.tick


def assert_trees_equal(a, b):
    """Same structure, bit-identical leaves (fetched to the host)."""
    a, b = to_host(a), to_host(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def saved_steps(workdir, stage="encoder"):
    """The steps of the checkpoints kept for ``stage`` in ``workdir``."""
    return sorted(int(s) for s in os.listdir(os.path.join(workdir, stage, "checkpoints")) if s.isdigit())


def random_model(seed: int = 0):
    """A small Cond-FiP model with random weights (``CondFiP``): the properties tested with it hold for any
    DAG-respecting mechanism."""
    import jax.numpy as jnp

    from cfip_jax import model_io
    from cfip_jax.api import CondFiP
    from cfip_jax.nn.arch import decoder_arch, encoder_arch
    from cfip_jax.nn.decoder import CondFiPDecoder
    from cfip_jax.nn.encoder import DatasetEncoder

    enc_cfg = encoder_arch("small")
    dec_cfg = decoder_arch("small", encoder_dim=enc_cfg.d_model, dropout=0.0)
    enc, dec = DatasetEncoder(config=enc_cfg), CondFiPDecoder(config=dec_cfg)
    x, adj, mask = jnp.zeros((1, 8, 4)), jnp.zeros((1, 4, 4)), jnp.ones((1, 4), bool)
    enc_params = enc.init(jax.random.key(seed), x, adj, mask)
    encoding = enc.apply(enc_params, x, adj, mask, method="encode")
    dec_params = dec.init(jax.random.key(seed + 1), x, encoding, adj, mask)
    return CondFiP(model_io.TrainedModel(enc, enc_params, dec, dec_params, {"note": "random weights"}))


def four_node_frame():
    """120 rows of a → b → c, a → d in user units (a ~ N(10, 2²)): a linear, a sine and a negative link."""
    import pandas as pd

    rng = np.random.default_rng(0)
    a = rng.normal(10.0, 2.0, 120)
    b = 0.5 * a + rng.normal(0, 1, 120)
    c = np.sin(b) + rng.normal(0, 0.3, 120)
    d = -a + rng.normal(0, 0.5, 120)
    return pd.DataFrame({"a": a, "b": b, "c": c, "d": d})


def _matmul(w, z):
    return z @ w


def linear_inferred_scm(w, mean, std, noise):
    """An ``InferredSCM`` whose standardised mechanism is z ↦ z W (``w [d, d]`` strictly upper triangular: nodes in
    topological order), with node statistics ``mean``, ``std [d]`` and abducted noise ``noise [n, d]``; nodes x0…."""
    import jax.numpy as jnp
    from jax.tree_util import Partial

    from cfip_jax.api import InferredSCM

    d = w.shape[0]
    return InferredSCM(mechanism_fn=Partial(_matmul, jnp.asarray(w, jnp.float32)),
                       adj=jnp.asarray((np.asarray(w) != 0).astype(np.float32)), mean=jnp.asarray(mean, jnp.float32),
                       std=jnp.asarray(std, jnp.float32), noise_data=jnp.asarray(noise, jnp.float32),
                       nodes=tuple(f"x{i}" for i in range(d)))  # fmt: skip
