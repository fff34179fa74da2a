"""The reference's on-disk dataset format (SPEC.md §5.1): read, validate and write one dataset directory.

Files of a dataset directory (``d`` nodes):

- ``true_graph.npy``: ``[d, d]`` 0/1 matrix **G = Aᵀ** (row ``i`` lists the parents of node ``i``). In memory we use the
  project's convention ``adj[i, j] = 1`` ⇔ ``i -> j``; this module is the only place that transposes.
- ``train_x.npy``, ``test_x.npy`` (and optionally ``val_x.npy``): ``[n, 2d]`` float32, ``[x | noise]`` in raw units.
- ``x_cf_{k}.npy``, ``k = 0, 1, …``: ``[m, 3d + 2]``: factual x, factual noise, counterfactual x, the intervened node's
  index (column ``3d``, a float holding an integer) and the intervention value (column ``3d + 1``), both repeated on
  every row.

Arrays are loaded with ``allow_pickle=False``. Every problem (missing file, unreadable file, wrong shape, non-finite
values, a cyclic or non-binary graph, inconsistent counterfactual columns) raises a one-line ``ValueError`` that names
the file.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from cfip_jax import validation as V

GRAPH_FILE = "true_graph.npy"
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Counterfactual:
    """One intervention of a dataset: factual rows and their counterfactuals under ``do(x_index = value)``.

    Attributes:
      x: ``[m, d]`` factual samples.
      noise: ``[m, d]`` their additive noise.
      x_cf: ``[m, d]`` counterfactual samples (same noise, intervened SCM); ``x_cf[:, index] == value``.
      index: the intervened node.
      value: the intervention value (raw units).
    """

    x: np.ndarray
    noise: np.ndarray
    x_cf: np.ndarray
    index: int
    value: float


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset directory in memory (float32 arrays, raw units).

    Attributes:
      adj: ``[d, d]`` adjacency, ``adj[i, j] = 1`` ⇔ ``i -> j``.
      train_x, train_noise: ``[n_train, d]`` context samples and noise.
      test_x, test_noise: ``[n_test, d]`` query samples and noise.
      counterfactuals: the ``x_cf_k`` files, in order of ``k``.
      val_x, val_noise: ``[n_val, d]`` optional validation split.
    """

    adj: np.ndarray
    train_x: np.ndarray
    train_noise: np.ndarray
    test_x: np.ndarray
    test_noise: np.ndarray
    counterfactuals: tuple[Counterfactual, ...] = ()
    val_x: np.ndarray | None = None
    val_noise: np.ndarray | None = None

    @property
    def d(self) -> int:
        """Number of nodes."""
        return self.adj.shape[0]

    @property
    def num_edges(self) -> int:
        """Number of edges of the graph."""
        return int(self.adj.sum())


def _load(path: pathlib.Path) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path}: missing")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot be read as a .npy array ({str(err).splitlines()[0]})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path}: not a single .npy array")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(f"{path}: expected a numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: contains NaN or inf values")
    return arr


def _load_split(path: pathlib.Path, d: int) -> tuple[np.ndarray, np.ndarray]:
    arr = _load(path)
    if arr.ndim != 2 or arr.shape[1] != 2 * d or arr.shape[0] < 1:
        raise ValueError(f"{path}: expected shape [n, {2 * d}] ([x | noise] for d = {d}), got {arr.shape}")
    arr = arr.astype(np.float32)
    return arr[:, :d], arr[:, d:]


