"""Experiments: every reproduced paper, its claims, and any run of it — complete or partial, on any
model — with its facts, its verdicts, and other runs' verdicts beside it."""

import streamlit as st

from app.common import (URL, compare_claims, label, missing, page, quick_command,
                        run_facts, run_results, run_streaming, runs_by_experiment, show_claims, show_figure, table)
from interp.registry import registry
from interp.runs import resume_command


def body() -> None:
    st.title("Experiments")
    st.caption("Each experiment reproduces a paper's claims; `interp run NAME` runs it, `--quick` on a small budget.")
    mods = registry()
    by_experiment = runs_by_experiment()
    rows = []
    for name, mod in mods.items():
        runs = by_experiment.get(name, [])
        done = [r for r in runs if r.complete]
        facts = run_facts(done[0]) if done else None
        rows.append({"experiment": name, "paper": mod.PAPER, "runs": len(runs),
                     "latest complete run": facts["run"] if facts else "", "model": facts["model"] if facts else "",
                     "claims passed": facts["claims passed"] if facts else "no complete run" if runs else "not run",
                     "failed claims": str(facts["failed claims"]) if facts else "—",
                     "partial runs": sum(not r.complete for r in runs)})
    table(rows, "experiments", alert=lambda col, v: col == "failed claims" and v not in ("0", "—"))

    first = next((i for i, r in enumerate(rows) if r["latest complete run"]), next((i for i, r in enumerate(rows) if r["runs"]), 0))
    name = st.selectbox("Experiment", list(mods), index=first, key="experiment", bind=URL)
    mod = mods[name]
    st.subheader(name)
    st.markdown(f"**Paper:** {mod.PAPER}")
    with st.expander("Claims it checks"):
        st.markdown("\n".join(f"{i}. {c}" for i, c in enumerate(mod.CLAIMS, 1)))
    runs = by_experiment.get(name, [])
    if not runs:
        missing(f"run of {name}", f"interp run {name} --quick")
    else:
        show_run(name, runs)
    launch(name)


def show_run(name: str, runs) -> None:
    by_name = {r.dir.name: r for r in runs}
    newest_complete = next((i for i, r in enumerate(runs) if r.complete), 0)
    if st.session_state.pop("open_newest", False):
        st.session_state["run"] = runs[newest_complete].dir.name  # a run just launched here: show it
    run = by_name[st.selectbox("Run", list(by_name), index=newest_complete, key="run", bind=URL,
                               help="every run of this experiment under the runs root, newest first; its facts are below")]
    facts = run_facts(run)
    table([{k: facts[k] for k in ("model", "seed", "quick", "date", "seconds", "status")}], "run_facts",
          alert=lambda col, v: col == "status" and v != "complete")
    st.caption(f"`{run.dir}`")
    if not run.complete:
        st.warning(f"PARTIAL run: it has no results.json (interrupted, or still running), so it has no verdicts yet. "
                   f"{len(run.metrics())} metric rows so far. Resume it with `{resume_command(run)}`.")
    else:
        results = run_results(run)
        show_claims(results.get("claims", []))
        for obs in results.get("observations", []):
            st.caption(f"note — {obs['name']}: {obs['value']} ({obs['statement']})")
        figs = run.figure_names()
        if figs:
            fig = st.selectbox("Figure", figs, key=f"figure_{name}", bind=URL)
            show_figure(run, fig)
    if (run.dir / "metrics.jsonl").exists():
        st.page_link("views/dynamics.py", label="Its training curves", icon=":material/show_chart:",
                     query_params={"runs": label(run.dir)})
    others = [n for n, r in by_name.items() if r.complete and r is not run]
    if others:
        picked = st.multiselect("Compare its claims with", others, key="compare", bind=URL,
                                help="other complete runs, e.g. the same experiment on another model, seed or budget")
        if picked:
            table(compare_claims([run, *(by_name[n] for n in picked)]), "compare_claims")


def launch(name: str) -> None:
    done = st.session_state.pop("launched", None)
    if done is not None and done["experiment"] == name:
        (st.success if done["code"] == 0 else st.warning if done["code"] == 1 else st.error)(done["summary"])
        with st.expander("Its output", expanded=done["code"] not in (0, 1)):
            st.code("\n".join(done["lines"]))
    if st.button(f"Run {name} --quick", key=f"run_{name}"):
        with st.status(f"interp run {name} --quick", expanded=True) as status:
            box, seen = st.empty(), []

            def show(lines):
                seen[:] = lines
                box.code("\n".join(lines))

            code = run_streaming(quick_command(name), show)
            outcome = "all claims passed" if code == 0 else "a claim failed" if code == 1 else "error"
            summary = f"interp run {name} --quick: exit {code} ({outcome})"
            status.update(label=summary, state="complete" if code in (0, 1) else "error")
        st.session_state["launched"] = {"experiment": name, "code": code, "summary": summary, "lines": seen}
        st.session_state["open_newest"] = code in (0, 1)
        st.rerun()


page(body)
