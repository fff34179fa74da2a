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

import functools

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


@jax.named_scope("dag_attention")
def _dag_attention_fwd(q, k, v, mask):
    """Forward of :func:`_dag_attention` with the residuals of its backward pass."""
    s = jnp.einsum("bshid,bshjd->bshij", q, k, preferred_element_type=jnp.float32)
    row_max = jnp.max(jnp.where(mask, s, -jnp.inf), axis=-1, keepdims=True)
    shift = jnp.maximum(row_max, 0.0)
    e = jnp.where(mask, jnp.exp(jnp.where(mask, s, 0.0) - shift), 0.0)
    total = jnp.sum(e, axis=-1, keepdims=True)
    floor = jnp.exp(-shift)
    w = e / jnp.maximum(total, floor)
    out = jnp.einsum("bshij,bshjd->bshid", w.astype(v.dtype), v, preferred_element_type=jnp.float32).astype(v.dtype)
    # ∂ max(Σ, floor) / ∂Σ, with jnp.maximum's convention (1/2) at a tie.
    slope = jnp.where(total > floor, 1.0, jnp.where(total == floor, 0.5, 0.0))
    return out, (q, k, v, w, slope, out, mask)


@jax.custom_vjp
def _dag_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    return _dag_attention_fwd(q, k, v, mask)[0]


@jax.named_scope("dag_attention")
def _dag_attention_bwd(residuals, d_out):
    """dS = W ⊙ (dP − slope · rowsum(dO ⊙ O)) (the shift is a constant: it cancels in W)."""
    q, k, v, w, slope, out, mask = residuals
    dv = jnp.einsum("bshij,bshid->bshjd", w.astype(d_out.dtype), d_out, preferred_element_type=jnp.float32)
    dp = jnp.einsum("bshid,bshjd->bshij", d_out, v, preferred_element_type=jnp.float32)
    row = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    ds = w * (dp - slope * row)
    dq = jnp.einsum("bshij,bshjd->bshid", ds.astype(k.dtype), k, preferred_element_type=jnp.float32)
    dk = jnp.einsum("bshij,bshid->bshjd", ds.astype(q.dtype), q, preferred_element_type=jnp.float32)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_dag_attention.defvjp(lambda q, k, v, mask: _dag_attention_fwd(q, k, v, mask), _dag_attention_bwd)


@jax.named_scope("dag_attention")
def dag_attention_heads(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, scale: float = 1.0) -> jax.Array:
    """Graph-masked attention along the node axis, head-major layout.

    Same weights as :func:`dag_attention_weights`; the backward pass is hand-written (custom VJP) from the saved
    weights, dS = W ⊙ (dP − rowsum(dO ⊙ O)) on rows where Σ exp(s) > 1 and W ⊙ dP elsewhere, which saves several
    elementwise passes over the scores compared with differentiating the masked normalisation.

    Args:
      q: ``[B, n, H, N, d]`` queries (``n`` may be 1 and broadcast against ``k``).
      k: ``[B, n, H, N, d]`` keys.
      v: ``[B, n, H, N, d_v]`` values.
      mask: ``[B, N, N]`` bool, ``mask[b, i, j]`` True iff query node i attends key node j (j is a parent of i).
      scale: multiplies the scores (1 when already folded into the query projection).

    Returns:
      ``[B, n, H, N, d_v]`` in ``v.dtype``; exactly zero for nodes without parents.
    """
    if scale != 1.0:
        q = q * jnp.asarray(scale, q.dtype)
    q = jnp.broadcast_to(q, k.shape[:2] + q.shape[2:])
    mask = jnp.broadcast_to(mask.astype(bool)[:, None, None, :, :], k.shape[:3] + mask.shape[-2:])
    return _dag_attention(q, k, v, mask)


# Largest M·N (query nodes × key nodes) for which :func:`dag_attention_factored` uses the affine evaluation: below it
# three large matrix products beat the per-sample [M, d]·[d, N] products; above it the three score-sized
# intermediates cost more than they save (CPU, n = 400, one layer: 2.4× faster at M·N = 80, 1.4–1.8× at 400;
# 1.1× slower at 2,500 and 1.9× at 10,000).
_AFFINE_MAX_SCORES = 1024


