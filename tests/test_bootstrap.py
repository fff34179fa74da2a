"""Effects and their bootstrap intervals (InferredSCM.effect, CondFiP.bootstrap, cfip_jax.bootstrap, the CLI's
``effect``): the linear closed form, the batched fit equal to fitting each resample, bad input refused up front."""

import json

import jax
import numpy as np
import pandas as pd
import pytest
from helpers import linear_inferred_scm, random_model

from cfip_jax import bootstrap as bootstrap_lib
from cfip_jax import cli, model_io
from cfip_jax.bench import bootstrap as bench
from cfip_jax.inference.refine import RefineConfig


def _linear(w, mean, std):
    """An InferredSCM whose standardised mechanism is z ↦ z W (nodes in topological order)."""
    return linear_inferred_scm(w, mean, std, np.random.default_rng(0).normal(size=(50, w.shape[0])))


def test_effect_is_the_total_effect_of_a_linear_scm():
    rng = np.random.default_rng(1)
    d = 5
    w = np.triu(rng.uniform(0.5, 1.5, (d, d)) * (rng.random((d, d)) < 0.8), 1)
    mean, std = rng.normal(size=d), rng.uniform(0.5, 3.0, d)
    scm = _linear(w, mean, std)
    total = np.linalg.inv(np.eye(d) - w)  # standardised total effects
    key = jax.random.key(0)
    # do(x0 = 2) against do(x0 = -1), in user units: Δz0 = 3 / std0, Δx4 = std4 · total[0, 4] · Δz0
    got = scm.effect("x4", {"x0": 2.0}, {"x0": -1.0}, n=64, key=key)
    np.testing.assert_allclose(got, std[4] * total[0, 4] * 3.0 / std[0], rtol=1e-4)
    # two treatments at once: x1's own effect with x0 held fixed is the cut system's
    cut = w.copy()
    cut[:, :2] = 0.0
    through = np.linalg.inv(np.eye(d) - cut)
    got = scm.effect(4, {0: 0.0, 1: 1.0}, {0: 0.0, 1: 0.0}, n=64, key=key)
    np.testing.assert_allclose(got, std[4] * (w[1] @ through[:, 4]) / std[1], rtol=1e-4)
    # against the observational mean: the mean of std4 · total[0, 4] · (a − z0) over the same noise draws
    obs = np.asarray(scm.sample(64, key))
    got = scm.effect("x4", {"x0": 2.0}, n=64, key=key)
    np.testing.assert_allclose(got, std[4] * total[0, 4] * np.mean((2.0 - obs[:, 0]) / std[0]), rtol=1e-3)
    # arms that set different nodes: the treated arm reuses only what neither reaches, and matches two full solves
    got = scm.effect("x4", {"x2": 1.0}, {"x1": 0.0}, n=64, key=key)
    arm = lambda values: np.asarray(scm.intervene(values, 64, key))[:, 4]  # noqa: E731
    want = np.mean(arm({"x2": 1.0}) - arm({"x1": 0.0}))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        (("nope", {"x0": 1.0}), "unknown node 'nope'"),
        (("x0", {"x0": 1.0}), "'x0' is also intervened on"),
        (("x2", {"x0": float("nan")}), "do for x0 is not finite"),
        (("x2", {}), "at least one node"),
        (("x2", {"x0": 1.0}, {"x2": 0.0}), "'x2' is also intervened on"),
    ],
)
def test_bad_effect_queries_are_refused(args, message):
    scm = _linear(np.triu(np.ones((3, 3)), 1), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match=message):
        scm.effect(*args, key=jax.random.key(0))


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    a = rng.normal(3.0, 2.0, 40)
    b = 0.5 * a + rng.normal(0, 1, 40)
    return pd.DataFrame({"a": a, "b": b, "c": np.sin(b) + rng.normal(0, 0.3, 40)})


EDGES = [("a", "b"), ("b", "c")]