def _load_counterfactual(path: pathlib.Path, d: int) -> Counterfactual:
    arr = _load(path)
    if arr.ndim != 2 or arr.shape[1] != 3 * d + 2 or arr.shape[0] < 1:
        raise ValueError(f"{path}: expected shape [m, {3 * d + 2}] (3d + 2 columns for d = {d}), got {arr.shape}")
    index_col, value_col = arr[:, 3 * d], arr[:, 3 * d + 1]
    if not np.all(index_col == index_col[0]) or not np.all(value_col == value_col[0]):
        raise ValueError(f"{path}: the index and value columns must be constant over rows")
    index = float(index_col[0])
    if index != round(index) or not 0 <= index < d:
        raise ValueError(f"{path}: intervened index {index} is not an integer in [0, {d})")
    index = int(round(index))
    arr32 = arr.astype(np.float32)
    x_cf = arr32[:, 2 * d : 3 * d]
    value = np.float32(value_col[0])
    if not np.all(x_cf[:, index] == value):
        raise ValueError(f"{path}: counterfactual column {index} does not equal the intervention value {value}")
    return Counterfactual(x=arr32[:, :d], noise=arr32[:, d : 2 * d], x_cf=x_cf, index=index, value=float(value))


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Read and validate one dataset directory.

    Args:
      path: the directory (e.g. ``…/er_linear_gaussian_in/total_nodes_5/seed_1``).

    Returns:
      The :class:`Dataset` (graph converted to ``adj[i, j] = 1`` ⇔ ``i -> j``).

    Raises:
      ValueError: naming the file and the problem (missing, unreadable, misshaped, non-finite, cyclic graph, …).
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: not a dataset directory")
    graph_path = path / GRAPH_FILE
    graph = _load(graph_path)
    if graph.ndim != 2 or graph.shape[0] != graph.shape[1] or graph.shape[0] < 1:
        raise ValueError(f"{graph_path}: expected a square [d, d] matrix, got shape {graph.shape}")
    try:
        adj = V.check_dag(np.asarray(graph, np.float32).T, name="graph")
    except ValueError as err:
        raise ValueError(f"{graph_path}: {err}") from None
    d = adj.shape[0]
    splits = {}
    for split in SPLITS:
        file = path / f"{split}_x.npy"
        if split == "val" and not file.exists():
            splits[split] = (None, None)
            continue
        splits[split] = _load_split(file, d)
    counterfactuals = []
    while (path / f"x_cf_{len(counterfactuals)}.npy").exists():
        counterfactuals.append(_load_counterfactual(path / f"x_cf_{len(counterfactuals)}.npy", d))
    return Dataset(
        adj=adj,
        train_x=splits["train"][0],
        train_noise=splits["train"][1],
        test_x=splits["test"][0],
        test_noise=splits["test"][1],
        counterfactuals=tuple(counterfactuals),
        val_x=splits["val"][0],
        val_noise=splits["val"][1],
    )


def _check_pair(x, noise, name: str, d: int) -> np.ndarray:
    x = V.check_finite(x, f"{name}_x").astype(np.float32)
    noise = V.check_finite(noise, f"{name}_noise").astype(np.float32)
    if x.ndim != 2 or x.shape[1] != d or noise.shape != x.shape:
        raise ValueError(f"{name}_x and {name}_noise must both have shape [n, {d}], got {x.shape} and {noise.shape}")
    return np.concatenate([x, noise], axis=1)


def write_dataset(path: str | os.PathLike, dataset: Dataset) -> None:
    """Write ``dataset`` into the directory ``path`` (created if needed) in the reference format (float32 files).

    Raises:
      ValueError: inconsistent shapes or a graph that is not a DAG (checked before anything is written).
    """
    adj = V.check_dag(dataset.adj, name="adj")
    d = adj.shape[0]
    arrays = {GRAPH_FILE: adj.T.copy()}
    arrays["train_x.npy"] = _check_pair(dataset.train_x, dataset.train_noise, "train", d)
    if dataset.val_x is not None:
        arrays["val_x.npy"] = _check_pair(dataset.val_x, dataset.val_noise, "val", d)
    arrays["test_x.npy"] = _check_pair(dataset.test_x, dataset.test_noise, "test", d)
    for k, cf in enumerate(dataset.counterfactuals):
        rows = _check_pair(cf.x, cf.noise, f"counterfactual {k}", d)
        x_cf = V.check_finite(cf.x_cf, f"counterfactual {k} x_cf").astype(np.float32)
        if x_cf.shape != (rows.shape[0], d):
            raise ValueError(f"counterfactual {k} x_cf must have shape {(rows.shape[0], d)}, got {x_cf.shape}")
        index = V.check_int(cf.index, f"counterfactual {k} index", minimum=0, maximum=d - 1)
        if not np.all(x_cf[:, index] == np.float32(cf.value)):
            raise ValueError(f"counterfactual {k}: x_cf[:, {index}] must equal the intervention value {cf.value}")
        tail = np.tile(np.asarray([index, cf.value], np.float32), (rows.shape[0], 1))
        arrays[f"x_cf_{k}.npy"] = np.concatenate([rows, x_cf, tail], axis=1)
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        np.save(path / name, arr, allow_pickle=False)
