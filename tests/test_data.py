"""The reference's on-disk format (reader, writer) and the dataset generator command line."""

import json
import pathlib

import numpy as np
import pytest

from cfip_jax import validation as V
from cfip_jax.data import generate
from cfip_jax.data.io import Counterfactual, Dataset, load_dataset, write_dataset
from cfip_jax.scm.priors import scm_prior


def _reference_entries(shared_dir: pathlib.Path):
    root = shared_dir / "data" / "reference-sample"
    entries = json.loads((root / "index.json").read_text())
    assert len(entries) >= 10
    return root, entries


def _affine_fit(x: np.ndarray, target: np.ndarray, parents: np.ndarray):
    """Least-squares affine map from the parents' columns to ``target``: (coefficients, max abs residual)."""
    design = np.concatenate([x[:, parents], np.ones((x.shape[0], 1))], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, target.astype(np.float64), rcond=None)
    return coef, float(np.abs(design @ coef - target).max())


def _descendants(adj: np.ndarray, j: int) -> set[int]:
    out, frontier = set(), [j]
    while frontier:
        for c in np.flatnonzero(adj[frontier.pop()]):
            if c not in out:
                out.add(int(c))
                frontier.append(int(c))
    return out


def _check_structure(ds: Dataset, linear: bool) -> None:
    """Properties every dataset of the format must have, and the linear-SCM ones when ``linear``."""
    d = ds.d
    V.check_dag(ds.adj)
    assert ds.train_x.shape[1] == ds.test_x.shape[1] == d and ds.train_x.dtype == np.float32
    roots = [j for j in range(d) if ds.adj[:, j].sum() == 0]
    assert roots
    for x, eps in ((ds.train_x, ds.train_noise), (ds.test_x, ds.test_noise)):
        target = x.astype(np.float64) - eps
        for j in roots:  # a root's mechanism is a constant (linear: b_j; RFF: b_j + √(2/M) s_j Σ α_r cos φ_r)
            np.testing.assert_allclose(target[:, j], target[0, j], atol=1e-4 * max(1.0, abs(target[0, j])))
    assert ds.counterfactuals
    first = ds.counterfactuals[0]
    for cf in ds.counterfactuals:
        assert 0 <= cf.index < d and np.all(cf.x_cf[:, cf.index] == np.float32(cf.value))
        np.testing.assert_array_equal(cf.x, first.x)  # all files share one set of factual rows
        np.testing.assert_array_equal(cf.noise, first.noise)
        keep = [k for k in range(d) if k != cf.index and k not in _descendants(ds.adj, cf.index)]
        np.testing.assert_allclose(cf.x_cf[:, keep], cf.x[:, keep], rtol=1e-5, atol=1e-4)
    if not linear:
        return
    scale = np.abs(ds.train_x).max()
    for j in range(d):
        parents = np.flatnonzero(ds.adj[:, j])
        coef, residual = _affine_fit(ds.train_x, ds.train_x[:, j] - ds.train_noise[:, j], parents)
        assert residual < 1e-4 * scale, (j, residual)
        # The same affine mechanism, with the same noise, generates the counterfactuals of non-intervened nodes.
        for cf in ds.counterfactuals:
            if j == cf.index:
                continue
            pred = np.concatenate([cf.x_cf[:, parents], np.ones((cf.x_cf.shape[0], 1))], axis=1) @ coef
            np.testing.assert_allclose(pred + cf.noise[:, j], cf.x_cf[:, j], atol=1e-3 * scale)


def test_reference_sample_loads_and_has_the_documented_structure(shared_dir):
    root, entries = _reference_entries(shared_dir)
    funcs = set()
    for entry in entries:
        ds = load_dataset(root / entry["path"])
        assert ds.d == entry["d"] and ds.num_edges == entry["edges"]
        assert ds.train_x.shape == (400, entry["d"]) and ds.test_x.shape == (400, entry["d"])
        assert len(ds.counterfactuals) == 5 and ds.counterfactuals[0].x.shape == (100, entry["d"])
        _check_structure(ds, linear=entry["func"] == "linear")
        funcs.add(entry["func"])
    assert funcs == {"linear", "rff"}


def test_write_then_read_is_exact(shared_dir, tmp_path):
    root, entries = _reference_entries(shared_dir)
    src = root / entries[-1]["path"]
    ds = load_dataset(src)
    write_dataset(tmp_path / "copy", ds)
    again = load_dataset(tmp_path / "copy")
    for name in ("adj", "train_x", "train_noise", "test_x", "test_noise"):
        np.testing.assert_array_equal(getattr(again, name), getattr(ds, name))
    assert [(c.index, c.value) for c in again.counterfactuals] == [(c.index, c.value) for c in ds.counterfactuals]
    for a, b in zip(again.counterfactuals, ds.counterfactuals, strict=True):
        np.testing.assert_array_equal(a.x_cf, b.x_cf)
    # File level: every array written equals the reference file (G = Aᵀ on disk, same columns, float32).
    for file in sorted(src.glob("*.npy")):
        written = np.load(tmp_path / "copy" / file.name, allow_pickle=False)
        assert written.dtype == np.float32
        np.testing.assert_array_equal(written, np.load(file, allow_pickle=False))


