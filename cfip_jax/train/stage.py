"""The two training stages: their names, networks, data and losses (SPEC.md §6.4, §6.6).

Stage 1 (``"encoder"``): the dataset encoder predicts F(x) = x − noise on all ``n`` samples; the loss is
:func:`cfip_jax.train.losses.encoder_loss` (per-sample RMSE over real nodes, averaged).

Stage 2 (``"decoder"``): the frozen stage-1 encoder (its EMA parameters, no gradient) encodes the first ``n_context``
samples and conditions the decoder (:func:`cfip_jax.model.condition`); the decoder predicts F(x) on the remaining
query samples from their x; the loss is :func:`cfip_jax.train.losses.decoder_loss` (per-dataset RMSE, averaged).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cfip_jax import model as model_lib
from cfip_jax import validation as V
from cfip_jax.scm.batch import Batch, BatchSpec
from cfip_jax.scm.priors import scm_prior
from cfip_jax.train import losses

STAGES = ("encoder", "decoder")  # the stage names, in training order; index = the stage's random-stream id


@dataclasses.dataclass(frozen=True)
class Stage:
    """The networks and data split of one training stage (hashable, so it can close over jitted functions).

    Attributes:
      name: ``"encoder"`` or ``"decoder"``.
      encoder: the dataset encoder (trained in stage 1, frozen in stage 2).
      decoder: the Cond-FiP decoder (stage 2 only).
      n_context: samples given to the frozen encoder in stage 2 (the rest are the decoder's queries).
    """

    name: str
    encoder: nn.Module
    decoder: nn.Module | None = None
    n_context: int = 0

    def __post_init__(self):
        V.check_choice(self.name, STAGES, "stage")
        if self.name == "decoder" and self.decoder is None:
            raise ValueError("the decoder stage needs a decoder module")

    # -- parameters ----------------------------------------------------------------------------------------------
    def init(self, key: jax.Array, spec: BatchSpec) -> Any:
        """Initial variables of the trained network, from dummy inputs of the spec's shapes."""
        if self.name == "encoder":
            return self.init_frozen(key, spec)
        _, adj, mask, encoding = model_lib.dummy_inputs(self.n_context, spec.max_nodes, self.decoder.config.encoder_dim)
        queries = jnp.zeros((1, spec.n - self.n_context, spec.max_nodes), jnp.float32)
        return self.decoder.init({"params": key}, queries, encoding, adj, mask)

    def init_frozen(self, key: jax.Array, spec: BatchSpec) -> Any:
        """Random encoder variables (stage 1's initialisation; stage 2's shape template for the frozen encoder)."""
        x, adj, mask = model_lib.dummy_inputs(spec.n, spec.max_nodes)
        return self.encoder.init({"params": key}, x, adj, mask)

    # -- forward passes ------------------------------------------------------------------------------------------
    def predict(self, params: Any, frozen: Any, batch: Batch, dropout_key: jax.Array | None) -> tuple:
        """Predictions and targets of the stage on a (local) batch.

        Args:
          params: variables of the trained network.
          frozen: stage 2: the frozen encoder's variables; stage 1: ignored.
          batch: ``x, noise [B, n, N]``, ``adj [B, N, N]``, ``node_mask [B, N]`` (packed rows or one per dataset).
          dropout_key: key of the ``"dropout"`` stream (training), or None (deterministic, validation).

        Returns:
          ``(pred, target)``, each ``[B, n, N]`` (stage 1) or ``[B, n − n_context, N]`` (stage 2).
        """
        target = batch.x - batch.noise
        if self.name == "encoder":
            train = dropout_key is not None
            rngs = {"dropout": dropout_key} if train else {}
            pred = self.encoder.apply(params, batch.x, batch.adj, batch.node_mask, deterministic=not train, rngs=rngs)
            return pred, target
        c = self.n_context
        model = model_lib.TrainedModel(self.encoder, frozen, self.decoder, params)
        # One key for both applies: flax derives each dropout layer's stream from the key and the layer's path, so the
        # masks are those of a single decoder.apply (embed, then decode).
        cond = model_lib.condition(model, batch.x[:, :c], batch.adj, batch.node_mask, dropout_key=dropout_key)
        pred = model_lib.decode(model, batch.x[:, c:], cond, batch.adj, batch.node_mask, dropout_key=dropout_key)
        return pred, target[:, c:]

    def loss(self, params: Any, frozen: Any, batch: Batch, dropout_key: jax.Array | None) -> jax.Array:
        """The stage's training loss on a (local) batch (scalar)."""
        pred, target = self.predict(params, frozen, batch, dropout_key)
        fn = losses.encoder_loss if self.name == "encoder" else losses.decoder_loss
        return fn(pred, target, batch.node_mask, batch.segment, batch.segments)

    def per_dataset_errors(self, params: Any, frozen: Any, batch: Batch) -> dict[str, jax.Array]:
        """Validation errors of each dataset (one per row), deterministic forward pass.

        Returns:
          ``{"rmse": [B], "rmse_zero": [B]}``: the stage's error measure (stage 1: mean over samples of the per-sample
          RMSE; stage 2: the per-dataset RMSE on the query samples) for the prediction and for predicting 0.
        """
        pred, target = self.predict(params, frozen, batch, None)
        zero = jnp.zeros_like(target)
        if self.name == "encoder":
            err = lambda p: jnp.mean(losses.per_sample_rmse(p, target, batch.node_mask), axis=-1)  # noqa: E731
        else:
            err = lambda p: losses.per_dataset_rmse(p, target, batch.node_mask)  # noqa: E731
        return {"rmse": err(pred), "rmse_zero": err(zero)}


def build_stage(config, name: str) -> Stage:
    """The :class:`Stage` (networks and context split) of stage ``name`` of a run config."""
    V.check_choice(name, STAGES, "stage")
    encoder, decoder = model_lib.build_networks(config)
    if name == "encoder":
        return Stage(name="encoder", encoder=encoder)
    return Stage(name="decoder", encoder=encoder, decoder=decoder, n_context=int(config.data.n_context))


def data_spec(
    config, batch_size: int, funcs: Sequence[str] | None = None, *, pack: bool = False, stage: str | None = None
) -> BatchSpec:
    """The :class:`BatchSpec` of the run's data (every graph × function × noise combination of ``config.data``).

    Args:
      config: the run config.
      batch_size: datasets per call (per device).
      funcs: restrict the mechanism families (validation per family); default: all of ``config.data.funcs``.
      pack: the packed layout (training batches when ``config.data.pack``); validation batches are not packed.
      stage: ``"encoder"``: stage 1's training data, with ``data.encoder_n`` samples per dataset when it is set.
    """
    data = config.data
    funcs = tuple(data.funcs if funcs is None else funcs)
    priors = tuple(
        scm_prior(graph, func, noise, data.prior) for graph in data.graphs for func in funcs for noise in data.noises
    )
    return BatchSpec(
        priors=priors,
        node_counts=tuple(data.node_counts),
        max_nodes=data.max_nodes,
        n=data.encoder_n if stage == "encoder" and data.get("encoder_n") is not None else data.n,
        batch_size=batch_size,
        standardize=True,
        pack=pack,
    )
