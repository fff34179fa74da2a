"""A trained Cond-FiP: the two networks, their (EMA) variables, and what they compute together.

This is the one place that wires the networks: training (:mod:`cfip_jax.train.stage`), evaluation
(:mod:`cfip_jax.eval.tasks`) and the notebook API (:mod:`cfip_jax.api`) all condition the decoder through
:func:`condition` and use it as a mechanism through :func:`mechanism` / :func:`node_mechanism`.

- :func:`arch_of` / :func:`build_networks`: the encoder and decoder (modules) of a run config.
- :class:`TrainedModel`: the networks with their variables (what inference and evaluation use).
- :func:`condition`: encode a context ``[B, n_ctx, N]`` with the encoder, then the decoder's dataset embedding →
  :class:`~cfip_jax.nn.decoder.Conditioning`. Traceable; :func:`condition_jit` is the compiled form for inference.
- :func:`mechanism`: the conditioned decoder as a pytree callable ``T: z -> F(z)`` for :mod:`cfip_jax.fixed_point`;
  :func:`node_mechanism`: the same for a subset of nodes, ``(z, nodes) -> F(z)[..., nodes]``.

Shapes: ``context``/``z`` are ``[B, n, N]`` standardised data, ``adj [B, N, N]`` (``adj[b, i, j] = 1`` ⇔ i → j),
``node_mask [B, N]`` bool or None. With ``single=True`` the mechanisms take one dataset, ``z [n, N]`` (the graph
still ``[1, N, N]``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.tree_util import Partial

from cfip_jax.nn.arch import decoder_arch, encoder_arch
from cfip_jax.nn.decoder import CondFiPDecoder, Conditioning, decoder_mechanism, decoder_node_mechanism, frozen_config
from cfip_jax.nn.encoder import DatasetEncoder


def arch_of(config: ml_collections.ConfigDict | dict) -> tuple[Any, Any]:
    """The (validated, frozen) encoder and decoder architectures of a run config (``config.encoder.model``, …).

    Raises:
      ValueError: a bad field, or a decoder whose ``encoder_dim`` is not the encoder's ``d_model``.
    """
    enc = encoder_arch("reference", **dict(config["encoder"]["model"]))
    dec = decoder_arch("reference", **dict(config["decoder"]["model"]))
    if dec.encoder_dim != enc.d_model:
        raise ValueError(
            f"decoder.model.encoder_dim ({dec.encoder_dim}) must equal encoder.model.d_model ({enc.d_model})"
        )
    return enc, dec


def build_networks(config: ml_collections.ConfigDict | dict) -> tuple[DatasetEncoder, CondFiPDecoder]:
    """The encoder and decoder modules of a run config (hashable: usable as static ``jit`` arguments)."""
    enc, dec = arch_of(config)
    return DatasetEncoder(config=enc), CondFiPDecoder(config=dec)


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A trained Cond-FiP model.

    Attributes:
      encoder: the :class:`DatasetEncoder` module.
      encoder_params: its (EMA) variables (``{"params": ...}``).
      decoder: the :class:`CondFiPDecoder` module.
      decoder_params: its (EMA) variables.
      info: provenance (run config, steps, …) as a JSON-able dict.
    """

    encoder: DatasetEncoder
    encoder_params: Any
    decoder: CondFiPDecoder
    decoder_params: Any
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        # Frozen (hashable) architectures, so that the modules can be static arguments of jit.
        object.__setattr__(self, "encoder", self.encoder.clone(config=frozen_config(self.encoder.config)))
        object.__setattr__(self, "decoder", self.decoder.clone(config=frozen_config(self.decoder.config)))


