"""The closed-form correction alone, this checkout's against an earlier one's, back to back in one process.

    git show 9193937:cfip_jax/correct.py > /tmp/correct_old.py   # (or cfip_jax/inference/correct.py since then)
    python scripts/correction_speed.py --old /tmp/correct_old.py

Synthetic data (a random DAG with about 4/d edges per node pair, x_i += sin(x_pa), a proposal t = 0.7 x + noise),
five folds, 200 features; prints the best of three timed calls after a warm-up (which compiles the device fit) and the
node counts each chose, at d = 20 (n = 400) and d = 100 (n = 1000).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
import time

import jax
import numpy as np

from cfip_jax.inference import correct


def _old_module(path: str):
    spec = importlib.util.spec_from_file_location("correct_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", help="an earlier cfip_jax correct.py to time beside (out_of_fold=True where it has it)")
    args = p.parse_args()
    old = _old_module(args.old) if args.old else None
    for d, n in ((20, 400), (100, 1000)):
        rng = np.random.default_rng(0)
        adj = np.triu((rng.random((d, d)) < 4.0 / d).astype(np.float32), 1)
        x = rng.normal(size=(n, d)).astype(np.float32)
        for i in range(d):
            x[:, i] += np.sin(x @ adj[:, i])
        t = (0.7 * x + 0.1 * rng.normal(size=x.shape)).astype(np.float32)
        held = correct.folds(n, 5, 1)
        runs = [("new", lambda t=t, x=x, adj=adj, held=held: correct.fit(t, x, adj, held))]
        if old is not None:
            extra = {"out_of_fold": True} if "out_of_fold" in inspect.signature(old.fit).parameters else {}
            runs.insert(0, ("old", lambda t=t, x=x, adj=adj, held=held, kw=extra: old.fit(t, x, adj, held, **kw)))
        for name, fn in runs:
            fn()
            times = []
            for _ in range(3):
                start = time.perf_counter()
                out = fn()
                jax.block_until_ready(out[0])
                times.append(time.perf_counter() - start)
            print(f"d = {d}, n = {n}: {name} {min(times):.3f} s, nodes {out[1]}", flush=True)


if __name__ == "__main__":
    main()
