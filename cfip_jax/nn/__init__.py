"""Cond-FiP networks (flax.linen): DAG attention, the dataset encoder and the conditional FiP decoder."""

from cfip_jax.nn.attention import dag_attention, dag_attention_weights, sample_attention
from cfip_jax.nn.configs import decoder_config, encoder_config
from cfip_jax.nn.decoder import CondFiPDecoder, Conditioning, decoder_mechanism
from cfip_jax.nn.encoder import DatasetEncoder, parent_mask

__all__ = [
    "CondFiPDecoder",
    "Conditioning",
    "DatasetEncoder",
    "dag_attention",
    "dag_attention_weights",
    "decoder_config",
    "decoder_mechanism",
    "encoder_config",
    "parent_mask",
    "sample_attention",
]
