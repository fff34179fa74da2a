"""Batches of synthetic datasets drawn entirely on device (the training data of SPEC.md §5.3).

A :class:`BatchSpec` lists SCM priors and node counts to mix. Every (prior, node count) pair is a *combination*; the
``C`` combinations are assigned to the ``B`` datasets of a batch **round-robin with a random rotation**: dataset ``b``
uses combination ``(b + o) mod C`` with ``o ~ U{0..C-1}`` drawn per batch. So every combination is equally likely at
every position, the counts within a batch differ by at most one, and — unlike an independent uniform draw per
dataset — shapes stay static without evaluating every combination for every dataset. Internally each combination
samples ``ceil(B / C)`` datasets (vmapped, its prior and size static) and the batch gathers the ones it uses, so when
``C`` does not divide ``B`` up to ``C - 1`` datasets are drawn and discarded.

SCMs smaller than ``max_nodes`` are padded (real nodes ``0..d-1``): padded nodes have no edges, x = noise = 0, mean 0,
std 1, and never influence real nodes. With ``standardize`` each dataset is standardised per node with its own
statistics (ddof = 1, noise scaled not centred); ``mean``/``std`` map it back to raw units. The training target of the
networks is ``F(x) = x − noise``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
from flax import struct

from cfip_jax import validation as V
from cfip_jax.scm import sampler
from cfip_jax.scm.priors import SCMPrior
from cfip_jax.scm.standardize import standardize as standardize_fn


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """What :func:`sample_batch` draws (frozen and hashable: a static jit argument).

    Attributes:
      priors: SCM priors to mix (a tuple; lists are converted).
      node_counts: numbers of real nodes ``d`` to mix.
      max_nodes: padded size ``N ≥ max(node_counts)``; default ``max(node_counts)``.
      n: samples per dataset (≥ 2).
      batch_size: datasets per batch ``B`` (≥ 1).
      standardize: standardise each dataset per node (returning its statistics).
    """

    priors: tuple[SCMPrior, ...]
    node_counts: tuple[int, ...]
    max_nodes: int | None = None
    n: int = 400
    batch_size: int = 4
    standardize: bool = True

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)
        priors = (self.priors,) if isinstance(self.priors, SCMPrior) else tuple(self.priors)
        if not priors:
            raise ValueError("priors must list at least one SCM prior")
        for p in priors:
            if not isinstance(p, SCMPrior):
                raise ValueError(f"priors must contain SCMPrior objects, got {type(p).__name__}")
        counts = (self.node_counts,) if isinstance(self.node_counts, int) else tuple(self.node_counts)
        if not counts:
            raise ValueError("node_counts must list at least one node count")
        counts = tuple(V.check_int(d, "node_counts", minimum=2) for d in counts)
        for p in priors:
            for d in counts:
                p.graph.check_nodes(d)
        max_nodes = max(counts) if self.max_nodes is None else self.max_nodes
        set_("priors", priors)
        set_("node_counts", counts)
        set_("max_nodes", V.check_int(max_nodes, "max_nodes", minimum=max(counts)))
        set_("n", V.check_int(self.n, "n", minimum=2))
        set_("batch_size", V.check_int(self.batch_size, "batch_size", minimum=1))
        set_("standardize", bool(self.standardize))

    @property
    def combinations(self) -> tuple[tuple[SCMPrior, int], ...]:
        """The ``C`` (prior, node count) pairs, prior-major."""
        return tuple(itertools.product(self.priors, self.node_counts))

    @property
    def per_combination(self) -> int:
        """Datasets sampled per combination, ``ceil(B / C)``."""
        return -(-self.batch_size // len(self.combinations))


@struct.dataclass
class Batch:
    """A batch of ``B`` datasets of ``n`` samples on ``N`` (padded) nodes.

    Attributes:
      x: ``[B, n, N]`` samples (standardised when the spec says so).
      noise: ``[B, n, N]`` additive noise in the same units (scaled, not centred).
      adj: ``[B, N, N]`` float32 adjacency, ``adj[b, i, j] = 1`` ⇔ ``i -> j``.
      node_mask: ``[B, N]`` bool, True for real nodes.
      mean: ``[B, N]`` per-node mean used to standardise (0 when not standardised / padded).
      std: ``[B, N]`` per-node std used to standardise (1 when not standardised / padded).
    """

    x: jax.Array
    noise: jax.Array
    adj: jax.Array
    node_mask: jax.Array
    mean: jax.Array
    std: jax.Array


def combination_indices(key: jax.Array, spec: BatchSpec) -> jax.Array:
    """``[B]`` int32 index into ``spec.combinations`` of each dataset of the batch ``sample_batch(key, spec)``."""
    num = len(spec.combinations)
    offset = jax.random.randint(jax.random.split(key)[0], (), 0, num)
    return ((jnp.arange(spec.batch_size) + offset) % num).astype(jnp.int32)


def _one_dataset(key: jax.Array, prior: SCMPrior, d: int, spec: BatchSpec) -> Batch:
    k_scm, k_noise = jax.random.split(key)
    scm = sampler.sample_scm(k_scm, prior, d, spec.max_nodes)
    eps = sampler.sample_noise(k_noise, scm, spec.n)
    x = sampler.noise_to_sample(scm, eps, func=prior.mechanism.func)
    if spec.standardize:
        x, eps, stats = standardize_fn(x, eps, scm.node_mask)
        mean, std = stats.mean, stats.std
    else:
        mean, std = jnp.zeros_like(scm.noise_scale), jnp.ones_like(scm.noise_scale)
    return Batch(x=x, noise=eps, adj=scm.adj, node_mask=scm.node_mask, mean=mean, std=std)


@functools.partial(jax.jit, static_argnums=1)
def _sample_batch(key: jax.Array, spec: BatchSpec) -> Batch:
    data_key = jax.random.split(key)[1]
    per = spec.per_combination
    groups = []
    for c, (prior, d) in enumerate(spec.combinations):
        keys = jax.random.split(jax.random.fold_in(data_key, c), per)
        groups.append(jax.vmap(lambda k, prior=prior, d=d: _one_dataset(k, prior, d, spec))(keys))
    stacked = jax.tree.map(lambda *leaves: jnp.concatenate(leaves, axis=0), *groups)  # [C * per, ...]
    index = combination_indices(key, spec) * per + jnp.arange(spec.batch_size) // len(spec.combinations)
    return jax.tree.map(lambda leaf: jnp.take(leaf, index, axis=0), stacked)


def sample_batch(key: jax.Array, spec: BatchSpec) -> Batch:
    """Draw a batch of ``spec.batch_size`` synthetic datasets, deterministic given ``key``.

    Traceable with ``spec`` static (safe to call inside a jitted training step).

    Args:
      key: PRNG key.
      spec: the :class:`BatchSpec`.

    Returns:
      A :class:`Batch` with ``x, noise [B, n, N]``, ``adj [B, N, N]``, ``node_mask, mean, std [B, N]``.
    """
    if not isinstance(spec, BatchSpec):
        raise ValueError(f"spec must be a BatchSpec, got {type(spec).__name__}")
    return _sample_batch(key, spec)
