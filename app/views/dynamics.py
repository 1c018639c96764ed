"""Training dynamics: any run's metrics over steps (sink formation, value drain, loss by token type,
the ICL jump, SAE losses), several runs overlaid."""

import json
from pathlib import Path

import streamlit as st
from plotly.colors import DEFAULT_PLOTLY_COLORS as PALETTE

from app.common import URL, chart, label, missing, page
from interp import figures
from interp.runs import Run, runs_root


@st.cache_data(max_entries=64)
def metrics(folder: str, mtime: int) -> list[dict]:
    """A run's metrics.jsonl rows (mtime keys the cache, so a growing run is re-read)."""
    return Run(Path(folder)).metrics()


def numeric_keys(rows: list[dict]) -> list[str]:
    keys = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(keys - {"step"})


def body() -> None:
    st.title("Training dynamics")
    files = sorted(runs_root().glob("**/metrics.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not files:
        missing("training run with metrics", "interp run bigram_backcopy --quick")
        return
    names = {label(p.parent): p.parent for p in files}
    chosen = st.multiselect("Runs", list(names), default=list(names)[:1], key="runs", bind=URL)
    colour = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}  # one colour per run, in every panel
    data = {n: metrics(str(names[n]), names[n].joinpath("metrics.jsonl").stat().st_mtime_ns) for n in chosen}
    keys = sorted({k for rows in data.values() for k in numeric_keys(rows)})
    if not keys:
        st.info("The chosen runs have no numeric metrics yet.")
        return
    preferred = [k for k in ("attn_bos_nontrigger_L0", "backcopy_loss", "bigram_excess", "ic_accuracy", "fvu", "train_loss") if k in keys]
    picked = st.multiselect("Metrics", keys, default=preferred[:3] or keys[:1], key="metrics", bind=URL)
    log_y = st.checkbox("Log y axis", key="log_y", bind=URL)
    for key in picked:
        series, xs = {}, {}
        for n, rows in data.items():
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]
            if pts:
                xs[n], series[n] = zip(*pts)
        if not series:
            continue
        fig = figures.lines({}, key, "step", key, log_y=log_y, mode="lines")
        for n, ys in series.items():
            fig.add_scatter(x=list(xs[n]), y=list(ys), name=n, mode="lines", line=dict(color=colour[n]))
        chart(fig, f"metric_{key}")
    with st.expander("Run configs"):
        for n in chosen:
            cfg = names[n] / "config.json"
            st.markdown(f"`{n}`")
            st.json(json.loads(cfg.read_text()) if cfg.exists() else {}, expanded=False)


page(body)
