"""Data parallelism: the shard_map step on 4 devices equals 1 device; 2 processes × 2 devices equal 1 process × 4."""

import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P  # noqa: N817

from cfip_jax import model_io
from cfip_jax.train import loop
from cfip_jax.train.ema import EMAConfig
from cfip_jax.train.optim import learning_rate_schedule, make_optimizer
from cfip_jax.train.parallel import DATA_AXIS, make_mesh, replicated, to_host
from cfip_jax.train.state import TrainState
from cfip_jax.train.step import StepConfig, make_batch_train_step, make_sampler
from configs import test


def test_sharded_step_equals_single_device_step():
    """Stage 2 (both networks), 2 micro-batches of 4 datasets: 4 devices vs 1 device vs a plain full-batch gradient."""
    assert jax.device_count() == 4
    config = test.get_config()
    config.decoder.grad_accum = 2
    # Attention key biases have an exactly zero gradient in exact arithmetic (softmax ignores a per-query constant);
    # Adam with eps 1e-8 turns their ~1e-10 rounding noise into ±lr steps. A larger eps keeps the comparison about
    # the data-parallel step rather than about that noise.
    config.decoder.optim.eps = 1e-4
    accum, batch_size = 2, config.data.batch_size
    stage = loop.build_stage(config, "decoder")
    tx = make_optimizer(config.decoder.optim)
    schedule = learning_rate_schedule(config.decoder.optim)
    mesh4, mesh1 = make_mesh(jax.devices()[:4]), make_mesh(jax.devices()[:1])

    # The global batch, drawn the way training draws it: each of the 4 devices samples its own share.
    spec = loop.data_spec(config, batch_size // 4)
    sampler = jax.jit(make_sampler(spec, jax.random.key(7), mesh4, accum))
    batch = to_host(sampler(jnp.int32(3)))
    assert batch.x.shape == (accum, batch_size, config.data.n, config.data.max_nodes)
    flat = batch.x.reshape(accum * batch_size, -1)
    assert len({row.tobytes() for row in flat}) == accum * batch_size  # every device drew different datasets
    np.testing.assert_array_equal(to_host(sampler(jnp.int32(3))).x, batch.x)  # deterministic given the step

    key = jax.random.key(0)
    frozen = stage.init_frozen(jax.random.key(1), spec)

    def init():
        return TrainState.create(stage.init(key, spec), tx, frozen)

    cfg = StepConfig(stage, spec, tx, schedule, EMAConfig(every=1, update_after=0), accum, 0)
    results = {}
    for name, mesh in (("4", mesh4), ("1", mesh1)):
        state = jax.jit(init, out_shardings=replicated(mesh))()
        sharded = jax.device_put(batch, NamedSharding(mesh, P(None, DATA_AXIS)))
        step = make_batch_train_step(cfg, mesh)
        grads, losses = [], []
        for _ in range(3):
            state, metrics, g = step(state, sharded)
            grads.append(to_host(g))
            losses.append(float(metrics["loss"]))
        results[name] = (to_host(state), grads, losses)

    # The full-batch gradient of the mean loss, without shard_map, for the first step.
    params0 = init().params

    def full_loss(p, m):
        micro = jax.tree.map(lambda leaf: leaf[m], batch)
        return stage.loss(p, frozen, micro, None)

    expected = jax.tree.map(lambda a, b: (a + b) / 2, *(jax.grad(full_loss)(params0, m) for m in range(accum)))

    (s4, g4, l4), (s1, g1, l1) = results["4"], results["1"]
    np.testing.assert_allclose(l4, l1, rtol=1e-6)
    for step_index in range(3):
        for a, b in zip(jax.tree.leaves(g4[step_index]), jax.tree.leaves(g1[step_index]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(g4[0]), jax.tree.leaves(to_host(expected)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # not N× the gradient
    moved = 0.0
    for a, b, c in zip(
        jax.tree.leaves(s4.params), jax.tree.leaves(s1.params), jax.tree.leaves(to_host(params0)), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        moved = max(moved, float(np.max(np.abs(a - c))))
    assert moved > 1e-4  # the parameters did change
    for a, b in zip(jax.tree.leaves(s4.ema_params), jax.tree.leaves(s1.ema_params), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_reach_the_same_parameters_as_one(tmp_path):
    """train.py as 2 processes × 2 CPU devices over 127.0.0.1 vs this process with 4 devices (same global mesh); the
    two processes also run stage 2 and write the export."""
    steps = 3
    eps = 1e-4  # see test_sharded_step_equals_single_device_step
    # Both stages (the decoder one step): the export at the end reads the stage-2 checkpoint in every process.
    overrides = [f"--config.encoder.steps={steps}", f"--config.checkpoint_every={steps}", "--stage=both"]
    overrides.append("--config.decoder.steps=1")
    overrides.append(f"--config.encoder.optim.eps={eps}")
    port = _free_port()
    env = dict(os.environ)
    env.update(
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
    )
    two = tmp_path / "two"
    # Each process writes to a file, not a pipe: a pipe is read only after this process's own run below, and a
    # process whose pipe fills meanwhile blocks before JAX's shutdown barrier, which the other process then leaves
    # on a timeout (an abort, in a loaded CI run).
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "w") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "train.py", "--config=configs/test.py", f"--workdir={two}", *overrides]
                    + [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
    config = test.get_config()
    config.encoder.steps = steps
    config.checkpoint_every = steps
    config.encoder.optim.eps = eps
    one = loop.run(config, str(tmp_path / "one"), ("encoder",))["encoder"]  # meanwhile, in this process
    for p in procs:
        try:
            p.wait(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    outputs = [log.read_text() for log in logs]
    for i, p in enumerate(procs):
        tails = "\n".join(f"--- process {j}:\n{out[-2000:]}" for j, out in enumerate(outputs))
        assert p.returncode == 0, f"process {i} exited with {p.returncode}\n{tails}"
    assert "4 device(s) in 2 process(es)" in outputs[0]

    exported = model_io.load_export(two / model_io.WORKDIR_EXPORT)  # verified: checksums, tree, finiteness
    assert exported.info["decoder_step"] == 1

    step, restored = loop.load_state(config, str(two), "encoder")
    assert step == steps
    one, restored = to_host(one), to_host(restored)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(restored.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for a, b in zip(jax.tree.leaves(one.ema_params), jax.tree.leaves(restored.ema_params), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
