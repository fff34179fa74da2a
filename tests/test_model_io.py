"""cfip_jax.model_io: exporting a model and loading it back; the pretrained model shipped in the package."""

import numpy as np
import pytest
from helpers import four_node_frame, random_model

from cfip_jax import model_io
from cfip_jax.api import CondFiP

EDGES = [("a", "b"), ("b", "c"), ("a", "d")]


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture(scope="module")
def frame():
    return four_node_frame()


def test_export_round_trip(model, frame, tmp_path):
    model_io.export(model.model, tmp_path / "m")
    loaded = CondFiP.load(tmp_path / "m")
    a = model.fit(frame, EDGES).noise(frame)
    b = loaded.fit(frame, EDGES).noise(frame)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    with pytest.raises(ValueError, match="not a directory"):
        CondFiP.load(tmp_path / "missing")


def test_pretrained_loads_from_the_package_and_beats_predicting_zero():
    import jax

    from cfip_jax.eval import tasks
    from cfip_jax.scm import sampler
    from cfip_jax.scm.priors import scm_prior

    model = CondFiP.pretrained()
    assert model.info["config"] == "configs/cpu.py" and model.info["decoder_steps"] > 0
    k1, k2 = jax.random.split(jax.random.key(7))
    scm = sampler.sample_scm(k1, scm_prior("er", "linear", "gaussian"), 10)
    x, noise = (np.asarray(a) for a in sampler.sample_observational(k2, scm, 300))
    assert model.training_context == 200 and len(model.context_rows(300)) == 200
    inferred = model.fit(x, np.asarray(scm.adj))
    np.testing.assert_array_equal(inferred.noise(x), model.fit(x, np.asarray(scm.adj), max_context=200).noise(x))
    std = x.std(0, ddof=1)
    err = float(tasks.rmse(noise / std, np.asarray(inferred.noise(x)) / std))
    zero = float(tasks.rmse(noise / std, (x - x.mean(0)) / std))  # T = mean: the noise is the centred data
    assert err < 0.6 * zero
