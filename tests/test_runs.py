import json
from dataclasses import dataclass

import pytest

from interp import InterpError
from interp.config import build, field_docs, parse_value
from interp.fsutil import write_atomic
from interp.runs import claim, find_complete_run, format_claims, list_runs, new_run, open_run


def test_run_folder_layout_and_completion(runs_dir):
    run = new_run("demo", {"lr": 0.1})
    assert run.dir.parent == runs_dir / "demo" and run.config == {"experiment": "demo", "lr": 0.1}
    run.log(1, loss=2.0)
    run.log(2, loss=1.5)
    assert [m["loss"] for m in run.metrics()] == [2.0, 1.5]
    assert not run.complete
    with pytest.raises(InterpError, match="interrupted"):
        run.results()
    run.write_results({"claims": [claim("c", "p", "s", float("nan"), "> 0", False)]})
    assert run.complete and run.results()["claims"][0]["value"] is None  # NaN is written as null
    assert find_complete_run("demo", {"lr": 0.1}).dir == run.dir
    assert find_complete_run("demo", {"lr": 0.2}) is None


def test_two_runs_in_the_same_second_get_distinct_folders(runs_dir):
    a, b = new_run("demo", {}), new_run("demo", {})
    assert a.dir != b.dir and len(list_runs()) == 2


def test_resuming_drops_a_torn_metrics_line(runs_dir):
    run = new_run("demo", {})
    run.log(1, loss=1.0)
    with open(run.dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')  # killed mid-write
    assert len(run.metrics()) == 1
    reopened = open_run(run.dir)
    assert (run.dir / "metrics.jsonl").read_text().endswith("\n")
    reopened.log(2, loss=0.5)
    assert [m["step"] for m in reopened.metrics()] == [1, 2]


def test_open_run_rejects_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(InterpError, match="not a run folder"):
        open_run(tmp_path)


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    class Boom:
        def encode(self):
            raise RuntimeError("boom")

    target = tmp_path / "x.json"
    write_atomic(target, "old")
    with pytest.raises(Exception):
        write_atomic(target, Boom())
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_claims_table():
    table = format_claims([claim("a", "p", "s", 0.51234, "> 0.5", True), claim("b", "p", "s", 3, "< 1", False)])
    lines = table.splitlines()
    assert lines[2].startswith("PASS  a") and "0.5123" in lines[2] and lines[3].startswith("FAIL  b")


@dataclass
class Cfg:
    steps: int = 10
    """How many steps."""
    lr: float = 1e-3
    """Learning
    rate."""
    name: str = "x"
    flag: bool = False
    """A switch."""
    sizes: tuple = (1, 2)
    """Layer sizes."""


def test_field_docstrings_become_help():
    assert field_docs(Cfg) == {"steps": "How many steps.", "lr": "Learning rate.", "flag": "A switch.", "sizes": "Layer sizes."}


def test_overrides_are_typed_and_checked():
    cfg = build(Cfg, overrides=["steps=5", "lr=0.5", "flag=true", "sizes=[3, 4]"])
    assert (cfg.steps, cfg.lr, cfg.flag, cfg.sizes) == (5, 0.5, True, [3, 4])
    with pytest.raises(InterpError, match="did you mean steps"):
        parse_value(Cfg, "step", "3")
    with pytest.raises(InterpError, match="expects int"):
        build(Cfg, overrides=["steps=many"])
    with pytest.raises(InterpError, match="key=value"):
        build(Cfg, overrides=["steps"])
    assert json.loads(json.dumps(build(Cfg).__dict__))  # configs serialise
