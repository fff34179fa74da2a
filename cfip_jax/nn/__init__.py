"""Cond-FiP networks (flax.linen): DAG attention, the dataset encoder and the conditional FiP decoder."""

from cfip_jax.nn.arch import decoder_arch, encoder_arch
from cfip_jax.nn.attention import dag_attention, dag_attention_weights, sample_attention
from cfip_jax.nn.decoder import CondFiPDecoder, Conditioning, decoder_mechanism
from cfip_jax.nn.encoder import DatasetEncoder, parent_mask

__all__ = [
    "CondFiPDecoder",
    "Conditioning",
    "DatasetEncoder",
    "dag_attention",
    "dag_attention_weights",
    "decoder_arch",
    "decoder_mechanism",
    "encoder_arch",
    "parent_mask",
    "sample_attention",
]
