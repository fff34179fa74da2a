"""Pure-JAX priors over structural causal models with additive noise.

Adjacency convention throughout the public API: ``adj[i, j] == 1`` means the edge ``i -> j`` (row = parent,
column = child). Files in the reference format store the transpose (rows = children); :mod:`cfip_jax.data.io`
converts at the boundary.
"""
