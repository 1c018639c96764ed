"""What every page shares: cached model loading, the model and run pickers, claims tables, figures
with their data for download, friendly errors. Widgets that define a view are keyed and bound to
the URL's query string (`bind="query-params"`), so any view can be shared and bookmarked."""

from __future__ import annotations

import csv
import io
import html
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import plotly.io as pio
import streamlit as st

from interp import InterpError
from interp.figures import centre_signed
from interp.runs import Run, format_value, list_runs, runs_root
from interp.sae import features as F
from interp.sae.io import load_sae
from interp.store import open_store

SMOLLM2 = "smollm2-135m"
LOCAL = "local folder"
URL = "query-params"  # bind= value: the widget's value lives in the URL too
PASS_STYLE, FAIL_STYLE = "color: #1a7f37; font-weight: 700", "color: #cf222e; font-weight: 700"


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


# ------------------------------------------------------------------------------------------ SAEs


@st.cache_resource(show_spinner="Loading the SAE…", max_entries=8)
def sae_and_store(folder: str):
    sae = load_sae(folder)
    cfg = json.loads((Path(folder) / "cfg.json").read_text())
    store_dir = cfg.get("interp", {}).get("store")
    if not store_dir or not Path(store_dir).exists():
        raise InterpError(f"The store this SAE was trained on ({store_dir or 'not recorded'}) is not on disk, so its "
                          "contexts cannot be shown: rebuild it with the `interp cache` command that wrote it.")
    return sae, open_store(store_dir, verify=False)


@st.cache_data(show_spinner="Summarising every feature over the store (once; cached beside the SAE)…", max_entries=8)
def sae_summary(folder: str) -> dict:
    _, store = sae_and_store(folder)
    return {k: v.numpy() for k, v in F.feature_summary(folder, store).items()}


# ------------------------------------------------------------------------------------------ models


def pick_model(extra: dict[str, object] | None = None, key: str = "model") -> object:
    """The model picker: every named model, the toy checkpoints under the runs root, `extra` choices
    ({label: value}), and a local folder the user types (any HF model folder or toy checkpoint)."""
    from interp.models import REAL_MODELS

    specs = {**{s: s for s in REAL_MODELS}, **{f"toy: {label(p)}": str(p) for p in toy_checkpoints()}, **(extra or {}),
             LOCAL: None}
    choice = st.selectbox("Model", list(specs), key=key, bind=URL)
    if choice != LOCAL:
        return specs[choice]
    folder = st.text_input("Model folder (a Hugging Face model folder with config.json, or a toy checkpoint)", "",
                           key=f"{key}_folder", bind=URL).strip()
    if not folder:
        st.info("Type the path of a local model folder to probe it.")
        st.stop()
    if not Path(folder).is_dir():
        raise InterpError(f"{folder} is not a folder: give the path of a model folder on this machine.")
    return folder


def model_params(spec: str) -> dict:
    """Query parameters that make pick_model choose `spec` on another page."""
    from interp.models import REAL_MODELS

    if spec in REAL_MODELS:
        return {"model": spec}
    toy = {str(p): f"toy: {label(p)}" for p in toy_checkpoints()}
    return {"model": toy[spec]} if spec in toy else {"model": LOCAL, "model_folder": spec}


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


# -------------------------------------------------------------------------------------------- runs


def runs_by_experiment() -> dict[str, list[Run]]:
    """Every run under the runs root, complete or partial, by experiment, newest first (one scan)."""
    out: dict[str, list[Run]] = {}
    for r in reversed(list_runs()):
        out.setdefault(r.experiment, []).append(r)
    return out


def experiment_runs(experiment: str) -> list[Run]:
    """Every run of `experiment`, complete or partial, newest first."""
    return runs_by_experiment().get(experiment, [])


def run_results(run: Run) -> dict:
    """A complete run's results, {} for a partial or unreadable one."""
    try:
        return run.results() if run.complete else {}
    except InterpError:
        return {}


def run_facts(run: Run) -> dict:
    """What a researcher asks of a run first: model, seed, quick, date, seconds, status, claims."""
    try:
        cfg = run.config
    except (OSError, ValueError):
        cfg = {}
    results = run_results(run)
    claims = results.get("claims", [])
    try:
        date = time.strftime("%Y-%m-%d %H:%M", time.strptime(run.dir.name[:15], "%Y%m%d-%H%M%S"))
    except ValueError:
        date = time.strftime("%Y-%m-%d %H:%M", time.localtime((run.dir / "config.json").stat().st_mtime))
    seed = cfg.get("seed", cfg.get("seeds", "—"))
    quick = cfg.get("quick")
    return {"run": run.dir.name, "model": str(cfg.get("model", cfg.get("model_name", "—"))), "seed": format_value(seed),
            "quick": "yes" if quick else "no" if quick is False else "not recorded", "date": date,
            "seconds": f"{results['seconds']:.0f}" if isinstance(results.get("seconds"), (int, float)) else "—",
            "status": "complete" if run.complete else "partial (no results.json)",
            "claims passed": f"{sum(c['passed'] for c in claims)}/{len(claims)}" if claims else "—",
            "failed claims": sum(not c["passed"] for c in claims)}


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


class Link(NamedTuple):
    """A table cell that links to another view (a relative URL with its query string)."""

    text: str
    href: str


