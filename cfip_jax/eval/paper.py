"""The paper's Cond-FiP results (arXiv 2410.06128 v3; n_context = 400, true graph), for reference lines in reports.

``COND_FIP[task][d]`` = mean RMSE ``(LIN IN, RFF IN, LIN OUT, RFF OUT)``: Table 1 (noise prediction), Table 2 (sample
generation), Table 3 (interventional generation) and Table 30 (counterfactual generation). Their mean over the 48
cells of d = 10, 20, 50 is 0.153.
"""

from __future__ import annotations

CATEGORY_ORDER = ("LIN IN", "RFF IN", "LIN OUT", "RFF OUT")

COND_FIP: dict[str, dict[int, tuple[float, float, float, float]]] = {
    "noise": {10: (0.06, 0.10, 0.07, 0.10), 20: (0.06, 0.09, 0.07, 0.12), 50: (0.06, 0.10, 0.07, 0.14),
              100: (0.05, 0.10, 0.07, 0.16)},
    "generation": {10: (0.06, 0.14, 0.05, 0.08), 20: (0.05, 0.24, 0.07, 0.30), 50: (0.08, 0.25, 0.07, 0.48),
                   100: (0.07, 0.29, 0.09, 0.57)},
    "interventional": {10: (0.10, 0.21, 0.07, 0.11), 20: (0.09, 0.24, 0.14, 0.31), 50: (0.13, 0.27, 0.12, 0.48),
                       100: (0.10, 0.30, 0.14, 0.56)},
    "counterfactual": {10: (0.09, 0.21, 0.05, 0.11), 20: (0.09, 0.26, 0.13, 0.30), 50: (0.10, 0.26, 0.10, 0.46),
                       100: (0.09, 0.29, 0.13, 0.56)},
}  # fmt: skip


def cond_fip(task: str, category: str, d: int) -> float | None:
    """The paper's Cond-FiP RMSE for one cell, or None where the paper has none."""
    row = COND_FIP.get(task, {}).get(d)
    if row is None or category not in CATEGORY_ORDER:
        return None
    return row[CATEGORY_ORDER.index(category)]
