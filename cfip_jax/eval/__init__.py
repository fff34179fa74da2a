"""Evaluation: metrics, per-dataset baselines, real data and the paper's four tasks."""