def table(rows: list[dict], key: str, alert: Callable[[str, object], bool] = lambda col, v: False) -> None:
    """A small table as escaped HTML (st.table would read its cells as Markdown: ">= 0.2" became a
    quote). Cells reading PASS / FAIL are drawn as coloured words (an emoji can render as an empty
    box), and so is any cell `alert(column, value)` flags; a `Link` cell is a link in this tab."""
    if not rows:
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def cell(c, v):
        if isinstance(v, Link):
            return f'<td><a href="{html.escape(v.href)}" target="_self">{html.escape(v.text)}</a></td>'
        text = "—" if v is None else str(v)
        style = PASS_STYLE if text == "PASS" else FAIL_STYLE if text == "FAIL" or alert(c, v) else ""
        cls = f' class="{text.lower()}"' if text in ("PASS", "FAIL") else ""
        return f'<td{cls} style="{style}">{html.escape(text)}</td>'

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(cell(c, r.get(c)) for c in cols) + "</tr>" for r in rows)
    st.html(f'<table class="interp-table" id="{key}" style="border-collapse:collapse;width:100%;font-size:0.9em">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            "<style>.interp-table th,.interp-table td{border-bottom:1px solid #e6e6e6;padding:4px 8px;text-align:left;"
            "vertical-align:top}.interp-table th{color:#555;font-weight:600}</style>")


def show_claims(claims: list[dict], key: str = "claims") -> None:
    table([{"verdict": verdict(c["passed"]), "claim": c["name"], "value": format_value(c["value"]),
            "threshold": str(c["threshold"])} for c in claims], key)


def compare_claims(runs: list[Run]) -> list[dict]:
    """Claims of several runs side by side: one row per claim, a verdict and a value column per run."""
    out: dict[str, dict] = {}
    for run in runs:
        model = run_facts(run)["model"]
        for c in run_results(run).get("claims", []):
            row = out.setdefault(c["name"], {"claim": c["name"]})
            row[f"{run.dir.name} ({model})"] = verdict(c["passed"])
            row[f"{run.dir.name} value"] = format_value(c["value"])
    return list(out.values())


# ----------------------------------------------------------------------------------------- figures


def chart(fig, key: str, container=st, download: tuple[Callable[[], str], str, str] | None = None, **kw):
    """Draw a plotly figure with a button that downloads its data (CSV for a heatmap, JSON otherwise; or
    `download` = (make the text, extension, mime)), made only when clicked."""
    event = container.plotly_chart(fig, key=key, **kw)
    make, name, mime = download or ((lambda: figure_data(fig)[0]), *_data_kind(fig))
    container.download_button("Download the data", make, file_name=f"{key.replace('/', '_')}.{name}", mime=mime,
                              key=f"download_{key}", on_click="ignore", type="tertiary", icon=":material/download:")
    return event


def _single_heatmap(traces) -> bool:
    heatmaps = [t for t in traces if t.type == "heatmap"]
    return len(heatmaps) == 1 and all(t.type == "heatmap" or t.customdata is not None for t in traces)


def _data_kind(fig) -> tuple[str, str]:
    return ("csv", "text/csv") if _single_heatmap(list(fig.data)) else ("json", "application/json")


def open_cell(chart_key: str, row_key: str, col_key: str) -> Callable[[], None]:
    """An on_select callback for a chart drawn from `figures.clickable`: the clicked cell's row and
    column go into the widgets `row_key` and `col_key` (e.g. layer and head), and so into the URL."""
    def callback() -> None:
        points = st.session_state[chart_key]["selection"]["points"]
        if points and "customdata" in points[0]:
            st.session_state[row_key], st.session_state[col_key] = int(points[0]["customdata"][0]), int(points[0]["customdata"][1])
    return callback


def figure_data(fig) -> tuple[str, str, str]:
    """A figure's numbers as (text, extension, mime): a single heatmap as CSV (x labels across, y labels
    down; a clickable one's invisible markers left out), anything else as JSON with each trace's name,
    x, y and z."""
    traces = list(fig.data)
    if _single_heatmap(traces):
        t = next(t for t in traces if t.type == "heatmap")
        z = [list(r) for r in t.z]
        xs = list(t.x) if t.x is not None else list(range(len(z[0]) if z else 0))
        ys = list(t.y) if t.y is not None else list(range(len(z)))
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow([fig.layout.yaxis.title.text or "", *xs])
        for y, row in zip(ys, z):
            w.writerow([y, *row])
        return out.getvalue(), "csv", "text/csv"
    rows = [{k: _plain(getattr(t, k, None)) for k in ("name", "type", "x", "y", "z", "text") if getattr(t, k, None) is not None}
            for t in traces]
    return json.dumps({"title": fig.layout.title.text, "traces": rows}, default=float), "json", "application/json"


def _plain(v):
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def show_figure(run: Run, name: str, key: str | None = None) -> None:
    path = run.dir / "figures" / f"{name}.json"
    try:
        fig = pio.from_json(path.read_text())
    except (OSError, ValueError) as e:
        st.warning(f"{path} cannot be read as a plotly figure ({e}); rerun the experiment to redraw it.")
        return
    chart(centre_signed(fig), key or f"{run.dir.name}/{name}")


# ---------------------------------------------------------------------------------------- commands


def run_streaming(cmd: list[str], on_output: Callable[[list[str]], None], keep: int = 40) -> int:
    """Run a command, passing its last `keep` output lines (tqdm's carriage-return updates replace
    the line they rewrite) to `on_output` as they come; return the exit status."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    lines, current = [], ""
    while chunk := proc.stdout.read(256):
        for ch in chunk.decode(errors="replace"):
            if ch == "\n":
                lines.append(current)
                current = ""
            elif ch == "\r":
                current = ""
            else:
                current += ch
        lines = [ln for ln in lines if ln.strip()][-keep:]
        on_output(lines + ([current] if current.strip() else []))
    return proc.wait()


def quick_command(experiment: str) -> list[str]:
    return [sys.executable, "-m", "interp.cli", "run", experiment, "--quick"]


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
