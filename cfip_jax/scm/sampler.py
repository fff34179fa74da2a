"""Structural causal models with additive noise: sampling, hard interventions and counterfactuals (SPEC.md §4).

An SCM maps noise to data by solving the fixed point ``x = f(x) + ε``. The reference runs ``d`` Jacobi passes from
``x = 0``. By default we solve the same fixed point exactly in one topological sweep: the nodes are put in an order
where parents come first (sorted by depth), and each node is evaluated once from its already-final parents. This
costs one evaluation of ``f_j`` per node instead of ``d`` evaluations of the whole ``f``, and gives the same solution
(up to float rounding: the sums run in a different layout). ``iterations=k`` runs ``k`` reference-style Jacobi passes
instead (``k = d`` reproduces the reference exactly).

Hard interventions ``do(X_I = a)`` clamp the intervened nodes to their values, ignore their noise and cut the edges
into them; a counterfactual reuses the factual noise in the intervened SCM.

Padded nodes (``node_mask`` False) have no edges, zero noise scale and the zero mechanism, and are forced to ``x = 0``.
Every per-node random quantity is drawn from a ``fold_in(key, node)`` key and the graph is drawn at its real size and
then padded, so an SCM sampled with ``max_nodes = N`` has the same real-node parameters for every ``N ≥ d``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from cfip_jax import validation as V
from cfip_jax.scm import graphs
from cfip_jax.scm import noise as noise_lib
from cfip_jax.scm.mechanisms import Mechanism, apply_mechanism, apply_node, sample_mechanism
from cfip_jax.scm.priors import SCMPrior


@struct.dataclass
class SCM:
    """One structural causal model with additive noise, padded to ``N`` nodes.

    Attributes:
      adj: ``[N, N]`` float32 adjacency, ``adj[i, j] = 1`` ⇔ ``i -> j``.
      node_mask: ``[N]`` bool, True for real nodes (``0..d-1``).
      mechanism: the :class:`~cfip_jax.scm.mechanisms.Mechanism`.
      noise_scale: ``[N]`` float32 noise scales (0 on padded nodes).
      noise_kind: int32 scalar, noise-law code (:data:`cfip_jax.scm.noise.NOISE_CODES`).
    """

    adj: jax.Array
    node_mask: jax.Array
    mechanism: Mechanism
    noise_scale: jax.Array
    noise_kind: jax.Array

    @property
    def num_nodes(self) -> int:
        """The padded size ``N`` (static)."""
        return self.adj.shape[-1]


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sample_scm(key: jax.Array, prior: SCMPrior, d: int, max_nodes: int) -> SCM:
    k_graph, k_mech, k_noise = jax.random.split(key, 3)
    pad = max_nodes - d
    adj = jnp.pad(graphs.sample_graph(k_graph, prior.graph, d), ((0, pad), (0, pad)))
    node_mask = jnp.arange(max_nodes) < d
    return SCM(
        adj=adj,
        node_mask=node_mask,
        mechanism=sample_mechanism(k_mech, prior.mechanism, adj, node_mask),
        noise_scale=noise_lib.sample_scales(k_noise, prior.noise, node_mask),
        noise_kind=jnp.asarray(noise_lib.noise_code(prior.noise.kind), jnp.int32),
    )


def sample_scm(key: jax.Array, prior: SCMPrior, d: int, max_nodes: int | None = None) -> SCM:
    """Draw one SCM from ``prior``.

    Args:
      key: PRNG key.
      prior: graph, mechanism and noise prior (static).
      d: number of real nodes (static, ≥ 2, larger than the family's edges per node).
      max_nodes: padded size ``N ≥ d`` (static); defaults to ``d``.

    Returns:
      The :class:`SCM` with ``N`` nodes; real nodes are ``0..d-1``.
    """
    d = prior.graph.check_nodes(d)
    max_nodes = d if max_nodes is None else V.check_int(max_nodes, "max_nodes", minimum=d)
    return _sample_scm(key, prior, d, max_nodes)


def sample_noise(key: jax.Array, scm: SCM, n: int) -> jax.Array:
    """``[n, N]`` additive noise of ``scm`` (0 on padded nodes)."""
    n = V.check_int(n, "n", minimum=1)
    return noise_lib.sample_noise(key, scm.noise_kind, scm.noise_scale, n)


def _permute_mechanism(mech: Mechanism, order: jax.Array) -> Mechanism:
    return mech.replace(
        weights=mech.weights[order][:, order],
        bias=mech.bias[order],
        omega=mech.omega[:, order],
        length_scale=mech.length_scale[order],
        output_scale=mech.output_scale[order],
    )


def _topological_solve(mech, adj, eps, intervened, values, func):
    """Exact fixed point by one sweep over the nodes in depth order (parents before children)."""
    num_nodes = adj.shape[-1]
    order = jnp.argsort(graphs.depth(adj), stable=True)
    inverse = jnp.argsort(order)
    adj_p = adj[order][:, order]
    mech_p = _permute_mechanism(mech, order)
    eps_p, values_p, clamp_p = eps[..., order], values[..., order], intervened[order]

    def step(k, x_p):
        f_k = apply_node(mech_p, adj_p[:, k], x_p, k, func=func)
        new = jnp.where(clamp_p[k], values_p[..., k], f_k + eps_p[..., k])
        return x_p.at[..., k].set(new)

    x_p = jax.lax.fori_loop(0, num_nodes, step, jnp.zeros_like(eps))
    return x_p[..., inverse]


@functools.partial(jax.jit, static_argnames=("iterations", "func"))
def _noise_to_sample(scm, eps, intervened, values, iterations, func):
    eps = jnp.asarray(eps, jnp.float32)
    intervened = intervened & scm.node_mask
    values = jnp.broadcast_to(jnp.asarray(values, jnp.float32), eps.shape)
    adj = scm.adj * (1.0 - intervened.astype(jnp.float32))[None, :]  # cut edges into intervened nodes
    if iterations is None:
        x = _topological_solve(scm.mechanism, adj, eps, intervened, values, func)
    else:

        def jacobi(_, x):
            return jnp.where(intervened, values, apply_mechanism(scm.mechanism, adj, x, func=func) + eps)

        x = jax.lax.fori_loop(0, iterations, jacobi, jnp.where(intervened, values, 0.0))
    return jnp.where(scm.node_mask, x, 0.0)


def noise_to_sample(
    scm: SCM,
    noise: jax.Array,
    *,
    intervened: jax.Array | None = None,
    values: jax.Array | None = None,
    iterations: int | None = None,
    func: str | None = None,
) -> jax.Array:
    """Map noise to data: the solution of ``x = f(x) + ε``, optionally under a hard intervention.

    Args:
      scm: the SCM (``N`` nodes).
      noise: ``[..., n, N]`` additive noise ε.
      intervened: ``[N]`` bool, nodes clamped by ``do(·)`` (default none). Their noise is ignored and the edges into
        them are cut.
      values: intervention values broadcastable to ``[..., n, N]`` (``[N]``: one value per node shared by all samples,
        as in the reference; ``[..., n, N]``: per-sample values). Only read where ``intervened``.
      iterations: ``None`` (default) solves exactly by a topological sweep; an int runs that many Jacobi passes from
        ``x = 0`` as the reference does (``d`` passes are always exact).
      func: ``"linear"``/``"rff"`` when the mechanism family is known statically (faster under ``vmap``).

    Returns:
      ``[..., n, N]`` float32 samples (0 on padded nodes).
    """
    num_nodes = scm.num_nodes
    if iterations is not None:
        iterations = V.check_int(iterations, "iterations", minimum=0)
    if func is not None:
        V.check_choice(func, ("linear", "rff"), "mechanism")
    if jnp.shape(noise)[-1:] != (num_nodes,):
        raise ValueError(f"noise must have shape [..., n, {num_nodes}], got {jnp.shape(noise)}")
    intervened = jnp.zeros((num_nodes,), bool) if intervened is None else jnp.asarray(intervened, bool)
    if intervened.shape != (num_nodes,):
        raise ValueError(f"intervened must have shape [{num_nodes}], got {intervened.shape}")
    values = jnp.zeros((num_nodes,), jnp.float32) if values is None else values
    return _noise_to_sample(scm, noise, intervened, values, iterations, func)


def sample_observational(key: jax.Array, scm: SCM, n: int, *, func: str | None = None) -> tuple[jax.Array, jax.Array]:
    """``n`` observational samples: ``(x [n, N], noise [n, N])``."""
    eps = sample_noise(key, scm, n)
    return noise_to_sample(scm, eps, func=func), eps


@functools.partial(jax.jit, static_argnames=("num_nodes",))
def _sample_intervention(key, x_factual, node_mask, num_nodes):
    n_total = x_factual.shape[-1]
    k_node, k_value = jax.random.split(key)
    scores = noise_lib.per_node(k_node, n_total, lambda k: jax.random.uniform(k, ()))
    scores = jnp.where(node_mask, scores, jnp.inf)
    rank = jnp.argsort(jnp.argsort(scores, stable=True), stable=True)
    intervened = (rank < num_nodes) & node_mask
    q10, q90 = jnp.quantile(x_factual, jnp.array([0.1, 0.9], jnp.float32), axis=-2, method="linear")
    u = noise_lib.per_node(k_value, n_total, lambda k: jax.random.uniform(k, ()))
    values = jnp.where(intervened, q10 + u * (q90 - q10), 0.0)
    return intervened, values.astype(jnp.float32)


def sample_intervention(
    key: jax.Array, x_factual: jax.Array, node_mask: jax.Array | None = None, num_nodes: int = 1
) -> tuple[jax.Array, jax.Array]:
    """The reference's intervention rule (SPEC.md §4.3).

    ``num_nodes`` distinct real nodes are chosen uniformly (one by default); each gets a value ~ U(q10, q90), the 10 %
    and 90 % quantiles (linear interpolation) of that node's values in ``x_factual``.

    Args:
      key: PRNG key.
      x_factual: ``[n, N]`` factual samples.
      node_mask: ``[N]`` bool, True for real nodes (default: all real).
      num_nodes: how many nodes to intervene on (static, ≥ 1; capped at the number of real nodes).

    Returns:
      ``(intervened [N] bool, values [N] float32)`` (values 0 where not intervened).
    """
    x_factual = jnp.asarray(x_factual, jnp.float32)
    if x_factual.ndim != 2:
        raise ValueError(f"x_factual must have shape [n, N], got {x_factual.shape}")
    num_nodes = V.check_int(num_nodes, "num_nodes", minimum=1)
    size = x_factual.shape[-1]
    node_mask = jnp.ones((size,), bool) if node_mask is None else jnp.asarray(node_mask, bool)
    return _sample_intervention(key, x_factual, node_mask, num_nodes)


def counterfactual(
    scm: SCM,
    noise: jax.Array,
    intervened: jax.Array,
    values: jax.Array,
    *,
    iterations: int | None = None,
    func: str | None = None,
) -> jax.Array:
    """Counterfactual samples: the factual noise ``[..., n, N]`` pushed through the intervened SCM."""
    return noise_to_sample(scm, noise, intervened=intervened, values=values, iterations=iterations, func=func)


def sample_counterfactual(
    key: jax.Array, scm: SCM, x_factual: jax.Array, noise: jax.Array, num_nodes: int = 1, *, func: str | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draw an intervention by the reference rule from ``x_factual`` and return its counterfactual.

    Args:
      key: PRNG key.
      scm: the SCM.
      x_factual: ``[n, N]`` factual samples, generated from ``noise``.
      noise: ``[n, N]`` their noise.
      num_nodes: number of intervened nodes.
      func: as in :func:`noise_to_sample`.

    Returns:
      ``(x_cf [n, N], intervened [N] bool, values [N])``.
    """
    intervened, values = sample_intervention(key, x_factual, scm.node_mask, num_nodes)
    return counterfactual(scm, noise, intervened, values, func=func), intervened, values
