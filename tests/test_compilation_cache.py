"""The command line's persistent compilation cache (cfip_jax.compilation_cache): where it goes, how it is turned off,
and that a user's own setting wins. Run in a fresh process each (JAX's configuration is process-wide)."""

import json
import os
import subprocess
import sys

from helpers import REPO

_PROBE = """
import json, sys
import jax
from cfip_jax import compilation_cache
path = compilation_cache.enable()
print(json.dumps([path, jax.config.jax_compilation_cache_dir]))
"""


def _probe(tmp_path, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "CFIP_JAX_CACHE_DIR")}
    base.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), **env)
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=base, capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_explicit_off_and_user_setting(tmp_path):
    default = str(tmp_path / "xdg" / "cfip_jax" / "xla")
    assert _probe(tmp_path) == [default, default]
    assert os.path.isdir(default)
    mine = str(tmp_path / "mine")
    assert _probe(tmp_path, CFIP_JAX_CACHE_DIR=mine) == [mine, mine]
    assert _probe(tmp_path, CFIP_JAX_CACHE_DIR="") == [None, None]
    theirs = str(tmp_path / "theirs")
    assert _probe(tmp_path, JAX_COMPILATION_CACHE_DIR=theirs, CFIP_JAX_CACHE_DIR=mine) == [theirs, theirs]
