"""The EMA of the parameters with the reference's warm-up rule (cfip_jax.train.ema)."""

import jax.numpy as jnp
import numpy as np
import pytest

from cfip_jax.train.ema import EMAConfig, ema_decay, ema_update


def test_ema_reference_warmup_rule():
    cfg = EMAConfig()
    # δ = 1 − (1 + c − 100)^(−2/3) after the copy phase, capped at 0.99.
    assert float(ema_decay(100, cfg)) == 0.0
    np.testing.assert_allclose(float(ema_decay(110, cfg)), 1 - 11 ** (-2 / 3), rtol=1e-6)
    np.testing.assert_allclose(float(ema_decay(600, cfg)), 1 - 501 ** (-2 / 3), rtol=1e-6)
    assert float(ema_decay(5000, cfg)) == pytest.approx(0.99)

    ema = {"w": jnp.float32(0.0)}
    for c, theta in [(0, 5.0), (3, 7.0), (10, 2.0), (95, 9.0), (100, 4.0)]:
        new = ema_update(ema, {"w": jnp.float32(theta)}, c, cfg)
        if c % 10:
            assert float(new["w"]) == float(ema["w"])  # non-acting call
        else:
            assert float(new["w"]) == theta  # exact copy while c <= 100
        ema = new
    new = ema_update(ema, {"w": jnp.float32(14.0)}, 110, cfg)
    delta = 1 - 11 ** (-2 / 3)
    np.testing.assert_allclose(float(new["w"]), delta * 4.0 + (1 - delta) * 14.0, rtol=1e-6)


def test_ema_calls_accumulate_like_single_calls():
    cfg = EMAConfig(every=3, update_after=4)
    ema = {"a": jnp.arange(3.0)}
    params = {"a": jnp.array([5.0, -1.0, 2.0])}
    one = ema
    for c in range(7, 14):
        one = ema_update(one, params, c, cfg)
    many = ema_update(ema, params, 7, cfg, calls=7)
    np.testing.assert_allclose(np.asarray(many["a"]), np.asarray(one["a"]), rtol=1e-6)
    assert not np.allclose(np.asarray(many["a"]), np.asarray(ema["a"]))
