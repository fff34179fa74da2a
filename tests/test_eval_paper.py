"""The paper's Cond-FiP figures used as reference lines equal those of PAPER.md's tables."""

import numpy as np

from cfip_jax.eval import paper

TABLES = {"noise": "### 3.1 v3 Table 1", "generation": "### 3.2 v3 Table 2", "interventional": "### 3.3 v3 Table 3",
          "counterfactual": "**Table 30"}  # fmt: skip


def _cond_fip_rows(lines, marker):
    start = next(k for k, line in enumerate(lines) if line.startswith(marker))
    rows = {}
    for line in lines[start + 1 :]:
        if line.startswith("| Cond-FiP |"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[int(cells[1])] = tuple(float(c.split()[0]) for c in cells[2:6])
        elif rows and (line.startswith("###") or line.startswith("**Table")):
            break
    return rows


def test_reference_figures_match_the_paper_tables(shared_dir):
    lines = (shared_dir / "reference" / "PAPER.md").read_text().splitlines()
    for task, marker in TABLES.items():
        assert paper.COND_FIP[task] == _cond_fip_rows(lines, marker), task
    cells = [v for task in paper.COND_FIP.values() for d in (10, 20, 50) for v in task[d]]
    assert len(cells) == 48 and round(float(np.mean(cells)), 3) == 0.153
    assert paper.cond_fip("generation", "RFF OUT", 50) == 0.48 and paper.cond_fip("noise", "LIN IN", 30) is None
