"""The stages' losses on packed and unpacked batches (cfip_jax.train.stage)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_config

from cfip_jax.train import loop


@pytest.mark.parametrize("stage_name", ["encoder", "decoder"])
def test_packed_batches_give_the_same_loss_and_gradients(stage_name):
    """A configs/cpu.py-style mixture (d = 4 and 8 in rows of 8), tiny networks: packing only changes the layout."""
    import dataclasses

    from cfip_jax.scm.batch import sample_batch

    c = tiny_config(**{"data.node_counts": (4, 8), "data.max_nodes": 8, "data.n": 12, "data.n_context": 6})
    stage = loop.build_stage(c, stage_name)
    spec = loop.data_spec(c, 4)
    params = stage.init(jax.random.key(1), spec)
    frozen = stage.init_frozen(jax.random.key(2), spec) if stage_name == "decoder" else {}
    for seed in range(2):
        key = jax.random.key(10 + seed)
        plain, packed = sample_batch(key, spec), sample_batch(key, dataclasses.replace(spec, pack=True))
        assert packed.x.shape[0] == 3 < plain.x.shape[0]
        la, ga = jax.value_and_grad(lambda p, b=plain: stage.loss(p, frozen, b, None))(params)
        lb, gb = jax.value_and_grad(lambda p, b=packed: stage.loss(p, frozen, b, None))(params)
        np.testing.assert_allclose(float(lb), float(la), rtol=1e-5)
        scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ga))
        for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-5 * scale)
