"""Cond-FiP networks (flax.linen): DAG attention, the dataset encoder and the conditional FiP decoder."""