def condition(
    model: TrainedModel,
    context: jax.Array,
    adj: jax.Array,
    node_mask: jax.Array | None = None,
    *,
    dropout_key: jax.Array | None = None,
) -> Conditioning:
    """Encode the context and embed it: the decoder's conditioning for these datasets.

    The encoding is a constant for the decoder (``stop_gradient``): the encoder is trained in stage 1 only.

    Args:
      model: the networks and variables (``decoder_params`` may be the parameters being trained).
      context: ``[B, n_ctx, N]`` standardised context samples (padded nodes 0).
      adj: ``[B, N, N]``.
      node_mask: ``[B, N]`` bool, or None (all nodes real).
      dropout_key: the decoder's dropout stream (training), or None (deterministic).

    Returns:
      :class:`~cfip_jax.nn.decoder.Conditioning` ``[B, 1, N, D]``.
    """
    encoding = model.encoder.apply(model.encoder_params, context, adj, node_mask, method="encode")
    encoding = jax.lax.stop_gradient(encoding)
    rngs = {} if dropout_key is None else {"dropout": dropout_key}
    return model.decoder.apply(
        model.decoder_params, encoding, adj, node_mask, method="embed", deterministic=dropout_key is None, rngs=rngs
    )


def decode(
    model: TrainedModel,
    z: jax.Array,
    cond: Conditioning,
    adj: jax.Array,
    node_mask: jax.Array | None = None,
    *,
    dropout_key: jax.Array | None = None,
) -> jax.Array:
    """F(z) ``[B, n_q, N]`` of the conditioned decoder (training form: materialised attention, dropout if keyed)."""
    rngs = {} if dropout_key is None else {"dropout": dropout_key}
    return model.decoder.apply(
        model.decoder_params, z, cond, adj, node_mask, method="decode", deterministic=dropout_key is None, rngs=rngs
    )


@functools.partial(jax.jit, static_argnums=(0, 1))
def _condition(encoder, decoder, encoder_params, decoder_params, context, adj, node_mask):
    return condition(TrainedModel(encoder, encoder_params, decoder, decoder_params), context, adj, node_mask)


def condition_jit(
    model: TrainedModel, context: jax.Array, adj: jax.Array, node_mask: jax.Array | None = None
) -> Conditioning:
    """:func:`condition`, compiled once per model and shapes (inference)."""
    return _condition(model.encoder, model.decoder, model.encoder_params, model.decoder_params, context, adj, node_mask)


def _single(inner: Any, z: jax.Array, *nodes: Any) -> jax.Array:
    """``inner`` on one dataset: ``z [n, N]`` gains and loses the batch axis (``[B, n, N]`` passes through)."""
    return inner(z[None], *nodes)[0] if z.ndim == 2 else inner(z, *nodes)


def mechanism(
    model: TrainedModel, cond: Conditioning, adj: jax.Array, node_mask: jax.Array | None = None, *, single=False
) -> Partial:
    """The conditioned decoder as a mechanism ``T: z [B, n, N] -> F(z) [B, n, N]`` (dropout off; the attention
    evaluated in the form with the faster forward pass). A ``jax.tree_util.Partial`` whose arrays are leaves, so the
    solvers of :mod:`cfip_jax.fixed_point` compile once per model and shapes. ``single``: ``z [n, N]`` as well."""
    inner = decoder_mechanism(model.decoder, model.decoder_params, cond, adj, node_mask)
    return Partial(_single, inner) if single else inner


def node_mechanism(
    model: TrainedModel, cond: Conditioning, adj: jax.Array, node_mask: jax.Array | None = None, *, single=False
) -> Partial:
    """As :func:`mechanism` for a subset of nodes: ``(z [B, n, N], nodes [K] int) -> F(z)[..., nodes]`` (used by
    :func:`cfip_jax.fixed_point.solve_by_level`)."""
    inner = decoder_node_mechanism(model.decoder, model.decoder_params, cond, adj, node_mask)
    return Partial(_single, inner) if single else inner


def decoder_mechanisms(decoder: CondFiPDecoder, decoder_params: Any, cond: Conditioning, adj: jax.Array):
    """``(mechanism, node mechanism)`` of one conditioned dataset from the decoder alone (``single=True`` forms of
    :func:`mechanism` and :func:`node_mechanism`; no encoder needed, e.g. for a saved SCM). ``adj [1, N, N]``."""
    inner = decoder_mechanism(decoder, decoder_params, cond, adj, None)
    at = decoder_node_mechanism(decoder, decoder_params, cond, adj, None)
    return Partial(_single, inner), Partial(_single, at)


