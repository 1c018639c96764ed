"""Function tokens: the token–feature graph of an SAE on SmolLM2 — degree against frequency, how
much of the feature set the most frequent tokens cover, and which tokens those are."""

import streamlit as st

from app.common import claims_table, figure_names, latest_run, missing, page, show_figure


def body() -> None:
    st.title("Function tokens")
    st.caption("From “Memory Retrieval and Consolidation in Large Language Models through Function Tokens” (2025): a few "
               "very frequent tokens (punctuation, articles, prepositions) connect to most SAE features.")
    run = latest_run("function_tokens")
    if run is None:
        missing("function_tokens run", "interp run function_tokens --quick")
        return
    results = run.results()
    st.markdown(f"Run `{run.dir}`")
    for name in figure_names(run):
        show_figure(run, name)
    for key, title in (("function_tokens", "Function tokens (the most frequent tokens covering 40% of the corpus)"),
                       ("top_tokens", "Most frequent tokens in the graph: frequency and degree")):
        if results.get(key):
            st.subheader(title)
            st.dataframe(results[key], hide_index=True)
    claims = results.get("claims", [])
    if claims:
        st.dataframe(claims_table(claims), hide_index=True)


page(body)
