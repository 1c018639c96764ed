"""Attention sinks: where each head puts its attention, how much goes to position 0, and what the
sink token's value and residual look like, on a prompt of your choice, live. Click an α₀ cell to
open that head; every choice lives in the URL."""

import numpy as np
import streamlit as st
import torch

from app.common import URL, chart, experiment_runs, model, open_cell, page, pick_model, show_figure
from app.probes import domain_alpha0, prompt_tokens, sink_probe, token_labels, token_texts
from app.tokens import attention_html, visible
from interp import figures
from interp.attention import sink_rate
from interp.corpus import load_texts

DEFAULT_PROMPT = "The quick brown fox jumps over the lazy dog. Attention sinks appear when a model has nothing better to attend to."


def toy_default(m) -> str:
    """A toy model's default prompt: its BOS, then the first tokens of its vocabulary."""
    ids = [m.sink_token_id or 0, *range(1, min(20, m.info.d_vocab))]
    vocab = m.tokenizer.vocab
    if not vocab:
        return " ".join(str(i) for i in ids)
    return ("" if all(len(t) == 1 for t in vocab) else " ").join(vocab[i] for i in ids)


def pick_prompt(spec: str) -> tuple[str, bool]:
    m = model(spec)
    if m.kind == "toy":
        return st.text_input("Prompt (tokens of the toy vocabulary, or token ids)", toy_default(m), key="toy_prompt", bind=URL), False
    source = st.radio("Prompt", ["my text", "corpus sample: prose", "corpus sample: code"], horizontal=True, key="source", bind=URL)
    if source == "my text":
        text = st.text_area("Text", DEFAULT_PROMPT, key="text", bind=URL)
    else:
        domain = source.split(": ")[1]
        i = st.number_input("Sample", 0, 31, 0, key="sample", bind=URL)
        text = load_texts(domain, 32, seed=0)[i].text[:400]
        st.code(text[:400], language="python" if domain == "code" else None)
    sink = m.tokenizer.decode([m.sink_token_id]) if m.sink_token_id is not None else "the sink token"
    label = f"Prepend {sink} (position 0 is the sink token)"
    if m.needs_bos:
        label += f"; {spec} was trained with {sink} first, so without it the input is off its training distribution"
    return text, st.checkbox(label, value=m.needs_bos, key="prepend", bind=URL)


