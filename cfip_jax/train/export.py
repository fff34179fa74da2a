"""Turn a ``train.py`` workdir into an export (``model.json`` + ``params.npz``) that carries its lineage.

:func:`load_workdir` reads the EMA networks of a workdir's latest stage-2 checkpoint (Orbax) — training's business:
inference (:mod:`cfip_jax.model_io`) reads exports only.

``train.py`` ends by writing ``{workdir}/export``; the same by hand (or into another directory)::

    python -m cfip_jax.train.export WORKDIR [OUT]

The export's ``model.json`` ``info`` holds the workdir's provenance and ``lineage`` — every run that made the weights
(:mod:`cfip_jax.train.lineage`). The directory is written beside ``OUT`` under a temporary name and renamed into place,
so an interrupted export leaves any previous ``OUT`` whole.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import ml_collections

from cfip_jax import model_io
from cfip_jax.model import TrainedModel, build_networks
from cfip_jax.train import checkpoint as ckpt_lib
from cfip_jax.train import lineage as lineage_lib
from cfip_jax.train.parallel import make_mesh, replicated, to_host
from cfip_jax.train.state import abstract_state

DIRNAME = model_io.WORKDIR_EXPORT


def load_workdir(workdir: str | os.PathLike) -> TrainedModel:
    """The EMA encoder and decoder of the latest readable stage-2 checkpoint of a training workdir."""
    workdir = os.fspath(workdir)
    with ckpt_lib.StageCheckpointer(workdir, "decoder", keep=1000, async_save=False) as ck:
        latest = ck.latest_config()
        if latest is None:
            raise ValueError(f"{workdir}: no decoder checkpoint (train both stages with train.py first)")
        config = ml_collections.ConfigDict(latest[1])
        restored = ck.restore_latest(abstract_state(config, "decoder", replicated(make_mesh())))
        if restored is None:
            raise ValueError(f"{workdir}: no readable decoder checkpoint")
        step, state, saved = restored
    encoder, decoder = build_networks(config)
    info = dict(source=os.path.abspath(workdir), decoder_step=int(step), run_config=saved)
    return TrainedModel(encoder, to_host(state.frozen), decoder, to_host(state.ema_params), info)


def export_workdir(
    workdir: str | os.PathLike, out: str | os.PathLike | None = None, *, write: bool = True
) -> pathlib.Path:
    """Export the EMA networks of ``workdir``'s latest stage-2 checkpoint with its lineage; returns the directory
    (default ``{workdir}/export``). Raises ``ValueError`` when the workdir has no stage-2 checkpoint.

    In a run of several processes every process must call this (reading the checkpoint is collective: Orbax opens
    it with a barrier, and the arrays span every process's devices), with ``write`` true in one of them."""
    workdir = os.fspath(workdir)
    out = pathlib.Path(out if out is not None else os.path.join(workdir, DIRNAME)).absolute()
    model = load_workdir(workdir)
    if not write:
        return out
    runs = lineage_lib.read(workdir)
    model_io.export(model, out, lineage=runs, totals=lineage_lib.totals(runs))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cfip_jax.train.export", description=__doc__.splitlines()[0])
    p.add_argument("workdir", help="a train.py workdir with a stage-2 checkpoint")
    p.add_argument("out", nargs="?", help=f"the export directory (default WORKDIR/{DIRNAME})")
    args = p.parse_args(argv)
    try:
        out = export_workdir(args.workdir, args.out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
