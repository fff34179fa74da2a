"""Building blocks: the pre-LN block and the adaLN block (SPEC.md §6.1).

Activations are ``[B, n, N, D]`` (datasets, samples, nodes, width). A :class:`PreLNBlock` attends either along the
sample axis (``axis="sample"``: standard softmax attention, unmasked) or along the node axis (``axis="node"``: DAG
attention, a node attends only to its parents). :class:`AdaLNBlock` always attends along the node axis.

Both blocks hold exactly the reference's parameters (three input LayerNorms, q/k/v/out projections D ↔ H·d_k with
biases, the MLP and its LayerNorm, and for adaLN the Linear(D, 6D) modulation) but evaluate them in an algebraically
equal, cheaper order:

- Pre-LN self-attention: LN_q, LN_k and LN_v of the same input share their normalised input x̂, so
  (x̂γ + β)W + b = x̂(diag(γ)W) + (βW + b): the three projections share one normalisation pass (the 1/√d_k score
  scale folded into the query kernel). They stay three separate D × H·d_k products: on CPU that is faster than one
  D × 3·H·d_k product, whose split into q, k, v costs extra copies of the gradient in the backward pass.
- adaLN: the decoder's keys/values are Z = z ⊙ V + P with a scalar z per token and per-node vectors V, P. The
  LayerNorm of z·a + b (a, b the centred V, P) is (z·a + b)/σ(z) with σ(z)² = z²⟨a,a⟩ + 2z⟨a,b⟩ + ⟨b,b⟩ (means over
  D), so after modulation and projection K = (z/σ)·A + (1/σ)·B + C with per-node A, B, C of size H·d_k: the two
  large key/value products become per-node products and an elementwise combination.

Initialisation: every kernel is drawn from U(±1/√fan_in), the distribution of PyTorch's ``nn.Linear`` default
(``variance_scaling(1/3, "fan_in", "uniform")``); biases start at zero (flax's default; PyTorch draws them from the
same uniform); LayerNorms start at scale 1, offset 0. There is no special initialisation (no zero-init of adaLN),
as in the reference.

Precision: parameters, LayerNorm statistics, the attention normalisation and the residual stream are float32; the
large matrix products run in ``dtype`` (float32 or bfloat16).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cfip_jax.nn.attention import dag_attention_factored, dag_attention_heads, sample_attention_heads

LN_EPS = 1e-5
kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

Dtype = Any


def dense(features: int, name: str, dtype: Dtype, use_bias: bool = True) -> nn.Dense:
    """``nn.Dense`` with the project's initialisation and compute dtype (float32 parameters)."""
    return nn.Dense(
        features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32, kernel_init=kernel_init, name=name
    )


def layer_norm(name: str, dtype: Dtype) -> nn.LayerNorm:
    """LayerNorm over the last axis (eps 1e-5, scale and offset), statistics in float32, output in ``dtype``."""
    return nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, param_dtype=jnp.float32, name=name)


def normalize(x: jax.Array) -> jax.Array:
    """(x − mean) / √(var + eps) over the last axis, in float32 (a LayerNorm without scale and offset)."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LN_EPS)


def _features(v: jax.Array, ndim: int) -> jax.Array:
    """A per-feature vector ``[D]`` as ``[1, …, 1, D]`` of rank ``ndim`` (explicit broadcasting)."""
    return v.reshape((1,) * (ndim - 1) + (-1,))


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN modulation x·(1 + scale) + shift."""
    return x * (1.0 + scale) + shift


class LayerNormParams(nn.Module):
    """The parameters of a LayerNorm (``scale`` = 1, ``bias`` = 0 at init), applied by the owning block."""

    @nn.compact
    def __call__(self, width: int) -> tuple[jax.Array, jax.Array]:
        """Return ``(scale [D], bias [D])``."""
        return (
            self.param("scale", nn.initializers.ones, (width,), jnp.float32),
            self.param("bias", nn.initializers.zeros, (width,), jnp.float32),
        )


class DenseParams(nn.Module):
    """The parameters of a Linear layer (``kernel [fan_in, features]``, ``bias [features]``), applied by the owner."""

    features: int

    @nn.compact
    def __call__(self, fan_in: int) -> tuple[jax.Array, jax.Array]:
        """Return ``(kernel, bias)``."""
        return (
            self.param("kernel", kernel_init, (fan_in, self.features), jnp.float32),
            self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32),
        )


