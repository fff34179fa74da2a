"""Model configurations: the reference sizes and a small size that trains in minutes on a 2-core CPU.

Both functions return an ``ml_collections.FrozenConfigDict`` (a ``ConfigDict`` that is hashable, so a module holding it
can be a static ``jax.jit`` argument). Override fields with keyword arguments, e.g.
``encoder_arch("small", dtype="bfloat16")``, or thaw with ``.as_configdict()``, edit, and freeze again.

Encoder fields: ``d_model`` (D), ``num_heads`` (H), ``key_dim`` (d_k), ``num_layers`` (sample+node layer pairs),
``mlp_dim`` (FFN hidden size), ``head_dim`` (hidden width of the F(x) head MLP), ``dropout``, ``dtype``.

Decoder fields: ``d_model``, ``num_heads``, ``key_dim``, ``num_layers`` (adaLN layers), ``mlp_dim``, ``dropout``,
``num_layers_dataset`` (sample+node layer pairs before the max-pool), ``encoder_dim`` (width of the encoding it reads),
``dtype``.

``dtype`` is the compute dtype of the matrix products (``"float32"`` or ``"bfloat16"``); parameters, LayerNorm
statistics, the attention normalisation and the residual stream stay in float32.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from cfip_jax import validation as V

SIZES = ("reference", "small")
DTYPES = ("float32", "bfloat16")

_ENCODER = {
    # SPEC.md §6.4 (encoder_training.yaml): 5,539,841 trainable parameters.
    "reference": dict(d_model=256, num_heads=8, key_dim=32, num_layers=4, mlp_dim=512, head_dim=1024, dropout=0.0),
    "small": dict(d_model=64, num_heads=4, key_dim=16, num_layers=2, mlp_dim=128, head_dim=128, dropout=0.0),
}

_DECODER = {
    # SPEC.md §6.5 (cond_fip_training.yaml): 8,173,057 trainable parameters.
    "reference": dict(
        d_model=256,
        num_heads=8,
        key_dim=64,
        num_layers=4,
        mlp_dim=512,
        dropout=0.1,
        num_layers_dataset=2,
        encoder_dim=256,
    ),
    # No dropout at the small size: short runs on freshly sampled SCMs underfit rather than overfit.
    "small": dict(
        d_model=64,
        num_heads=4,
        key_dim=16,
        num_layers=2,
        mlp_dim=128,
        dropout=0.0,
        num_layers_dataset=1,
        encoder_dim=64,
    ),
}


def _build(table: dict[str, dict[str, Any]], size: str, overrides: dict[str, Any]) -> ml_collections.FrozenConfigDict:
    V.check_choice(size, SIZES, "size")
    fields = dict(table[size], dtype="float32")
    for key in overrides:
        V.check_choice(key, tuple(fields), "config field")
    fields.update(overrides)
    V.check_choice(fields["dtype"], DTYPES, "dtype")
    V.check_probability(fields["dropout"], "dropout")
    for key, value in fields.items():
        if key not in ("dtype", "dropout"):
            V.check_int(value, key, minimum=1)
    return ml_collections.FrozenConfigDict(fields)


def encoder_arch(size: str = "reference", **overrides: Any) -> ml_collections.FrozenConfigDict:
    """Configuration of :class:`cfip_jax.nn.encoder.DatasetEncoder`.

    Args:
      size: ``"reference"`` (the paper's sizes) or ``"small"`` (CPU-sized).
      **overrides: field values replacing the size's defaults.
    """
    return _build(_ENCODER, size, overrides)


def decoder_arch(size: str = "reference", **overrides: Any) -> ml_collections.FrozenConfigDict:
    """Configuration of :class:`cfip_jax.nn.decoder.CondFiPDecoder`.

    Args:
      size: ``"reference"`` (the paper's sizes) or ``"small"`` (CPU-sized).
      **overrides: field values replacing the size's defaults.
    """
    return _build(_DECODER, size, overrides)
