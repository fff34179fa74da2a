"""Additive noise laws of the SCM prior (SPEC.md §2): Gaussian, Laplace and Cauchy with per-node scales.

Every node draws from its own key ``fold_in(key, node)``, so the values of node ``j`` never depend on how many nodes
(real or padded) an SCM has: an SCM padded from ``d`` to ``N`` nodes keeps the same noise on its real nodes.

Scales: ``scale ~ U[low, high]`` per node, or, when :attr:`NoisePrior.shared_scale` (the reference's linear-Gaussian
case), one scale per SCM shared by all its nodes. **Deliberate deviation**: the reference draws that shared scale once
when its sampler factory is built, so during a training run every linear-Gaussian SCM of a graph family reuses the same
constant (SPEC.md §2); we draw it afresh for every SCM, as the paper describes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cfip_jax.scm.priors import NOISES, NoisePrior

# Integer codes of the noise laws, in the order of :data:`cfip_jax.scm.priors.NOISES`.
NOISE_CODES: dict[str, int] = {name: i for i, name in enumerate(NOISES)}


def noise_code(kind: str) -> int:
    """The int32 code stored in :attr:`SCM.noise_kind` for a noise law name."""
    return NOISE_CODES[kind]


def per_node(key: jax.Array, num_nodes: int, draw) -> jax.Array:
    """Stack ``draw(fold_in(key, j))`` over nodes ``j = 0..num_nodes-1`` along a new leading axis.

    Node ``j``'s draw depends only on ``key`` and ``j``, never on ``num_nodes``.
    """
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(num_nodes, dtype=jnp.uint32))
    return jax.vmap(draw)(keys)


def sample_scales(key: jax.Array, prior: NoisePrior, node_mask: jax.Array) -> jax.Array:
    """Noise scales of one SCM.

    Args:
      key: PRNG key.
      prior: noise law and scale range (static).
      node_mask: ``[N]`` bool, True for real nodes.

    Returns:
      ``[N]`` float32 scales ~ U[low, high] (one shared draw when ``prior.shared_scale``); 0 on padded nodes.
    """
    low, high = prior.scale_range
    num_nodes = node_mask.shape[-1]
    if prior.shared_scale:
        scales = jnp.full((num_nodes,), jax.random.uniform(key, (), minval=low, maxval=high))
    else:
        scales = per_node(key, num_nodes, lambda k: jax.random.uniform(k, (), minval=low, maxval=high))
    return jnp.where(node_mask, scales, 0.0).astype(jnp.float32)


def standard_noise(key: jax.Array, kind: jax.Array | int, n: int, num_nodes: int) -> jax.Array:
    """Unit-scale noise of law ``kind`` (an int code, possibly traced), ``[n, num_nodes]``.

    Gaussian N(0, 1), Laplace(0, 1) (std √2) or Cauchy(0, 1). Column ``j`` comes from ``fold_in(key, j)``.
    """

    def column(k: jax.Array) -> jax.Array:
        return jax.lax.switch(
            jnp.asarray(kind, jnp.int32),
            (
                lambda k: jax.random.normal(k, (n,)),
                lambda k: jax.random.laplace(k, (n,)),
                lambda k: jax.random.cauchy(k, (n,)),
            ),
            k,
        )

    return per_node(key, num_nodes, column).T.astype(jnp.float32)


def sample_noise(key: jax.Array, kind: jax.Array | int, scale: jax.Array, n: int) -> jax.Array:
    """Additive noise ``ε = scale · ε₀`` with ``ε₀`` of unit scale.

    Args:
      key: PRNG key.
      kind: noise-law code (see :data:`NOISE_CODES`), scalar int (may be traced).
      scale: ``[N]`` per-node scales (0 on padded nodes, which therefore get ε = 0).
      n: number of samples (static).

    Returns:
      ``[n, N]`` float32 noise.
    """
    return standard_noise(key, kind, n, scale.shape[-1]) * scale[None, :]
