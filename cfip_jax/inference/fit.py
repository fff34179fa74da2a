"""The one fitting pipeline: a trained model and one standardised dataset → its mechanism and abducted noise.

:meth:`cfip_jax.api.CondFiP.fit` (a user's data) and evaluation's Cond-FiP methods (:mod:`cfip_jax.eval.tasks`) both
call :func:`infer`, so both get the same checks, the same non-finite fallback and the same mechanism (with its
subset-of-nodes form, which the level-by-level solver uses).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cfip_jax import fixed_point
from cfip_jax import model as model_lib
from cfip_jax.inference import refine as refine_lib
from cfip_jax.inference.mechanism import Mechanism


class Inferred(NamedTuple):
    """What :func:`infer` returns.

    Attributes:
      mechanism: the :class:`~cfip_jax.inference.mechanism.Mechanism` (zero-shot, or refined).
      noise: ``[n, d]`` the abducted noise ``z − T(z)`` of the rows.
      made: how it was made: the :class:`~cfip_jax.inference.mechanism.FitInfo` fields of a refinement (empty when
        zero-shot, or when the refinement diverged and the zero-shot SCM was kept).
    """

    mechanism: Mechanism
    noise: jax.Array
    made: dict


def infer(
    model: model_lib.TrainedModel,
    z: jax.Array,
    adj: np.ndarray,
    *,
    context_rows: np.ndarray | None = None,
    refine: int | str | None = None,
    cfg: refine_lib.RefineConfig | None = None,
) -> Inferred:
    """Condition the decoder on one dataset (zero-shot), abduct its noise and, with ``refine``, refine it.

    Args:
      model: the trained model.
      z: ``[n, d]`` the dataset, standardised (float32).
      adj: ``[d, d]`` its (checked) graph.
      context_rows: the rows the encoder reads (None: all).
      refine: None (zero-shot), a number of steps, ``"auto"`` or ``"closed-form"`` (checked by
        :func:`cfip_jax.inference.refine.check_refine`).
      cfg: the :class:`~cfip_jax.inference.refine.RefineConfig` (default ``RefineConfig()``).

    A schedule the data cannot run (too few rows to hold some out) raises a ``ValueError`` before anything is traced;
    a refinement whose loss turns non-finite keeps the zero-shot SCM, with a warning.
    """
    refine = refine_lib.check_refine(refine)
    cfg = cfg or refine_lib.RefineConfig()
    z = jnp.asarray(z, jnp.float32)
    if refine is not None:
        refine_lib.check_schedule(refine, cfg, z.shape[0])  # e.g. too few rows to hold some out: say so now
    adj_b = jnp.asarray(adj, jnp.float32)[None]
    context = z if context_rows is None else z[jnp.asarray(context_rows)]
    cond, noise = model_lib.condition_and_abduct(model, context, z, adj_b)
    zero_shot = Mechanism.build(model.decoder, model.decoder_params, cond, adj_b)
    if refine is None:
        return Inferred(zero_shot, noise, {})
    out = refine_lib.refine(model, cond, z, adj_b, refine, cfg)
    if not out.finite:
        warnings.warn("the refinement's loss became non-finite; returning the zero-shot SCM", stacklevel=3)
        return Inferred(zero_shot, noise, {})
    mech = out.mechanism(adj_b)
    made = dict(refined_steps=out.steps, refine_loss=(out.loss_before, out.loss_after), refine_loss_on=out.loss_on)
    if out.corrected_nodes is not None:
        made["corrected_nodes"] = tuple(out.corrected_nodes[k] for k in ("none", "linear", "features"))
    return Inferred(mech, fixed_point.abduct(mech, z), made)
