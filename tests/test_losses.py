"""The stage losses, masked and per packed dataset (cfip_jax.train.losses)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cfip_jax.train import losses


def test_losses_closed_form_and_padding_ignored():
    # B = 2 datasets, n = 2 samples, N = 3 nodes; dataset 1 has a padded node 2 with a huge error.
    pred = jnp.array([[[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], [[3.0, 4.0, 1e6], [0.0, 0.0, -1e6]]])
    target = jnp.zeros_like(pred)
    mask = jnp.array([[True, True, True], [True, True, False]])
    per_sample = losses.per_sample_rmse(pred, target, mask)
    np.testing.assert_allclose(
        np.asarray(per_sample), [[math.sqrt(5 / 3), math.sqrt(3)], [math.sqrt(25 / 2), 0.0]], rtol=1e-6
    )
    np.testing.assert_allclose(float(losses.encoder_loss(pred, target, mask)), float(np.mean(per_sample)), rtol=1e-6)
    per_dataset = losses.per_dataset_rmse(pred, target, mask)
    np.testing.assert_allclose(np.asarray(per_dataset), [math.sqrt(14 / 6), math.sqrt(25 / 4)], rtol=1e-6)
    np.testing.assert_allclose(float(losses.decoder_loss(pred, target, mask)), float(np.mean(per_dataset)), rtol=1e-6)
    # The two stage losses differ: root per sample vs root per dataset.
    enc, dec = float(losses.encoder_loss(pred, target, mask)), float(losses.decoder_loss(pred, target, mask))
    assert enc != pytest.approx(dec)
    # Exactly zero error: gradient 0, not NaN.
    g = jax.grad(lambda p: losses.encoder_loss(p, jnp.zeros_like(p), mask) + losses.decoder_loss(p, 0 * p, mask))(
        jnp.zeros_like(pred)
    )
    assert np.all(np.isfinite(np.asarray(g)))


def test_segment_losses_equal_the_losses_of_the_datasets_apart():
    """A packed row holding two datasets has the loss of the two datasets laid out one per row."""
    rng = np.random.default_rng(0)
    pred, target = (jnp.asarray(rng.normal(size=(3, 5, 6)), jnp.float32) for _ in range(2))
    mask = jnp.asarray([[True] * 6, [True] * 4 + [False] * 2, [True] * 3 + [False] * 3])
    packed_pred = jnp.concatenate([pred[1, :, :4], pred[2, :, :2]], axis=-1)[None]  # [1, 5, 6]: 4 + 2 nodes
    packed_target = jnp.concatenate([target[1, :, :4], target[2, :, :2]], axis=-1)[None]
    segment = jnp.asarray([[0, 0, 0, 0, 1, 1]])
    apart_mask = jnp.asarray([[True] * 4 + [False] * 2, [True] * 2 + [False] * 4])
    apart_pred = jnp.stack([pred[1], jnp.pad(pred[2, :, :2], ((0, 0), (0, 4)))])
    apart_target = jnp.stack([target[1], jnp.pad(target[2, :, :2], ((0, 0), (0, 4)))])
    for fn in (losses.encoder_loss, losses.decoder_loss):
        expected = float(fn(apart_pred, apart_target, apart_mask))
        got = float(fn(packed_pred, packed_target, packed_pred[..., 0, :] == packed_pred[..., 0, :], segment, 2))
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        # one dataset per row, written as segments: the plain loss
        plain = float(fn(pred, target, mask))
        seg = jnp.where(mask, 0, -1)
        np.testing.assert_allclose(float(fn(pred, target, mask, seg, 1)), plain, rtol=1e-6)