class FeedForward(nn.Module):
    """Position-wise MLP D → F → D with ReLU."""

    hidden: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., D] -> [..., D]`` float32 (the products run on the tokens flattened to ``[T, D]``)."""
        tokens = x.reshape(-1, x.shape[-1])
        h = nn.relu(dense(self.hidden, "hidden", self.dtype)(tokens))
        return dense(x.shape[-1], "out", self.dtype)(h).astype(jnp.float32).reshape(x.shape)


def tokens_dense(module: nn.Dense, x: jax.Array) -> jax.Array:
    """Apply a Dense layer to ``x [..., F]`` as one ``[T, F]`` matrix product (XLA's CPU backward is faster on 2-D
    operands than on the same contraction over several leading axes)."""
    return module(x.reshape(-1, x.shape[-1])).reshape(x.shape[:-1] + (-1,))


def _project(x: jax.Array, kernel: jax.Array, bias: jax.Array, dtype: Dtype) -> jax.Array:
    """``x [..., D] · kernel + bias`` as one ``[T, D]`` product."""
    flat = jnp.dot(x.reshape(-1, x.shape[-1]).astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)[None, :]
    return flat.reshape(x.shape[:-1] + (-1,))


class PreLNBlock(nn.Module):
    """Pre-LN transformer block with separate LayerNorms for queries, keys and values (self-attention).

    x ← x + Dropout(MHA(LN_q(x), LN_k(x), LN_v(x))); x ← x + Dropout(FFN(LN(x))), where MHA projects D → H·d_k
    (q, k, v, with biases), attends, and projects back H·d_k → D (with bias).

    Attributes:
      num_heads, key_dim, mlp_dim: attention heads H, per-head width d_k, MLP hidden width.
      axis: ``"sample"`` (softmax over the samples of a node) or ``"node"`` (DAG attention over the parents).
      dropout: dropout rate on both residual branches (rng stream ``"dropout"``).
      dtype: compute dtype of the matrix products.
    """

    num_heads: int
    key_dim: int
    mlp_dim: int
    axis: str
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, deterministic: bool = True) -> jax.Array:
        """Apply the block.

        Args:
          x: ``[B, n, N, D]`` float32.
          mask: ``[B, N, N]`` bool (query node i attends key node j), required for ``axis="node"``.
          deterministic: disable dropout.

        Returns:
          ``[B, n, N, D]`` float32.
        """
        if self.axis not in ("sample", "node"):
            raise ValueError(f"unknown attention axis {self.axis!r}; valid: sample, node")
        b, n, nodes, width = x.shape
        h, dk = self.num_heads, self.key_dim
        drop = nn.Dropout(self.dropout, deterministic=deterministic)
        kernels, biases = [], []
        for part, factor in (("query", dk**-0.5), ("key", 1.0), ("value", 1.0)):
            gamma, beta = LayerNormParams(name=f"norm_{part[0]}")(width)
            kernel, bias = DenseParams(h * dk, name=part)(width)
            kernels.append(gamma[:, None] * kernel * factor)
            biases.append((beta @ kernel + bias) * factor)
        xn = normalize(x)
        perm = (0, 2, 3, 1, 4) if self.axis == "sample" else (0, 1, 3, 2, 4)  # → [B, N, H, n, d_k] / [B, n, H, N, d_k]
        q, k, v = (
            jnp.transpose(_project(xn, kernel, bias, self.dtype).reshape(b, n, nodes, h, dk), perm)
            for kernel, bias in zip(kernels, biases, strict=True)
        )
        if self.axis == "sample":
            out = jnp.transpose(sample_attention_heads(q, k, v), (0, 3, 1, 2, 4))
        else:
            out = jnp.swapaxes(dag_attention_heads(q, k, v, mask), 2, 3)
        a = tokens_dense(dense(width, "out", self.dtype), out.reshape(b, n, nodes, h * dk)).astype(jnp.float32)
        x = x + drop(a)
        y = FeedForward(self.mlp_dim, self.dtype, name="mlp")(layer_norm("norm_mlp", self.dtype)(x))
        return x + drop(y)


def _heads(t: jax.Array, h: int, dk: int) -> jax.Array:
    """``[B, m, N, H·d_k] -> [B, m, H, N, d_k]``."""
    return jnp.swapaxes(t.reshape(t.shape[:-1] + (h, dk)), 2, 3)


def _factored_keys_values(z, v_emb, p_emb, kv_params, kv_shift, kv_scale, h: int, dk: int):
    """Keys and values from Z = z·V + P without forming Z (LN(Z) = (z·a + b_c) / σ(z), a and b_c the centred V and P).

    Args:
      z: ``[B, n, N]`` scalar inputs; v_emb, p_emb: ``[B, 1, N, D]``.
      kv_params: ``[((γ, β), (kernel, bias))]`` of the key and the value LayerNorm and projection.
      kv_shift, kv_scale: ``[B, 1, N, D]`` the key node's adaLN modulation.

    Returns:
      ``(z/σ [B, n, N], 1/σ [B, n, N], [K parts, V parts])``: K = (z/σ)·A + (1/σ)·B + C per node (likewise V), the
      parts A, B, C each ``[B, 1, H, N, d_k]``.
    """
    a = v_emb - jnp.mean(v_emb, axis=-1, keepdims=True)
    b_c = p_emb - jnp.mean(p_emb, axis=-1, keepdims=True)
    saa, sab, sbb = (jnp.mean(u * w, axis=-1) for u, w in ((a, a), (a, b_c), (b_c, b_c)))  # [B, 1, N]
    zf = z.astype(jnp.float32)
    var = jnp.maximum(zf * zf * saa + 2.0 * zf * sab + sbb, 0.0)
    inv = jax.lax.rsqrt(var + LN_EPS)  # [B, n, N]
    kv = []
    for (gamma, beta), (kernel, bias) in kv_params:
        g = _features(gamma, 4) * (1.0 + kv_scale)
        per_c = _heads((_features(beta, 4) * (1.0 + kv_scale) + kv_shift) @ kernel + _features(bias, 4), h, dk)
        kv.append((_heads(a * g @ kernel, h, dk), _heads(b_c * g @ kernel, h, dk), per_c))
    return zf * inv, inv, kv


class AdaLNBlock(nn.Module):
    """adaLN block attending along the node axis, conditioned per node on ``c`` (SPEC.md §6.1).

    With keys/values Z = z ⊙ V + P:
    [β₁, γ₁, g₁, β₂, γ₂, g₂] = Linear(D, 6D)(SiLU(c));
    x = q + g₁ ⊙ Dropout(MHA(mod(LN_q(q)), mod(LN_k(Z)), mod(LN_v(Z))));
    out = x + g₂ ⊙ Dropout(FFN(mod(LN(x), β₂, γ₂))).
    Queries are modulated with their node's c, keys and values with the key node's c (the node axis is shared, so
    both are c broadcast over samples). Z enters in factored form (see the module docstring).

    Attributes: as :class:`PreLNBlock` (always node attention).
    """

    num_heads: int
    key_dim: int
    mlp_dim: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        q: jax.Array,
        z: jax.Array,
        v_emb: jax.Array,
        p_emb: jax.Array,
        c: jax.Array,
        mask: jax.Array,
        *,
        c_query: jax.Array | None = None,
        affine: bool | None = False,
        deterministic: bool = True,
    ) -> jax.Array:
        """Update the query stream.

        Args:
          q: ``[B, n_q, M, D]`` query stream (``n_q`` = 1 broadcasts over samples) of M query nodes: all N nodes, or a
            subset given with ``c_query``.
          z: ``[B, n, N]`` scalar inputs; keys/values are Z = z[..., None] · v_emb + p_emb.
          v_emb, p_emb: ``[B, 1, N, D]`` per-node codebook V and positional embedding P.
          c: ``[B, 1, N, D]`` per-node condition.
          mask: ``[B, M, N]`` bool, query node i attends key node j.
          c_query: ``[B, 1, M, D]`` the query nodes' conditions when they are a subset of the nodes (default ``c``).
          affine: how the attention is evaluated (:func:`cfip_jax.nn.attention.dag_attention_factored`): False
            (default; keys and values formed, the fast backward pass), True, or None (by size: for sampling).
          deterministic: disable dropout.

        Returns:
          ``[B, n, M, D]`` float32.
        """
        b, n, _ = z.shape
        nodes = q.shape[2]
        width = q.shape[-1]
        h, dk = self.num_heads, self.key_dim
        drop = nn.Dropout(self.dropout, deterministic=deterministic)
        modulation = dense(6 * width, "modulation", jnp.float32)
        mods = modulation(nn.silu(c))
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mods, 6, axis=-1)
        kv_shift, kv_scale = shift1, scale1  # keys and values are modulated with the key node's condition
        if c_query is not None:
            shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(modulation(nn.silu(c_query)), 6, axis=-1)

        gamma, beta = LayerNormParams(name="norm_q")(width)
        kernel, bias = DenseParams(h * dk, name="query")(width)
        q_in = modulate(normalize(q) * _features(gamma, 4) + _features(beta, 4), shift1, scale1)
        queries = _heads(_project(q_in, kernel * dk**-0.5, bias * dk**-0.5, self.dtype), h, dk)
        kv_params = [(LayerNormParams(name=f"norm_{part[0]}")(width), DenseParams(h * dk, name=part)(width))
                     for part in ("key", "value")]  # fmt: skip
        zs, inv, kv = _factored_keys_values(z, v_emb, p_emb, kv_params, kv_shift, kv_scale, h, dk)
        out = dag_attention_factored(queries, zs, inv, kv[0], kv[1], mask, affine=affine)
        out = jnp.swapaxes(out, 2, 3).reshape(b, n, nodes, h * dk)
        attn = tokens_dense(dense(width, "out", self.dtype), out).astype(jnp.float32)
        x = q + gate1 * drop(attn)
        y = FeedForward(self.mlp_dim, self.dtype, name="mlp")(
            modulate(layer_norm("norm_mlp", jnp.float32)(x), shift2, scale2)
        )
        return x + gate2 * drop(y)
