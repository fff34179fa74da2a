"""Inputs tried by the hundred (Hypothesis): the public API's ``fit`` / ``sample`` / ``intervene`` /
``counterfactual`` / ``effect`` and the command line's parsers, fed generated frames (NaN, inf, huge, constant,
duplicate or unnamed columns, one row), graphs (cycles, self-loops, unknown names, duplicate edges), node-value maps
and sizes. Every call returns finite values of the right shape or raises one ``ValueError`` line — never another
exception type, never NaN.

Examples are drawn from a fixed seed (``derandomize``) in a bounded number, so CI runs the same cases every time;
``HYPOTHESIS_PROFILE=explore`` draws fresh, more numerous ones.
"""

import csv
import os

import jax
import numpy as np
import pandas as pd
import pytest
from helpers import random_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfip_jax import cli

_QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile("ci", max_examples=40, derandomize=True, deadline=None, database=None,
                          suppress_health_check=_QUIET)  # fmt: skip
settings.register_profile("explore", max_examples=300, deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

NAMES = ("a", "b", "c")
VALUES = st.one_of(
    st.floats(-5, 5),
    st.sampled_from([0.0, 1e30, -1e30, 1e300, float("nan"), float("inf"), -float("inf")]),
)


@pytest.fixture(scope="module")
def model():
    return random_model()


def _valid_or_value_error(call):
    """``call()``'s result, or None when it raised one ``ValueError`` line; any other exception fails the test."""
    try:
        return call()
    except ValueError as err:
        text = str(err)
        assert text and "\n" not in text, repr(text)
        return None


@st.composite
def frames(draw):
    d = draw(st.integers(1, 3))
    n = draw(st.sampled_from([30, 12, 2, 1]))
    columns = draw(st.lists(st.sampled_from(NAMES + ("",)), min_size=d, max_size=d))
    if not draw(st.booleans()):
        columns = list(NAMES[:d])  # mostly well-named, so the fit itself is reached
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.normal(size=(n, d)) * draw(st.sampled_from([1.0, 1e-6, 1e6]))
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):  # a few special values, in half of the frames
        x[draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))] = draw(VALUES)
    if draw(st.integers(0, 5)) == 0:
        x[:, draw(st.integers(0, d - 1))] = 3.0  # a constant column
    return pd.DataFrame(x, columns=columns)


edges = st.lists(st.tuples(st.sampled_from(NAMES + ("zz",)), st.sampled_from(NAMES + ("zz",))), max_size=4)


NODE_VALUES = st.dictionaries(st.sampled_from(NAMES + NAMES + ("zz",)), VALUES, min_size=1, max_size=2)


@given(frame=frames(), graph=edges, values=NODE_VALUES, n=st.sampled_from([5, 1, 0, -1]),
       outcome=st.sampled_from(NAMES + ("zz",)))  # fmt: skip
def test_fit_and_its_verbs_are_finite_or_refuse(model, frame, graph, values, n, outcome):
    scm = _valid_or_value_error(lambda: model.fit(frame, graph))
    if scm is None:
        return
    d = frame.shape[1]
    key = jax.random.key(0)
    for call, rows in ((lambda: scm.sample(n, key), n), (lambda: scm.intervene(values, n, key), n),
                       (lambda: scm.counterfactual(frame.head(2), values), min(2, len(frame)))):  # fmt: skip
        out = _valid_or_value_error(call)
        if out is not None:
            assert out.shape == (rows, d)
            assert np.all(np.isfinite(np.asarray(out))), (values, n)
    effect = _valid_or_value_error(lambda: scm.effect(outcome, values, n=n, key=key))
    assert effect is None or np.isfinite(effect)


@given(text=st.lists(st.lists(st.one_of(st.sampled_from(["a", "b", "", " ", "nan", "inf", "1e400", "x,y", "NA"]),
                                        st.floats(allow_nan=True).map(repr)), min_size=0, max_size=3),
                     max_size=5))  # fmt: skip
def test_data_csv_reader_returns_finite_numbers_or_refuses(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(text)
    out = _valid_or_value_error(lambda: cli.read_data_csv(path, min_rows=1))
    if out is not None:
        x, names = out
        assert np.all(np.isfinite(x)) and x.shape[1] == len(names) == len(set(names))


@given(pairs=st.lists(st.lists(st.sampled_from(NAMES + ("zz", "", "parent", "child")), min_size=1, max_size=3),
                      max_size=5))  # fmt: skip
def test_edge_csv_reader_returns_a_dag_or_refuses(tmp_path_factory, pairs):
    from cfip_jax import validation as V

    path = tmp_path_factory.mktemp("edges") / "edges.csv"
    path.write_text("".join(",".join(p) + "\n" for p in pairs))
    adj = _valid_or_value_error(lambda: cli.read_edges_csv(path, NAMES))
    if adj is not None:
        assert adj.shape == (3, 3) and V.find_cycle(adj) is None and not np.any(np.diag(adj))
