import pytest

from interp import InterpError
from interp.fsutil import write_atomic
from interp.runs import Run, claim, create_run, find_complete_run, format_claims, list_runs, open_run


def test_run_folder_layout_and_completion(runs_dir):
    run = create_run("demo", {"lr": 0.1})
    assert run.dir.parent == runs_dir / "demo" and run.config == {"experiment": "demo", "lr": 0.1}
    run.log(1, loss=2.0)
    run.log(2, loss=1.5)
    assert [m["loss"] for m in run.metrics()] == [2.0, 1.5]
    assert not run.complete
    with pytest.raises(InterpError, match="interrupted"):
        run.results()
    run.finish({"claims": [claim("c", "p", "s", float("nan"), "> 0", False)]}, seconds=1.25)
    assert run.complete and run.results()["claims"][0]["value"] is None  # NaN is written as null
    assert run.results()["seconds"] == 1.2 and run.results()["figures"] == []
    with pytest.raises(InterpError, match="never rewritten"):
        run.finish({"claims": []}, seconds=2.0)
    assert find_complete_run("demo", {"lr": 0.1}).dir == run.dir
    assert find_complete_run("demo", {"lr": 0.2}) is None


def test_a_run_records_whether_it_was_quick_and_reuse_tells_them_apart(runs_dir):
    quick = create_run("demo", {"lr": 0.1}, quick=True)
    quick.finish({"claims": []}, seconds=1.0)
    assert quick.config == {"experiment": "demo", "quick": True, "lr": 0.1}
    assert find_complete_run("demo", {"lr": 0.1}, quick=True).dir == quick.dir
    assert find_complete_run("demo", {"lr": 0.1}, quick=False) is None  # a full run never reuses a quick one


def test_two_runs_in_the_same_second_get_distinct_folders(runs_dir):
    a, b = create_run("demo", {}), create_run("demo", {})
    assert a.dir != b.dir and len(list_runs()) == 2


def test_resuming_drops_a_torn_metrics_line(runs_dir):
    run = create_run("demo", {})
    run.log(1, loss=1.0)
    with open(run.dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')  # killed mid-write
    assert len(run.metrics()) == 1
    reopened = Run(run.dir)  # the next process
    reopened.log(2, loss=0.5)  # the torn line is dropped on the way
    assert (run.dir / "metrics.jsonl").read_text().endswith("\n")
    assert [m["step"] for m in reopened.metrics()] == [1, 2]


def test_resume_cuts_metrics_back_to_the_checkpoint_or_to_nothing(runs_dir):
    run = create_run("demo", {})
    for s in range(0, 30, 5):
        run.log(s, loss=float(s))
    assert run.resume() is None and run.metrics() == []  # no checkpoint: every line goes
    for s in range(0, 30, 5):
        run.log(s, loss=float(s))
    run.save_checkpoint(10, {"x": 1})
    state = run.resume()
    assert state["step"] == 10 and [m["step"] for m in run.metrics()] == [0, 5, 10]
    run.log(15, loss=15.0)
    with pytest.raises(RuntimeError, match="logged after"):
        run.log(15, loss=15.0)  # a repeated step never reaches the file
    assert [m["step"] for m in run.metrics()] == [0, 5, 10, 15]


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


def test_in_workers_with_no_jobs_left_returns_nothing():
    """A resumed run whose jobs are all done asks for zero of them (sae_variants' resume stopped here once)."""
    from interp.workers import in_workers

    assert in_workers(print, {}, workers=2) == {}
    assert in_workers(abs, {"a": (-3,)}, workers=2) == {"a": 3}
