"""Attention sinks: where each head puts its attention, how much goes to position 0, and what the
sink token's value and residual look like, on a prompt of your choice, live."""

import numpy as np
import streamlit as st
import torch

from app.common import SMOLLM2, label, latest_run, model, page, show_figure, toy_checkpoints
from app.probes import domain_alpha0, prompt_tokens, sink_probe, token_labels, token_texts
from interp import figures
from interp.attention import sink_rate
from interp.corpus import load_texts

DEFAULT_PROMPT = "The quick brown fox jumps over the lazy dog. Attention sinks appear when a model has nothing better to attend to."


def pick_model() -> str:
    specs = {SMOLLM2: SMOLLM2, **{f"toy: {label(p)}": str(p) for p in toy_checkpoints()}}
    return specs[st.selectbox("Model", list(specs), key="model")]


def pick_prompt(spec: str) -> tuple[str, bool]:
    toy = model(spec).kind == "toy"
    if toy:
        vocab = model(spec).tokenizer.vocab or []
        default = "".join(vocab[1:20]) if vocab and all(len(t) == 1 for t in vocab) else " ".join(str(i) for i in range(1, 20))
        return st.text_input("Prompt (characters of the toy vocabulary, or token ids)", default, key="toy_prompt"), False
    source = st.radio("Prompt", ["my text", "corpus sample: prose", "corpus sample: code"], horizontal=True, key="source")
    if source == "my text":
        text = st.text_area("Text", DEFAULT_PROMPT, key="text")
    else:
        domain = source.split(": ")[1]
        i = st.number_input("Sample", 0, 31, 0, key="sample")
        text = load_texts(domain, 32, seed=0)[i].text[:400]
        st.code(text[:400], language="python" if domain == "code" else None)
    return text, st.checkbox("Prepend <|endoftext|> (position 0 is the sink token)", key="prepend")


def body() -> None:
    st.title("Attention sinks")
    stored = latest_run("sinks")
    if stored is not None:
        with st.expander(f"Stored `sinks` run: {stored.dir.name} (64-text statistics)"):
            show_figure(stored, "sink_rate_by_position")
    spec = pick_model()
    text, prepend = pick_prompt(spec)
    p = sink_probe(spec, text, prepend)
    labels = token_labels(spec, p["tokens"])
    L, H = p["alpha"].shape[:2]
    st.caption(f"{len(labels)} tokens; position 0 holds `{token_texts(model(spec), p['tokens'][:1])[0]}`.")

    left, right = st.columns(2)
    with left:
        st.plotly_chart(figures.alpha_grid(p["alpha"][..., 0]), key="alpha0")
    with right:
        eps = st.slider("ε of Sink_k^ε", 0.05, 0.9, 0.3, 0.05, key="eps")
        rate = sink_rate(torch.from_numpy(p["alpha"])[None], eps)
        st.plotly_chart(figures.sink_by_position({"this prompt": rate}, eps), key="sink_rate")

    st.subheader("One head")
    c1, c2 = st.columns(2)
    layer = c1.number_input("Layer", 0, L - 1, min(L - 1, L // 2), key="layer")
    head = c2.number_input("Head", 0, H - 1, 0, key="head")
    st.plotly_chart(figures.heatmap(p["pattern"][layer, head], f"Attention pattern, layer {layer} head {head}", "key", "query",
                                    x=labels, y=labels, zmin=0, zmax=1, zlabel="attention"), key="pattern")

    left, right = st.columns(2)
    with left:
        st.plotly_chart(figures.norms_by_position(p["wov"], "‖W_O v‖ by position (mean over heads)", "‖W_O v‖"), key="wov")
    with right:
        st.plotly_chart(figures.norms_by_position(p["resid"], "‖resid_post‖ by position", "‖resid‖"), key="resid")

    if model(spec).kind != "toy":
        domains()
        zerotuning(spec, text, prepend, layer, head)


def domains() -> None:
    st.subheader("Active and dormant heads across two domains")
    st.caption("α₀ on 4 prose and 4 code snippets (64 tokens) from the local corpus: a head whose α₀ differs "
               "between domains is dormant (sinks) on one and active on the other.")
    if not st.toggle("Compare domains (8 forward passes)", key="domains"):
        return
    a = domain_alpha0(SMOLLM2)
    c1, c2, c3 = st.columns(3)
    c1.plotly_chart(figures.alpha_grid(a["prose"], "α₀ on prose"), key="alpha_prose")
    c2.plotly_chart(figures.alpha_grid(a["code"], "α₀ on code"), key="alpha_code")
    diff = a["prose"] - a["code"]
    c3.plotly_chart(figures.heatmap(diff, "α₀(prose) − α₀(code)", "head", "layer", zmin=-1, zmax=1, colorscale="RdBu",
                                    zlabel="Δα₀"), key="alpha_diff")
    l, h = np.unravel_index(np.abs(diff).argmax(), diff.shape)
    st.markdown(f"Most domain-selective head: **L{l}H{h}** (α₀ prose {a['prose'][l, h]:.2f}, code {a['code'][l, h]:.2f}).")


def zerotuning(spec: str, text: str, prepend: bool, layer: int, head: int) -> None:
    from interp.interventions import kl_rows, scale_initial_attention

    st.subheader("ZeroTuning: scale this head's attention to position 0")
    gamma = st.select_slider("γ", [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0], 2.0, key="gamma")
    m = model(spec)
    tokens = prompt_tokens(spec, text, prepend)
    from interp.hooks import run

    name = f"blocks.{layer}.attn.hook_pattern"
    clean_logits, clean = run(m, tokens, capture=[name])
    logits, scaled = run(m, tokens, capture=[name], patch=scale_initial_attention(gamma, [layer], [head], model=m))
    before, after = clean[name][0, head, :, 0], scaled[name][0, head, :, 0]  # [q]
    p_log, q_log = clean_logits[0, -1:].float().log_softmax(-1), logits[0, -1:].float().log_softmax(-1)  # [1, d_vocab]
    kl = kl_rows(p_log, q_log)[0].item()
    p, q = p_log[0].exp(), q_log[0].exp()
    c1, c2 = st.columns(2)
    c1.plotly_chart(figures.lines({"clean": before, f"γ = {gamma}": after}, f"L{layer}H{head}: attention to position 0 by query",
                                  "query position", "α to key 0"), key="zt_alpha")
    top = q.topk(8)
    c2.markdown(f"KL(clean ‖ scaled) of the next-token distribution: **{kl:.4f}** nats")
    c2.dataframe({"next token": token_texts(m, top.indices), "p (scaled)": top.values.numpy().round(4),
                  "p (clean)": p[top.indices].numpy().round(4)}, hide_index=True)


page(body)
