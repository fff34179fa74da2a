"""Continued training (cfip_jax.train.init_from), the lineage it records (cfip_jax.train.lineage,
cfip_jax.train.export) and a run carried between machines (cfip_jax.train.carry)."""

import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import FakeClock, assert_trees_equal, tiny_config

from cfip_jax import model_io
from cfip_jax.train import budget as budget_lib
from cfip_jax.train import carry, init_from, lineage, loop
from cfip_jax.train import checkpoint as ckpt_lib
from cfip_jax.train import export as export_lib
from cfip_jax.train.metrics_writer import read_metrics
from cfip_jax.train.parallel import make_mesh, replicated, to_host

STEPS = {"encoder.steps": 2, "decoder.steps": 2, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A two-step run of both stages and its export (``{workdir}/export``)."""
    workdir = str(tmp_path_factory.mktemp("source") / "run")
    loop.run(tiny_config(**STEPS), workdir)
    return workdir, str(export_lib.export_workdir(workdir))


def test_export_carries_the_run_record(source):
    workdir, export = source
    info = json.loads(open(os.path.join(export, model_io.EXPORT_CONFIG)).read())["info"]
    (run,) = info["lineage"]
    assert run["seed"] == 0 and run["init_from"] is None and run["start_sha256"] is None
    for stage in ("encoder", "decoder"):
        s = run["stages"][stage]
        assert (s["steps"], s["datasets"]) == (2, 2 * 4)
        assert s["cpu_s"] > 0 and s["wall_s"] > 0
        assert "val_rmse_linear" in s["val"]
    assert info["totals"]["decoder"]["steps"] == 2
    # The export holds the workdir's EMA weights, bit for bit.
    assert_trees_equal(model_io.load_export(export).decoder_params, export_lib.load_workdir(workdir).decoder_params)


def test_sha256_is_the_same_for_an_export_and_its_workdir(source):
    workdir, export = source
    a = init_from.params_sha256(export_lib.load_workdir(workdir))
    assert a == init_from.params_sha256(model_io.load(export))
    m = model_io.load(export)
    bumped = jax.tree.map(lambda x: x, m.decoder_params)
    leaf = jax.tree.leaves(bumped)[0]
    bumped = jax.tree.map(lambda x: x + 1e-3 if x is leaf else x, bumped)
    changed = model_io.TrainedModel(m.encoder, m.encoder_params, m.decoder, bumped, m.info)
    assert init_from.params_sha256(changed) != a


@pytest.mark.parametrize("use_export", [True, False])
def test_continued_stage_starts_from_the_source_weights(source, tmp_path, use_export):
    workdir, export = source
    path = export if use_export else workdir
    config = tiny_config(**STEPS, init_from=path, seed=1)
    state = loop.state_from_source(config, str(tmp_path / "next"), "decoder", make_mesh())
    model = init_from.load_source(path).model
    assert_trees_equal(state.params, model.decoder_params)
    assert_trees_equal(state.ema_params, model.decoder_params)
    assert_trees_equal(state.frozen, model.encoder_params)  # no stage-1 checkpoint here: the source's encoder
    assert int(to_host(state.step)) == 0
    tx = loop.stage_parts(config, "decoder")[2]
    assert_trees_equal(state.opt_state, tx.init(state.params))  # a fresh optimiser


def test_continuation_records_its_lineage(source, tmp_path):
    _, export = source
    workdir = str(tmp_path / "next")
    config = tiny_config(**STEPS, init_from=export, seed=1)
    states = loop.run(config, workdir, ("decoder",), command="python train.py …")
    out = export_lib.export_workdir(workdir)
    info = json.loads((out / model_io.EXPORT_CONFIG).read_text())["info"]
    first, second = info["lineage"]
    assert first["seed"] == 0 and second["seed"] == 1
    assert second["init_from"] == os.path.abspath(export)
    assert second["start_sha256"] == init_from.params_sha256(model_io.load(export))
    assert second["val_before"]["decoder"] == first["stages"]["decoder"]["val"]
    assert list(second["stages"]) == ["decoder"] and second["stages"]["decoder"]["steps"] == 2
    assert second["command"] == "python train.py …"
    assert info["totals"]["decoder"]["steps"] == 4 and info["totals"]["encoder"]["steps"] == 2
    # The continued decoder moved away from its start (its parameters: the EMA updates every 10 steps).
    before = jax.tree.leaves(model_io.load(export).decoder_params)
    after = jax.tree.leaves(to_host(states["decoder"].params))
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"seed": 0}, "seed 0 was already used"),
        ({"seed": 1, "decoder.model.mlp_dim": 64}, "decoder.model.mlp_dim is 32 there and 64 in the config"),
        ({"seed": 1, "encoder.model.num_layers": 2}, "encoder.model.num_layers is 1 there and 2"),
        ({"seed": 1, "init_grow": True}, "init_grow needs decoder.model.num_layers above the source's 1, got 1"),
        (
            {"seed": 1, "init_grow": True, "decoder.model.num_layers": 2, "decoder.model.mlp_dim": 64},
            r"decoder.model.mlp_dim is 32 there and 64 in the config \(init_grow adds decoder layers only\)",
        ),
        (
            {"seed": 1, "init_grow": True, "decoder.model.num_layers": 2, "init_moments": True},
            "init_moments and init_grow exclude each other",
        ),
    ],
)
def test_bad_source_is_refused_before_training(source, tmp_path, overrides, message):
    _, export = source
    with pytest.raises(ValueError, match=message) as err:
        loop.run(tiny_config(**STEPS, init_from=export, **overrides), str(tmp_path / "w"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "w").exists()


def test_grown_decoder_starts_as_the_source_function_and_its_new_layer_learns(source, tmp_path):
    """init_grow appends an adaLN layer with zero modulation: the grown decoder's output equals the source's on
    random inputs and graphs, the new layer's attention and MLP weights are drawn (not zero), and the loss has a
    gradient on its modulation, so the identity can move."""
    _, export = source
    config = tiny_config(**STEPS, init_from=export, seed=1, init_grow=True, **{"decoder.model.num_layers": 2})
    init_from.check(config)
    state = loop.state_from_source(config, str(tmp_path / "next"), "decoder", make_mesh())
    grown = loop.stage_parts(config, "decoder")[0].decoder
    src = init_from.load_source(export).model
    assert (src.decoder.config.num_layers, grown.config.num_layers) == (1, 2)
    params = to_host(state.params)
    new = params["params"]["layers_1"]
    assert all(not np.any(x) for x in jax.tree.leaves(new["modulation"]))
    assert all(np.any(new[part]["kernel"]) for part in ("query", "key", "value", "out"))
    assert np.any(new["mlp"]["hidden"]["kernel"]) and np.any(new["mlp"]["out"]["kernel"])
    assert_trees_equal({"params": {k: v for k, v in params["params"].items() if k != "layers_1"}},
                       src.decoder_params)  # fmt: skip
    assert_trees_equal(state.ema_params, state.params)

    k = jax.random.split(jax.random.key(3), 3)
    n_ctx, n_q, nodes, width = 6, 5, 4, grown.config.encoder_dim
    encoding = jax.random.normal(k[0], (2, n_ctx, nodes, width))
    z = jax.random.normal(k[1], (2, n_q, nodes))
    adj = jnp.triu(jax.random.bernoulli(k[2], 0.6, (2, nodes, nodes)).astype(jnp.float32), 1)
    want = src.decoder.apply(src.decoder_params, z, encoding, adj)
    got = grown.apply(state.params, z, encoding, adj)
    assert float(jnp.max(jnp.abs(want))) > 1e-3
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)

    grads = jax.grad(lambda p: jnp.sum((grown.apply(p, z, encoding, adj) - z) ** 2))(state.params)
    assert float(jnp.max(jnp.abs(grads["params"]["layers_1"]["modulation"]["kernel"]))) > 0


def test_init_grow_without_a_source_is_refused():
    with pytest.raises(ValueError, match="init_grow needs init_from"):
        init_from.check(tiny_config(init_grow=True))


def test_missing_source_and_missing_parameter(source, tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        init_from.check(tiny_config(init_from=str(tmp_path / "nowhere")))
    _, export = source
    src = init_from.load_source(export)
    flat = dict(src.model.decoder_params["params"])
    name = sorted(flat)[0]
    del flat[name]
    model = model_io.TrainedModel(src.model.encoder, src.model.encoder_params, src.model.decoder, {"params": flat})
    broken = src._replace(model=model)
    abstract = loop.abstract_state(tiny_config(), "decoder")
    with pytest.raises(ValueError, match=f"the decoder has no parameter 'params/{name}"):
        init_from.stage_variables(broken, abstract.params, "decoder")


def test_legacy_export_gives_one_record():
    info = json.loads(open(os.path.join(os.path.dirname(model_io.__file__), "assets", "pretrained",
                                        model_io.EXPORT_CONFIG)).read())["info"]  # fmt: skip
    info.pop("lineage", None)
    info.pop("totals", None)
    (run,) = lineage.of_info(info)
    assert run["seed"] == info["run_config"]["seed"]
    assert run["stages"]["decoder"]["steps"] == info["decoder_steps"]
    assert run["stages"]["decoder"]["val"]["val_rmse"] == info["final_validation"]["decoder_val_rmse"]
    assert lineage.totals([run])["decoder"]["cpu_s"] is None  # wall time only, then


def test_init_moments_carries_the_source_adam_state_and_starts_the_schedule_afresh(source, tmp_path):
    workdir, _ = source
    config = tiny_config(**STEPS, init_from=workdir, seed=1, init_moments=True)
    state = loop.state_from_source(config, str(tmp_path / "next"), "decoder", make_mesh())
    abstract = loop.abstract_state(config, "decoder", replicated(make_mesh()))
    with ckpt_lib.StageCheckpointer(workdir, "decoder", keep=1000, async_save=False) as ck:
        _, saved, _ = ck.restore_latest(abstract)
    fresh = loop.stage_parts(config, "decoder")[2].init(state.params)
    (k,) = [j for j, s in enumerate(state.opt_state) if isinstance(s, optax.ScaleByAdamState)]
    assert int(to_host(saved.opt_state[k].count)) == 2  # the source's two steps
    assert_trees_equal(to_host(state.opt_state[k]), to_host(saved.opt_state[k]))
    assert any(np.abs(x).max() > 0 for x in jax.tree.leaves(to_host(state.opt_state[k].nu)))
    for j in range(len(fresh)):  # every other part (the schedule's count) is a fresh optimiser's
        if j != k:
            assert_trees_equal(to_host(state.opt_state[j]), to_host(fresh[j]))
    assert_trees_equal(state.params, init_from.load_source(workdir).model.decoder_params)


def test_init_moments_is_refused_without_a_checkpoint_to_carry(source, tmp_path):
    workdir, export = source
    with pytest.raises(ValueError, match="needs a workdir as init_from") as err:
        loop.run(tiny_config(**STEPS, init_from=export, seed=1, init_moments=True), str(tmp_path / "a"))
    assert "\n" not in str(err.value)
    decoder_only = str(tmp_path / "decoder_only")  # a stage-2 continuation's workdir: no encoder checkpoint
    shutil.copytree(workdir, decoder_only, ignore=shutil.ignore_patterns("encoder", "export"))
    with pytest.raises(ValueError, match="has no encoder checkpoint to carry"):
        loop.run(tiny_config(**STEPS, init_from=decoder_only, seed=1, init_moments=True), str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_stage_stopped_and_resumed_counts_every_session_seconds_in_its_lineage(tmp_path):
    """The interrupted session's seconds (here 1.5 s of CPU burnt and 1 s asleep in a hook) reach the lineage through
    its checkpoint's ``spent`` record; rerunning the finished stage leaves the record as it is."""
    workdir = str(tmp_path / "run")
    config = tiny_config(**{"encoder.steps": 4, "checkpoint_every": 2})

    def burn_then_stop(stage, done):
        if done == 1:
            t = time.process_time()
            while time.process_time() - t < 1.5:
                pass
            time.sleep(1.0)
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.run(config, workdir, ("encoder",), hooks=[burn_then_stop])
    with ckpt_lib.StageCheckpointer(workdir, "encoder", keep=10, async_save=False) as ck:
        assert ck.steps() == [2, 3]
        first = ck.read_spent(3)
    assert first["cpu_s"] >= 1.5 and first["wall_s"] >= 2.5
    cpu, wall = time.process_time(), time.perf_counter()
    loop.run(config, workdir, ("encoder",))
    session = dict(cpu_s=time.process_time() - cpu, wall_s=time.perf_counter() - wall)
    (run,) = lineage.read(workdir)
    stage = run["stages"]["encoder"]
    assert stage["steps"] == 4
    for k in ("cpu_s", "wall_s"):  # both sessions: more than the second alone, at most the two together
        assert session[k] < stage[k] <= first[k] + session[k] + 0.1
    loop.run(config, workdir, ("encoder",))  # already complete: nothing trained, nothing added
    assert lineage.read(workdir)[0]["stages"]["encoder"] == stage


@pytest.fixture(scope="module")
def budgeted_source(tmp_path_factory):
    """A budgeted run of both stages (deterministic clock): each stage fixes its decay part-way and saves its
    stable checkpoint then."""
    workdir = str(tmp_path_factory.mktemp("budgeted") / "run")
    ema = {f"{n}.ema.{k}": v for n in ("encoder", "decoder") for k, v in (("every", 1), ("update_after", 0))}
    config = tiny_config(max_seconds=24.0, encoder_share=0.5, log_every=1, checkpoint_every=1000, **ema)
    with pytest.MonkeyPatch.context() as mp:  # a module-scoped fixture: its own patch context
        mp.setattr(budget_lib, "CLOCK", FakeClock(0.1))
        loop.run(config, workdir)
    return workdir, config


def _restore(workdir, config, name, subdir):
    abstract = loop.abstract_state(config, name, replicated(make_mesh()))
    with ckpt_lib.StageCheckpointer(workdir, name, keep=1000, async_save=False, subdir=subdir) as ck:
        step, state, _, budget = ck.restore_latest_with_budget(abstract)
    return step, state, budget


@pytest.mark.parametrize("name", ["encoder", "decoder"])
def test_a_budgeted_stage_saves_its_state_before_the_decay_as_its_stable_checkpoint(budgeted_source, name):
    workdir, config = budgeted_source
    _, _, final = _restore(workdir, config, name, "checkpoints")
    step, stable, record = _restore(workdir, config, name, ckpt_lib.STABLE)
    assert final["decay_start"] is not None and step == final["decay_start"] == int(to_host(stable.step))
    assert record["decay_start"] is None and not record["finished"]  # the budget as it stood before the decay
    lrs = {r["step"]: r["lr"] for r in read_metrics(workdir) if r.get("stage") == name and "lr" in r}
    peak = config[name].optim.lr
    assert lrs[step] == pytest.approx(peak) and lrs[step + 2] < peak  # the decay's cosine starts at 1 after it


def test_init_stable_starts_from_the_whole_stable_state_and_notes_it(budgeted_source, tmp_path, monkeypatch):
    workdir, config = budgeted_source
    step, stable, _ = _restore(workdir, config, "decoder", ckpt_lib.STABLE)
    nxt = str(tmp_path / "next")
    cont = config.copy_and_resolve_references()
    cont.update(dict(init_from=workdir, seed=1, init_stable=True))
    source = init_from.check(cont)
    os.makedirs(nxt)
    lineage.open_run(nxt, cont, source)
    state = loop.state_from_source(cont, nxt, "decoder", make_mesh())
    assert int(to_host(state.step)) == 0  # a new run: its own step count and data stream
    for part in ("params", "ema_params", "opt_state"):  # Adam's moments and the schedule's count: no warm-up
        assert_trees_equal(getattr(state, part), getattr(stable, part))
    raw, ema = jax.tree.leaves(to_host(stable.params)), jax.tree.leaves(to_host(stable.ema_params))
    assert not all(np.array_equal(a, b) for a, b in zip(raw, ema, strict=True))  # both carried, not one twice
    assert_trees_equal(state.frozen, init_from.load_source(workdir).model.encoder_params)
    note = lineage.read(nxt)[-1]["stable_start"]["decoder"]
    assert note["step"] == step and len(note["ema_sha256"]) == 64
    assert note["ema_sha256"] != source.sha256  # the stable EMA, not the source's annealed final weights
    # Run for real: the first steps go at the peak rate (the carried schedule count), and the log says so.
    monkeypatch.setattr(budget_lib, "CLOCK", FakeClock(0.1))
    loop.run(cont, str(tmp_path / "ran"), ("decoder",))
    lrs = [r["lr"] for r in read_metrics(str(tmp_path / "ran")) if "lr" in r]
    assert lrs[0] == pytest.approx(config.decoder.optim.lr) and lrs[-1] < lrs[0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"init_moments": True}, "init_stable excludes init_grow and init_moments"),
        ({"init_grow": True, "decoder.model.num_layers": 2}, "init_stable excludes init_grow and init_moments"),
    ],
)
def test_init_stable_conflicts_are_refused(budgeted_source, tmp_path, overrides, message):
    workdir, _ = budgeted_source
    with pytest.raises(ValueError, match=message) as err:
        loop.run(tiny_config(**STEPS, init_from=workdir, seed=1, init_stable=True, **overrides), str(tmp_path / "a"))
    assert "\n" not in str(err.value) and not (tmp_path / "a").exists()