def _tiny_dataset(d=3, with_val=False):
    rng = np.random.default_rng(0)
    adj = np.zeros((d, d), np.float32)
    adj[0, 1] = adj[1, 2] = 1
    x, eps = rng.normal(size=(5, d)).astype(np.float32), rng.normal(size=(5, d)).astype(np.float32)
    x_cf = x.copy()
    x_cf[:, 1] = 0.25
    cf = Counterfactual(x=x, noise=eps, x_cf=x_cf, index=1, value=0.25)
    val = {"val_x": x[:2], "val_noise": eps[:2]} if with_val else {}
    return Dataset(adj=adj, train_x=x, train_noise=eps, test_x=x, test_noise=eps, counterfactuals=(cf,), **val)


def test_graph_is_transposed_on_disk_and_val_round_trips(tmp_path):
    ds = _tiny_dataset(with_val=True)
    write_dataset(tmp_path, ds)
    on_disk = np.load(tmp_path / "true_graph.npy")
    assert on_disk[1, 0] == 1 and on_disk[0, 1] == 0  # row 1 lists the parents of node 1
    again = load_dataset(tmp_path)
    np.testing.assert_array_equal(again.adj, ds.adj)
    np.testing.assert_array_equal(again.val_x, ds.val_x)
    assert np.load(tmp_path / "x_cf_0.npy").shape == (5, 3 * 3 + 2)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda p: (p / "train_x.npy").unlink(), "train_x.npy: missing"),
        (lambda p: np.save(p / "test_x.npy", np.zeros((4, 5), np.float32)), "test_x.npy: expected shape"),
        (lambda p: np.save(p / "true_graph.npy", np.ones((3, 3), np.float32) - np.eye(3)), "true_graph.npy: .*cyclic"),
        (lambda p: np.save(p / "true_graph.npy", np.zeros((3, 2), np.float32)), "true_graph.npy: expected a square"),
        (lambda p: np.save(p / "x_cf_0.npy", np.zeros((5, 10), np.float32)), "x_cf_0.npy: expected shape"),
        (lambda p: np.save(p / "train_x.npy", np.full((5, 6), np.nan, np.float32)), "train_x.npy: contains NaN"),
        (lambda p: np.save(p / "train_x.npy", np.array([{"a": 1}], object)), "train_x.npy: cannot be read"),
        (lambda p: (p / "test_x.npy").write_bytes(b"not an array"), "test_x.npy: cannot be read"),
    ],
    ids=["missing", "misshaped", "cyclic", "nonsquare", "cf-columns", "nan", "pickle", "garbage"],
)
def test_bad_files_raise_naming_the_file(tmp_path, corrupt, message):
    write_dataset(tmp_path, _tiny_dataset())
    corrupt(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_dataset(tmp_path)


def test_inconsistent_counterfactual_columns_are_rejected(tmp_path):
    write_dataset(tmp_path, _tiny_dataset())
    arr = np.load(tmp_path / "x_cf_0.npy")
    bad_index = arr.copy()
    bad_index[:, 9] = 7.0  # index outside [0, d)
    np.save(tmp_path / "x_cf_0.npy", bad_index)
    with pytest.raises(ValueError, match="x_cf_0.npy: intervened index"):
        load_dataset(tmp_path)
    bad_value = arr.copy()
    bad_value[:, 10] = 9.0  # x_cf[:, index] no longer equals the value
    np.save(tmp_path / "x_cf_0.npy", bad_value)
    with pytest.raises(ValueError, match="x_cf_0.npy: counterfactual column 1"):
        load_dataset(tmp_path)
    with pytest.raises(ValueError, match="not a dataset directory"):
        load_dataset(tmp_path / "nope")


# --------------------------------------------------------------------------------------------------------------------
# generator command line

ARGS = ["--func", "linear", "--noise", "gaussian", "--prior", "in", "--d", "4"]
SIZES = ["--n-context", "12", "--n-query", "10", "--interventions", "3", "--intervention-samples", "8"]


def test_generator_writes_the_reference_tree(tmp_path):
    out = tmp_path / "data"
    entries = generate.main(["--graph", "er", *ARGS, "--seeds", "3", "4", "--out", str(out), *SIZES])
    assert [e["seed"] for e in entries] == [3, 4]
    index = json.loads((out / "index.json").read_text())
    assert index == entries
    for entry in index:
        assert entry["path"] == f"er_linear_gaussian_in/total_nodes_4/seed_{entry['seed']}"
        assert entry["dist"] == entry["prior"] == "in" and entry["d"] == 4 and entry["graph"] == "er"
        ds = load_dataset(out / entry["path"])
        assert ds.num_edges == entry["edges"]
        assert ds.train_x.shape == (12, 4) and ds.test_x.shape == (10, 4)
        assert len(ds.counterfactuals) == 3 and ds.counterfactuals[0].x.shape == (8, 4)
        _check_structure(ds, linear=True)
        q10, q90 = np.quantile(ds.counterfactuals[0].x, [0.1, 0.9], axis=0)
        for cf in ds.counterfactuals:
            assert q10[cf.index] - 1e-5 <= cf.value <= q90[cf.index] + 1e-5
    assert sorted(p.name for p in (out / "er_linear_gaussian_in" / "total_nodes_4").iterdir()) == ["seed_3", "seed_4"]
    # Same seed -> same files; regenerating replaces the index entry instead of duplicating it.
    first = np.load(out / index[0]["path"] / "train_x.npy")
    generate.main(["--graph", "er", *ARGS, "--seeds", "3", "--out", str(out), *SIZES])
    np.testing.assert_array_equal(np.load(out / index[0]["path"] / "train_x.npy"), first)
    assert len(json.loads((out / "index.json").read_text())) == 2


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--graph", "tree", *ARGS, "--seeds", "1"], "--graph"),
        (["--graph", "er", *ARGS[:4], "--prior", "mid", "--d", "4", "--seeds", "1"], "--prior"),
        (["--graph", "er", *ARGS[:6], "--d", "1", "--seeds", "1"], "--d"),
        (["--graph", "er", *ARGS[:6], "--d", "3", "--seeds", "1"], "--d"),  # 3 edges per node >= d
        (["--graph", "er", *ARGS, "--seeds"], "--seeds"),
        (["--graph", "er", *ARGS, "--seeds", "1", "1"], "--seeds"),
        (["--graph", "er", *ARGS, "--seeds", "1", "--n-context", "1"], "--n-context"),
        (["--graph", "er", *ARGS, "--seeds", "1", "--intervention-samples", "1"], "--intervention-samples"),
    ],
    ids=["graph", "prior", "d<2", "edges>=d", "no-seeds", "dup-seeds", "n<2", "cf-n<2"],
)
def test_generator_rejects_bad_arguments(tmp_path, capsys, argv, flag):
    out = tmp_path / "data"
    with pytest.raises(SystemExit) as err:
        generate.main([*argv, "--out", str(out)])
    assert err.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error:" in message and flag in message
    assert not out.exists()


