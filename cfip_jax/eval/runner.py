"""Evaluation runs: datasets (reference-format trees, the paper's suite, real data) × methods → records and reports.

Entry point for ``eval.py``: :func:`run`. Each dataset is evaluated by every method; a dataset that cannot be read
(missing or misshaped files, a cyclic graph, NaN, d differing between graph and data) becomes a record with an
``"error"`` field and the others are still evaluated.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import pathlib
import time
import zlib
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from cfip_jax import fixed_point
from cfip_jax.data import io, real
from cfip_jax.data.generate import generate_dataset
from cfip_jax.eval import dowhy_gcm, report, tasks
from cfip_jax.eval.metrics import mmd
from cfip_jax.inference import noise as noise_lib
from cfip_jax.inference import structure
from cfip_jax.scm.priors import scm_prior

SUITES = ("paper",)
GRAPHS = ("true", *structure.LEARNERS)  # the graph each method is given: the true one or a learned one
REAL = ("sachs", "ecoli")
BASELINES = {"linear": tasks.LINEAR, "kernel-ridge": tasks.KERNEL_RIDGE, "fip": tasks.FIP, "dowhy": tasks.DOWHY}
OPTIONAL = {"dowhy": (dowhy_gcm.available, dowhy_gcm.INSTALL_HINT)}  # baseline → (installed?, how to install)
METHOD_ORDER = ("cond-fip", "cond-fip-refined", "fip", "dowhy", "linear", "kernel-ridge")

# The paper's test protocol (PAPER.md §2.3): IN = ER / SF-in / SF-out with Gaussian noise, OUT = SBM / WS with
# Laplace noise and the OUT parameter ranges; 3 SCMs per graph type; 400 context and 400 query samples.
SUITE_GRAPHS = {
    "in": (("er", "gaussian"), ("sf_in", "gaussian"), ("sf_out", "gaussian")),
    "out": (("sbm", "laplace"), ("ws", "laplace")),
}
SUITE_FUNCS = ("linear", "rff")


@dataclasses.dataclass(frozen=True)
class Item:
    """One dataset to evaluate (or the reason it cannot be).

    Attributes:
      name: relative path or name reported as ``"dataset"``.
      data: the dataset, or None when loading failed.
      meta: extra fields for every record (func, prior, d, graph, noise).
      error: why the dataset was skipped.
    """

    name: str
    data: io.Dataset | None
    meta: dict
    error: str | None = None


def find_dataset_dirs(root: str | pathlib.Path) -> list[pathlib.Path]:
    """Every directory below ``root`` (itself included) that holds a ``true_graph.npy`` or a ``train_x.npy``."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise ValueError(f"--data-dir {root} is not a directory")
    found = {p.parent for name in (io.GRAPH_FILE, "train_x.npy") for p in root.rglob(name)}
    return sorted(found)


def _meta_from_path(rel: pathlib.Path) -> dict:
    """func, prior, d, graph and noise from a path ``{graph}_{func}_{noise}_{prior}/total_nodes_{d}/…``."""
    meta: dict = {}
    for part in rel.parts:
        if part.startswith("total_nodes_") and part[12:].isdigit():
            meta["d"] = int(part[12:])
        bits = part.split("_")
        if len(bits) >= 4 and bits[-1] in ("in", "out") and bits[-3] in ("linear", "rff"):
            meta.update(graph="_".join(bits[:-3]), func=bits[-3], noise=bits[-2], prior=bits[-1])
    return meta


def data_dir_items(root: str | pathlib.Path) -> Iterator[Item]:
    """Items for every dataset directory below ``root``."""
    root = pathlib.Path(root)
    for path in find_dataset_dirs(root):
        rel = path.relative_to(root)
        name = str(rel) if str(rel) != "." else path.name
        meta = _meta_from_path(rel)
        try:
            data = io.load_dataset(path)
        except ValueError as err:
            yield Item(name, None, meta, str(err))
            continue
        meta.setdefault("d", data.d)
        yield Item(name, data, meta)


