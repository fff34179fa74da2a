"""Train Cond-FiP: stage 1 (dataset encoder), then stage 2 (decoder with the stage-1 EMA encoder frozen).

Examples (from the repository root)::

    python train.py                                                   # configs/default.py, workdir workdir/default
    python train.py --config configs/paper.py --workdir workdir/paper
    python train.py --config.encoder.steps=200 --config.seed=1 --stage encoder
    # multi-host: the same command on every host, with its own --process_id
    python train.py --config configs/paper.py --coordinator_address 10.0.0.1:1234 --num_processes 2 --process_id 0

A rerun of the same command resumes from the latest checkpoints (a finished stage is skipped). After stage 2 the run
writes ``{workdir}/export`` (``model.json`` with the lineage + ``params.npz``; ``cfip_jax.train.export``).
Continued training starts from an export or a workdir::

    python train.py --config configs/cpu.py --config.init_from=cfip_jax/assets/pretrained --config.seed=1 \
        --workdir workdir/next

and can deepen the decoder on the way (``--config.init_grow``: the extra adaLN layers start as the identity)::

    python train.py --config configs/cpu.py --config.init_from=cfip_jax/assets/pretrained --config.seed=1 \
        --config.init_grow=True --config.decoder.model.num_layers=3 --stage decoder --workdir workdir/deeper

where ``--config.decoder.optim.layer_lr_from=2 --config.decoder.optim.layer_lr_factor=8`` gives the new layers eight
times the rate of the others, so that the identities open within one run.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))


def _unknown_field(error: Exception) -> None:
    overrides = ", ".join(a.split("=")[0] for a in sys.argv[1:] if a.startswith("--config."))
    field = str(error).strip("\"'")
    sys.exit(f"error: unknown config field {field!r} in {overrides or 'the config overrides'}")


try:  # config_flags applies the --config.KEY overrides as soon as the flag is defined
    _CONFIG = config_flags.DEFINE_config_file(
        "config",
        os.path.join(_HERE, "configs", "default.py"),
        "Run config file (a get_config() returning a ConfigDict).",
        lock_config=True,
    )
except (AttributeError, KeyError) as e:  # what a locked ConfigDict raises for an unknown key
    _unknown_field(e)
_WORKDIR = flags.DEFINE_string("workdir", "workdir/default", "Run directory: checkpoints, metrics.jsonl, config.json.")
_STAGE = flags.DEFINE_enum("stage", "both", ["encoder", "decoder", "both"], "Which stage(s) to train.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: host:port of process 0 ('auto' lets JAX detect the cluster)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: index of this process.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO; --verbosity=0 shows them
    import jax

    if _COORDINATOR.value == "auto":
        jax.distributed.initialize()
    elif _COORDINATOR.value or _NUM_PROCESSES.value or _PROCESS_ID.value is not None:
        if not (_COORDINATOR.value and _NUM_PROCESSES.value and _PROCESS_ID.value is not None):
            raise app.UsageError("--coordinator_address, --num_processes and --process_id go together")
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value
        )
    from cfip_jax.train import loop

    stages = ("encoder", "decoder") if _STAGE.value == "both" else (_STAGE.value,)
    if jax.process_index() == 0:
        print(f"workdir {os.path.abspath(_WORKDIR.value)}; devices {jax.devices()}", flush=True)
    try:
        loop.run(_CONFIG.value, _WORKDIR.value, stages, command=" ".join(["python", *sys.argv]))
    except (ValueError, loop.NonFiniteLossError) as e:  # bad input, incompatible checkpoint, diverged run
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit(130)  # the checkpoint is already saved (see the message above)
    if jax.process_index() == 0:
        print(f"done: {', '.join(stages)} trained; metrics in {os.path.join(_WORKDIR.value, 'metrics.jsonl')}")


def parse_flags(argv):
    """absl's parser, with a one-line error for a ``--config.KEY`` override naming an unknown field."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as e:
        _unknown_field(e)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
