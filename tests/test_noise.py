"""The noise models (cfip_jax.inference.noise): what each draws, per node and per dataset of a batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cfip_jax.inference import noise


def _abducted(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * np.arange(1, shape[-1] + 1), jnp.float32)


def test_empirical_draws_each_nodes_own_values_independently_across_nodes():
    data = _abducted((30, 4))
    out = np.asarray(noise.draw(data, 500, jax.random.key(0), "empirical"))
    cols = np.asarray(data)
    for j in range(4):
        assert np.isin(out[:, j], cols[:, j]).all()  # only values of that node's column
    rows = np.stack([np.argmax(out[:, j][:, None] == cols[None, :, j], axis=1) for j in range(4)], 1)
    assert (rows[:, 0] != rows[:, 1]).mean() > 0.8  # nodes drawn independently, not whole rows


def test_gaussian_draws_match_each_nodes_mean_and_spread():
    data = _abducted((200, 3), seed=1) + 2.0
    out = np.asarray(noise.draw(data, 40_000, jax.random.key(1), "gaussian"))
    np.testing.assert_allclose(out.mean(0), np.asarray(data).mean(0), atol=0.06)
    np.testing.assert_allclose(out.std(0), np.asarray(data).std(0, ddof=1), rtol=0.02)


def test_a_batch_draws_each_dataset_from_its_own_noise():
    data = jnp.stack([_abducted((20, 3), seed=2), 100.0 + _abducted((20, 3), seed=3)])  # [2, 20, 3]
    for model in noise.MODELS:
        out = np.asarray(noise.draw(data, 50, jax.random.key(2), model))
        assert out.shape == (2, 50, 3)
        assert out[0].max() < 50 < out[1].min()


def test_an_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown noise model 'laplace'"):
        noise.draw(_abducted((5, 2)), 3, jax.random.key(0), "laplace")