def body() -> None:
    st.title("Attention sinks")
    spec = pick_model()
    stored = next((r for r in experiment_runs("sinks") if r.complete and r.config.get("model") == spec), None)
    if stored is not None:
        with st.expander(f"Stored `sinks` run on this model: {stored.dir.name} (statistics over the corpus)"):
            show_figure(stored, "sink_rate_by_position")
    text, prepend = pick_prompt(spec)
    p = sink_probe(spec, text, prepend)
    labels = token_labels(spec, p["tokens"])
    L, H = p["alpha"].shape[:2]
    st.caption(f"{len(labels)} tokens; position 0 holds `{token_texts(model(spec), p['tokens'][:1])[0]}`.")

    left, right = st.columns(2)
    with left:
        chart(figures.clickable(figures.alpha_grid(p["alpha"][..., 0])), "alpha0",
              on_select=open_cell("alpha0", "layer", "head"), selection_mode="points")
        st.caption("Click a cell to open that head's attention pattern below.")
    with right:
        eps = st.slider("ε of Sink_k^ε", 0.05, 0.9, 0.3, 0.05, key="eps", bind=URL)
        rate = sink_rate(torch.from_numpy(p["alpha"])[None], eps)
        chart(figures.sink_by_position({"this prompt": rate}, eps), "sink_rate")

    st.subheader("One head")
    c1, c2, c3 = st.columns([1, 1, 2])
    layer = int(c1.number_input("Layer", 0, L - 1, min(L - 1, L // 2), key="layer", bind=URL))
    head = int(c2.number_input("Head", 0, H - 1, 0, key="head", bind=URL))
    hide0 = c3.checkbox("Hide position 0 and renormalise the rest", key="hide0", bind=URL)
    pattern, shown = p["pattern"][layer], labels  # [head, q, k]
    if hide0:
        rest = pattern[:, 1:, 1:]
        pattern, shown = rest / np.clip(rest.sum(-1, keepdims=True), 1e-9, None), labels[1:]
    this, all_heads = st.tabs([f"L{layer}H{head}", f"All {H} heads of layer {layer}"])
    with this:
        chart(figures.attention_heads(pattern[head:head + 1], shown, layer, [head], f"Attention pattern, layer {layer} head {head}"),
              "pattern")
        st.html(attention_html(shown, pattern[head], f"L{layer}H{head}"), unsafe_allow_javascript=True)
    with all_heads:
        chart(figures.attention_heads(pattern, shown, layer, list(range(H)), f"Layer {layer}, every head"), "pattern_layer")

    left, right = st.columns(2)
    with left:
        chart(figures.norms_by_position(p["wov"], "‖W_O v‖ by position (mean over heads)", "‖W_O v‖"), "wov")
    with right:
        chart(figures.norms_by_position(p["resid"], "‖resid_post‖ by position", "‖resid‖"), "resid")

    if model(spec).kind != "toy":
        domains(spec)
        zerotuning(spec, text, prepend, layer, head)


def domains(spec: str) -> None:
    st.subheader("Active and dormant heads across two domains")
    st.caption("α₀ on 4 prose and 4 code snippets (64 tokens) from the local corpus: a head whose α₀ differs "
               "between domains is dormant (sinks) on one and active on the other.")
    if not st.toggle("Compare domains (8 forward passes)", key="domains", bind=URL):
        return
    a = domain_alpha0(spec)
    c1, c2, c3 = st.columns(3)
    with c1:
        chart(figures.alpha_grid(a["prose"], "α₀ on prose"), "alpha_prose")
    with c2:
        chart(figures.alpha_grid(a["code"], "α₀ on code"), "alpha_code")
    diff = a["prose"] - a["code"]
    with c3:
        chart(figures.heatmap(diff, "α₀(prose) − α₀(code)", "head", "layer", zmin=-1, zmax=1, signed=True,
                              zlabel="Δα₀ (+ : sinks more on prose)"), "alpha_diff")
    l, h = np.unravel_index(np.abs(diff).argmax(), diff.shape)
    st.markdown(f"Most domain-selective head: **L{l}H{h}** (α₀ prose {a['prose'][l, h]:.2f}, code {a['code'][l, h]:.2f}).")


@st.cache_data(show_spinner=False, max_entries=32)
@torch.no_grad()
def scaled_head(spec: str, text: str, prepend: bool, layer: int, head: int, gamma: float) -> dict:
    """α to position 0 by query for one head, before and after scaling it by γ, and the next-token
    distributions of both runs."""
    from interp.hooks import run
    from interp.interventions import kl_rows, scale_initial_attention

    m = model(spec)
    tokens = prompt_tokens(spec, text, prepend)
    name = f"blocks.{layer}.attn.hook_pattern"
    clean_logits, clean = run(m, tokens, capture=[name])
    logits, scaled = run(m, tokens, capture=[name], patch=scale_initial_attention(gamma, [layer], [head], model=m))
    p_log, q_log = clean_logits[0, -1:].float().log_softmax(-1), logits[0, -1:].float().log_softmax(-1)  # [1, d_vocab]
    return {"before": clean[name][0, head, :, 0].numpy(), "after": scaled[name][0, head, :, 0].numpy(),  # [q]
            "kl": kl_rows(p_log, q_log)[0].item(), "p": p_log[0].exp().numpy(), "q": q_log[0].exp().numpy()}


def zerotuning(spec: str, text: str, prepend: bool, layer: int, head: int) -> None:
    st.subheader("ZeroTuning: scale this head's attention to position 0")
    gamma = st.select_slider("γ", [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0], 2.0, key="gamma", bind=URL)
    z = scaled_head(spec, text, prepend, layer, head, gamma)
    c1, c2 = st.columns(2)
    with c1:
        chart(figures.lines({"clean": z["before"], f"γ = {gamma}": z["after"]}, f"L{layer}H{head}: attention to position 0 by query",
                            "query position", "α to key 0"), "zt_alpha")
    top = np.argsort(-z["q"])[:8]
    c2.markdown(f"KL(clean ‖ scaled) of the next-token distribution: **{z['kl']:.4f}** nats")
    c2.dataframe({"next token": [visible(t) for t in token_texts(model(spec), top)], "p (scaled)": z["q"][top].round(4),
                  "p (clean)": z["p"][top].round(4)}, hide_index=True)


page(body)
