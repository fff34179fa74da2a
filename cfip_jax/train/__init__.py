"""Training Cond-FiP (``train.py``): stage 1 trains the dataset encoder to predict the noise, stage 2 the conditional
decoder with the stage-1 EMA encoder frozen (paper §3).

- :mod:`~cfip_jax.train.loop` — the loop with resume, validation and checkpoints; :mod:`~cfip_jax.train.step` the
  compiled data-parallel step; :mod:`~cfip_jax.train.state`, :mod:`~cfip_jax.train.optim`, :mod:`~cfip_jax.train.ema`
  and :mod:`~cfip_jax.train.budget` (time-budgeted schedules) what it is made of.
- :mod:`~cfip_jax.train.checkpoint` — Orbax checkpoints per stage; :mod:`~cfip_jax.train.export` turns a workdir into
  an export (``python -m cfip_jax.train.export WORKDIR``; ``train.py`` writes ``{workdir}/export`` itself).
- :mod:`~cfip_jax.train.init_from` — continued training from an export or a workdir (``--config.init_from``), and
  :mod:`~cfip_jax.train.lineage` — the record of every run that made a model's weights.
- :mod:`~cfip_jax.train.validation_set` — the fixed 96-dataset validation set and its command.
"""
