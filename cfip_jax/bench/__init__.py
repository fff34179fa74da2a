"""Benchmarks: scripts that print figures (``python -m cfip_jax.bench.<name>``)."""
