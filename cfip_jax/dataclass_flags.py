"""Command-line flags made from a frozen dataclass's fields, so a setting added to a config appears on every command
line that exposes it (``eval.py`` and ``python -m cfip_jax fit`` take the refinement's from
:class:`cfip_jax.inference.refine.RefineConfig` this way).

Each field ``name`` becomes ``--{prefix}-{name with - for _}``; its type comes from the annotation (``int``,
``float``, ``str``, each optionally ``| None``: the word ``none`` then gives None), its default from the dataclass and
its help from the ``Attributes:`` section of the class docstring.

A field whose type is itself a dataclass (optionally ``| None``) is flattened into its fields' flags, each named
after the inner field (``--{prefix}-{inner name}``) except the inner ``kind``, which takes the outer field's name; the
word ``none`` for that flag makes the whole field None. So ``RefineConfig.correction``
(:class:`cfip_jax.inference.correct.CorrectionConfig`) gives ``--refine-correction`` (its kind, or none),
``--refine-features`` and ``--refine-folds``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from typing import NamedTuple

_SCALARS = (int, float, str)


def _annotation(cls: type, name: str) -> tuple[type, bool]:
    """``(the type, optional)`` of a field's annotation ``T`` or ``T | None``."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    return (args[0] if optional and len(args) == 1 else hint), optional


def _nested(cls: type, name: str) -> type | None:
    """The dataclass a field holds (flattened into its fields' flags), or None for a scalar field."""
    inner = _annotation(cls, name)[0]
    return inner if dataclasses.is_dataclass(inner) else None


def _field_type(cls: type, name: str) -> tuple[type, bool]:
    """``(scalar type, optional)`` of a scalar field's annotation."""
    scalar, optional = _annotation(cls, name)
    if scalar not in _SCALARS:
        raise TypeError(f"{cls.__name__}.{name}: a flag needs an int, float or str field (optionally | None)")
    return scalar, optional


class _Flag(NamedTuple):
    """One flag: its name (after the prefix), the field it sets (``outer`` None: a field of the class itself; else
    the field ``field`` of the dataclass ``inner`` held by the class's field ``outer``), how it parses, its default
    and help."""

    name: str
    field: str
    scalar: type
    optional: bool
    default: object
    help: str
    outer: str | None = None
    inner: type | None = None


def _flag_fields(cls: type) -> list[_Flag]:
    """The flags of ``cls``'s fields, a nested dataclass's flattened (the module docstring)."""
    docs, out = field_docs(cls), []
    for f in dataclasses.fields(cls):
        inner = _nested(cls, f.name)
        if inner is None:
            out.append(_Flag(f.name, f.name, *_field_type(cls, f.name), f.default, docs.get(f.name, "")))
            continue
        outer_optional, inner_docs = _annotation(cls, f.name)[1], field_docs(inner)
        for g in dataclasses.fields(inner):
            scalar, optional = _field_type(inner, g.name)
            default = None if f.default is None else getattr(f.default, g.name)
            text = inner_docs.get(g.name, "")
            if g.name != "kind":
                out.append(_Flag(g.name, g.name, scalar, optional, default, text, f.name, inner))
                continue
            text = f"the {f.name}: {text.rstrip('.')}" + (f"; none: no {f.name}." if outer_optional else ".")
            out.append(_Flag(f.name, g.name, scalar, optional or outer_optional, default, text, f.name, inner))
    return out


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
    """Add one flag per field of the dataclass ``cls`` (but ``skip``; a nested dataclass's fields flattened, as the
    module docstring says) to ``group`` (a parser or argument group); ``what`` starts each help text."""
    for flag in _flag_fields(cls):
        if flag.name in skip:
            continue
        option = f"--{prefix}-{flag.name.replace('_', '-')}"
        text = f"{what}{flag.help.replace('%', '%%')} (default {flag.default})"
        group.add_argument(option, dest=f"{prefix}_{flag.name}", type=_parse(flag.scalar, flag.optional, option),
                           default=flag.default, help=text)  # fmt: skip


def from_flags(args: argparse.Namespace, cls: type, prefix: str, **overrides):
    """An instance of ``cls`` from the flags :func:`add_flags` made (``overrides`` win); a nested dataclass is None
    when its ``kind`` flag says none. The dataclasses' own checks raise their ``ValueError``."""
    values, nested = {}, {}
    for flag in _flag_fields(cls):
        if not hasattr(args, f"{prefix}_{flag.name}"):
            continue
        value = getattr(args, f"{prefix}_{flag.name}")
        if flag.outer is None:
            values[flag.field] = value
        else:
            nested.setdefault(flag.outer, (flag.inner, {}))[1][flag.field] = value
    for outer, (inner, kw) in nested.items():
        values[outer] = None if "kind" in kw and kw["kind"] is None else inner(**kw)
    return cls(**{**values, **overrides})
