"""Features: browse what an SAE's features respond to, search them by token, and see which fire on
your own text."""

import html
import json
from pathlib import Path

import streamlit as st
import torch

from app.common import label, missing, model, page
from app.probes import token_texts
from interp import InterpError, figures
from interp.hooks import capture
from interp.models import REAL_MODELS
from interp.runs import runs_root
from interp.sae import features as F
from interp.sae.io import load_sae
from interp.store import open_store


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
def summary(folder: str) -> dict:
    _, store = sae_and_store(folder)
    return {k: v.numpy() for k, v in F.feature_summary(folder, store).items()}


def shaded(tokens: list[str], acts, peak: float) -> str:
    """Tokens as HTML spans shaded by activation (peak = full orange)."""
    spans = []
    for t, a in zip(tokens, acts):
        alpha = 0.0 if peak <= 0 else min(1.0, float(a) / peak)
        spans.append(f'<span title="{float(a):.3f}" style="background: rgba(255,140,0,{alpha:.2f}); padding: 1px 0">'
                     f"{html.escape(t).replace(chr(10), '⏎')}</span>")
    return "".join(spans)


def body() -> None:
    st.title("Features")
    dirs = F.sae_dirs(runs_root())
    if not dirs:
        missing("SAE", "interp sae train --store STORE")
        return
    folder = str(dirs[[label(d) for d in dirs].index(st.selectbox("SAE", [label(d) for d in dirs], key="sae"))])
    sae, store = sae_and_store(folder)
    s = summary(folder)
    spec = sae.cfg.model_name
    m = model(spec) if spec in REAL_MODELS or Path(spec).is_dir() else None
    c = sae.cfg
    st.caption(f"{c.kind} SAE, d_in {c.d_in}, d_sae {c.d_sae}, k {c.k} — hook `{c.hook_name}` of `{spec}`; "
               f"statistics over {int(s['tokens']):,} stored tokens; {int((s['density'] == 0).sum())} features never fire there.")

    st.plotly_chart(figures.density_histogram(s["density"]), key="density_all")
    live = s["density"].nonzero()[0]
    default = int(live[0]) if len(live) else 0
    f = int(st.number_input("Feature", 0, c.d_sae - 1, default, key="feature"))
    feature_view(sae, store, s, m, f)
    token_search(sae, store, m)
    prompt_view(sae, m)


def feature_view(sae, store, s, m, f: int) -> None:
    st.subheader(f"Feature {f}")
    st.markdown(f"Density **{s['density'][f]:.4%}** · mean activation when firing **{s['mean_active'][f]:.3f}**")
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Top-activating contexts**")
        rows = [r for r in s["top_rows"][f] if r >= 0][:10]
        if not rows:
            st.info("This feature never fired on the summarised tokens.")
        peak = float(s["top_values"][f].max())
        for r in rows:
            ids, acts = F.context(sae, store, int(r), f)
            toks = token_texts(m, ids) if m is not None else [str(int(i)) for i in ids]
            st.markdown(shaded(toks, acts, peak), unsafe_allow_html=True)
    with right:
        edges = F.HIST_EDGES.numpy()
        st.plotly_chart(figures.bars({"tokens": ([f"{a:.2g}–{b:.2g}" for a, b in zip(edges[:-1], edges[1:])], s["histogram"][f], None)},
                                     "Activation histogram", "activation", "tokens"), key="hist")
        near_v, near_i = F.nearest_features(sae, f)
        st.dataframe({"nearest feature": near_i.numpy(), "decoder cosine": near_v.numpy().round(3)}, hide_index=True)
    if m is not None:
        (up_v, up_i), (down_v, down_i) = F.logit_effects(sae, m.W_U, f)
        c1, c2 = st.columns(2)
        c1.dataframe({"promoted token": token_texts(m, up_i), "logit": up_v.numpy().round(3)}, hide_index=True)
        c2.dataframe({"suppressed token": token_texts(m, down_i), "logit": (-down_v).numpy().round(3)}, hide_index=True)


def token_search(sae, store, m) -> None:
    st.subheader("Search features by token")
    word = st.text_input("Token (as it appears in text, e.g. ' the' or 'def')", " the", key="search")
    if m is None or not word:
        return
    ids = m.encode(word)
    if len(ids) != 1:
        st.warning(f"{word!r} is {len(ids)} tokens ({m.token_strs(ids)}): search one token at a time.")
        return
    vals, feats, n = F.features_for_token(sae, store, ids[0])
    if n == 0:
        st.info(f"{word!r} does not occur in the summarised tokens.")
        return
    st.caption(f"Mean activation over {n} occurrences.")
    st.dataframe({"feature": feats.numpy(), "mean activation": vals.numpy().round(3)}, hide_index=True)


def prompt_view(sae, m) -> None:
    st.subheader("Features on your text")
    if m is None:
        st.info(f"The SAE's model {sae.cfg.model_name!r} cannot be loaded here, so prompts cannot be encoded.")
        return
    text = st.text_area("Text", "def mean(xs):\n    return sum(xs) / len(xs)", key="prompt")
    ids = m.encode(text)
    if not ids:
        return
    tokens = torch.tensor([[m.sink_token_id, *ids]]) if m.sink_token_id is not None else torch.tensor([ids])
    acts = capture(m, tokens, [sae.cfg.hook_name], stop_early=True)[sae.cfg.hook_name][0]  # [pos, d_in]
    skip = acts.norm(dim=1) > sae.cfg.max_norm if sae.cfg.max_norm else None
    sae.eval()
    codes = sae.encode(acts, skip=skip).dense()  # [pos, d_sae]
    start = 1 if m.sink_token_id is not None else 0
    rows = []
    for i, tok in enumerate(token_texts(m, tokens[0])[start:], start):
        top = codes[i].topk(5)
        rows.append({"token": tok, "active features": int((codes[i] > 0).sum()),
                     "top features": ", ".join(f"{int(j)} ({v:.2f})" for v, j in zip(top.values.tolist(), top.indices) if v > 0)})
    st.dataframe(rows, hide_index=True)


page(body)
