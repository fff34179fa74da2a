"""cfip_jax: Cond-FiP — amortized inference of causal models via conditional fixed-point iterations — in JAX/Flax.

The notebook API is :class:`CondFiP` (``cfip_jax.CondFiP.load(path).fit(data, graph)``), imported lazily.
"""

__version__ = "0.1.0"

__all__ = ["CondFiP", "InferredSCM", "__version__"]


def __getattr__(name: str):
    if name in ("CondFiP", "InferredSCM"):
        from cfip_jax import api

        return getattr(api, name)
    raise AttributeError(f"module 'cfip_jax' has no attribute {name!r}")
