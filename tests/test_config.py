"""Config dataclasses: rules in the annotations, nested configs as dotted options, one list convention,
everything checked before a run exists."""

import argparse
import json
from dataclasses import dataclass, field

import pytest

from interp import InterpError
from interp.config import MaybeEmpty, NonNegInt, OneOf, PosFloat, PosInt, Share, add_arguments, build, field_docs, nested, parse_value, to_dict


@dataclass
class Inner:
    steps: PosInt = 10
    """How many steps."""
    lr: PosFloat = 1e-3
    """Learning
    rate."""
    seed: NonNegInt = 0
    """Seed (the outer config's)."""


@dataclass
class Cfg:
    name: str = "x"
    flag: bool = False
    """A switch."""
    share: Share = 0.5
    """A share."""
    kind: OneOf("a", "b") = "a"
    """Which one."""
    sizes: tuple[PosInt, ...] = (1, 2)
    """Layer sizes."""
    layers: MaybeEmpty(tuple[NonNegInt, ...]) = ()
    """Layers (empty: all)."""
    inner: Inner = nested(Inner, steps=20, fixed=("seed",))
    """The inner loop."""
    extra: dict = field(default_factory=dict)
    """Free-form."""

    def check(self):
        if self.kind == "b" and self.share > 0.9:
            raise InterpError("kind b needs share ≤ 0.9.")


def test_field_docstrings_become_help():
    assert field_docs(Inner) == {"steps": "How many steps.", "lr": "Learning rate.", "seed": "Seed (the outer config's)."}


def test_values_are_typed_lists_comma_separated_and_nested_fields_dotted():
    cfg = build(Cfg, overrides=["sizes=3,4", "flag=true", "inner.lr=0.5", "layers=", "extra={\"a\": 1}"])
    assert (cfg.sizes, cfg.flag, cfg.inner.lr, cfg.layers, cfg.extra) == ((3, 4), True, 0.5, (), {"a": 1})
    assert cfg.inner.steps == 20  # the nested default, not Inner's own
    assert build(Cfg, overrides=["sizes=[5, 6]"]).sizes == (5, 6)  # JSON-style lists read the same way
    stored = to_dict(cfg)
    assert stored["sizes"] == [3, 4] and json.loads(json.dumps(stored)) == stored
    assert build(Cfg, base=stored) == cfg  # a stored config.json rebuilds the same config
    assert build(Cfg, base={"inner.steps": 7}).inner.steps == 7  # dotted base values (an experiment's QUICK)


@pytest.mark.parametrize("override, message", [
    ("sizes=", "sizes = (empty) must not be empty"),
    ("sizes=1,0", "sizes = 1,0 holds 0, which must be ≥ 1"),
    ("share=1.5", "share = 1.5 must be ≤ 1 (A share.)"),
    ("share=nan", "share = nan must be a finite number"),
    ("kind=c", "kind = 'c' must be one of a, b"),
    ("inner.steps=0", "inner.steps = 0 must be ≥ 1 (How many steps.)"),
    ("inner.seed=3", "inner.seed is set by the experiment"),
    ("inner=3", "inner is a nested config"),
    ("inner.stpes=3", "did you mean steps"),
    ("step=3", "has no field 'step'"),
    ("flag=maybe", "expects bool"),
    ("steps", "key=value"),
])
def test_bad_values_name_the_field(override, message):
    with pytest.raises(InterpError, match=None) as e:
        build(Cfg, overrides=[override])
    assert message in str(e.value), str(e.value)


def test_cross_field_rules_run_last():
    with pytest.raises(InterpError, match="kind b needs share"):
        build(Cfg, overrides=["kind=b", "share=0.95"])
    assert build(Cfg, overrides=["kind=b"]).kind == "b"


def test_nested_fields_are_dotted_options_with_their_docstrings():
    p = argparse.ArgumentParser()
    add_arguments(p, Cfg)
    text = p.format_help()
    assert "--inner.steps STEPS" in text and "How many steps. [int ≥ 1; default: 20]" in text
    assert "--inner.seed" not in text and "Set by the experiment: inner.seed." in text
    args = p.parse_args(["--inner.lr", "0.1", "--sizes", "7,8"])
    cfg = build(Cfg, args)
    assert cfg.inner.lr == 0.1 and cfg.sizes == (7, 8)
    with pytest.raises(InterpError, match="inner.seed is set by the experiment"):
        build(Cfg, p.parse_args(["--inner.seed", "1"]))


def test_parse_value_reads_one_field():
    assert parse_value(Cfg, "inner.lr", "2e-3") == 2e-3
    assert parse_value(Cfg, "layers", "0, 5") == (0, 5)
