"""Command-line flags made from a frozen dataclass's fields, so a setting added to a config appears on every command
line that exposes it (``eval.py`` and ``python -m cfip_jax fit`` take the refinement's from
:class:`cfip_jax.inference.refine.RefineConfig` this way).

Each field ``name`` becomes ``--{prefix}-{name with - for _}``; its type comes from the annotation (``int``,
``float``, ``str``, each optionally ``| None``: the word ``none`` then gives None), its default from the dataclass and
its help from the ``Attributes:`` section of the class docstring.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing

_SCALARS = (int, float, str)


def _field_type(cls: type, name: str) -> tuple[type, bool]:
    """``(scalar type, optional)`` of a field's annotation."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    scalar = args[0] if optional and len(args) == 1 else hint
    if scalar not in _SCALARS:
        raise TypeError(f"{cls.__name__}.{name}: a flag needs an int, float or str field (optionally | None)")
    return scalar, optional


def field_docs(cls: type) -> dict[str, str]:
    """``{field: one-line description}`` from the ``Attributes:`` section of ``cls``'s docstring (reST roles and
    literals made plain text)."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    out, current = {}, None
    for line in section.splitlines():
        match = re.match(r"^ {2}(\w+): (.*)$", line)
        if match:
            current = match.group(1)
            out[current] = match.group(2).strip()
        elif current and line.startswith("    "):
            out[current] += " " + line.strip()
        elif line.strip():
            current = None
    plain = lambda text: re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")  # noqa: E731
    return {name: plain(text) for name, text in out.items()}


def _parse(scalar: type, optional: bool, flag: str):
    def parse(text: str):
        if optional and text.lower() == "none":
            return None
        try:
            return scalar(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes {'an int' if scalar is int else 'a number'}"
                                             f"{' or none' if optional else ''}, got {text!r}") from None  # fmt: skip

    return parse


def add_flags(group, cls: type, prefix: str, *, what: str = "", skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of the dataclass ``cls`` (but ``skip``) to ``group`` (a parser or argument group);
    ``what`` starts each help text."""
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        scalar, optional = _field_type(cls, f.name)
        flag = f"--{prefix}-{f.name.replace('_', '-')}"
        text = docs.get(f.name, "").replace("%", "%%")
        group.add_argument(flag, dest=f"{prefix}_{f.name}", type=_parse(scalar, optional, flag), default=f.default,
                           help=f"{what}{text} (default {f.default})")  # fmt: skip


def from_flags(args: argparse.Namespace, cls: type, prefix: str, **overrides):
    """An instance of ``cls`` from the flags :func:`add_flags` made (``overrides`` win); the dataclass's own checks
    raise their ``ValueError``."""
    values = {f.name: getattr(args, f"{prefix}_{f.name}") for f in dataclasses.fields(cls)
              if hasattr(args, f"{prefix}_{f.name}")}  # fmt: skip
    return cls(**{**values, **overrides})
