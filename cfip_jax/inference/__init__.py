"""Inference: from a trained model and one dataset to an SCM a user can query.

The layer between the trained networks (:mod:`cfip_jax.model`) and everything a user touches (:mod:`cfip_jax.api`,
the command line, evaluation, the DoWhy-GCM bridge):

- :mod:`~cfip_jax.inference.fit` — :func:`~cfip_jax.inference.fit.infer`, the one fitting pipeline (the API and
  evaluation both call it);
- :mod:`~cfip_jax.inference.mechanism` — the inferred mechanism as one pytree, and how it was made;
- :mod:`~cfip_jax.inference.scm` — :class:`~cfip_jax.inference.scm.InferredSCM` and its verbs;
- :mod:`~cfip_jax.inference.inputs` — data, graphs and node values parsed and checked once, for the API and the
  command line alike;
- :mod:`~cfip_jax.inference.refine` — semi-amortized inference: gradient steps on the dataset from the zero-shot SCM;
- :mod:`~cfip_jax.inference.correct` — the closed-form per-node correction, fitted on the device;
- :mod:`~cfip_jax.inference.structure` — the graph-free mode (a structure learner first);
- :mod:`~cfip_jax.inference.io` — an inferred SCM on disk (``scm.json`` + ``arrays.npz``, verified when read).
"""
