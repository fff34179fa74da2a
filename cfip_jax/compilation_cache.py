"""JAX's persistent compilation cache in a user cache directory, so that a second run does not compile again.

:func:`enable` points ``jax_compilation_cache_dir`` at ``$CFIP_JAX_CACHE_DIR`` (default
``$XDG_CACHE_HOME/cfip_jax/xla``, else ``~/.cache/cfip_jax/xla``) and caches every compilation of at least 0.1 s.
It changes nothing when ``CFIP_JAX_CACHE_DIR`` is set empty, when a cache directory is already configured (e.g. by
``JAX_COMPILATION_CACHE_DIR``), or when the directory cannot be created.

The command line (``python -m cfip_jax``) enables it: each of its runs is a short process that would otherwise
compile the encoder, the decoder and the solvers anew. A notebook calls ``cfip_jax.compilation_cache.enable()``
itself: with jaxlib 0.10.2, writing executables to the cache has crashed long processes that compiled many hundreds
of programs on a cold cache (seen in this project's test suite), so a library import does not switch it on.
"""

from __future__ import annotations

import os

ENV = "CFIP_JAX_CACHE_DIR"
MIN_COMPILE_SECONDS = 0.1


def default_dir() -> str:
    """``$CFIP_JAX_CACHE_DIR``, else the user cache directory's ``cfip_jax/xla``."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cfip_jax", "xla")


def enable() -> str | None:
    """Use the persistent compilation cache (see the module docstring); returns its directory, or None if off."""
    import jax

    if os.environ.get(ENV) == "":
        return None
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir  # configured by the user: keep it
    path = default_dir()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path
