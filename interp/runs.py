"""Run folders: `runs/<experiment>/<run-id>/` (root: `$INTERP_RUNS`, default `./runs`).

    config.json      the full config, validated before the folder was made (with `experiment` and,
                     for `interp run`, `quick`: whether it ran the reduced budget)
    metrics.jsonl    one JSON line per logged step, steps strictly increasing
    checkpoint.pt    the training state at one step (written atomically; optional)
    results.json     written last, atomically: claims, observations, figures index, seconds; its
                     presence is what makes a run complete
    figures/*.json   plotly figures

Every command that writes a run goes through here: `create_run` makes the folder for a config that
passed validation, `open_run` reopens an interrupted one, `Run.resume` hands back its checkpoint and
cuts metrics.jsonl back to that checkpoint's step (to nothing without one), so a run killed at any
moment and resumed logs each step exactly once, and `Run.finish` writes results.json. A complete run
is never rewritten.

`results.json` holds a `claims` list, each `{"name", "paper", "statement", "value", "threshold",
"passed"}` plus any measured numbers beside it.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from interp import InterpError
from interp.fsutil import write_atomic, write_json

CHECKPOINT = "checkpoint.pt"


def runs_root() -> Path:
    root = Path(os.environ.get("INTERP_RUNS", "runs"))
    if root.exists() and not root.is_dir():
        raise InterpError(f"INTERP_RUNS points at {root}, which is a file: run folders need a folder there. "
                          "Set INTERP_RUNS to a folder (it is made if missing), or unset it for ./runs.")
    return root


@dataclass
class Run:
    dir: Path
    _last_step: int | None = field(default=None, repr=False, compare=False)

    @property
    def experiment(self) -> str:
        """The experiment its config.json names (the parent folder's name for a sub-run without one)."""
        try:
            return self.config.get("experiment", self.dir.parent.name)
        except (OSError, ValueError):
            return self.dir.parent.name

    @property
    def config(self) -> dict:
        return json.loads((self.dir / "config.json").read_text())

    @property
    def complete(self) -> bool:
        return (self.dir / "results.json").exists()

    # ----------------------------------------------------------------------------------- metrics

    def log(self, step: int, **metrics) -> None:
        """Append one line to metrics.jsonl (one write call: a kill leaves whole lines and at most a torn last one).
        Steps must increase: a step logged twice is a bug in the caller, refused before it reaches the file."""
        if self._last_step is None:
            path = self.dir / "metrics.jsonl"
            text = path.read_text() if path.exists() else ""
            if text and not text.endswith("\n"):  # a torn last line from a killed run: drop it before appending
                write_atomic(path, text[: text.rfind("\n") + 1])
            rows = self._rows()
            self._last_step = rows[-1]["step"] if rows else -math.inf
        if not step > self._last_step:
            raise RuntimeError(f"{self.dir}: step {step} logged after step {self._last_step}; metrics.jsonl keeps steps in order, once each.")
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **metrics}, default=float) + "\n")
        self._last_step = step

    def _rows(self) -> list[dict]:
        path = self.dir / "metrics.jsonl"
        rows = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line from a killed run
                break
        return rows

    def metrics(self) -> list[dict]:
        """The logged rows, one per step in step order (a file written by an older interp may repeat a
        step after a resume: the later row, the resumed run's, wins)."""
        by_step = {r["step"]: r for r in self._rows() if "step" in r}
        return [by_step[s] for s in sorted(by_step)]

    def truncate_metrics(self, step: int | None) -> None:
        """Keep the rows logged at or before `step` (none when `step` is None); drops a torn last line."""
        path = self.dir / "metrics.jsonl"
        if path.exists():
            keep = [r for r in self._rows() if step is not None and r["step"] <= step]
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in keep))
        self._last_step = None

    # ------------------------------------------------------------------------------- checkpoints

    def save_checkpoint(self, step: int, state: dict, name: str = CHECKPOINT) -> None:
        """`state` and its step, written atomically (a kill leaves the previous checkpoint whole)."""
        import torch

        buf = io.BytesIO()
        torch.save({"step": step, **state}, buf)
        write_atomic(self.dir / name, buf.getvalue())

    def load_checkpoint(self, name: str = CHECKPOINT) -> dict | None:
        """The saved state (with its "step"), or None when there is none. Tensors only (weights_only)."""
        import torch

        path = self.dir / name
        if not path.exists():
            return None
        try:
            return torch.load(path, weights_only=True, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - truncated, overwritten or not ours: one message for all
            raise InterpError(
                f"{path} cannot be read ({type(e).__name__}: {str(e)[:120]}): it is truncated or was not written by "
                f"interp. Delete it to restart this training from step 0 (its metric lines go with it), or delete "
                f"the run folder."
            ) from e

    def resume(self, name: str = CHECKPOINT, lead: bool = True) -> dict | None:
        """The checkpoint to continue from (None: start over), with metrics.jsonl cut back to its step,
        so every step is logged once. Under data parallelism only the `lead` process touches the file."""
        state = self.load_checkpoint(name)
        if lead:
            self.truncate_metrics(int(state["step"]) if state else None)
        return state

    # ------------------------------------------------------------------------------ results, figures

    def save_figure(self, name: str, fig) -> Path:
        return write_atomic(self.dir / "figures" / f"{name}.json", fig.to_json())

    def figure_names(self) -> list[str]:
        return sorted(p.stem for p in (self.dir / "figures").glob("*.json"))

    def finish(self, results: dict, seconds: float) -> dict:
        """Write results.json: the results, the figures index and the wall time, once. Returns what was written."""
        if self.complete:
            raise InterpError(f"{self.dir} is already complete; a finished run is never rewritten.")
        results = {k: v for k, v in results.items() if k not in ("figures", "seconds", "config")}
        out = _finite({**results, "figures": self.figure_names(), "seconds": round(seconds, 1)})
        write_json(self.dir / "results.json", out)
        return out

    def results(self) -> dict:
        path = self.dir / "results.json"
        if not path.exists():
            raise InterpError(
                f"The run in {self.dir} has no results.json: it was interrupted (or is still running). "
                f"Resume it with `{resume_command(self)}`, or delete the folder."
            )
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise InterpError(f"{path} is not valid JSON ({e}); it was not written by interp. Delete the run and run it again.") from e


def resume_command(run: Run) -> str:
    exp = run.experiment
    return f"interp sae train --resume {run.dir}" if exp == "sae" else f"interp run {exp} --resume {run.dir}"


def create_run(experiment: str, config: dict, path: str | Path | None = None, quick: bool | None = None) -> Run:
    """A new run folder holding config.json: `path`, or `<runs root>/<experiment>/<timestamp>[-n]`.
    Call it only with a config that has passed validation: a config that cannot run makes no folder.
    `quick` (an experiment's reduced budget or not) is recorded beside the config for the dashboard."""
    if path is not None:
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InterpError(f"{path} exists and is not an empty folder: pick a new folder for the run (nothing was changed).")
        path.mkdir(parents=True, exist_ok=True)
    else:
        base = runs_root() / experiment
        base.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1000):
            path = base / (stamp if n == 0 else f"{stamp}-{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
    write_json(path / "config.json", _config_record(experiment, config, quick))
    return Run(path)


def _config_record(experiment: str, config: dict, quick: bool | None) -> dict:
    """What config.json holds: the experiment's name, the quick flag when known, the config."""
    return {"experiment": experiment, **({} if quick is None else {"quick": quick}), **config}


def open_run(path: str | Path, experiment: str | None = None) -> Run:
    """Reopen an interrupted run to resume it: it must be a run folder (of `experiment`) without results.json."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise InterpError(f"{path} is not a run folder (it has no config.json). Run folders live under {runs_root()}/<experiment>/.")
    run = Run(path)
    try:
        stored = run.config
    except json.JSONDecodeError as e:
        raise InterpError(f"{path / 'config.json'} is not valid JSON ({e}); the run cannot be resumed: start a new one.") from e
    if experiment is not None and stored.get("experiment") != experiment:
        raise InterpError(f"{path} is a run of {stored.get('experiment')!r}, not {experiment!r}.")
    if run.complete:
        again = "interp sae train" if experiment == "sae" else f"interp run {experiment}"
        raise InterpError(f"{path} is already complete and a finished run is never rewritten; `{again}` starts a new run.")
    return run


def list_runs(root: Path | None = None) -> list[Run]:
    root = root or runs_root()
    if not root.exists():
        return []
    return sorted((Run(p.parent) for p in root.glob("*/*/config.json")), key=lambda r: (r.experiment, r.dir.name))


def find_complete_run(experiment: str, config: dict, root: Path | None = None, quick: bool | None = None) -> Run | None:
    """The newest complete run of `experiment` whose config (and quick flag) equals `config`."""
    want = json.loads(json.dumps(_config_record(experiment, config, quick), default=str))
    for run in reversed(list_runs(root)):
        if run.experiment == experiment and run.complete and run.config == want:
            return run
    return None


# ----------------------------------------------------------------------------------------- claims


def claim(name: str, paper: str, statement: str, value, threshold, passed: bool, **measured) -> dict:
    """One checked claim, in the shape results.json and the app expect."""
    return {"name": name, "paper": paper, "statement": statement, "value": value, "threshold": threshold,
            "passed": bool(passed), **measured}


def assert_only(claims: list[dict], reported: set[str], reason: str) -> dict:
    """The results keys for claims of which those named in `reported` are measured but not asserted: "claims"
    (the asserted ones, which set the exit code), "unasserted_claims" and their "observations" lines."""
    kept = [c for c in claims if c["name"] in reported]
    return {"claims": [c for c in claims if c["name"] not in reported], "unasserted_claims": kept,
            "observations": [unasserted(c, reason) for c in kept]}


def unasserted(c: dict, reason: str) -> dict:
    """A claim that was measured but is not asserted (e.g. at the quick budget), as an observation line."""
    return {"name": c["name"], "statement": f"{c['statement']}; not asserted: {reason}",
            "value": f"{format_value(c['value'])} (threshold {c['threshold']}: would {'pass' if c['passed'] else 'fail'})"}


def format_claims(claims: list[dict]) -> str:
    """The claims table the CLI prints."""
    rows = [("", "claim", "value", "threshold")]
    for c in claims:
        rows.append(("PASS" if c["passed"] else "FAIL", c["name"], format_value(c["value"]), str(c["threshold"])))
    return text_table(rows)


def text_table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns, the first row a header underlined with dashes."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
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
