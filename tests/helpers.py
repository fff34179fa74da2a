"""Shared test helpers: the tiny run config, tree comparisons, checkpoint listings."""

import os

import jax
import numpy as np

from cfip_jax.train.parallel import to_host
from configs import test

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
    """``configs/test.py`` (tiny networks and SCMs) with dotted-key overrides, e.g. ``**{"encoder.steps": 6}``."""
    c = test.get_config()
    for key, value in overrides.items():
        node = c
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return c


def assert_trees_equal(a, b):
    """Same structure, bit-identical leaves (fetched to the host)."""
    a, b = to_host(a), to_host(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def saved_steps(workdir, stage="encoder"):
    """The steps of the checkpoints kept for ``stage`` in ``workdir``."""
    return sorted(int(s) for s in os.listdir(os.path.join(workdir, stage, "checkpoints")) if s.isdigit())
