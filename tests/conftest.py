"""Test configuration, before any JAX operation runs: 4 emulated CPU devices, strict rank promotion (a broadcasting
slip fails), and a persistent compilation cache for the processes the tests start (the SCM sampler takes seconds to
compile, and each subprocess would compile it again).

The test process itself only reads that cache, never writes it: with jaxlib 0.10.2, serialising an executable for
the cache (``LoadedExecutable.serialize``) segfaulted in this process after a few hundred tests, on a cold cache, in
the same test each time (``test_structure.py``'s first ``fit`` after a PC run); the subprocesses write their own
entries. Even so, one process running every test segfaulted once inside XLA's compiler (``backend_compile_and_load``,
``test_stage.py``, after about 260 tests): the suite runs in two worker processes (pytest-xdist, ``-n 2 --dist
loadfile`` in ``pyproject.toml``; a file's tests stay in one process, so module fixtures are built once) and each
worker drops JAX's in-memory caches after every test file."""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=4"
CACHE = os.path.join(tempfile.gettempdir(), "cfip_jax_test_xla_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", CACHE)  # inherited by subprocesses
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_persistent_cache_min_compile_time_secs", float("inf"))  # read-only here: see above

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    """The ../shared folder beside the repository (reference data); tests needing it skip with a reason if absent."""
    if not SHARED.is_dir():
        pytest.skip(f"reference material not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="module", autouse=True)
def _fresh_jax_caches_per_file():
    """Drop JAX's in-memory compilation caches after each test file (keeps a worker's compiled state small)."""
    yield
    jax.clear_caches()