def suite_items(
    d_values: Sequence[int], *, n_context: int = 400, n_query: int = 400, per_graph: int = 3, interventions=None
) -> Iterator[Item]:
    """The paper's synthetic suite, drawn with our sampler (deterministic seeds).

    Args:
      d_values: node counts.
      n_context, n_query: samples per split.
      per_graph: SCMs per (graph type, function, setting).
      interventions: intervention files per dataset (default d, as in the paper), 100 factual rows each.
    """
    for d in d_values:
        for prior in ("in", "out"):
            for func in SUITE_FUNCS:
                for graph, noise in SUITE_GRAPHS[prior]:
                    for k in range(per_graph):
                        tag = f"{graph}_{func}_{noise}_{prior}/total_nodes_{d}"
                        seed = zlib.crc32(f"{tag}/{k}".encode()) % 1_000_000
                        name = f"{tag}/seed_{seed}"
                        data = generate_dataset(
                            seed,
                            scm_prior(graph, func, noise, prior),
                            d,
                            n_context=n_context,
                            n_query=n_query,
                            interventions=d if interventions is None else interventions,
                            intervention_samples=100,
                        )
                        meta = dict(graph=graph, func=func, noise=noise, prior=prior, d=d)
                        yield Item(name, data, meta)


def _evaluate_context(item: Item, methods: Sequence[tasks.Method], n_ctx: int | None, graph: str,
                      finished: set) -> list[dict]:  # fmt: skip
    """The records of every method not yet ``finished`` on ``item`` with ``n_ctx`` context rows (``graph`` as in
    :func:`evaluate_items`: the true one, or learned here once for all methods)."""
    rows = item.data.train_x.shape[0]
    if n_ctx is not None and n_ctx > rows:
        return [dict(dataset=item.name, error=f"n_context {n_ctx} > context rows", **item.meta)]
    suffix, adj, extra, spent = "", None, {}, 0.0
    if graph != "true":
        suffix = f"@{graph}"
        if all((item.name, m.name + suffix, rows if n_ctx is None else n_ctx) in finished for m in methods):
            return []
        x_ctx = item.data.train_x if n_ctx is None else item.data.train_x[:n_ctx]
        start = time.perf_counter()
        adj, _ = structure.discover(x_ctx, graph)
        spent = time.perf_counter() - start
        extra = dict(graph_used=graph, shd=structure.shd(adj, item.data.adj), edges=int(adj.sum()),
                     true_edges=int(np.asarray(item.data.adj).sum()), structure_seconds=spent)  # fmt: skip
    records = []
    for method in methods:
        if (item.name, method.name + suffix, rows if n_ctx is None else n_ctx) in finished:
            continue
        for rec in tasks.evaluate_dataset(method, item.data, n_context=n_ctx, adj=adj):
            if suffix:
                rec = {**rec, "method": rec["method"] + suffix, "seconds": rec["seconds"] + spent}
            records.append(dict(dataset=item.name, **rec, **extra, **item.meta))
    return records


def evaluate_items(
    items: Sequence[Item] | Iterator[Item],
    methods: Sequence[tasks.Method],
    n_contexts: Sequence[int | None] = (None,),
    *,
    total: int | None = None,
    progress: pathlib.Path | None = None,
    done: Sequence[dict] = (),
    graph: str = "true",
) -> list[dict]:
    """Evaluate every method on every item and context size; a progress bar over datasets.

    Args:
      items, methods, n_contexts: what to evaluate.
      total: the number of items (for the progress bar).
      progress: a JSON file rewritten (atomically) after each dataset with ``done`` and the new records so far, so
        that an interrupted run can be reported or resumed (``eval.py --include``).
      done: records of earlier runs; a (dataset, method, context size) they already score is not evaluated again.
      graph: ``"true"`` (each method gets the dataset's graph) or a structure learner (:data:`structure.LEARNERS`):
        the graph is learned once per dataset and context from the context rows and given to every method, whose
        records are then named ``"{method}@{learner}"`` and carry ``shd`` (to the true graph), ``edges`` and
        ``structure_seconds`` (the learner's time, also added to ``seconds``).

    Returns:
      The new records.
    """
    finished = {(r.get("dataset"), r.get("method"), r.get("n_context")) for r in done if "rmse" in r}
    skipped = {(r.get("dataset"), r.get("error")) for r in done if "error" in r}
    records: list[dict] = []

    def save() -> None:
        if progress is not None and records:
            tmp = progress.with_suffix(".tmp")
            tmp.write_text(json.dumps([*done, *records]))
            tmp.replace(progress)

    for item in tqdm.tqdm(items, total=total, desc="datasets", unit="ds"):
        save()  # everything finished before this dataset
        if item.error is not None:
            if (item.name, item.error) not in skipped:
                records.append(dict(dataset=item.name, method=None, task=None, error=item.error, **item.meta))
            continue
        for n_ctx in n_contexts:
            records += _evaluate_context(item, methods, n_ctx, graph, finished)
        release_compiled()
    save()
    return records


