"""Live probes the pages run on a prompt, cached per (model, prompt): plain tensors in, numbers out."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from app.common import model
from app.tokens import visible
from interp import attention
from interp.hooks import run


def prompt_tokens(spec: str, text: str, prepend_sink: bool) -> torch.Tensor:
    m = model(spec)
    ids = m.encode(text)
    if prepend_sink and m.sink_token_id is not None:
        ids = [m.sink_token_id, *ids]
    if len(ids) < 2:
        from interp import InterpError

        raise InterpError("The prompt has fewer than two tokens: write a longer prompt.")
    return torch.tensor([ids])


def token_texts(m, ids) -> list[str]:
    """Each token as the text it stands for (a leading space shows as a space, not as Ġ)."""
    if m.kind == "toy":
        return m.token_strs(ids)
    return [m.tokenizer.decode([int(i)]) for i in ids]


def token_labels(spec: str, ids) -> list[str]:
    """Unique axis labels `i:token` (plotly merges equal category labels), whitespace visible (␣ ⏎)."""
    return [f"{i}:{visible(t)}" for i, t in enumerate(token_texts(model(spec), ids))]


@st.cache_data(show_spinner="Probing…", max_entries=16)
@torch.no_grad()
def sink_probe(spec: str, text: str, prepend_sink: bool) -> dict[str, np.ndarray]:
    """Attention patterns, α per key, ‖W_O v‖ (mean over heads) and ‖resid‖ by position, for every layer."""
    m = model(spec)
    tokens = prompt_tokens(spec, text, prepend_sink)
    L = m.info.n_layers
    logits, acts = run(m, tokens, capture=attention.sink_hook_names(L))
    stats = attention.sink_stats_batch(m, acts)  # each [1, layer, ...]
    pattern = torch.stack([acts[f"blocks.{l}.attn.hook_pattern"][0] for l in range(L)])  # [layer, head, q, k]
    return {"tokens": tokens[0].numpy(), "pattern": pattern.numpy(), "alpha": stats["alpha"][0].numpy(),
            "wov": stats["wov_norm"][0].mean(1).numpy(), "resid": stats["resid_norm"][0].numpy(),
            "probs": logits[0, -1].float().softmax(-1).numpy()}


@st.cache_data(show_spinner="Comparing the two domains…", max_entries=4)
@torch.no_grad()
def domain_alpha0(spec: str, n_texts: int = 4, seq_len: int = 64) -> dict[str, np.ndarray]:
    """α_0 per layer and head on prose and on code snippets of the local corpus."""
    from interp.corpus import load_texts

    m = model(spec)
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(m.info.n_layers)]
    out = {}
    for domain in ("prose", "code"):
        tokens = m.to_tokens([t.text for t in load_texts(domain, n_texts, seed=0)], seq_len)
        _, acts = run(m, tokens, capture=names)
        out[domain] = torch.stack([attention.alpha(acts[n])[..., 0].mean(0) for n in names]).numpy()  # [layer, head]
    return out
