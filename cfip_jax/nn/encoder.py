"""The dataset encoder (reference ``AmortizedNoise``, SPEC.md §6.4).

x ``[B, n, N]`` → scalar embedding Linear(1, D) → L × (sample-attention block, then DAG node-attention block) →
LayerNorm = the encoding ``[B, n, N, D]`` → head MLP D → H → H → 1 (LeakyReLU 0.01) = the predicted mechanism
value F(x) = x − noise ``[B, n, N]``.

There is no node-identity embedding: nodes are told apart only through the graph. Information moves between nodes only
along edges (node attention) and between samples only within a node (sample attention), so output node i depends on
the data of node i and of its ancestors only, and padded nodes (no edges) never influence real ones.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cfip_jax.nn.layers import PreLNBlock, dense, layer_norm, tokens_dense


def parent_mask(adj: jax.Array, node_mask: jax.Array | None) -> jax.Array:
    """Node-attention mask from the adjacency: query node i attends key node j iff adj[j, i] = 1 (j → i).

    Edges touching a padded node are dropped.

    Args:
      adj: ``[B, N, N]`` 0/1 (or bool), ``adj[b, i, j] = 1`` ⇔ edge i → j.
      node_mask: ``[B, N]`` bool (True = real node) or None (all real).

    Returns:
      ``[B, N, N]`` bool, ``mask[b, i, j]`` True iff j is a (real) parent of (real) node i.
    """
    mask = jnp.swapaxes(adj, -1, -2) != 0
    if node_mask is not None:
        real = node_mask.astype(bool)
        mask = mask & real[..., :, None] & real[..., None, :]
    return mask


def zero_padded(x: jax.Array, node_mask: jax.Array | None, node_axis: int) -> jax.Array:
    """Set the entries of padded nodes to 0; ``node_mask [B, N]`` broadcast at ``node_axis`` of ``x``."""
    if node_mask is None:
        return x
    shape = [1] * x.ndim
    shape[0] = node_mask.shape[0]
    shape[node_axis] = node_mask.shape[-1]
    return jnp.where(node_mask.astype(bool).reshape(shape), x, jnp.zeros((), x.dtype))


class DatasetEncoder(nn.Module):
    """Dataset encoder; predicts F(x) = x − noise for every sample and node.

    Attributes:
      config: an :func:`cfip_jax.nn.arch.encoder_arch` (``d_model``, ``num_heads``, ``key_dim``, ``num_layers``,
        ``mlp_dim``, ``head_dim``, ``dropout``, ``dtype``).
    """

    config: Any

    def setup(self) -> None:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        block = dict(num_heads=cfg.num_heads, key_dim=cfg.key_dim, mlp_dim=cfg.mlp_dim, dropout=cfg.dropout,
                     dtype=dtype)  # fmt: skip
        self.embed = dense(cfg.d_model, "embed", jnp.float32)
        self.sample_layers = [PreLNBlock(axis="sample", **block) for _ in range(cfg.num_layers)]
        self.node_layers = [PreLNBlock(axis="node", **block) for _ in range(cfg.num_layers)]
        self.norm = layer_norm("norm", jnp.float32)
        self.head_hidden1 = dense(cfg.head_dim, "head_hidden1", dtype)
        self.head_hidden2 = dense(cfg.head_dim, "head_hidden2", dtype)
        self.head_out = dense(1, "head_out", dtype)
        self.head_dropout = nn.Dropout(cfg.dropout)

    def encode(
        self, x: jax.Array, adj: jax.Array, node_mask: jax.Array | None = None, *, deterministic: bool = True
    ) -> jax.Array:
        """The per-sample, per-node encoding handed to the decoder.

        Args:
          x: ``[B, n, N]`` standardised data (padded nodes 0).
          adj: ``[B, N, N]``, ``adj[b, i, j] = 1`` ⇔ edge i → j.
          node_mask: ``[B, N]`` bool (True = real node) or None.
          deterministic: disable dropout (else the ``"dropout"`` rng stream is used).

        Returns:
          ``[B, n, N, D]`` float32, zero on padded nodes.
        """
        mask = parent_mask(adj, node_mask)
        h = self.embed(x[..., None].astype(jnp.float32))
        for sample_layer, node_layer in zip(self.sample_layers, self.node_layers, strict=True):
            h = sample_layer(h, deterministic=deterministic)
            h = node_layer(h, mask, deterministic=deterministic)
        return zero_padded(self.norm(h), node_mask, 2)

    def predict(self, encoding: jax.Array, node_mask: jax.Array | None = None, *, deterministic: bool = True):
        """Head MLP: encoding ``[B, n, N, D]`` → predicted F(x) ``[B, n, N]`` float32 (0 on padded nodes)."""
        h = nn.leaky_relu(tokens_dense(self.head_hidden1, encoding), 0.01)
        h = self.head_dropout(h, deterministic=deterministic)
        h = nn.leaky_relu(tokens_dense(self.head_hidden2, h), 0.01)
        h = self.head_dropout(h, deterministic=deterministic)
        out = tokens_dense(self.head_out, h)[..., 0].astype(jnp.float32)
        return zero_padded(out, node_mask, 2)

    def __call__(
        self, x: jax.Array, adj: jax.Array, node_mask: jax.Array | None = None, *, deterministic: bool = True
    ) -> jax.Array:
        """Predicted F(x) = x − noise, ``[B, n, N]`` float32 (0 on padded nodes); arguments as :meth:`encode`."""
        encoding = self.encode(x, adj, node_mask, deterministic=deterministic)
        return self.predict(encoding, node_mask, deterministic=deterministic)
