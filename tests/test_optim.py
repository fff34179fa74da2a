"""The optimiser and the learning-rate schedule (cfip_jax.train.optim)."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

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


def _layered_params():
    return {
        "params": {
            "layers_0": {"w": jnp.array([1.0, -2.0])},
            "layers_2": {"mlp": {"w": jnp.array([0.5, 3.0])}},
            "data_node_layers_0": {"w": jnp.array([0.2, -0.1])},  # not an adaLN layer: its rate is never scaled
            "head": {"b": jnp.array([0.7])},
        }
    }


def test_layer_rate_factor_scales_exactly_the_later_layers():
    """layer_lr_factor multiplies the updates of layers_k, k >= layer_lr_from (a grown decoder's new layers), and
    only those; the state keeps Adam's moments of every parameter, so the other updates are the plain optimiser's."""
    base = dict(lr=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.3, warmup_steps=2, decay_steps=10, end_lr=0.01)
    plain = make_optimizer(ml_collections.ConfigDict(base))
    scaled = make_optimizer(ml_collections.ConfigDict(dict(base, layer_lr_from=1, layer_lr_factor=8.0)))
    params = _layered_params()
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.1, params)
    s_plain, s_scaled = plain.init(params), scaled.init(params)
    for _ in range(4):
        u_plain, s_plain = plain.update(grads, s_plain, params)
        u_scaled, s_scaled = scaled.update(grads, s_scaled, params)
    got, want = u_scaled["params"], u_plain["params"]
    np.testing.assert_allclose(got["layers_2"]["mlp"]["w"], 8.0 * want["layers_2"]["mlp"]["w"], rtol=1e-6)
    assert float(jnp.max(jnp.abs(want["layers_2"]["mlp"]["w"]))) > 0
    for name in ("layers_0", "data_node_layers_0", "head"):
        np.testing.assert_array_equal(jax.tree.leaves(got[name]), jax.tree.leaves(want[name]))
    # The factor 1 is the plain chain, state and all (checkpoints of earlier runs restore into it).
    same = make_optimizer(ml_collections.ConfigDict(dict(base, layer_lr_from=1, layer_lr_factor=1.0)))
    assert jax.tree.structure(same.init(params)) == jax.tree.structure(plain.init(params))


@pytest.mark.parametrize(
    "field, value, needle",
    [("layer_lr_factor", 0.0, "layer_lr_factor must be a finite number > 0"),
     ("layer_lr_factor", float("nan"), "layer_lr_factor must be a finite number > 0"),
     ("layer_lr_from", -1, "layer_lr_from")],
)  # fmt: skip
def test_layer_rate_fields_are_checked(field, value, needle):
    cfg = dict(lr=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, warmup_steps=2, decay_steps=10, end_lr=0.0)
    cfg[field] = value
    with pytest.raises(ValueError, match=needle):
        make_optimizer(ml_collections.ConfigDict(cfg))


def test_layer_rate_factor_that_scales_nothing_is_refused():
    """A factor whose layers do not exist (beyond the last layer, or the encoder's differently named layers)."""
    cfg = dict(lr=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, warmup_steps=2, decay_steps=10, end_lr=0.0)
    tx = make_optimizer(ml_collections.ConfigDict(dict(cfg, layer_lr_from=3, layer_lr_factor=8.0)))
    with pytest.raises(ValueError, match="no parameter lies in a layer layers_k with k >= 3"):
        tx.init(_layered_params())
