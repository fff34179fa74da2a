"""Reading a run's checkpoints back: a stage's latest state, and the stage-1 EMA encoder that stage 2 freezes.

Used by the training loop (resume, stage 2's start) and by the fixed validation set's command; it imports neither.
"""

from __future__ import annotations

from typing import Any

import jax
import tqdm

from cfip_jax import validation as V
from cfip_jax.train import checkpoint as ckpt_lib
from cfip_jax.train.parallel import make_mesh, replicated
from cfip_jax.train.stage import STAGES
from cfip_jax.train.state import TrainState, abstract_state


def _say(msg: str) -> None:
    if jax.process_index() == 0:
        tqdm.tqdm.write(msg)


def load_encoder_ema(config, workdir: str, mesh: jax.sharding.Mesh) -> Any:
    """The stage-1 encoder's EMA variables from the latest encoder checkpoint of ``workdir`` (replicated on ``mesh``).

    Raises:
      ValueError: no encoder checkpoint, or one whose encoder model config differs from ``config``'s.
    """
    current = ckpt_lib.config_to_dict(config)
    with ckpt_lib.StageCheckpointer(workdir, "encoder", config.keep_checkpoints) as enc_ckpt:
        latest = enc_ckpt.latest_config()
        if latest is None:
            raise ValueError(
                f"stage 2 needs a stage-1 encoder checkpoint in {enc_ckpt.directory}; "
                "run with --stage encoder (or --stage both) first"
            )
        step, saved = latest
        saved_model = {"encoder": {"model": saved.get("encoder", {}).get("model", {})}}
        now_model = {"encoder": {"model": current["encoder"]["model"]}}
        ckpt_lib.check_compatible(saved_model, now_model, "decoder", where=f"the encoder checkpoint at step {step}")
        restored = enc_ckpt.restore_latest_with_budget(abstract_state(config, "encoder", replicated(mesh)))
        if restored is None:
            raise ValueError(f"no readable stage-1 encoder checkpoint in {enc_ckpt.directory}")
        step, state, _, budget = restored
    if config.max_seconds is None and step < config.encoder.steps:
        _say(f"WARNING: the encoder checkpoint is at step {step} < encoder.steps = {config.encoder.steps}")
    if config.max_seconds is not None and not budget.get("finished", False):
        _say(f"WARNING: the encoder checkpoint at step {step} has not finished its time budget")
    _say(f"decoder: using the EMA encoder of the encoder checkpoint at step {step}")
    return state.ema_params


def load_state(config, workdir: str, name: str, mesh: jax.sharding.Mesh | None = None) -> tuple[int, TrainState]:
    """The latest readable checkpoint of stage ``name`` in ``workdir``: ``(step, state)``.

    Use ``state.ema_params`` (and, for the decoder, ``state.frozen``: the encoder) for inference.

    Raises:
      ValueError: no readable checkpoint, or one written with a config whose fields for this stage differ.
    """
    V.check_choice(name, STAGES, "stage")
    mesh = make_mesh() if mesh is None else mesh
    with ckpt_lib.StageCheckpointer(workdir, name, config.keep_checkpoints) as ckpt:
        latest = ckpt.latest_config()
        if latest is None:
            raise ValueError(f"no {name} checkpoint in {ckpt.directory}")
        ckpt_lib.check_compatible(latest[1], ckpt_lib.config_to_dict(config), name, where=f"the {name} checkpoint")
        restored = ckpt.restore_latest(abstract_state(config, name, replicated(mesh)))
        if restored is None:
            raise ValueError(f"no readable {name} checkpoint in {ckpt.directory}")
    return restored[0], restored[1]
