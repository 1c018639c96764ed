"""The nnsight backend's per-family tables (interp.families) against TransformerBridge, on tiny random
models of every mapped family built here (no hub): same names, same values, same patches."""

import pytest
import torch
from tiny_models import make_tiny

from interp import InterpError, attention
from interp.families import FAMILIES, out_proj, unembed
from interp.hooks import HookNameError, capture, hook_names, run
from interp.models import load_model

MAPPED = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "gpt2", "gpt2_reorder", "gpt_neox"]
T = 12  # > the sliding window (4) of Mistral's layers and Gemma's layer 0
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Attention sinks: the first token takes the mass."]
# Names every family exposes on nnsight (GPT-NeoX has no resid_mid: attention and MLP read the same residual).
CORE = ["hook_embed", "ln_final.hook_scale", "ln_final.hook_out", "hook_unembed"] + [
    f"blocks.{l}.{h}" for l in (0, 1) for h in
    ("hook_resid_pre", "ln1.hook_scale", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_attn_scores",
     "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "ln2.hook_scale", "mlp.hook_pre", "mlp.hook_post",
     "hook_mlp_out", "hook_resid_post")]
ROTATED = [f"blocks.{l}.attn.hook_rot_{x}" for l in (0, 1) for x in "qk"]  # the rotary families but GPT-NeoX
# Sites that are more than a module's tensor reshaped, each patched alone below: a norm's scale (computed from
# the norm's input; nnsight patches it by rescaling the output), the rotated q / k (a tuple inside the
# attention's forward), GPT-2's position embedding (one [1, pos] row that HF broadcasts over the batch).
DERIVED = ["hook_pos_embed", "blocks.0.ln1.hook_scale", "blocks.1.ln2.hook_scale", "blocks.0.ln1_post.hook_scale",
           "blocks.1.ln2_post.hook_scale", "ln_final.hook_scale", "blocks.0.attn.hook_rot_q", "blocks.1.attn.hook_rot_k"]


def slides(config, layer: int) -> bool:
    """Whether `layer` attends within a sliding window (Mistral: every layer; Gemma: per layer_types)."""
    if config.model_type == "mistral":
        return bool(config.sliding_window)
    return getattr(config, "layer_types", [None] * (layer + 1))[layer] == "sliding_attention"


@pytest.fixture(scope="module", params=MAPPED)
def tiny(request, tmp_path_factory):
    m = load_model(str(make_tiny(tmp_path_factory.mktemp(request.param), request.param)), quiet=True)
    return m, m.to_tokens(TEXTS, T, prepend_sink=True)


def test_every_nnsight_name_matches_the_bridge(tiny):
    m, tokens = tiny
    names = hook_names(m, "nnsight")
    kind = m.module.config.model_type
    expected = CORE + {"gpt2": ["hook_pos_embed"], "gpt_neox": []}.get(kind, ROTATED)
    assert set(expected) <= set(names), sorted(set(expected) - set(names))
    if kind == "gpt_neox":  # it rotates q and k, but TransformerBridge has no hook for them: no name on either backend
        assert not set(ROTATED) & set(hook_names(m))
    tl, nn = capture(m, tokens, names), capture(m, tokens, names, backend="nnsight")
    causal = torch.ones(T, T).tril().bool()
    for name in names:
        a, b = tl[name], nn[name]
        assert a.shape == b.shape, name
        if name.endswith("hook_attn_scores"):  # the masked part is a dtype's minimum on both
            a, b = a[..., causal], b[..., causal]
        assert (a - b).abs().max().item() <= 1e-4, name
    c = m.module.config
    for l in (0, 1):
        if c.model_type in ("mistral", "gemma2", "gemma3_text"):  # Mistral's layers slide, Gemma's layer 0
            far = torch.ones(T, T).tril(-c.sliding_window).bool()  # keys at least a window behind the query
            assert (nn[f"blocks.{l}.attn.hook_pattern"][..., far].max() == 0) == slides(c, l), l


@pytest.mark.filterwarnings("ignore:A forward hook edited hook_scale")  # TransformerBridge says it recomputes the norm
def test_patches_agree_between_backends(tiny):
    m, tokens = tiny
    patch = {"blocks.0.attn.hook_k": lambda k: k * 2.0,
             "blocks.0.attn.hook_attn_scores": lambda s: s * 0.5,
             "blocks.0.attn.hook_v": lambda v: v.index_fill(2, torch.tensor([0]), 0.0),  # zero KV head 0
             "blocks.1.attn.hook_pattern": lambda p: torch.zeros_like(p).index_fill_(-1, torch.tensor([0]), 1.0),
             "blocks.1.hook_resid_post": lambda r: r.flip(-1)}
    if "blocks.0.attn.hook_q_normed" in hook_names(m, "nnsight"):  # Qwen3: runs before hook_k, listed after it
        patch["blocks.0.attn.hook_q_normed"] = lambda q: q.flip(-1)
    keep = ["blocks.0.attn.hook_v", "blocks.1.attn.hook_z"]
    (l_tl, a_tl), (l_nn, a_nn) = (run(m, tokens, capture=keep, patch=patch, backend=b) for b in ("transformer_lens", "nnsight"))
    assert (l_tl - l_nn).abs().max().item() <= 1e-4
    clean = m.forward(tokens)
    assert (l_tl - clean).abs().max() > 0.1 * clean.abs().max()  # the patch did something
    assert a_nn["blocks.0.attn.hook_v"][:, :, 0].abs().max() == 0  # capture sees the patched value
    assert (a_tl["blocks.1.attn.hook_z"] - a_nn["blocks.1.attn.hook_z"]).abs().max().item() <= 1e-4
    for name in [n for n in DERIVED if n in hook_names(m, "nnsight")]:
        patch = {name: lambda a: a.flip(1) * 4}  # other positions' values, scaled
        (l_tl, a_tl), (l_nn, a_nn) = (run(m, tokens, capture=[name], patch=patch, backend=b) for b in ("transformer_lens", "nnsight"))
        assert (l_tl - l_nn).abs().max().item() <= 1e-4, name
        assert (l_tl - clean).abs().max() > 1e-3, name  # the patch did something (the smallest effect is 4e-3)
        assert (a_tl[name] - a_nn[name]).abs().max().item() <= 1e-4, name