def test_distinct_rows_rebuild_each_resample():
    rows = np.random.default_rng(0).integers(0, 50, (6, 50))
    distinct, inverse = bootstrap_lib.distinct_rows(rows, multiple=8)
    np.testing.assert_array_equal(np.take_along_axis(distinct, inverse, axis=1), rows)
    most = max(len(np.unique(r)) for r in rows)
    assert distinct.shape == (6, -(-most // 8) * 8) and distinct.shape[1] < 50  # fewer rows for the decoder than n
    for r, u in zip(rows, distinct, strict=True):
        assert set(u) == set(r)  # the padding repeats a row of the resample
    assert bootstrap_lib.distinct_rows(rows, multiple=64)[0].shape == (6, 50)  # never more than n


def test_batched_fit_equals_fitting_each_resample(model, frame):
    key = jax.random.key(3)
    boot = model.bootstrap(frame, EDGES, 4, key=key)
    rows = np.asarray(jax.random.randint(key, (4, len(frame)), 0, len(frame)))
    for b in range(4):
        one = model.fit(frame.iloc[rows[b]], EDGES)
        np.testing.assert_allclose(boot.std[b], one.std, rtol=1e-5)
        np.testing.assert_allclose(boot.noise_data[b], one.noise_data, atol=2e-4)
    e = boot.effect("c", {"a": 5.0}, {"a": 1.0}, n=200, key=jax.random.key(0))
    assert e.values.shape == (4,) and np.all(np.isfinite(e.values))
    assert np.quantile(e.values, 0.025) == pytest.approx(e.low) and e.low <= e.high and e.level == 0.95
    assert e.point == pytest.approx(boot.point.effect("c", {"a": 5.0}, {"a": 1.0}, n=200, key=jax.random.key(0)))
    assert e.estimate == pytest.approx(np.median(e.values)) and e.low <= e.estimate <= e.high
    assert boot.sample(7, jax.random.key(1)).shape == (4, 7, 3)
    moved = boot.intervene({"a": 5.0}, 7, jax.random.key(1))
    np.testing.assert_allclose(moved[..., 0], 5.0, rtol=1e-5)
    split = boot.replace(solve_chunk=3)  # solved 3 + 1 resamples at a time: the same values
    np.testing.assert_allclose(split.intervene({"a": 5.0}, 7, jax.random.key(1)), moved, rtol=1e-5, atol=1e-5)
    again = split.effect("c", {"a": 5.0}, {"a": 1.0}, n=200, key=jax.random.key(0))
    np.testing.assert_allclose(again.values, e.values, rtol=1e-4, atol=1e-5)


def test_concurrent_groups_give_the_same_fit_and_effect(model, frame):
    """5 resamples fitted by 2 concurrent calls (3 + 2, the second padded to 3) and 3 at once in pairs, against one
    sequential call: the same resamples' noise, statistics and effects."""
    key = jax.random.key(5)
    one = model.bootstrap(frame, EDGES, 5, key=key, workers=1)
    two = model.bootstrap(frame, EDGES, 5, key=key, workers=2, chunk=2)
    assert (one.workers, two.workers) == (1, 2)
    np.testing.assert_allclose(two.noise_data, one.noise_data, atol=1e-5)
    np.testing.assert_allclose(two.std, one.std, rtol=1e-6)
    np.testing.assert_allclose(two.cond.c, one.cond.c, atol=1e-5)
    arms = ("c", {"a": 5.0}, {"a": 1.0})
    want = one.effect(*arms, n=50, key=jax.random.key(0)).values
    got = two.replace(workers=3, solve_chunk=2).effect(*arms, n=50, key=jax.random.key(0)).values
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        model.bootstrap(frame, EDGES, 5, key=key, workers=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_boot=1), "n_boot must be >= 2"),
        (dict(level=1.0), "level must be in"),
        (dict(level=0.0), "level must be in"),
        (dict(refine=5), "zero-shot or closed-form"),
        (dict(refine="auto"), "zero-shot or closed-form"),
    ],
)
def test_bad_bootstrap_arguments_are_refused(model, frame, kwargs, message):
    args = dict(n_boot=3) | kwargs
    with pytest.raises(ValueError, match=message):
        model.bootstrap(frame, EDGES, args.pop("n_boot"), key=jax.random.key(0), **args)


