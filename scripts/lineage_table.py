"""The lineage of a model export as a Markdown table (for MODEL_CARD.md): every run that made its weights.

python scripts/lineage_table.py cfip_jax/assets/pretrained
"""

from __future__ import annotations

import json
import os
import sys

from cfip_jax.train import lineage


def _fmt(v, spec=",.0f"):
    return "–" if v is None else format(v, spec)


def table(path: str) -> str:
    with open(os.path.join(path, "model.json")) as f:
        info = json.load(f)["info"]
    runs = lineage.of_info(info)
    head = ("| run | seed | started from (sha256) | stage | steps | datasets | CPU s | wall s "
            "| fixed-set RMSE before → after |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    rows = [head]
    for k, r in enumerate(runs, start=1):
        start = "random init" if r.get("start_sha256") is None else f"run {k - 1} (`{r['start_sha256'][:12]}`)"
        for name, s in r.get("stages", {}).items():
            before = (r.get("val_before") or {}).get(name) or {}
            after = s.get("val") or {}
            b, a = before.get("val_rmse"), after.get("val_rmse")
            rows.append(f"| {k} | {r.get('seed')} | {start} | {name} | {_fmt(s.get('steps'))} | "
                        f"{_fmt(s.get('datasets'))} | {_fmt(s.get('cpu_s'))} | {_fmt(s.get('wall_s'))} | "
                        f"{_fmt(b, '.4f')} → {_fmt(a, '.4f')} |")  # fmt: skip
    tot = lineage.totals(runs)
    for name, t in tot.items():
        rows.append(f"| **total** | | | {name} | {_fmt(t['steps'])} | {_fmt(t['datasets'])} | {_fmt(t['cpu_s'])} | "
                    f"{_fmt(t['wall_s'])} | |")  # fmt: skip
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(sys.argv[1] if len(sys.argv) > 1 else "cfip_jax/assets/pretrained"))