def mapped_share() -> float:
    """The share of the kernel's memory-map limit (``vm.max_map_count``) this process uses; 0 where unknown."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
        with open("/proc/self/maps") as f:
            used = sum(1 for _ in f)
    except (OSError, ValueError):
        return 0.0
    return used / max(limit, 1)


def release_compiled(threshold: float = 0.5) -> bool:
    """Drop JAX's compiled programs when the process holds more than ``threshold`` of its memory-map limit.

    Each compiled CPU program keeps hundreds of memory mappings (about 2,000 per dataset of the suite), and a long
    evaluation in one process otherwise fails at the kernel's limit (65,530 by default) with XLA's "LLVM compilation
    error: Cannot allocate memory". Clearing costs the recompilations (about a minute), about once per 15 datasets.
    Returns whether it cleared.
    """
    if mapped_share() <= threshold:
        return False
    jax.clear_caches()
    gc.collect()
    return True


# ---------------------------------------------------------------------------------------------------------------
# Real data (PAPER.md §2.6): MMD of generated vs held-out samples.


def real_split(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(context [400, d], query [400, d], adj, nodes)`` for ``"sachs"`` (a fixed random 400/400 split of the 853
    observational rows) or ``"ecoli"`` (800 samples of bnlearn's ecoli70, first 400 / last 400)."""
    if name == "sachs":
        data = real.load_sachs()
        order = np.random.default_rng(seed).permutation(data.x.shape[0])
        x = data.x[order[:800]]
    elif name == "ecoli":
        data = real.sample_ecoli70(800, seed=seed)
        x = data.x
    else:
        raise ValueError(f"unknown real dataset {name!r}; valid: {', '.join(REAL)}")
    return x[:400], x[400:800], data.adj, data.nodes


def evaluate_real(name: str, methods: Sequence[tasks.Method], seed: int = 0) -> list[dict]:
    """MMD(generated query, query), MMD(reconstructed context, query) and the floor MMD(context, query).

    Each method fits on the standardised context, infers the context noise ``n̂ = x − T(x)``, draws 400 new noise
    vectors and generates through its mechanism — with the paper's noise model, a Gaussian per node fitted to ``n̂``
    (``mmd-generated``), and with the library's default, each node's ``n̂`` resampled (``mmd-generated-empirical``,
    :mod:`cfip_jax.inference.noise`); the reconstruction regenerates
    the context from ``n̂``. All samples are compared in the context's standardised units (MMD with a Gaussian kernel,
    median-heuristic bandwidth).
    """
    ctx, query, adj, _ = real_split(name, seed)
    scale = tasks.Standardizer.fit(ctx)
    zc, zq = scale.x(ctx), scale.x(query)
    records = [dict(dataset=name, method="context (floor)", task="mmd-context", mmd=float(mmd(zc, zq)), seconds=0.0)]
    for method in methods:
        start = time.perf_counter()
        mech = method.fit(zc, adj)
        noise_hat = np.asarray(fixed_point.abduct(mech, zc))
        generated = {}
        for model, task in (("gaussian", "mmd-generated"), ("empirical", "mmd-generated-empirical")):
            fresh = noise_lib.draw(jnp.asarray(noise_hat), zq.shape[0], jax.random.key(seed), model)
            generated[task] = np.asarray(fixed_point.generate(mech, fresh, adj=adj, iterations="depth"))
        recon = np.asarray(fixed_point.generate(mech, noise_hat, adj=adj, iterations="depth"))
        seconds = time.perf_counter() - start
        for task, samples in generated.items():
            records.append(dict(dataset=name, method=method.name, task=task, mmd=float(mmd(samples, zq)),
                                seconds=seconds))  # fmt: skip
        records.append(
            dict(dataset=name, method=method.name, task="mmd-reconstructed", mmd=float(mmd(recon, zq)), seconds=seconds)
        )
    return records