def condition_and_abduct(
    model: TrainedModel, context: jax.Array, z: jax.Array, adj: jax.Array
) -> tuple[Conditioning, jax.Array]:
    """One compiled pass for one dataset: the context ``[n_ctx, N]`` conditions the decoder, and the noise
    ``z − F(z)`` of the rows ``z [n, N]`` is abducted (graph ``adj [1, N, N]``). Returns ``(cond, noise [n, N])``."""
    return _condition_and_abduct(
        model.encoder, model.decoder, model.encoder_params, model.decoder_params, context, z, adj
    )


@functools.partial(jax.jit, static_argnums=(0, 1))
def _condition_and_abduct(encoder, decoder, encoder_params, decoder_params, context, z, adj):
    model = TrainedModel(encoder, encoder_params, decoder, decoder_params)
    cond = condition(model, context[None], adj)
    noise = z - decoder.apply(decoder_params, z[None], cond, adj, None, method="decode", affine=None)[0]
    return cond, noise


def dummy_inputs(n: int, max_nodes: int, width: int | None = None) -> tuple[jax.Array, ...]:
    """Zero inputs of one dataset (``x [1, n, N]``, ``adj [1, N, N]``, ``node_mask [1, N]``; and an encoding
    ``[1, n, N, width]`` when ``width`` is given) for initialising the networks."""
    x = jnp.zeros((1, n, max_nodes), jnp.float32)
    adj = jnp.zeros((1, max_nodes, max_nodes), jnp.float32)
    mask = jnp.ones((1, max_nodes), bool)
    if width is None:
        return x, adj, mask
    return x, adj, mask, jnp.zeros((1, n, max_nodes, width), jnp.float32)


@functools.lru_cache(maxsize=16)
def abstract_variables(module: DatasetEncoder | CondFiPDecoder) -> Any:
    """The shapes and dtypes (``jax.ShapeDtypeStruct``) of a network's variables, as its initialisation makes them
    (they depend on the architecture only, not on the numbers of samples or nodes). Nothing is computed."""
    if isinstance(module, DatasetEncoder):
        x, adj, mask = dummy_inputs(4, 3)
        return jax.eval_shape(lambda: module.init({"params": jax.random.key(0)}, x, adj, mask))
    _, adj, mask, encoding = dummy_inputs(2, 3, module.config.encoder_dim)
    queries = jnp.zeros((1, 2, 3), jnp.float32)
    return jax.eval_shape(lambda: module.init({"params": jax.random.key(0)}, queries, encoding, adj, mask))


def check_variables(tree: Any, module: DatasetEncoder | CondFiPDecoder, where: str, lead: tuple[int, ...] = ()) -> None:
    """Refuse variables (a nested dict of arrays) whose names, shapes or dtypes differ from what ``module``'s
    initialisation makes (each shape after the leading axes ``lead``, e.g. ``(members,)`` for stacked copies): one
    ``ValueError`` line, ``where`` followed by the ``/``-joined name of the first one."""
    from flax import traverse_util

    want = traverse_util.flatten_dict(abstract_variables(module), sep="/")
    have = traverse_util.flatten_dict(tree, sep="/")
    net = type(module).__name__
    for name in sorted(set(want) | set(have)):
        if name not in have:
            raise ValueError(f"{where}{name}: missing (the {net} needs it)")
        if name not in want:
            raise ValueError(f"{where}{name}: not a variable of the {net}")
        a, b = have[name], want[name]
        shape = tuple(lead) + tuple(b.shape)
        if tuple(a.shape) != shape or a.dtype != b.dtype:
            raise ValueError(f"{where}{name}: {a.dtype}{list(a.shape)}, the {net} needs {b.dtype}{list(shape)}")
