"""Lenses: every layer's residual stream read as a next-token distribution (logit lens, tuned lens), as a
layer × position map of the top token and its probability, with KL to the model's own output."""

import streamlit as st

from app.common import URL, chart, model, page, pick_model
from app.probes import token_labels
from interp import InterpError, figures
from interp.lens import LensSettings, lens_path, lens_table, token_id, tuned_lens

LOGIT, TUNED = "logit lens", "tuned lens"


@st.cache_data(show_spinner="Reading every layer through the lens…", max_entries=16)
def table_of(spec: str, ids: tuple, lens: str, token: int | None) -> dict:
    t = lens_table(model(spec), list(ids), lens, k=5, token=token)
    return {k: v for k, v in t.items()}


@st.cache_resource(show_spinner="Training the tuned lens (once per model; cached on disk)…", max_entries=4)
def trained(spec: str):
    return tuned_lens(model(spec), LensSettings())


def body() -> None:
    st.title("Lenses")
    spec = pick_model()
    m = model(spec)
    text = st.text_input("Prompt", "The Eiffel Tower is in the city of", key="text", bind=URL)
    ids = tuple(m.prompt(text))
    if not ids:
        raise InterpError("The prompt is empty: write some text.")
    m.check_length(len(ids))
    c1, c2 = st.columns(2)
    which = c1.radio("Lens", [LOGIT, TUNED], horizontal=True, key="lens", bind=URL)
    target = c2.text_input("Token to follow (optional, one token, e.g. \" Paris\")", "", key="token", bind=URL)
    token = token_id(m, target) if target else None
    lens = "logit"
    if which == TUNED:
        if not lens_path(m, LensSettings()).exists() and not st.session_state.get(f"train_{spec}"):
            st.info("No tuned lens is cached for this model yet. Training one takes a few minutes on this CPU "
                    "(it is saved in the cache and reused by this page, `interp lens --tuned` and the `lenses` experiment).")
            if st.button("Train the tuned lens", key="train", type="primary"):
                st.session_state[f"train_{spec}"] = True
                st.rerun()
            return
        trained(spec)
        lens = "tuned"
    t = table_of(spec, ids, lens, token)
    x = token_labels(spec, ids)
    top1 = [[row[0] for row in layer] for layer in t["top_tokens"]]
    chart(figures.token_grid(t["top_probs"][:, :, 0], top1, f"Top token per layer and position ({t['lens']} lens)", x,
                             t["layers"], "p(top token)"), "lens_top")
    left, right = st.columns(2)
    with left:
        chart(figures.heatmap(t["kl"], "KL(model's output ‖ lens), nats", "position", "layer", x=x, y=t["layers"],
                              zmin=0, zlabel="nats"), "lens_kl")
    with right:
        if t["token_prob"] is not None:
            chart(figures.heatmap(t["token_prob"], f"p({t['token']!r}) by layer and position", "position", "layer", x=x,
                                  y=t["layers"], zmin=0, zmax=1, zlabel="probability"), "lens_token")
        else:
            chart(figures.heatmap(t["entropy"], "Entropy of the lens distribution, nats", "position", "layer", x=x,
                                  y=t["layers"], zmin=0, zlabel="nats"), "lens_entropy")
    st.caption("Layer `embed` is the embedding; layer l is block l's output; the last row is the model's own prediction. "
               "The logit lens applies the final norm and unembedding to each layer; the tuned lens first applies a "
               "per-layer affine translator trained to match the final distribution (Belrose et al. 2023).")


page(body)
