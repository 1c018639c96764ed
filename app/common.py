"""What every page shares: cached model loading, run discovery, stored figures, friendly errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import plotly.io as pio
import streamlit as st

from interp import InterpError
from interp.runs import Run, format_value, list_runs, runs_root

SMOLLM2 = "smollm2-135m"


def page(body: Callable[[], None]) -> None:
    """Run a page body; bad input and missing data show as a message, never as a traceback."""
    try:
        body()
    except InterpError as e:
        st.error(str(e))


@st.cache_resource(show_spinner="Loading the model (once per server)…")
def model(spec: str):
    from interp.models import load_model

    return load_model(spec, quiet=True)


def latest_run(experiment: str, complete: bool = True) -> Run | None:
    runs = [r for r in list_runs() if r.experiment == experiment and (r.complete or not complete)]
    return runs[-1] if runs else None


def figure_names(run: Run) -> list[str]:
    return sorted(p.stem for p in (run.dir / "figures").glob("*.json"))


def show_figure(run: Run, name: str, key: str | None = None) -> None:
    path = run.dir / "figures" / f"{name}.json"
    try:
        fig = pio.from_json(path.read_text())
    except (OSError, ValueError) as e:
        st.warning(f"{path} cannot be read as a plotly figure ({e}); rerun the experiment to redraw it.")
        return
    st.plotly_chart(fig, key=key or f"{run.dir}/{name}")


def toy_checkpoints() -> list[Path]:
    """Trained toy models (folders with interp_toy.json) under the runs root, newest first."""
    found = [p.parent for p in runs_root().glob("**/interp_toy.json")]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def label(path: Path) -> str:
    """A path shown relative to the runs root."""
    try:
        return str(path.relative_to(runs_root()))
    except ValueError:
        return str(path)


def missing(what: str, command: str) -> None:
    st.info(f"No {what} yet. `{command}` makes one; this page shows it once it exists (runs root: `{runs_root()}`).")


def run_streaming(cmd: list[str], on_output: Callable[[str], None]) -> int:
    """Run a command, passing its latest output line (tqdm's carriage-return updates included) to
    `on_output` as it comes; return the exit status."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    buf = b""
    while chunk := proc.stdout.read(256):
        buf = (buf + chunk)[-4096:]
        lines = [ln for ln in buf.replace(b"\r", b"\n").decode(errors="replace").split("\n") if ln.strip()]
        if lines:
            on_output(lines[-1])
    return proc.wait()


def quick_command(experiment: str) -> list[str]:
    return [sys.executable, "-m", "interp.cli", "run", experiment, "--quick"]


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def claims_table(claims: list[dict]) -> list[dict]:
    return [{"": "✅" if c["passed"] else "❌", "claim": c["name"], "value": format_value(c["value"]),
             "threshold": str(c["threshold"])} for c in claims]
