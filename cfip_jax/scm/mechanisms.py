"""Causal mechanisms of the SCM prior (SPEC.md §3): linear and random Fourier features (RFF).

One pytree type, :class:`Mechanism`, holds either family (``is_rff`` says which; the other family's fields are inert),
so linear and RFF mechanisms of the same size stack into one vmapped batch.

- Linear: ``f_j(x) = b_j + Σ_i A_ij W_ij x_i`` with every ``W_ij ~ U±[lo, hi]`` (signed uniform) and
  ``b_j ~ U[lo, hi]``.
- RFF: ``f_j(x) = b_j + √(2/M) s_j Σ_r α_r cos(u_rj / ℓ_j + φ_r)``, ``u_rj = Σ_i Ω_ri A_ij x_i``, with
  ``Ω_ri ~ N(0, 1)``, ``α_r ~ N(0, 1)``, ``φ_r ~ U[0, 2π)`` shared by all children and per-node ``ℓ_j``, ``s_j``,
  ``b_j``. A root node gets the constant ``b_j + √(2/M) s_j Σ_r α_r cos φ_r``.

Padded nodes have bias, output scale and weights 0, so their mechanism value is always 0. Per-node quantities are
drawn from ``fold_in(key, node)`` keys: the values of real nodes do not depend on the padded size ``N``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from cfip_jax.scm.noise import per_node
from cfip_jax.scm.priors import MechanismPrior


@struct.dataclass
class Mechanism:
    """Parameters of one SCM's mechanisms (linear or RFF), ``N`` nodes, ``M`` random features.

    Attributes:
      weights: ``[N, N]`` linear weights ``W`` (unmasked; the adjacency selects parents). Zero for RFF.
      bias: ``[N]`` per-node bias ``b`` (both families; 0 on padded nodes).
      omega: ``[M, N]`` RFF frequencies ``Ω`` (zero for linear).
      alpha: ``[M]`` RFF coefficients ``α`` (zero for linear).
      phi: ``[M]`` RFF phases ``φ`` (zero for linear).
      length_scale: ``[N]`` RFF length scales ``ℓ`` (1 for linear and on padded nodes).
      output_scale: ``[N]`` RFF output scales ``s`` (0 for linear and on padded nodes).
      is_rff: bool scalar array, True for an RFF mechanism.
    """

    weights: jax.Array
    bias: jax.Array
    omega: jax.Array
    alpha: jax.Array
    phi: jax.Array
    length_scale: jax.Array
    output_scale: jax.Array
    is_rff: jax.Array

    @property
    def num_features(self) -> int:
        """Number of random features ``M`` (static)."""
        return self.alpha.shape[-1]


def _uniform(low: float, high: float):
    return lambda k: jax.random.uniform(k, (), minval=low, maxval=high)


def _signed_uniform(low: float, high: float):
    """Draw from U±[low, high]: a magnitude in [low, high] with a random sign (probability 1/2 each)."""

    def draw(k: jax.Array) -> jax.Array:
        k_mag, k_sign = jax.random.split(k)
        magnitude = jax.random.uniform(k_mag, (), minval=low, maxval=high)
        return jnp.where(jax.random.bernoulli(k_sign), magnitude, -magnitude)

    return draw


def sample_mechanism(
    key: jax.Array, prior: MechanismPrior, adj: jax.Array, node_mask: jax.Array | None = None
) -> Mechanism:
    """Draw the mechanisms of one SCM.

    Args:
      key: PRNG key.
      prior: mechanism family and parameter ranges (static).
      adj: ``[N, N]`` adjacency (only its size is used: parents are selected when the mechanism is applied).
      node_mask: ``[N]`` bool, True for real nodes (default: all real). Padded nodes get the zero mechanism.

    Returns:
      The :class:`Mechanism` (float32 leaves).
    """
    num_nodes = adj.shape[-1]
    mask = jnp.ones((num_nodes,), bool) if node_mask is None else jnp.asarray(node_mask, bool)
    m = prior.num_features
    k_w, k_b, k_omega, k_alpha, k_phi, k_len, k_out = jax.random.split(key, 7)
    f32 = jnp.float32
    bias = jnp.where(mask, per_node(k_b, num_nodes, _uniform(*prior.bias_range)), 0.0)
    zeros_n = jnp.zeros((num_nodes,), f32)
    if prior.func == "linear":
        draw_w = _signed_uniform(*prior.weight_range)
        # W[i, j] comes from fold_in(fold_in(k_w, i), j).
        weights = per_node(k_w, num_nodes, lambda k: per_node(k, num_nodes, draw_w))
        weights = jnp.where(mask[:, None] & mask[None, :], weights, 0.0)
        return Mechanism(
            weights=weights.astype(f32),
            bias=bias.astype(f32),
            omega=jnp.zeros((m, num_nodes), f32),
            alpha=jnp.zeros((m,), f32),
            phi=jnp.zeros((m,), f32),
            length_scale=jnp.ones((num_nodes,), f32),
            output_scale=zeros_n,
            is_rff=jnp.asarray(False),
        )
    omega = per_node(k_omega, num_nodes, lambda k: jax.random.normal(k, (m,))).T  # [M, N]; column j from node j's key
    length = per_node(k_len, num_nodes, _uniform(*prior.length_scale_range))
    scale = per_node(k_out, num_nodes, _uniform(*prior.output_scale_range))
    return Mechanism(
        weights=jnp.zeros((num_nodes, num_nodes), f32),
        bias=bias.astype(f32),
        omega=jnp.where(mask[None, :], omega, 0.0).astype(f32),
        alpha=jax.random.normal(k_alpha, (m,), f32),
        phi=jax.random.uniform(k_phi, (m,), f32, minval=0.0, maxval=2.0 * math.pi),
        length_scale=jnp.where(mask, length, 1.0).astype(f32),
        output_scale=jnp.where(mask, scale, 0.0).astype(f32),
        is_rff=jnp.asarray(True),
    )


def _rff_features(mech: Mechanism, u: jax.Array, length: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """``b + √(2/M) s Σ_r α_r cos(u_r / ℓ + φ_r)`` for ``u [..., M, K]``, per-output ``ℓ, s, b [K]`` → ``[..., K]``."""
    c = math.sqrt(2.0 / mech.num_features)
    lead = (1,) * (u.ndim - 1)
    features = jnp.cos(u / length.reshape(lead + (-1,)) + mech.phi.reshape(lead[:-1] + (-1, 1)))
    out = mech.alpha @ features  # [..., K]
    rows = (1,) * (out.ndim - 1)
    return bias.reshape(rows + (-1,)) + c * scale.reshape(rows + (-1,)) * out


def _linear_apply(mech: Mechanism, adj: jax.Array, x: jax.Array) -> jax.Array:
    out = x @ (mech.weights * adj)
    return mech.bias.reshape((1,) * (out.ndim - 1) + (-1,)) + out


def _rff_apply(mech: Mechanism, adj: jax.Array, x: jax.Array) -> jax.Array:
    omega = mech.omega.reshape((1,) * (x.ndim - 1) + mech.omega.shape)
    u = (x[..., None, :] * omega) @ adj  # [..., M, N]: u_rj = Σ_i Ω_ri A_ij x_i
    return _rff_features(mech, u, mech.length_scale, mech.output_scale, mech.bias)


def apply_mechanism(mech: Mechanism, adj: jax.Array, x: jax.Array, *, func: str | None = None) -> jax.Array:
    """Noiseless mechanism values ``f(x)`` for every node.

    Args:
      mech: the mechanism (``N`` nodes).
      adj: ``[N, N]`` adjacency, ``adj[i, j] = 1`` ⇔ ``i -> j`` (cut edges here to intervene).
      x: ``[..., N]`` node values.
      func: ``"linear"`` or ``"rff"`` when known statically (evaluates one family only); ``None`` selects by
        ``mech.is_rff`` (under ``vmap`` with a batched flag both families are evaluated).

    Returns:
      ``[..., N]`` values ``f(x)``; roots get their constant, padded nodes 0.
    """
    x = jnp.asarray(x, jnp.float32)
    adj = jnp.asarray(adj, jnp.float32)
    if func == "linear":
        return _linear_apply(mech, adj, x)
    if func == "rff":
        return _rff_apply(mech, adj, x)
    if func is not None:
        raise ValueError(f"unknown mechanism {func!r}; valid: linear, rff")
    return jax.lax.cond(mech.is_rff, _rff_apply, _linear_apply, mech, adj, x)


def apply_node(
    mech: Mechanism, parents: jax.Array, x: jax.Array, j: jax.Array | int, *, func: str | None = None
) -> jax.Array:
    """Mechanism value ``f_j(x)`` of a single node ``j`` (used by the topological solver).

    Args:
      mech: the mechanism.
      parents: ``[N]`` column ``adj[:, j]`` (1 for the parents of ``j``).
      x: ``[..., N]`` node values.
      j: node index (may be traced).
      func: as in :func:`apply_mechanism`.

    Returns:
      ``[...]`` values of ``f_j``.
    """

    def linear(mech, parents, x, j):
        return mech.bias[j] + x @ (mech.weights[:, j] * parents)

    def rff(mech, parents, x, j):
        u = x @ (mech.omega * parents[None, :]).T  # [..., M]
        features = jnp.cos(u / mech.length_scale[j] + mech.phi.reshape((1,) * (u.ndim - 1) + (-1,)))
        return mech.bias[j] + math.sqrt(2.0 / mech.num_features) * mech.output_scale[j] * (features @ mech.alpha)

    if func == "linear":
        return linear(mech, parents, x, j)
    if func == "rff":
        return rff(mech, parents, x, j)
    if func is not None:
        raise ValueError(f"unknown mechanism {func!r}; valid: linear, rff")
    return jax.lax.cond(mech.is_rff, rff, linear, mech, parents, x, j)
