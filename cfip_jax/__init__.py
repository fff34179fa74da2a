"""cfip_jax: Cond-FiP — amortized inference of causal models via conditional fixed-point iterations — in JAX/Flax."""

__version__ = "0.1.0"
