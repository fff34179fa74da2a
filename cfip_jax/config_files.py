"""Loading run-config files (``configs/*.py``) by path: they are scripts beside the package, not a package."""

from __future__ import annotations

import importlib.util
import os
import types


def load_module(path: str | os.PathLike, name: str | None = None) -> types.ModuleType:
    """Execute the Python file ``path`` as a fresh module (``name`` defaults to ``cfip_config_<stem>``)."""
    path = os.fspath(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name or f"cfip_config_{stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load config file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_sibling(this_file: str, stem: str) -> types.ModuleType:
    """The config file ``{stem}.py`` in the folder of ``this_file`` (a config building on another one)."""
    return load_module(os.path.join(os.path.dirname(os.path.abspath(this_file)), f"{stem}.py"))