def test_sink_metrics_run_on_nnsight_captures(tiny):
    m, tokens = tiny
    stats = attention.sink_stats(m, tokens, backend="nnsight", quiet=True)  # Model.W_O reads the family's out_proj
    assert stats["alpha"].shape == (2, 2, m.info.n_heads, T)
    assert stats["wov_norm"].shape == (2, 2, m.info.n_heads, T) and stats["v_norm"].shape == (2, 2, m.info.n_kv_heads, T)
    summary = attention.summarise_sinks(stats, first_late_layer=1)
    assert 0 <= summary["sink_rate_pos0"] <= 1
    # Δlogit averages the scores of the keys between the sink and the query that the query sees: a sliding
    # window's masked keys are left out, so it is finite on every layer, windowed ones included.
    assert torch.isfinite(summary["delta_logit"]).all()
    acts = capture(m, tokens, ["blocks.1.attn.hook_pattern"], backend="nnsight")
    ent = attention.attention_entropies(acts["blocks.1.attn.hook_pattern"])
    assert all(((0 <= e) & (e <= 1 + 1e-5)).all() for e in ent.values())


def test_the_evicting_kv_cache_keeps_each_layers_own_sliding_window(tiny):
    """The StreamingLLM reference (a real KV cache, evicting per layer type) equals the masked forward on
    models with native sliding windows too: windows below and above Gemma's / Mistral's own (4)."""
    from interp.interventions import attention_window, evicting_cache_logits

    m, tokens = tiny
    for window, sinks in ((3, 1), (6, 2)):
        masked, _ = run(m, tokens, patch=attention_window(m, window, sinks))
        assert (evicting_cache_logits(m, tokens, window, sinks) - masked).abs().max() < 1e-4


def test_out_proj_and_unembed_are_the_bridges(tiny):
    m, tokens = tiny
    W_O = torch.stack([out_proj(m.module, l, m.info) for l in range(m.info.n_layers)])
    assert W_O.shape == (2, m.info.n_heads, m.info.d_head, m.info.d_model) and not W_O.requires_grad
    assert (W_O - m.tl.W_O).abs().max() == 0
    W_U = unembed(m.module)
    assert W_U.shape == (m.info.d_model, m.info.d_vocab) and (W_U - m.tl.W_U).abs().max() == 0
    # hook_z @ W_O (+ bias) is the attention output before any post-attention norm; ln_final @ W_U the logits' input.
    acts = capture(m, tokens, ["blocks.1.attn.hook_z", "blocks.1.attn.hook_out", "ln_final.hook_out", "hook_unembed"])
    bias = m.module.get_submodule(FAMILIES[m.module.config.model_type]["blocks.{l}.attn.hook_z"].path.format(l=1)).bias
    out = torch.einsum("bphd,hdm->bpm", acts["blocks.1.attn.hook_z"], W_O[1]) + (0 if bias is None else bias)
    assert (out - acts["blocks.1.attn.hook_out"]).abs().max().item() <= 1e-4
    assert (acts["ln_final.hook_out"] @ W_U - acts["hook_unembed"]).abs().max().item() <= 1e-4
    if m.module.config.tie_word_embeddings:
        assert W_U.data_ptr() == m.module.get_input_embeddings().weight.data_ptr()


def test_a_bridge_only_name_says_where_it_lives(tiny):
    m, tokens = tiny
    with pytest.raises(HookNameError, match="exists on the transformer_lens backend"):
        capture(m, tokens, ["blocks.0.ln1.hook_normalized"], backend="nnsight")


def test_an_unmapped_family_works_on_transformer_lens_and_says_so_for_nnsight(tmp_path):
    m = load_model(str(make_tiny(tmp_path, "opt")), quiet=True)
    tokens = m.to_tokens(TEXTS, T)
    for call in (lambda: capture(m, tokens, ["blocks.0.hook_resid_post"], backend="nnsight"),
                 lambda: hook_names(m, "nnsight"), lambda: out_proj(m.module, 0, m.info)):
        with pytest.raises(InterpError, match=r"gpt2, gpt_neox, llama.*'opt'\. Use the transformer_lens backend"):
            call()
    assert capture(m, tokens, ["blocks.0.hook_resid_post"])["blocks.0.hook_resid_post"].shape == (2, T, 32)