def test_generator_unwritable_output_and_no_partial_dataset(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit):
        generate.main(["--graph", "er", *ARGS, "--seeds", "1", "--out", str(blocker / "sub"), *SIZES])
    assert "--out" in capsys.readouterr().err

    out = tmp_path / "data"
    generate.main(["--graph", "er", *ARGS, "--seeds", "5", "--out", str(out), *SIZES])
    target = out / "er_linear_gaussian_in" / "total_nodes_4" / "seed_5"
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    real_write = generate.write_dataset

    def failing_write(path, dataset):
        real_write(path, dataset)  # every file lands in the temporary directory, then the dataset fails
        raise OSError("disk full")

    monkeypatch.setattr(generate, "write_dataset", failing_write)
    with pytest.raises(OSError, match="disk full"):
        generate.main(["--graph", "er", *ARGS, "--seeds", "5", "6", "--out", str(out), *SIZES])
    parent = target.parent
    assert sorted(p.name for p in parent.iterdir()) == ["seed_5"]  # no seed_6, no temporary leftovers
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # the old dataset is intact
    assert [e["seed"] for e in json.loads((out / "index.json").read_text())] == [5]


@pytest.mark.parametrize("d", [20, 50])
def test_counterfactual_files_keep_non_descendants_bit_identical(d):
    """Every node the intervention cannot reach equals its factual value exactly (as in the reference's files), for
    every graph family with RFF mechanisms (whose large output scales made the two solves drift) and for linear ones;
    the intervened node holds its value; its descendants moved. (One compile per prior and d: linear mechanisms on
    one family only.)"""
    from cfip_jax.data.generate import generate_dataset
    from cfip_jax.scm.priors import GRAPH_FAMILIES

    for k, (graph, func) in enumerate([(g, "rff") for g in GRAPH_FAMILIES] + [("er", "linear")]):
        prior = scm_prior(graph, func, "laplace" if k % 2 else "gaussian", "out" if graph in ("sbm", "ws") else "in")
        data = generate_dataset(100 + k, prior, d, n_context=8, n_query=8, interventions=3, intervention_samples=16)
        adj = data.adj != 0
        reach = adj.copy()
        for _ in range(d):
            reach = reach | ((reach.astype(int) @ adj.astype(int)) > 0)
        for cf in data.counterfactuals:
            far = ~reach[cf.index]
            far[cf.index] = False
            np.testing.assert_array_equal(cf.x_cf[:, far], cf.x[:, far], err_msg=f"{graph} {func} d={d}")
            np.testing.assert_allclose(cf.x_cf[:, cf.index], cf.value, rtol=1e-6)
            if reach[cf.index].any():
                assert not np.array_equal(cf.x_cf[:, reach[cf.index]], cf.x[:, reach[cf.index]])
