"""The optimiser and the learning-rate schedule (cfip_jax.train.optim)."""

import math

import jax.numpy as jnp
import ml_collections
import numpy as np

from cfip_jax.train.optim import learning_rate_schedule, make_optimizer
from configs import paper


def reference_lambda(t: int) -> float:
    """SPEC.md §6.7: t/1000 during warm-up, then 0.5(1 + cos(π(t − 1000)/9000)) (unclamped in the reference)."""
    if t < 1000:
        return t / 1000
    return 0.5 * (1 + math.cos(math.pi * (t - 1000) / 9000))


def test_paper_schedule_matches_reference_then_floors():
    cfg = paper.get_config()
    for name in ("encoder", "decoder"):
        schedule = learning_rate_schedule(cfg[name].optim)
        assert float(schedule(0)) == 0.0  # the first step does not move the parameters
        for t in (1, 250, 999, 1000, 1001, 3000, 5500, 9999, 10_000):
            np.testing.assert_allclose(float(schedule(t)), 1e-4 * reference_lambda(t), rtol=1e-4, atol=1e-12)
        # The reference's cosine would climb back to the peak at t = 19000; ours stays at end_lr = 0.
        for t in (10_001, 14_500, 19_000, 50_000):
            assert float(schedule(t)) == 0.0
            assert reference_lambda(t) > 0


def test_optimizer_is_adam_with_coupled_l2():
    """Adam on g + wd·θ (torch.optim.Adam(weight_decay=…)), not AdamW: compare with a NumPy transcription."""
    cfg = ml_collections.ConfigDict(
        dict(lr=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.3, warmup_steps=2, decay_steps=10, end_lr=0.01)
    )
    tx = make_optimizer(cfg)
    schedule = learning_rate_schedule(cfg)
    theta = jnp.array([1.0, -2.0, 0.5])
    state = tx.init(theta)
    th, m, v = np.array(theta, np.float64), np.zeros(3), np.zeros(3)
    rng = np.random.default_rng(0)
    for t in range(5):
        g = rng.normal(size=3)
        updates, state = tx.update(jnp.asarray(g, jnp.float32), state, theta)
        theta = theta + updates
        gg = g + 0.3 * th
        m = 0.9 * m + 0.1 * gg
        v = 0.95 * v + 0.05 * gg**2
        mhat, vhat = m / (1 - 0.9 ** (t + 1)), v / (1 - 0.95 ** (t + 1))
        th = th - float(schedule(t)) * mhat / (np.sqrt(vhat) + 1e-8)
        np.testing.assert_allclose(np.asarray(theta), th, rtol=1e-5, atol=1e-6)
    # AdamW would give a different trajectory: the decay term matters.
    assert not np.allclose(th, np.asarray(theta) + 0.01)
