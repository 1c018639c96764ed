"""Function tokens: the token–feature graph of an SAE on SmolLM2 — degree against frequency, how
much of the feature set the most frequent tokens cover, and which tokens those are."""

import streamlit as st

from app.common import URL, experiment_runs, missing, page, show_claims, show_figure


def body() -> None:
    st.title("Function tokens")
    st.caption("From “Memory Retrieval and Consolidation in Large Language Models through Function Tokens” (2025): a few "
               "very frequent tokens (punctuation, articles, prepositions) connect to most SAE features.")
    runs = {r.dir.name: r for r in experiment_runs("function_tokens") if r.complete}
    if not runs:
        missing("function_tokens run", "interp run function_tokens --quick")
        return
    run = runs[st.selectbox("Run", list(runs), key="run", bind=URL)]
    results = run.results()
    st.caption(f"`{run.dir}`")
    for name in run.figure_names():
        show_figure(run, name)
    for key, title in (("function_tokens", "Function tokens (the most frequent tokens covering 40% of the corpus)"),
                       ("top_tokens", "Most frequent tokens in the graph: frequency and degree")):
        if results.get(key):
            st.subheader(title)
            st.dataframe(results[key], hide_index=True)
    show_claims(results.get("claims", []))


page(body)
