"""Config dataclasses: each field's rule beside it, the command line built from them, checked before anything runs.

Every field has a default and a docstring under it (as in sparsify); its annotation says what it accepts:

    @dataclass
    class Config:
        n_texts: PosInt = 64
        \"\"\"Texts per condition.\"\"\"
        lams: tuple[PosFloat, ...] = (1.0, 10.0)
        \"\"\"Sparsity weights λ, one subnetwork each.\"\"\"
        kind: OneOf("topk", "relu") = "topk"
        \"\"\"Activation rule.\"\"\"
        trainer: ToyTrainConfig = nested(ToyTrainConfig, steps=1500, fixed=("seed",))
        \"\"\"The toy trainer's settings (its seed is this config's seed).\"\"\"

        def check(self):  # optional: rules that tie fields together (raise InterpError)
            ...

`validate` checks every field — its type, its range or choices, lists non-empty unless `MaybeEmpty`,
floats finite — then the nested configs, then each `check`, and names the field that is wrong.
`add_arguments` turns each field into `--n-texts N` and each nested one into `--trainer.steps N`, the
docstring as its help; `build` reads a stored config, then those options, then `--set key=value`
pairs (`--set trainer.lr=1e-3`), and validates. A list is written `1,10,100`. The fields a nested
config lists as `fixed` are set by the outer config's code: they are neither options nor overridable.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import functools
import inspect
import json
import math
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Annotated

from interp import InterpError

# ------------------------------------------------------------------------------------ field rules


@dataclass(frozen=True)
class Range:
    """A number's bounds: `min` / `max` inclusive, `above` exclusive."""

    min: float | None = None
    max: float | None = None
    above: float | None = None

    def problem(self, x) -> str | None:
        if self.above is not None and not x > self.above:
            return f"must be > {self.above:g}"
        if self.min is not None and x < self.min:
            return f"must be ≥ {self.min:g}"
        if self.max is not None and x > self.max:
            return f"must be ≤ {self.max:g}"
        return None

    def __str__(self) -> str:
        bounds = (("> ", self.above), ("≥ ", self.min), ("≤ ", self.max))
        return " and ".join(f"{sign}{value:g}" for sign, value in bounds if value is not None)


@dataclass(frozen=True)
class Choices:
    options: tuple

    def problem(self, x) -> str | None:
        return None if x in self.options else f"must be one of {', '.join(map(str, self.options))}"


MAYBE_EMPTY = "may be empty"  # marker: an empty list has a meaning (e.g. "all"), which the docstring gives

PosInt = Annotated[int, Range(min=1)]
NonNegInt = Annotated[int, Range(min=0)]
PosFloat = Annotated[float, Range(above=0)]
NonNegFloat = Annotated[float, Range(min=0)]
Share = Annotated[float, Range(min=0, max=1)]


def AtLeast(n: int):  # noqa: N802 - used as a type
    return Annotated[int, Range(min=n)]


def OneOf(*options: str):  # noqa: N802
    return Annotated[str, Choices(options)]


def MaybeEmpty(t):  # noqa: N802
    return Annotated[t, MAYBE_EMPTY]


