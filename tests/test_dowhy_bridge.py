"""The DoWhy-GCM bridge (cfip_jax.integrations.dowhy): DoWhy tools run on Cond-FiP mechanisms and agree with ours."""

import jax
import networkx as nx
import numpy as np
import pandas as pd
import pytest

gcm = pytest.importorskip("dowhy.gcm")

from cfip_jax.api import CondFiP  # noqa: E402
from cfip_jax.integrations.dowhy import CondFiPPrediction, fit_gcm, to_gcm  # noqa: E402

EDGES = [("A", "B"), ("A", "C"), ("B", "D"), ("C", "D")]
NOISE = 0.5


def _linear(n, seed, shock=None):
    """A = N(0, 1); B = 1.5 A + n_B; C = −A + n_C; D = B + 0.5 C + n_D; noise sd 0.5 (``shock``: added to n_B)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = 1.5 * a + NOISE * rng.normal(size=n) + (0.0 if shock is None else shock)
    c = -a + NOISE * rng.normal(size=n)
    d = b + 0.5 * c + NOISE * rng.normal(size=n)
    return pd.DataFrame(dict(A=a, B=b, C=c, D=d))


@pytest.fixture(scope="module")
def fitted():
    gcm.config.disable_progress_bars()
    data = _linear(400, 0)
    scm = CondFiP.pretrained().fit(data, EDGES)
    return data, scm, to_gcm(scm)


def test_the_model_has_cond_fip_mechanisms_and_fitted_noise(fitted):
    data, scm, cm = fitted
    assert set(cm.graph.edges) == set(EDGES)
    assert isinstance(cm.causal_mechanism("A"), gcm.EmpiricalDistribution)
    mech = cm.causal_mechanism("D")
    assert isinstance(mech.prediction_model, CondFiPPrediction)
    # DoWhy's noise is ours: x_D − F_D(B, C) on the fitted rows.
    ours = np.asarray(scm.noise(data))[:, 3]
    theirs = mech.estimate_noise(data["D"].to_numpy(), data[["B", "C"]].to_numpy()).ravel()
    np.testing.assert_allclose(theirs, ours, atol=2e-4)


def test_counterfactuals_through_dowhy_equal_ours(fitted):
    data, scm, cm = fitted
    rows = data.iloc[:7]
    theirs = gcm.counterfactual_samples(cm, {"B": lambda x: 2.0 * np.ones_like(x)}, observed_data=rows)
    ours = scm.counterfactual(rows, {"B": 2.0})
    np.testing.assert_allclose(theirs[list(data.columns)].to_numpy(), ours.to_numpy(), atol=1e-4)


def test_interventional_means_agree(fitted):
    data, scm, cm = fitted
    n = 4000
    theirs = gcm.interventional_samples(cm, {"A": lambda x: np.ones_like(x)}, num_samples_to_draw=n)
    ours = scm.intervene({"A": 1.0}, n, jax.random.key(0))
    se = np.sqrt((theirs.var() + ours.var()) / n).to_numpy()
    assert np.all(np.abs(theirs.mean().to_numpy() - ours.mean().to_numpy()) < 4 * se + 1e-6)
    assert abs(ours["B"].mean() - 1.5) < 0.25  # and both near the truth, E[B | do(A = 1)] = 1.5


def test_arrow_strength_and_anomaly_attribution_run_on_it(fitted):
    data, scm, cm = fitted
    strength = gcm.arrow_strength(cm, "D", num_samples_conditional=200, max_num_runs=200, n_jobs=1)
    assert set(strength) == {("B", "D"), ("C", "D")}
    assert strength[("B", "D")] > strength[("C", "D")] > 0  # B's coefficient (1) dominates C's (0.5)
    anomaly = _linear(1, 7, shock=6 * NOISE)  # B's noise is six of its standard deviations off
    config = gcm.shapley.ShapleyConfig(n_jobs=1)  # DoWhy's default (all cores) spawns processes: slower here
    scores = gcm.attribute_anomalies(cm, "D", anomaly_samples=anomaly, num_distribution_samples=500,
                                     shapley_config=config)  # fmt: skip
    assert max(scores, key=lambda node: float(scores[node][0])) == "B"


def test_fit_gcm_with_refinement_matches_dowhy_within_the_noise():
    gcm.config.disable_progress_bars()
    data = _linear(400, 1)
    ours = gcm.InvertibleStructuralCausalModel(nx.DiGraph(EDGES))
    scm = fit_gcm(ours, data, refine="auto")
    assert scm.refined_steps > 0
    theirs = gcm.InvertibleStructuralCausalModel(nx.DiGraph(EDGES))
    gcm.auto.assign_causal_mechanisms(theirs, data)
    gcm.fit(theirs, data)
    fresh = _linear(300, 2)
    for node, parents in (("B", ["A"]), ("C", ["A"]), ("D", ["B", "C"])):
        x = fresh[parents].to_numpy()
        a = ours.causal_mechanism(node).prediction_model.predict(x).ravel()
        b = theirs.causal_mechanism(node).prediction_model.predict(x).ravel()
        assert np.sqrt(np.mean((a - b) ** 2)) < NOISE, node


def test_bad_input():
    with pytest.raises(ValueError, match="needs an InferredSCM"):
        to_gcm("not an scm")
    cm = gcm.InvertibleStructuralCausalModel(nx.DiGraph([("A", "Z")]))
    with pytest.raises(ValueError, match="no column for node"):
        fit_gcm(cm, _linear(50, 0))
