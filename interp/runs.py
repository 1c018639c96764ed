"""Run folders: `runs/<experiment>/<run-id>/` (root: `$INTERP_RUNS`, default `./runs`).

    config.json      the full config, written when the run starts
    metrics.jsonl    one JSON line per logged step (appended whole lines; a torn last line is dropped)
    results.json     written last, atomically: its presence is what makes a run complete
    figures/*.json   plotly figures
    (anything else)  checkpoints, written by the experiment

`results.json` holds a `claims` list, each `{"name", "paper", "statement", "value", "threshold",
"passed"}` plus any measured numbers beside it. A run without results.json was interrupted (or is
still going); `interp run NAME --resume PATH` starts it again from its own config.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

from interp import InterpError
from interp.fsutil import write_atomic, write_json


def runs_root() -> Path:
    return Path(os.environ.get("INTERP_RUNS", "runs"))


@dataclass
class Run:
    dir: Path

    @property
    def experiment(self) -> str:
        return self.dir.parent.name

    @property
    def config(self) -> dict:
        return json.loads((self.dir / "config.json").read_text())

    @property
    def complete(self) -> bool:
        return (self.dir / "results.json").exists()

    def log(self, step: int, **metrics) -> None:
        """Append one line to metrics.jsonl (one write call, so a kill leaves whole lines or a torn last one)."""
        line = json.dumps({"step": step, **metrics}, default=float) + "\n"
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(line)

    def metrics(self) -> list[dict]:
        path = self.dir / "metrics.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # torn last line from a killed run
                break
        return rows

    def save_figure(self, name: str, fig) -> Path:
        return write_atomic(self.dir / "figures" / f"{name}.json", fig.to_json())

    def write_results(self, results: dict) -> Path:
        return write_json(self.dir / "results.json", _finite(results))

    def results(self) -> dict:
        path = self.dir / "results.json"
        if not path.exists():
            raise InterpError(
                f"The run in {self.dir} has no results.json: it was interrupted (or is still running). "
                f"Resume it with `interp run {self.experiment} --resume {self.dir}`, or delete the folder."
            )
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise InterpError(f"{path} is not valid JSON ({e}); it was not written by interp. Delete the run and run it again.") from e


def new_run(experiment: str, config: dict, root: Path | None = None) -> Run:
    """Create `root/experiment/<timestamp>[-n]/` and write config.json into it."""
    base = (root or runs_root()) / experiment
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
    write_json(path / "config.json", {"experiment": experiment, **config})
    return Run(path)


def open_run(path: str | Path) -> Run:
    """Open an existing run folder to resume it; drops a torn last line from metrics.jsonl."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise InterpError(f"{path} is not a run folder (it has no config.json). Run folders live under {runs_root()}/<experiment>/.")
    run = Run(path)
    metrics = path / "metrics.jsonl"
    if metrics.exists():
        text = metrics.read_text()
        if text and not text.endswith("\n"):
            write_atomic(metrics, text[: text.rfind("\n") + 1])
    return run


def list_runs(root: Path | None = None) -> list[Run]:
    root = root or runs_root()
    if not root.exists():
        return []
    return sorted((Run(p.parent) for p in root.glob("*/*/config.json")), key=lambda r: (r.experiment, r.dir.name))


def find_complete_run(experiment: str, config: dict, root: Path | None = None) -> Run | None:
    """The newest complete run of `experiment` whose config equals `config`."""
    want = json.loads(json.dumps({"experiment": experiment, **config}, default=str))
    for run in reversed(list_runs(root)):
        if run.experiment == experiment and run.complete and run.config == want:
            return run
    return None


def claim(name: str, paper: str, statement: str, value, threshold, passed: bool, **measured) -> dict:
    """One checked claim, in the shape results.json and the app expect."""
    return {"name": name, "paper": paper, "statement": statement, "value": value, "threshold": threshold,
            "passed": bool(passed), **measured}


def unasserted(c: dict, reason: str) -> dict:
    """A claim that was measured but is not asserted (e.g. at the quick budget), as an observation line."""
    return {"name": c["name"], "statement": f"{c['statement']}; not asserted: {reason}",
            "value": f"{format_value(c['value'])} (threshold {c['threshold']}: would {'pass' if c['passed'] else 'fail'})"}


def format_claims(claims: list[dict]) -> str:
    """The claims table the CLI prints."""
    rows = [("", "claim", "value", "threshold")]
    for c in claims:
        rows.append(("PASS" if c["passed"] else "FAIL", c["name"], format_value(c["value"]), str(c["threshold"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_value(v) -> str:
    """Numbers to 4 significant digits, also inside the dicts and lists some claims report."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) or hasattr(v, "item"):  # numpy / torch scalars too
        return f"{float(v):.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={format_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    return str(v)


def _finite(x):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if hasattr(x, "tolist"):
        return _finite(x.tolist())
    return x


def in_workers(fn, jobs: dict[str, tuple], workers: int, quiet: bool = True) -> dict:
    """`fn(*args)` for each named job, in `workers` spawned processes (in order, when workers ≤ 1);
    results by name. Experiments train their models side by side with it, one torch thread each."""
    if workers <= 1:
        return {name: fn(*args) for name, args in jobs.items()}
    out = {}
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(fn, *args): name for name, args in jobs.items()}
        for f in cf.as_completed(futures):
            out[futures[f]] = f.result()
            if not quiet:
                print(f"  trained {futures[f]}")
    return {name: out[name] for name in jobs}