def nested(cls, fixed: tuple[str, ...] = (), **defaults) -> dataclasses.Field:
    """A nested config field: `cls` with these defaults; the `fixed` fields are set by the outer config."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in (*defaults, *fixed) if k not in names]
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
    return dataclasses.field(default_factory=lambda: cls(**defaults), metadata={"fixed": tuple(fixed)})


# ---------------------------------------------------------------------------------- introspection


def _unwrap(t) -> tuple[object, list]:
    """(base type, rules) of an annotation; Optional[X] reads as X with None among the rules."""
    rules: list = []
    while True:
        if typing.get_origin(t) is Annotated:
            rules += list(t.__metadata__)
            t = t.__origin__
        elif typing.get_origin(t) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(t) if a is not type(None)]
            if len(args) != 1:
                return t, rules
            rules.append(None)
            t = args[0]
        else:
            return t, rules


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls, include_extras=True)


def _is_config(t) -> bool:
    return isinstance(t, type) and dataclasses.is_dataclass(t)


def _is_list(t) -> bool:
    return typing.get_origin(t) in (tuple, list)


def _item(t):
    args = [a for a in typing.get_args(t) if a is not Ellipsis]
    return args[0] if args else str


def _describe(t) -> str:
    base, rules = _unwrap(t)
    if _is_list(base):
        return f"list of {_describe(_item(base))}, comma-separated" + (", may be empty" if MAYBE_EMPTY in rules else "")
    for r in rules:
        if isinstance(r, Choices):
            return " | ".join(map(str, r.options))
    name = getattr(base, "__name__", str(base))
    return " ".join([name, *(str(r) for r in rules if isinstance(r, Range))])


@functools.cache
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


# ------------------------------------------------------------------------------------- validation


def problem(t, value) -> str | None:
    """What is wrong with `value` for a field annotated `t` (None when nothing is)."""
    base, rules = _unwrap(t)
    if value is None:
        return None if None in rules else "must be given"
    if _is_list(base):
        if not isinstance(value, (tuple, list)):
            return f"must be a {_describe(t)}"
        if not value and MAYBE_EMPTY not in rules:
            return "must not be empty: give at least one value"
        for x in value:
            if p := problem(_item(base), x):
                return f"holds {x!r}, which {p}"
        return None
    if base is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return "must be a number"
        if not math.isfinite(value):
            return "must be a finite number"
    elif base in (bool, int, str) and (not isinstance(value, base) or (base is int and isinstance(value, bool))):
        return f"must be {_describe(t)}"
    for r in rules:
        if isinstance(r, (Range, Choices)) and (p := r.problem(value)):
            return p
    return None


def validate(cfg, prefix: str = "") -> None:
    """Check every field of `cfg` (nested configs too), then its `check()`. An InterpError names the bad field."""
    hints, docs = _hints(type(cfg)), field_docs(type(cfg))
    for f in dataclasses.fields(cfg):
        value, name = getattr(cfg, f.name), prefix + f.name
        if _is_config(_unwrap(hints[f.name])[0]):
            validate(value, name + ".")
        elif p := problem(hints[f.name], value):
            about = f" ({docs[f.name]})" if f.name in docs else ""
            raise InterpError(f"{name} = {_show(value)} {p}{about}. Nothing was run.")
    if hasattr(cfg, "check"):
        try:
            cfg.check()
        except InterpError as e:
            raise InterpError(f"In {prefix.rstrip('.')}: {e}" if prefix else str(e)) from None


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) if value else "(empty)"
    return repr(value)


# ----------------------------------------------------------------------------------- reading values


def _lookup(cls, name: str, where: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name in fields:
        return fields[name]
    close = difflib.get_close_matches(name, list(fields), n=3)
    scope = f"{where} ({cls.__name__})" if where else f"{cls.__module__}.{cls.__name__}"
    raise InterpError(f"{scope} has no field {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else "")
                      + f". Fields: {', '.join(fields)}.")


def _field_type(cls, path: str, overriding: bool) -> object:
    """The annotation of a dotted field; unknown names, and `fixed` ones when `overriding`, are errors."""
    *outer, last = path.split(".")
    fixed: tuple = ()
    for i, part in enumerate(outer):
        f = _lookup(cls, part, ".".join(outer[:i]))
        cls, fixed = _unwrap(_hints(cls)[f.name])[0], f.metadata.get("fixed", ())
        if not _is_config(cls):
            raise InterpError(f"{'.'.join(outer[: i + 1])} is not a nested config, so {path!r} names no field.")
    f = _lookup(cls, last, ".".join(outer))
    if overriding and last in fixed:
        raise InterpError(f"{path} is set by the experiment from its own fields (see `--help`); it cannot be set by hand.")
    if overriding and _is_config(_unwrap(_hints(cls)[f.name])[0]):
        raise InterpError(f"{path} is a nested config: set its fields, e.g. {path}.{dataclasses.fields(_unwrap(_hints(cls)[f.name])[0])[0].name}.")
    return _hints(cls)[f.name]


def parse_value(cls, name: str, text: str):
    """`text` parsed as the type of the (dotted) field `name` of `cls`; lists are written `1,10,100`."""
    return _parse(_field_type(cls, name, overriding=True), text, name)


def _parse(t, text: str, name: str):
    base, rules = _unwrap(t)
    if None in rules and text.lower() in ("none", "null"):
        return None
    try:
        if _is_list(base):
            inner = text.strip()
            if inner[:1] == "[" and inner[-1:] == "]":  # JSON-style lists are read the same way
                inner = inner[1:-1]
            try:
                return tuple(_parse(_item(base), x.strip().strip("'\""), name) for x in inner.split(",") if x.strip())
            except InterpError:
                raise ValueError(text) from None
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if base in (int, float, str):
            return base(text)
        return json.loads(text)
    except (ValueError, json.JSONDecodeError) as e:
        raise InterpError(f"Field {name!r} expects {_describe(t)}, got {text!r}.") from e


def _coerce(t, value):
    """A stored (JSON) value in the field's type: lists become tuples, whole numbers in float fields floats."""
    base, _ = _unwrap(t)
    if _is_list(base) and isinstance(value, list):
        return tuple(_coerce(_item(base), x) for x in value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _flatten(cls, values: dict, prefix: str = "") -> dict:
    """{"sae": {"lr": 1}, "trainer.steps": 5} -> {"sae.lr": 1, "trainer.steps": 5}, every name checked."""
    out = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        f = _lookup(cls, head, prefix.rstrip("."))
        base = _unwrap(_hints(cls)[f.name])[0]
        if _is_config(base):
            sub = {rest: value} if rest else dataclasses.asdict(value) if isinstance(value, base) else value
            if not isinstance(sub, dict):
                raise InterpError(f"{prefix}{head} is a nested config: give its fields, not {value!r}.")
            out.update(_flatten(base, sub, f"{prefix}{head}."))
        elif rest:
            raise InterpError(f"{prefix}{head} is not a nested config, so {prefix}{key!r} names no field.")
        else:
            out[prefix + head] = value
    return out


def _construct(cls, flat: dict, default=None):
    """An instance of `cls` from dotted values over `default` (nested configs from their own defaults)."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        t = _hints(cls)[f.name]
        base = _unwrap(t)[0]
        if _is_config(base):
            sub = {k[len(f.name) + 1:]: v for k, v in flat.items() if k.startswith(f.name + ".")}
            inner = getattr(default, f.name) if default is not None else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else base())
            kwargs[f.name] = _construct(base, sub, inner)
        elif f.name in flat:
            kwargs[f.name] = _coerce(t, flat[f.name])
    return cls(**kwargs) if default is None else dataclasses.replace(default, **kwargs)


# ------------------------------------------------------------------------------------------ the CLI


def add_arguments(parser: argparse.ArgumentParser, cls, prefix: str = "", fixed: tuple = (), about: str = "",
                  defaults=None) -> None:
    """One `--field-name VALUE` option per field (`--outer.field-name` for nested ones), its help its docstring
    (and the default a nested config gives it: `defaults` is that instance)."""
    docs, hints = field_docs(cls), _hints(cls)
    where = f"{prefix.rstrip('.')} = {cls.__name__}" if prefix else cls.__name__
    if fixed:
        about += f" Set by the experiment: {', '.join(prefix + f for f in fixed)}."
    group = parser.add_argument_group(f"{where} fields (also settable as --set {prefix}name=value)", about.strip() or None)
    inner = []
    for f in dataclasses.fields(cls):
        base = _unwrap(hints[f.name])[0]
        if f.name in fixed:  # accepted, so that `build` can say why it cannot be set; not shown
            parser.add_argument(f"--{prefix}{f.name.replace('_', '-')}", dest="cfg__" + f"{prefix}{f.name}".replace(".", "__"),
                                default=None, help=argparse.SUPPRESS)
            continue
        if _is_config(base):
            inner.append((f, base))
            continue
        default = getattr(defaults, f.name) if defaults is not None else (
            f.default if f.default is not dataclasses.MISSING else f.default_factory())
        group.add_argument(
            f"--{prefix}{f.name.replace('_', '-')}", dest="cfg__" + f"{prefix}{f.name}".replace(".", "__"), default=None,
            metavar=f.name.upper(),
            help=f"{docs.get(f.name, '')} [{_describe(hints[f.name])}; default: {_show(default)}]".replace("%", "%%"),
        )
    for f, base in inner:
        value = getattr(defaults, f.name) if defaults is not None else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else base())
        add_arguments(parser, base, f"{prefix}{f.name}.", f.metadata.get("fixed", ()), docs.get(f.name, ""), value)


def build(cls, args: argparse.Namespace | None = None, overrides: list[str] = (), base: dict | None = None):
    """A validated config from `base` (a stored config, or dotted overrides such as an experiment's QUICK),
    then the `--field` options in `args`, then `--set key=value` items."""
    flat = _flatten(cls, dict(base or {}))
    for key, raw in vars(args).items() if args is not None else ():
        if key.startswith("cfg__") and raw is not None:
            path = key[5:].replace("__", ".")
            flat[path] = parse_value(cls, path, raw)
    for item in overrides:
        if "=" not in item:
            raise InterpError(f"--set expects key=value, got {item!r}.")
        key, text = (s.strip() for s in item.split("=", 1))
        flat[key] = parse_value(cls, key, text)
    cfg = _construct(cls, flat)
    validate(cfg)
    return cfg


def to_dict(cfg) -> dict:
    """The config as plain JSON values (tuples become lists): what config.json holds."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))