def test_init_stable_needs_a_workdir_with_a_stable_checkpoint(source, tmp_path):
    workdir, export = source  # a run bounded by steps: no decay was fixed, so no stable checkpoint
    with pytest.raises(ValueError, match="needs a workdir as init_from"):
        loop.run(tiny_config(**STEPS, init_from=export, seed=1, init_stable=True), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="has no stable encoder checkpoint") as err:
        loop.run(tiny_config(**STEPS, init_from=workdir, seed=1, init_stable=True), str(tmp_path / "b"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# -- carried between machines (cfip_jax.train.carry) -------------------------------------------------------------


def test_a_packed_workdir_unpacks_to_every_state_it_resumes_from(budgeted_source, tmp_path):
    workdir, config = budgeted_source
    first, again = str(tmp_path / "a.tar"), str(tmp_path / "b.tar")
    manifest = carry.pack(workdir, first)
    carry.pack(workdir, again)
    assert open(first, "rb").read() == open(again, "rb").read()  # deterministic: the same state, the same bytes
    assert manifest["summary"]["decoder"]["stable"] is not None and manifest["summary"]["export"]
    moved = str(tmp_path / "elsewhere" / "run")
    os.makedirs(os.path.join(moved, "decoder", "checkpoints"))  # what a start that failed before its first save leaves
    carry.unpack(first, moved)
    for name in ("encoder", "decoder"):
        for subdir in ("checkpoints", ckpt_lib.STABLE):
            step, state, budget = _restore(workdir, config, name, subdir)
            assert _restore(moved, config, name, subdir)[0] == step
            assert_trees_equal(_restore(moved, config, name, subdir)[1], state)
            assert _restore(moved, config, name, subdir)[2] == budget
    assert init_from.load_source(moved).sha256 == init_from.load_source(workdir).sha256
    assert lineage.read(moved) == lineage.read(workdir) and read_metrics(moved) == read_metrics(workdir)
    with pytest.raises(ValueError, match="already holds encoder checkpoints") as err:
        carry.unpack(first, moved)
    assert "\n" not in str(err.value)


def test_an_unpacked_run_resumes_as_the_original_would(source, tmp_path):
    workdir, _ = source
    packed = str(tmp_path / "run.tar")
    carry.pack(workdir, packed)
    carry.unpack(packed, str(tmp_path / "moved"))
    shutil.copytree(workdir, str(tmp_path / "copy"))
    longer = tiny_config(**{**STEPS, "decoder.steps": 3})
    resumed = [loop.run(longer, str(tmp_path / w), ("decoder",))["decoder"] for w in ("moved", "copy")]
    assert int(to_host(resumed[0].step)) == 3
    assert_trees_equal(resumed[0], resumed[1])
    steps = [r["step"] for r in read_metrics(str(tmp_path / "moved")) if r.get("stage") == "decoder" and "loss" in r]
    assert steps[-1] == 3 and steps.count(3) == 1


def _rewrite(src, dst, change):
    """Copy the tar ``src`` to ``dst`` member by member, ``change(name, data)`` returning the new bytes (None drops
    the member)."""
    import io
    import tarfile

    with tarfile.open(src) as a, tarfile.open(dst, "w") as b:
        for member in a:
            data = change(member.name, a.extractfile(member).read())
            if data is not None:
                member.size = len(data)
                b.addfile(member, io.BytesIO(data))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda n, d: d[:-1] + bytes([d[-1] ^ 1]) if n.endswith("params.npz") else d, "does not match its size"),
        (lambda n, d: None if n.endswith("config.json") and "/" not in n else d, "listed member"),
        (lambda n, d: d.replace(b'"lineage.json"', b'"../lineage.json"') if n == carry.MANIFEST else d, "plain"),
        (lambda n, d: d.replace(carry.FORMAT.encode(), b"x/1") if n == carry.MANIFEST else d, "manifest"),
    ],
    ids=["a flipped bit", "a missing member", "a path outside", "another format"],
)
def test_a_damaged_carry_file_is_refused_and_leaves_nothing(source, tmp_path, change, message):
    packed, damaged = str(tmp_path / "run.tar"), str(tmp_path / "damaged.tar")
    carry.pack(source[0], packed)
    _rewrite(packed, damaged, change)
    with pytest.raises(ValueError, match=message) as err:
        carry.unpack(damaged, str(tmp_path / "w"))
    assert "\n" not in str(err.value) and not (tmp_path / "w").exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".carry_")] == []
    with open(packed, "rb") as f:
        truncated = f.read()[: os.path.getsize(packed) // 2]
    with open(damaged, "wb") as f:
        f.write(truncated)
    with pytest.raises(ValueError, match="damaged"):
        carry.unpack(damaged, str(tmp_path / "w"))


def test_a_workdir_that_changes_while_packed_leaves_no_file(source, tmp_path, monkeypatch):
    real = carry._sha256
    monkeypatch.setattr(carry, "_sha256", lambda p: ("0" * 64, real(p)[1]) if p.endswith("params.npz") else real(p))
    out = tmp_path / "run.tar"
    with pytest.raises(ValueError, match="changed while it was packed") as err:
        carry.pack(source[0], str(out))
    assert "\n" not in str(err.value) and os.listdir(tmp_path) == []


def test_a_large_carry_is_written_in_pieces_that_read_as_the_whole(source, tmp_path):
    whole, split = str(tmp_path / "whole.tar"), str(tmp_path / "split.tar")
    carry.pack(source[0], whole)
    carry.pack(source[0], split, part_bytes=300_000)
    pieces = sorted(p for p in os.listdir(tmp_path) if p.startswith("split.tar."))
    assert len(pieces) > 2 and not os.path.exists(split)
    assert all(os.path.getsize(tmp_path / p) <= 300_000 for p in pieces)
    assert b"".join((tmp_path / p).read_bytes() for p in pieces) == open(whole, "rb").read()
    carry.unpack(split, str(tmp_path / "w"))
    assert lineage.read(str(tmp_path / "w")) == lineage.read(source[0])
    os.remove(tmp_path / pieces[1])  # a piece lost on the way
    with pytest.raises(ValueError, match="damaged") as err:
        carry.verify(split)
    assert "\n" not in str(err.value)
    carry.pack(source[0], split)  # packed whole again: the pieces of the earlier carry are gone
    assert os.path.isfile(split) and not [p for p in os.listdir(tmp_path) if p.startswith("split.tar.")]
