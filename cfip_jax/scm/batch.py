"""Batches of synthetic datasets drawn entirely on device (the training data of SPEC.md §5.3).

A :class:`BatchSpec` lists SCM priors and node counts to mix. Every (prior, node count) pair is a *combination*; the
``C`` combinations are assigned to the ``B`` datasets of a batch **round-robin with a random rotation**: dataset ``b``
uses combination ``(b + o) mod C`` with ``o ~ U{0..C-1}`` drawn per batch. So every combination is equally likely at
every position, the counts within a batch differ by at most one, and — unlike an independent uniform draw per
dataset — shapes stay static without evaluating every combination for every dataset. Internally each combination
samples ``ceil(B / C)`` datasets (vmapped, its prior and size static) and the batch gathers the ones it uses, so when
``C`` does not divide ``B`` up to ``C - 1`` datasets are drawn and discarded.

When ``B`` is smaller than ``C``, only the ``B`` datasets of the batch are drawn (one ``lax.switch`` branch each, in a
``lax.map`` over the datasets) with the keys the grouped path would give them, so both paths return the same datasets.

Each dataset is drawn at its real size ``d`` (per-node keys make the real nodes' values independent of the padded
size) and padded to ``max_nodes`` (real nodes ``0..d-1``): padded nodes have no edges, x = noise = 0, mean 0, std 1, and
never influence real nodes. With ``standardize`` each dataset is standardised per node with its own statistics (ddof =
1, noise scaled not centred); ``mean``/``std`` map it back to raw units. The training target of the networks is
``F(x) = x − noise``.

Packing (``BatchSpec(pack=True)``): the same datasets are laid out without padding where that saves rows — several small
datasets share one row of ``max_nodes`` nodes (e.g. two d = 10 datasets in a row of 20), as a block-diagonal graph.
The networks never mix nodes except along edges (node attention) and within a node (sample attention), so a packed
row computes exactly what its datasets would compute apart; ``segment`` tells the losses which dataset each node
belongs to. The layout is a static plan per rotation of the round-robin (first-fit decreasing), so shapes are static:
:attr:`BatchSpec.rows` rows of ``max_nodes`` nodes instead of ``B``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
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
      pack: lay the datasets out in :attr:`rows` rows, several small datasets per row (see the module docstring).
    """

    priors: tuple[SCMPrior, ...]
    node_counts: tuple[int, ...]
    max_nodes: int | None = None
    n: int = 400
    batch_size: int = 4
    standardize: bool = True
    pack: bool = False

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
        set_("pack", bool(self.pack))

    @property
    def combinations(self) -> tuple[tuple[SCMPrior, int], ...]:
        """The ``C`` (prior, node count) pairs, prior-major."""
        return tuple(itertools.product(self.priors, self.node_counts))

    @property
    def per_combination(self) -> int:
        """Datasets sampled per combination, ``ceil(B / C)``."""
        return -(-self.batch_size // len(self.combinations))

    @property
    def rows(self) -> int:
        """Leading size of a batch: ``B``, or the rows of the packed layout (``pack=True``)."""
        return packing_plan(self).rows if self.pack else self.batch_size

    @property
    def segments(self) -> int:
        """The most datasets one row holds: 1, or up to ``max_nodes // min(node_counts)`` when packed."""
        return packing_plan(self).segments if self.pack else 1


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
      segment: packed batches only: ``[R, N]`` int32, which of the row's datasets (``0..segments-1``) each node
        belongs to, −1 for padded nodes; None when every row is one dataset. (``B`` is then the number of rows ``R``.)
      segments: static, the most datasets a row holds (1 when not packed).
    """

    x: jax.Array
    noise: jax.Array
    adj: jax.Array
    node_mask: jax.Array
    mean: jax.Array
    std: jax.Array
    segment: jax.Array | None = None
    segments: int = struct.field(pytree_node=False, default=1)


def combination_indices(key: jax.Array, spec: BatchSpec) -> jax.Array:
    """``[B]`` int32 index into ``spec.combinations`` of each dataset of the batch ``sample_batch(key, spec)``."""
    num = len(spec.combinations)
    offset = jax.random.randint(jax.random.split(key)[0], (), 0, num)
    return ((jnp.arange(spec.batch_size) + offset) % num).astype(jnp.int32)


def _one_dataset(key: jax.Array, prior: SCMPrior, d: int, spec: BatchSpec) -> Batch:
    """One dataset drawn at its real size ``d`` and padded to ``spec.max_nodes`` (the same real-node values as an SCM
    drawn padded: every per-node quantity comes from a per-node key; only float summation order differs)."""
    k_scm, k_noise = jax.random.split(key)
    scm = sampler.sample_scm(k_scm, prior, d, d)
    eps = sampler.sample_noise(k_noise, scm, spec.n)
    x = sampler.noise_to_sample(scm, eps, func=prior.mechanism.func)
    if spec.standardize:
        x, eps, stats = standardize_fn(x, eps, scm.node_mask)
        mean, std = stats.mean, stats.std
    else:
        mean, std = jnp.zeros_like(scm.noise_scale), jnp.ones_like(scm.noise_scale)
    pad = spec.max_nodes - d
    nodes = lambda a, value=0.0: jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, pad)], constant_values=value)  # noqa: E731
    return Batch(
        x=nodes(x),
        noise=nodes(eps),
        adj=jnp.pad(scm.adj, ((0, pad), (0, pad))),
        node_mask=nodes(scm.node_mask, False),
        mean=nodes(mean),
        std=nodes(std, 1.0),
    )


def _dataset_key(data_key: jax.Array, combination: jax.Array, index: jax.Array, per: int) -> jax.Array:
    """The key of the ``index``-th dataset of a combination (the same in the grouped and the per-dataset paths)."""
    return jax.random.split(jax.random.fold_in(data_key, combination), per)[index]


def _per_dataset(data_key: jax.Array, combos: jax.Array, spec: BatchSpec) -> Batch:
    """Draw only the ``B`` datasets of the batch: a ``lax.map`` over them, each one ``lax.switch`` branch."""
    per, num = spec.per_combination, len(spec.combinations)
    branches = [functools.partial(_one_dataset, prior=prior, d=d, spec=spec) for prior, d in spec.combinations]

    def one(args):
        b, c = args
        return jax.lax.switch(c, branches, _dataset_key(data_key, c, b // num, per))

    return jax.lax.map(one, (jnp.arange(spec.batch_size), combos))


def _grouped(data_key: jax.Array, combos: jax.Array, spec: BatchSpec) -> Batch:
    """Draw ``per_combination`` datasets of every combination (vmapped), then gather the ones the batch uses."""
    per, num = spec.per_combination, len(spec.combinations)
    groups = []
    for c, (prior, d) in enumerate(spec.combinations):
        keys = jax.random.split(jax.random.fold_in(data_key, c), per)
        groups.append(jax.vmap(lambda k, prior=prior, d=d: _one_dataset(k, prior, d, spec))(keys))
    stacked = jax.tree.map(lambda *leaves: jnp.concatenate(leaves, axis=0), *groups)  # [C * per, ...]
    index = combos * per + jnp.arange(spec.batch_size) // num
    return jax.tree.map(lambda leaf: jnp.take(leaf, index, axis=0), stacked)


@functools.partial(jax.jit, static_argnums=1)
def _sample_batch(key: jax.Array, spec: BatchSpec) -> Batch:
    data_key = jax.random.split(key)[1]
    combos = combination_indices(key, spec)
    draw = _per_dataset if spec.batch_size < len(spec.combinations) else _grouped
    batch = draw(data_key, combos, spec)
    return _pack(batch, combos, spec) if spec.pack else batch


@dataclasses.dataclass(frozen=True)
class PackingPlan:
    """Where each dataset of a batch goes in the packed layout, for each rotation of the round-robin.

    The node count of dataset ``b`` is ``node_counts[(b + r) mod K]`` with ``r`` = the batch's combination offset mod
    ``K = len(node_counts)`` (combinations are prior-major), so ``K`` static plans cover every batch.

    Attributes:
      rows: rows of the packed layout (the most any rotation needs).
      segments: the most datasets one row holds.
      dataset: ``[K, rows, N]`` int32, the dataset each packed node comes from (0 where unused).
      node: ``[K, rows, N]`` int32, its node index in that dataset.
      segment: ``[K, rows, N]`` int32, its dataset's position within the row, −1 where unused.
    """

    rows: int
    segments: int
    dataset: np.ndarray
    node: np.ndarray
    segment: np.ndarray


@functools.lru_cache(maxsize=64)
def packing_plan(spec: BatchSpec) -> PackingPlan:
    """First-fit-decreasing packing of each rotation's datasets into rows of ``spec.max_nodes`` nodes."""
    k, cap = len(spec.node_counts), spec.max_nodes
    layouts = []
    for r in range(k):
        counts = [spec.node_counts[(b + r) % k] for b in range(spec.batch_size)]
        rows: list[list[int]] = []  # dataset indices per row
        for b in sorted(range(spec.batch_size), key=lambda b: (-counts[b], b)):
            free = [i for i, row in enumerate(rows) if sum(counts[o] for o in row) + counts[b] <= cap]
            if free:
                rows[free[0]].append(b)
            else:
                rows.append([b])
        layouts.append((rows, counts))
    num_rows = max(len(rows) for rows, _ in layouts)
    segments = max(len(row) for rows, _ in layouts for row in rows)
    dataset, node = np.zeros((2, k, num_rows, cap), np.int32)
    segment = np.full((k, num_rows, cap), -1, np.int32)
    for r, (rows, counts) in enumerate(layouts):
        for i, row in enumerate(rows):
            start = 0
            for g, b in enumerate(row):
                span = slice(start, start + counts[b])
                dataset[r, i, span], node[r, i, span], segment[r, i, span] = b, np.arange(counts[b]), g
                start += counts[b]
    return PackingPlan(num_rows, segments, dataset, node, segment)


def _pack(batch: Batch, combos: jax.Array, spec: BatchSpec) -> Batch:
    """The padded batch ``[B, ...]`` laid out in the packed rows ``[R, ...]`` of :func:`packing_plan`."""
    plan = packing_plan(spec)
    rotation = combos[0] % len(spec.node_counts)  # dataset 0 uses combination offset mod C
    ds, nd, seg = (jnp.asarray(t)[rotation] for t in (plan.dataset, plan.node, plan.segment))  # [R, N]
    used = seg >= 0

    def nodes(a, fill):  # a [B, ..., N] -> [R, ..., N]; node j of row i is a[ds[i, j], ..., nd[i, j]]
        moved = jnp.moveaxis(a, -1, 1)  # [B, N, ...]
        gathered = moved[ds, nd]  # [R, N, ...]
        gathered = jnp.where(used.reshape(used.shape + (1,) * (gathered.ndim - 2)), gathered, fill)
        return jnp.moveaxis(gathered, 1, -1)

    same = used[:, :, None] & used[:, None, :] & (seg[:, :, None] == seg[:, None, :])
    adj = jnp.where(same, batch.adj[ds[:, :, None], nd[:, :, None], nd[:, None, :]], 0.0)
    return Batch(
        x=nodes(batch.x, 0.0),
        noise=nodes(batch.noise, 0.0),
        adj=adj,
        node_mask=nodes(batch.node_mask, False),
        mean=nodes(batch.mean, 0.0),
        std=nodes(batch.std, 1.0),
        segment=seg,
        segments=plan.segments,
    )


def sample_batch(key: jax.Array, spec: BatchSpec) -> Batch:
    """Draw a batch of ``spec.batch_size`` synthetic datasets, deterministic given ``key``.

    Traceable with ``spec`` static (safe to call inside a jitted training step).

    Args:
      key: PRNG key.
      spec: the :class:`BatchSpec`.

    Returns:
      A :class:`Batch` with ``x, noise [B, n, N]``, ``adj [B, N, N]``, ``node_mask, mean, std [B, N]`` (``B`` replaced
      by :attr:`BatchSpec.rows` when the spec packs, with ``segment [R, N]``).
    """
    if not isinstance(spec, BatchSpec):
        raise ValueError(f"spec must be a BatchSpec, got {type(spec).__name__}")
    return _sample_batch(key, spec)