def test_closed_form_bootstrap_recovers_a_linear_effect_that_zero_shot_misses(model):
    """A random-weight decoder is wrong on any data; on a linear-Gaussian SCM the closed-form correction refits each
    node on its parents in every resample, so the estimate lands within the slope's sampling error (1 / √300 ≈ 0.06)
    of the least-squares effect (x1's only parent is x0) and the interval covers it; the zero-shot ensemble misses
    it. A row drawn twice never lands in two folds of its resample."""
    rng = np.random.default_rng(4)
    x, adj, w = bench.linear_scm(rng, 4, 300)
    adj[0, 1], w[0, 1] = 1.0, 1.2  # 0 -> 1 for sure (x1's only parent)
    x = rng.normal(size=(300, 4)) @ np.linalg.inv(np.eye(4) - w)
    ols = np.linalg.lstsq(np.c_[x[:, :1], np.ones(300)], x[:, 1], rcond=None)[0][0]
    key, arms = jax.random.key(0), ({0: 1.0}, {0: 0.0})
    cf = model.bootstrap(x, adj, 8, key=key, refine="closed-form").effect(1, *arms, key=jax.random.key(1))
    zero = model.bootstrap(x, adj, 8, key=key).effect(1, *arms, key=jax.random.key(1))
    assert abs(cf.estimate - ols) < 0.05 and cf.low <= ols <= cf.high, (cf, ols)
    assert abs(zero.estimate - ols) > 0.2 * abs(ols) and not zero.low <= ols <= zero.high, (zero, ols)
    rows = bootstrap_lib.resample_rows(key, 300, 8)
    for r, folds in zip(rows, bootstrap_lib.resample_folds(300, rows, RefineConfig(seed=3)), strict=True):
        assert sorted(np.concatenate(folds)) == list(range(300))  # every position in one fold
        assert all(not set(r[f]) & set(r[g]) for f in folds for g in folds if f is not g)  # originals not shared


def test_effect_command_line(model, frame, tmp_path, capsys):
    export = model_io.export(model.model, tmp_path / "model")
    data = tmp_path / "d.csv"
    frame.to_csv(data, index=False)
    edges = tmp_path / "e.csv"
    edges.write_text("parent,child\na,b\nb,c\n")
    argv = ["effect", str(data), "--graph", str(edges), "--outcome", "c", "--do", "a=5", "--model", str(export)]
    assert cli.main(argv + ["--bootstrap", "3", "--out", str(tmp_path / "e.json")]) == 0
    out = json.loads((tmp_path / "e.json").read_text())
    assert out["outcome"] == "c" and len(out["values"]) == 3 and out["low"] <= out["high"]
    assert "95 % bootstrap interval, 3 resamples" in capsys.readouterr().out
    bad = [(["--bootstrap", "1"], "at least 2"), (["--level", "2"], "--level"),
           (["--baseline", "c=1"], "also intervened on"), (["--do", "zz=1"], "unknown node"),
           (["--bootstrap", "3", "--refine", "auto"], "not batched")]  # fmt: skip
    for extra, message in bad:
        assert cli.main(argv + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert cli.main([*argv[:4], "--outcome", "zz", "--do", "a=1"]) == 2


def test_coverage_machinery_uses_the_true_total_effect():
    rng = np.random.default_rng(0)
    x, adj, w = bench.linear_scm(rng, 6, 4000)
    i, j, truth = bench.pick_pair(rng, w)
    # the data's regression of x_j on x_i and x_i's parents recovers the total effect the benchmark scores against
    parents = np.flatnonzero(adj[:, i])
    design = np.column_stack([x[:, i], x[:, parents], np.ones(len(x))])
    assert np.linalg.lstsq(design, x[:, j], rcond=None)[0][0] == pytest.approx(truth, abs=0.1)
    result = bench.coverage(random_model(), trials=2, d=4, n=30, n_boot=3)
    assert result["trials"] == 2 and 0.0 <= result["coverage"] <= 1.0 and result["median_rel_error"] >= 0


def test_the_benchmarks_max_context_reaches_every_fit():
    assert bench.parse_max_context("all") is None and bench.parse_max_context("trained") == "trained"
    assert bench.parse_max_context("12") == 12
    with pytest.raises(SystemExit):  # argparse's one-line refusal, before any model is loaded
        bench.main(["--max-context", "most", "--trials", "0", "--time-d", "0"])
    for bad in (["--chunk", "0"], ["--reps", "0"], ["--solve-chunk", "0"], ["--workers", "0"]):
        with pytest.raises(SystemExit):
            bench.main([*bad, "--trials", "0", "--time-d", "0"])
    model = random_model()
    few = bench.coverage(model, trials=2, d=4, n=30, n_boot=3, max_context=8)
    every = bench.coverage(model, trials=2, d=4, n=30, n_boot=3, max_context=None)
    assert few["max_context"] == 8 and every["max_context"] is None
    # the same SCMs and keys: only the rows the encoder reads differ, so the intervals do
    assert few["median_rel_width"] != every["median_rel_width"]