def _one_floor_per_dataset(records: list[dict]) -> list[dict]:
    """Drop repeated real-data floors (MMD(context, query) is the same in every run, e.g. merged with --include)."""
    seen: set[str] = set()
    kept = []
    for rec in records:
        if rec.get("task") == "mmd-context":
            if rec["dataset"] in seen:
                continue
            seen.add(rec["dataset"])
        kept.append(rec)
    return kept


def run(
    *,
    methods: Sequence[tasks.Method],
    out: str | pathlib.Path,
    data_dir: str | None = None,
    suite: str | None = None,
    suite_d: Sequence[int] = (10, 20, 50),
    real_names: Sequence[str] = (),
    n_contexts: Sequence[int | None] = (None,),
    interventions: int | None = None,
    per_graph: int = 3,
    include: Sequence[dict] = (),
    graph: str = "true",
) -> list[dict]:
    """Evaluate ``methods`` on the chosen data and write the reports into ``out``; returns the records.

    ``include``: records of earlier runs (e.g. baselines evaluated once on the same suite, or an interrupted run's
    ``results.partial.json``) reported together with this run's; what they already score is not evaluated again.
    ``graph``: the true graph or a structure learner's (see :func:`evaluate_items`).
    """
    out = pathlib.Path(out)
    records: list[dict] = list(include)
    items: list[Item] = []
    if data_dir is not None:
        items += list(data_dir_items(data_dir))
    if suite is not None:
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; valid: {', '.join(SUITES)}")
        n_ctx = max([400] + [n for n in n_contexts if n])
        items += list(suite_items(suite_d, n_context=n_ctx, interventions=interventions, per_graph=per_graph))
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "results.partial.json"
    records += evaluate_items(items, methods, n_contexts, total=len(items), progress=partial, done=include, graph=graph)
    for name in real_names:
        scored = {r.get("method") for r in include if r.get("dataset") == name and "mmd" in r}
        records += evaluate_real(name, [m for m in methods if m.name not in scored])
    records = _one_floor_per_dataset(records)
    report.write_reports(records, out, METHOD_ORDER)
    partial.unlink(missing_ok=True)
    if items and methods:
        plot_example(items, methods[0], out)
    return records


def plot_example(items: Sequence[Item], method: tasks.Method, out: pathlib.Path) -> str | None:
    """True vs generated interventional samples (first intervention of the first readable dataset with one)."""
    for item in items:
        if item.data is None or not item.data.counterfactuals:
            continue
        data, cf = item.data, item.data.counterfactuals[0]
        scale = tasks.Standardizer.fit(data.train_x)
        mech = method.fit(scale.x(data.train_x), data.adj)
        onehot = np.zeros(data.d, bool)
        onehot[cf.index] = True
        values = np.zeros(data.d, np.float32)
        values[cf.index] = scale.value(cf.index, cf.value)
        pred = np.asarray(
            fixed_point.intervene(mech, scale.noise(cf.noise), onehot, values, adj=data.adj, iterations="depth")
        )
        names = [f"x{j}" for j in range(data.d)]
        return report.plot_interventions(
            scale.x(cf.x_cf),
            pred,
            cf.index,
            names,
            out / "interventional_example.png",
            f"{item.name}: do(x{cf.index}), {method.name}",
        )
    return None
