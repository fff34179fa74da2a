"""Attention kernels: DAG attention over the node axis and standard attention over the sample axis.

The ``*_heads`` kernels take head-major layouts with the batch axes leading (``[B, n, H, N, d]`` for node attention,
``[B, N, H, n, d]`` for sample attention), the layout in which XLA's batched matrix products are fastest on CPU; the
blocks in :mod:`cfip_jax.nn.layers` produce it directly. :func:`dag_attention` and :func:`sample_attention` are
convenience wrappers on ``[B, n, N, H, d]`` activations.

DAG attention (FiP's partial-optimal-transport normalisation, SPEC.md §6.3): for query node i and its parents j,

    w_ij = exp(s_ij) / max(Σ_j exp(s_ij), 1),

so the weights of a row sum to min(1, Σ_j exp(s_ij)) and a node without parents gets the zero vector. This is neither
a softmax nor a softmax with a null logit (that would be exp(s)/(1 + Σ exp(s))).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dag_attention_weights(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Row-normalise scores over the allowed keys with w = exp(s) / max(Σ exp(s), 1).

    Computed in float32 with the shift m = stop_gradient(max(max_j s_ij, 0)):
    w = exp(s − m) / max(Σ_j exp(s − m), exp(−m)), identical to the formula above. Masked entries never enter an
    ``exp`` (they are replaced by 0 first), so neither the forward nor the gradient can produce inf or NaN, and rows
    without any allowed key are exactly zero.

    Args:
      scores: ``[..., Nq, Nk]`` attention logits (any float dtype).
      mask: ``[..., Nq, Nk]`` bool (broadcastable), True where query i may attend key j.

    Returns:
      ``[..., Nq, Nk]`` float32 weights.
    """
    s = scores.astype(jnp.float32)
    mask = jnp.broadcast_to(mask, s.shape)
    row_max = jnp.max(jnp.where(mask, s, -jnp.inf), axis=-1, keepdims=True)
    shift = jax.lax.stop_gradient(jnp.maximum(row_max, 0.0))
    e = jnp.where(mask, jnp.exp(jnp.where(mask, s, 0.0) - shift), 0.0)
    return e / jnp.maximum(jnp.sum(e, axis=-1, keepdims=True), jnp.exp(-shift))


def dag_attention_heads(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, scale: float = 1.0) -> jax.Array:
    """Graph-masked attention along the node axis, head-major layout.

    Args:
      q: ``[B, n, H, N, d]`` queries (``n`` may be 1 and broadcast against ``k``).
      k: ``[B, n, H, N, d]`` keys.
      v: ``[B, n, H, N, d_v]`` values.
      mask: ``[B, N, N]`` bool, ``mask[b, i, j]`` True iff query node i attends key node j (j is a parent of i).
      scale: multiplies the scores (1 when already folded into the query projection).

    Returns:
      ``[B, n, H, N, d_v]``; exactly zero for nodes without parents.
    """
    q = jnp.broadcast_to(q, k.shape[:2] + q.shape[2:])
    scores = jnp.einsum("bshid,bshjd->bshij", q, k, preferred_element_type=jnp.float32)
    if scale != 1.0:
        scores = scores * scale
    w = dag_attention_weights(scores, mask[:, None, None, :, :])
    return jnp.einsum("bshij,bshjd->bshid", w.astype(v.dtype), v)


def sample_attention_heads(q: jax.Array, k: jax.Array, v: jax.Array, scale: float = 1.0) -> jax.Array:
    """Unmasked softmax attention along the sample axis, head-major layout.

    Args:
      q, k, v: ``[B, N, H, n, d]`` (softmax in float32).
      scale: multiplies the scores (1 when already folded into the query projection).

    Returns:
      ``[B, N, H, n, d]``.
    """
    scores = jnp.einsum("bihqd,bihkd->bihqk", q, k, preferred_element_type=jnp.float32)
    if scale != 1.0:
        scores = scores * scale
    w = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bihqk,bihkd->bihqd", w.astype(v.dtype), v)


def dag_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """DAG attention on ``[B, n, N, H, d]`` activations with scores q·k/√d; mask as :func:`dag_attention_heads`.

    Returns:
      ``[B, n, N, H, d_v]``; exactly zero for nodes without parents.
    """
    heads = lambda x: jnp.swapaxes(x, 2, 3)
    out = dag_attention_heads(heads(q), heads(k), heads(v), mask, scale=q.shape[-1] ** -0.5)
    return heads(out)


def sample_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Softmax attention along the samples of ``[B, n, N, H, d]`` activations, scores q·k/√d.

    Returns:
      ``[B, n, N, H, d]``.
    """
    heads = lambda x: jnp.transpose(x, (0, 2, 3, 1, 4))
    out = sample_attention_heads(heads(q), heads(k), heads(v), scale=q.shape[-1] ** -0.5)
    return jnp.transpose(out, (0, 3, 1, 2, 4))
