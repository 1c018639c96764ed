"""Experiments: every reproduced paper, its claims and their status in the latest run."""

import streamlit as st

from app.common import claims_table, figure_names, latest_run, missing, page, quick_command, run_streaming, show_figure
from interp.registry import registry


def body() -> None:
    st.title("Experiments")
    st.caption("Each experiment reproduces a paper's claims; `interp run NAME` runs it, `--quick` on a small budget.")
    mods = registry()
    rows = []
    for name, mod in mods.items():
        run = latest_run(name)
        claims = run.results().get("claims", []) if run else []
        rows.append({"experiment": name, "paper": mod.PAPER, "claims passed": f"{sum(c['passed'] for c in claims)}/{len(claims)}" if run else "not run",
                     "latest run": run.dir.name if run else ""})
    st.dataframe(rows, hide_index=True)

    has_run = [r["latest run"] != "" for r in rows]
    name = st.selectbox("Experiment", list(mods), index=has_run.index(True) if any(has_run) else 0, key="experiment")
    mod = mods[name]
    st.subheader(name)
    st.markdown(f"**Paper:** {mod.PAPER}")
    with st.expander("Claims it checks"):
        st.markdown("\n".join(f"{i}. {c}" for i, c in enumerate(mod.CLAIMS, 1)))
    run = latest_run(name)
    if run is None:
        missing(f"complete run of {name}", f"interp run {name} --quick")
    else:
        results = run.results()
        st.markdown(f"Latest complete run: `{run.dir}`" + (f" — {results['seconds']:.0f} s" if isinstance(results.get("seconds"), (int, float)) else ""))
        st.dataframe(claims_table(results.get("claims", [])), hide_index=True)
        figs = figure_names(run)
        if figs:
            fig = st.selectbox("Figure", figs, key=f"figure_{name}")
            show_figure(run, fig)
    if st.button(f"Run {name} --quick", key=f"run_{name}"):
        with st.status(f"interp run {name} --quick", expanded=True) as status:
            line = st.empty()
            code = run_streaming(quick_command(name), lambda s: line.code(s))
            state = "complete" if code == 0 else "error"
            status.update(label=f"interp run {name} --quick: exit {code} ({'all claims passed' if code == 0 else 'a claim failed' if code == 1 else 'error'})",
                          state=state)
        st.button("Show the new run", key="refresh")


page(body)