def _materialised(coef_a: jax.Array, coef_b: jax.Array, parts: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
    """``coef_a · A + coef_b · B + C`` as ``[B, n, H, N, d]``."""
    a, b = coef_a[:, :, None, :, None], coef_b[:, :, None, :, None]
    return a * parts[0] + b * parts[1] + parts[2]


@jax.named_scope("dag_attention")
def dag_attention_factored(
    q: jax.Array,
    coef_a: jax.Array,
    coef_b: jax.Array,
    keys: tuple[jax.Array, jax.Array, jax.Array],
    values: tuple[jax.Array, jax.Array, jax.Array],
    mask: jax.Array,
    *,
    affine: bool | None = None,
) -> jax.Array:
    """DAG attention whose keys and values are affine in two per-sample, per-node scalars (inference path).

    With K[s, j] = a[s, j]·A_j + b[s, j]·B_j + C_j (and V alike), the scores q_i·K_j = a·(q_i·A_j) + b·(q_i·B_j) +
    q_i·C_j and the output Σ_j w_ij V_j = [w·a, w·b, w] · [A_v; B_v; C_v] are large matrix products over all samples
    instead of one tiny product per sample, and K, V are never formed. Equal to :func:`dag_attention_heads` on the
    materialised keys and values up to float rounding.

    Args:
      q: ``[B, n_q, H, M, d]`` queries (``n_q`` = 1 broadcasts over the samples).
      coef_a, coef_b: ``[B, n, N]`` the per-sample coefficients a, b.
      keys, values: ``(A, B, C)``, each ``[B, 1, H, N, d]``.
      mask: ``[B, M, N]`` bool, query node i attends key node j.
      affine: evaluate in the affine form (True), on materialised keys and values with :func:`dag_attention_heads`
        and its hand-written backward pass (False: the training path), or by size (None: affine when M·N ≤
        ``_AFFINE_MAX_SCORES``; its gradient is plain autodiff, slower than the materialised one).

    Returns:
      ``[B, n, H, M, d]`` in ``q.dtype`` (the affine form computes in float32 throughout).
    """
    num_nodes, dtype = coef_a.shape[2], q.dtype
    if affine is None:
        affine = q.shape[-2] * num_nodes <= _AFFINE_MAX_SCORES
    if not affine:
        k = _materialised(coef_a, coef_b, keys).astype(dtype)
        v = _materialised(coef_a, coef_b, values).astype(dtype)
        return dag_attention_heads(q, k, v, mask)
    f32 = lambda t: t.astype(jnp.float32)  # noqa: E731
    k_cat = jnp.concatenate([f32(p[:, 0]) for p in keys], axis=-2)  # [B, H, 3N, d]
    v_cat = jnp.concatenate([f32(p[:, 0]) for p in values], axis=-2)
    r = jnp.einsum("bshid,bhjd->bhsij", f32(q), k_cat)  # [B, H, n_q, M, 3N]
    a, b = f32(coef_a)[:, None, :, None, :], f32(coef_b)[:, None, :, None, :]  # [B, 1, n, 1, N]
    scores = a * r[..., :num_nodes] + b * r[..., num_nodes : 2 * num_nodes] + r[..., 2 * num_nodes :]
    w = dag_attention_weights(scores, mask.astype(bool)[:, None, None])  # [B, H, n, M, N]
    out = jnp.einsum("bhsij,bhjd->bshid", jnp.concatenate([w * a, w * b, w], axis=-1), v_cat)
    return out.astype(dtype)


# Score elements per chunk of the sample-attention loop (~2.5 MB in float32, a few [n, n] matrices): small enough to
# stay in cache between the score product, the softmax and the value product.
_CHUNK_SCORES = 640_000


def _largest_divisor_at_most(total: int, limit: int) -> int:
    return max(c for c in range(1, max(1, min(total, limit)) + 1) if total % c == 0)


def _softmax_attention_chunk(q: jax.Array, k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``[b, n, d]`` chunk → (output ``[b, n, d_v]`` in ``v.dtype``, log-sum-exp of the scores ``[b, n, 1]`` f32)."""
    s = jnp.einsum("bqd,bkd->bqk", q, k, preferred_element_type=jnp.float32)
    m = jnp.max(s, axis=-1, keepdims=True)
    e = jnp.exp(s - m)
    total = jnp.sum(e, axis=-1, keepdims=True)
    out = jnp.einsum("bqk,bkd->bqd", e.astype(v.dtype), v, preferred_element_type=jnp.float32) / total
    return out.astype(v.dtype), m + jnp.log(total)


def _softmax_attention_chunk_grad(
    q: jax.Array, k: jax.Array, v: jax.Array, out: jax.Array, lse: jax.Array, d_out: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Gradients of one chunk, recomputing the weights P = exp(s − lse); dS = P ⊙ (dP − rowsum(dO ⊙ O))."""
    s = jnp.einsum("bqd,bkd->bqk", q, k, preferred_element_type=jnp.float32)
    p = jnp.exp(s - lse)
    dv = jnp.einsum("bqk,bqd->bkd", p.astype(d_out.dtype), d_out, preferred_element_type=jnp.float32)
    dp = jnp.einsum("bqd,bkd->bqk", d_out, v, preferred_element_type=jnp.float32)
    row = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    ds = p * (dp - row)
    dq = jnp.einsum("bqk,bkd->bqd", ds.astype(k.dtype), k, preferred_element_type=jnp.float32)
    dk = jnp.einsum("bqk,bqd->bkd", ds.astype(q.dtype), q, preferred_element_type=jnp.float32)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


def _split(x: jax.Array, chunks: int) -> jax.Array:
    return x.reshape((chunks, x.shape[0] // chunks) + x.shape[1:])


def _merge(x: jax.Array) -> jax.Array:
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _chunked_softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, chunks: int) -> jax.Array:
    return _chunked_softmax_attention_fwd(q, k, v, chunks)[0]


@jax.named_scope("sample_attention")
def _chunked_softmax_attention_fwd(q, k, v, chunks):
    out, lse = jax.lax.map(
        lambda t: _softmax_attention_chunk(*t), (_split(q, chunks), _split(k, chunks), _split(v, chunks))
    )
    out = _merge(out)
    return out, (q, k, v, out, _merge(lse))


@jax.named_scope("sample_attention")
def _chunked_softmax_attention_bwd(chunks, residuals, d_out):
    parts = tuple(_split(t, chunks) for t in residuals + (d_out,))
    return tuple(_merge(g) for g in jax.lax.map(lambda t: _softmax_attention_chunk_grad(*t), parts))


_chunked_softmax_attention.defvjp(_chunked_softmax_attention_fwd, _chunked_softmax_attention_bwd)


@jax.named_scope("sample_attention")
def sample_attention_heads(q: jax.Array, k: jax.Array, v: jax.Array, scale: float = 1.0) -> jax.Array:
    """Unmasked softmax attention along the sample axis, head-major layout.

    Evaluated flash-attention style: the ``B·N·H`` independent ``[n, n]`` problems run in a loop over chunks of a
    few (the score matrices stay in cache instead of making several passes over a ``[B, N, H, n, n]`` array), the
    softmax normalisation is applied to the ``[n, d]`` output, and the backward pass recomputes the weights from the
    saved log-sum-exp (custom VJP) instead of storing them. Equal to softmax(q·kᵀ·scale)·v up to float rounding.

    Args:
      q, k, v: ``[B, N, H, n, d]`` (scores and softmax in float32, products in the inputs' dtype).
      scale: multiplies the scores (1 when already folded into the query projection).

    Returns:
      ``[B, N, H, n, d]`` in ``v.dtype``.
    """
    if scale != 1.0:
        q = q * jnp.asarray(scale, q.dtype)
    shape, n = v.shape, q.shape[-2]
    flat = lambda t: t.reshape((-1,) + t.shape[-2:])  # noqa: E731
    q, k, v = flat(q), flat(k), flat(v)
    chunks = q.shape[0] // _largest_divisor_at_most(q.shape[0], max(1, _CHUNK_SCORES // (n * k.shape[-2])))
    return _chunked_softmax_attention(q, k, v, chunks).reshape(shape)


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
