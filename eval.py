"""Evaluate Cond-FiP and per-dataset baselines with the paper's protocol.

Examples:
  python eval.py --real sachs,ecoli --out results/real     # the shipped pretrained model and every baseline
  python eval.py --checkpoint workdir/default --data-dir ../shared/data/reference-sample --out results/ref
  python eval.py --checkpoint workdir/default --suite paper --suite-d 10,20,50 --out results/paper
  python eval.py --checkpoint workdir/default --real sachs,ecoli --out results/real
  # baselines once, then a model against them on the same (deterministic) suite
  python eval.py --suite paper --methods fip,dowhy,linear,kernel-ridge --out results/baselines
  python eval.py --suite paper --methods cond-fip --include results/baselines/results.json --out results/paper
  python eval.py --include results/a/results.json results/b/results.json --out results/all   # reports only

Writes ``results.json``, ``summary.md``, ``summary.csv`` and PNG plots into ``--out``.
"""

from cfip_jax.eval.cli import main

if __name__ == "__main__":
    main()
