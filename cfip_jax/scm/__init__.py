"""Pure-JAX priors over structural causal models with additive noise.

Adjacency convention throughout the public API: ``adj[i, j] == 1`` means the edge ``i -> j`` (row = parent,
column = child). Files in the reference format store the transpose (rows = children); :mod:`cfip_jax.data.io`
converts at the boundary.
"""

from cfip_jax.scm.batch import Batch, BatchSpec, sample_batch
from cfip_jax.scm.mechanisms import Mechanism, apply_mechanism, sample_mechanism
from cfip_jax.scm.priors import SCMPrior, scm_prior
from cfip_jax.scm.sampler import (
    SCM,
    counterfactual,
    noise_to_sample,
    sample_counterfactual,
    sample_intervention,
    sample_noise,
    sample_observational,
    sample_scm,
)
from cfip_jax.scm.standardize import Stats, standardize

__all__ = [
    "SCM",
    "Batch",
    "BatchSpec",
    "Mechanism",
    "SCMPrior",
    "Stats",
    "apply_mechanism",
    "counterfactual",
    "noise_to_sample",
    "sample_batch",
    "sample_counterfactual",
    "sample_intervention",
    "sample_mechanism",
    "sample_noise",
    "sample_observational",
    "sample_scm",
    "scm_prior",
    "standardize",
]
