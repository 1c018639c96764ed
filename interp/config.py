"""Config dataclasses become command-line options.

Every field has a default and a docstring written under it (as in sparsify / simple_parsing):

    @dataclass
    class Config:
        n_texts: int = 64
        \"\"\"Texts per condition.\"\"\"

`add_arguments` turns each field into `--n-texts N` with that docstring as its help, and
`apply_overrides` applies `--set key=value` pairs, so `--help` documents every knob.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import textwrap
import typing

from interp import InterpError


def field_docs(cls) -> dict[str, str]:
    """Docstrings written under each field of a dataclass, read from its source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _field_type(cls, f: dataclasses.Field):
    hints = typing.get_type_hints(cls)
    t = hints.get(f.name, str)
    origin = typing.get_origin(t)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        t = args[0] if len(args) == 1 else str
    return t


def parse_value(cls, name: str, text: str):
    """Parse `text` as the type of field `name` of `cls`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        import difflib

        close = difflib.get_close_matches(name, list(fields), n=3)
        raise InterpError(
            f"{cls.__module__}.{cls.__name__} has no field {name!r}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
            + f". Fields: {', '.join(fields)}."
        )
    t = _field_type(cls, fields[name])
    try:
        if t is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if t in (int, float, str):
            return t(text)
        return json.loads(text)  # lists, dicts, tuples
    except (ValueError, json.JSONDecodeError) as e:
        raise InterpError(f"Field {name!r} expects {getattr(t, '__name__', t)}, got {text!r}.") from e


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One `--field-name VALUE` option per field, its help from the field's docstring."""
    docs = field_docs(cls)
    group = parser.add_argument_group(f"{cls.__name__} fields (also settable as --set name=value)")
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        group.add_argument(
            "--" + f.name.replace("_", "-"), dest=f"cfg__{f.name}", default=None, metavar=f.name.upper(),
            help=f"{docs.get(f.name, '')} (default: {default!r})".replace("%", "%%"),  # argparse formats help with %
        )


def build(cls, args: argparse.Namespace | None = None, overrides: list[str] = (), base: dict | None = None):
    """A config from `base` values, then `--field` options, then `--set key=value` overrides."""
    values = dict(base or {})
    for f in dataclasses.fields(cls):
        raw = getattr(args, f"cfg__{f.name}", None) if args is not None else None
        if raw is not None:
            values[f.name] = parse_value(cls, f.name, raw)
    for item in overrides:
        if "=" not in item:
            raise InterpError(f"--set expects key=value, got {item!r}.")
        key, text = item.split("=", 1)
        values[key.strip()] = parse_value(cls, key.strip(), text)
    return cls(**values)
