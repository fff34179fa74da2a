"""Bridges to the libraries practitioners already use (optional dependencies, imported on demand).

- :mod:`cfip_jax.integrations.dowhy`: a fitted Cond-FiP SCM as a DoWhy-GCM causal model, and Cond-FiP mechanisms for an
  existing one (``pip install "cfip_jax[baselines]"``).
"""
