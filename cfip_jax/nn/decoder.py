"""The conditional FiP decoder (reference ``AmortizedEncoderDecoder``, SPEC.md §6.5).

Dataset embedding (:meth:`CondFiPDecoder.embed`), from the encoder's output ``E [B, n_ctx, N, D_enc]``:
h = Linear(D_enc, D)(E); K × (sample block, node block); LN; max over samples; LN; then three bias-free linears each
followed by its own LayerNorm give the per-node codebook V, positional embedding P and adaLN condition C
(:class:`Conditioning`, each ``[B, 1, N, D]``).

Decoding (:meth:`CondFiPDecoder.decode`) a query set ``z [B, n_q, N]``: keys/values Z = z ⊙ V + P (fixed across
layers; handed to the blocks in this factored form), queries start from P, L adaLN node-attention blocks conditioned
on C, final LN, Linear(D, 1) → the predicted mechanism value F(z) ``[B, n_q, N]``. Output node i depends on z only
through its parents (DAG attention), so the decoder is a valid mechanism map for the fixed-point iteration
(:mod:`cfip_jax.fixed_point`).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
from jax.tree_util import Partial

from cfip_jax.nn.encoder import parent_mask, zero_padded
from cfip_jax.nn.layers import AdaLNBlock, PreLNBlock, dense, layer_norm, tokens_dense


def adaln_layer_index(labels) -> int | None:
    """The index k of the adaLN layer a parameter lies in, from its path's labels (Flax names the decoder's
    ``self.layers`` list ``layers_<k>``; the first such label decides), or None outside those layers — the
    ``data_*_layers_<k>`` blocks included."""
    for label in labels:
        label = str(label)
        if label.startswith("layers_") and label[len("layers_") :].isdigit():
            return int(label[len("layers_") :])
    return None


@flax.struct.dataclass
class Conditioning:
    """Dataset-conditioned per-node embeddings, each ``[B, 1, N, D]`` float32.

    Attributes:
      v: codebook V (multiplies the scalar input).
      p: positional embedding P (added to the keys/values; the initial query stream).
      c: adaLN condition C.
    """

    v: jax.Array
    p: jax.Array
    c: jax.Array


class CondFiPDecoder(nn.Module):
    """Conditional FiP decoder: the learned mechanism map z ↦ F(z) of the dataset it is conditioned on.

    Attributes:
      config: a :func:`cfip_jax.nn.arch.decoder_arch` (``d_model``, ``num_heads``, ``key_dim``, ``num_layers``,
        ``mlp_dim``, ``dropout``, ``num_layers_dataset``, ``encoder_dim``, ``dtype``).
    """

    config: Any

    def setup(self) -> None:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        block = dict(num_heads=cfg.num_heads, key_dim=cfg.key_dim, mlp_dim=cfg.mlp_dim, dropout=cfg.dropout,
                     dtype=dtype)  # fmt: skip
        self.project = dense(cfg.d_model, "project", dtype)
        self.data_sample_layers = [PreLNBlock(axis="sample", **block) for _ in range(cfg.num_layers_dataset)]
        self.data_node_layers = [PreLNBlock(axis="node", **block) for _ in range(cfg.num_layers_dataset)]
        self.norm_samples = layer_norm("norm_samples", jnp.float32)
        self.norm_pooled = layer_norm("norm_pooled", jnp.float32)
        self.to_v = dense(cfg.d_model, "to_v", jnp.float32, use_bias=False)
        self.to_p = dense(cfg.d_model, "to_p", jnp.float32, use_bias=False)
        self.to_c = dense(cfg.d_model, "to_c", jnp.float32, use_bias=False)
        self.norm_v = layer_norm("norm_v", jnp.float32)
        self.norm_p = layer_norm("norm_p", jnp.float32)
        self.norm_c = layer_norm("norm_c", jnp.float32)
        self.layers = [AdaLNBlock(**block) for _ in range(cfg.num_layers)]
        self.norm = layer_norm("norm", dtype)
        self.out = dense(1, "out", dtype)

    def embed(
        self,
        encoding: jax.Array,
        adj: jax.Array,
        node_mask: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> Conditioning:
        """Dataset embedding from the encoder's output on the context set.

        Args:
          encoding: ``[B, n_ctx, N, D_enc]`` (:meth:`cfip_jax.nn.encoder.DatasetEncoder.encode`).
          adj: ``[B, N, N]``, ``adj[b, i, j] = 1`` ⇔ edge i → j.
          node_mask: ``[B, N]`` bool (True = real node) or None.
          deterministic: disable dropout (else the ``"dropout"`` rng stream is used).

        Returns:
          :class:`Conditioning` with V, P, C ``[B, 1, N, D]``.
        """
        mask = parent_mask(adj, node_mask)
        h = tokens_dense(self.project, encoding).astype(jnp.float32)
        for sample_layer, node_layer in zip(self.data_sample_layers, self.data_node_layers, strict=True):
            h = sample_layer(h, deterministic=deterministic)
            h = node_layer(h, mask, deterministic=deterministic)
        pooled = self.norm_pooled(jnp.max(self.norm_samples(h), axis=1, keepdims=True))
        return Conditioning(
            v=self.norm_v(self.to_v(pooled)), p=self.norm_p(self.to_p(pooled)), c=self.norm_c(self.to_c(pooled))
        )

    def decode(
        self,
        z: jax.Array,
        cond: Conditioning,
        adj: jax.Array,
        node_mask: jax.Array | None = None,
        *,
        deterministic: bool = True,
        affine: bool | None = False,
    ) -> jax.Array:
        """Predicted mechanism values F(z).

        Args:
          z: ``[B, n_q, N]`` standardised query points.
          cond: the dataset's :class:`Conditioning` (from :meth:`embed`).
          adj: ``[B, N, N]``.
          node_mask: ``[B, N]`` bool or None.
          deterministic: disable dropout.
          affine: how the attention is evaluated (:func:`cfip_jax.nn.attention.dag_attention_factored`): False for
            training (the fast backward pass), None to pick the faster forward by size (inference).

        Returns:
          ``[B, n_q, N]`` float32, 0 on padded nodes.
        """
        mask = parent_mask(adj, node_mask)
        q = cond.p
        for layer in self.layers:
            q = layer(q, z, cond.v, cond.p, cond.c, mask, affine=affine, deterministic=deterministic)
        out = tokens_dense(self.out, self.norm(q))[..., 0].astype(jnp.float32)
        return zero_padded(out, node_mask, 2)

    def decode_nodes(
        self,
        z: jax.Array,
        cond: Conditioning,
        adj: jax.Array,
        nodes: jax.Array,
        node_mask: jax.Array | None = None,
    ) -> jax.Array:
        """F(z) of the nodes ``nodes [K]`` (int indices) only: ``decode(z, …)[..., nodes]`` at K/N of the cost.

        A node's output depends on its own query stream and its parents' keys and values, so the other nodes' query
        streams need not be computed (used by :func:`cfip_jax.fixed_point.solve_by_level`). Deterministic; the
        attention is evaluated in its affine form when that is cheaper
        (:func:`cfip_jax.nn.attention.dag_attention_factored`), so this is an inference path, not a training one.

        Returns:
          ``[B, n_q, K]`` float32, 0 on padded nodes.
        """
        mask = parent_mask(adj, node_mask)[:, nodes, :]
        q, c_query = cond.p[:, :, nodes], cond.c[:, :, nodes]
        for layer in self.layers:
            q = layer(q, z, cond.v, cond.p, cond.c, mask, c_query=c_query, affine=None)
        out = tokens_dense(self.out, self.norm(q))[..., 0].astype(jnp.float32)
        return zero_padded(out, None if node_mask is None else node_mask[:, nodes], 2)

    def __call__(
        self,
        z: jax.Array,
        encoding: jax.Array,
        adj: jax.Array,
        node_mask: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """:meth:`embed` the context encoding, then :meth:`decode` ``z [B, n_q, N]`` → ``[B, n_q, N]``."""
        cond = self.embed(encoding, adj, node_mask, deterministic=deterministic)
        return self.decode(z, cond, adj, node_mask, deterministic=deterministic)


def frozen_config(config: Any) -> Any:
    """``config`` as a hashable ``FrozenConfigDict`` (modules holding it can be static arguments of ``jit``)."""
    if isinstance(config, ml_collections.ConfigDict) and not isinstance(config, ml_collections.FrozenConfigDict):
        return ml_collections.FrozenConfigDict(config)
    return config


@functools.lru_cache(maxsize=64)
def _decode_fn(model: CondFiPDecoder):
    def apply(params: Any, cond: Conditioning, adj: jax.Array, node_mask: jax.Array | None, z: jax.Array):
        return model.apply(params, z, cond, adj, node_mask, method="decode", affine=None)

    return apply


@functools.lru_cache(maxsize=64)
def _decode_nodes_fn(model: CondFiPDecoder):
    def apply(params: Any, cond: Conditioning, adj: jax.Array, node_mask: jax.Array | None, z: jax.Array, nodes):
        return model.apply(params, z, cond, adj, nodes, node_mask, method="decode_nodes")

    return apply


def decoder_node_mechanism(
    model: CondFiPDecoder, params: Any, cond: Conditioning, adj: jax.Array, node_mask: jax.Array | None = None
) -> Partial:
    """Like :func:`decoder_mechanism`, for a subset of nodes: ``(z [B, n, N], nodes [K]) -> F(z)[..., nodes]``."""
    model = model.clone(config=frozen_config(model.config))
    return Partial(_decode_nodes_fn(model), params, cond, adj, node_mask)


def decoder_mechanism(
    model: CondFiPDecoder, params: Any, cond: Conditioning, adj: jax.Array, node_mask: jax.Array | None = None
) -> Partial:
    """The trained decoder as a mechanism map for :mod:`cfip_jax.fixed_point` (dropout off; the attention evaluated
    in whichever form has the faster forward pass, see :meth:`CondFiPDecoder.decode`).

    Returns a ``jax.tree_util.Partial`` closed over ``params``, ``cond``, ``adj`` and ``node_mask`` as pytree leaves,
    so the solvers compile once per model and shapes rather than once per dataset.

    Args:
      model: the decoder module.
      params: its variables (``{"params": ...}``).
      cond: :class:`Conditioning` ``[B, 1, N, D]``.
      adj: ``[B, N, N]``.
      node_mask: ``[B, N]`` bool or None.

    Returns:
      A callable ``z [B, n, N] -> F(z) [B, n, N]``.
    """
    model = model.clone(config=frozen_config(model.config))
    return Partial(_decode_fn(model), params, cond, adj, node_mask)
