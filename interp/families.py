"""Where each TransformerLens hook name lives in an HF model, one declarative table per family.

The nnsight backend (`interp.hooks`) reads and writes HF modules' inputs and outputs; a table maps each
TransformerLens name (as TransformerBridge names it) to one module site and says how to reshape it.
Every name in a table is checked against the bridge on a tiny random model of its family
(tests/test_families.py, max abs diff <= 1e-4); a name the bridge has and no table lists stays
transformer_lens-only. Tables list their sites in the order the HF model computes them (layer by layer),
which is the order the nnsight backend visits them.

The attention scores and pattern live inside each family's `eager_attention_forward`, reached through
nnsight's `.source` (HF models are loaded with attn_implementation="eager"): `hook_attn_scores` is the
softmax input, after scaling, Gemma-2's soft-capping and the causal / sliding-window mask; `hook_pattern`
its output. The rotated queries and keys (`hook_rot_q` / `hook_rot_k`) are the two outputs of the
`apply_rotary_pos_emb` call in the attention's forward: HF's own rotation, read and replaced where HF
computes it, nothing recomputed.

A norm's `hook_scale` is TransformerLens's divisor sqrt(mean(x²) + eps) of the norm's input x (centred
first for LayerNorm), computed from that input with the module's own eps; HF never materialises it
(Llama multiplies by rsqrt, nn.LayerNorm is one kernel). Patching it rescales the norm's output: every
norm here outputs (x / scale) * w (+ b), so scale -> new gives (out - b) * scale / new + b, which is what
TransformerLens computes with the new scale, up to float rounding.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import torch
from jaxtyping import Float
from torch import Tensor

from interp import InterpError


@dataclass(frozen=True)
class Site:
    path: str  # envoy path; "{l}" is the layer index
    attr: str  # "output" or "input"
    split: str | None = None  # reshape the last dim to (heads, d_head): "q" uses n_heads, "kv" n_kv_heads
    part: int | None = None  # a fused q|k|v projection: which third (0 q, 1 k, 2 v), per head when `interleaved`
    interleaved: bool = False  # GPT-NeoX lays the thirds out per head [head, 3, d_head]; GPT-2 [3, head, d_head]
    transpose: bool = False  # TL's shape is the module's with dims 1 and 2 swapped ([batch, head, pos, d])
    item: int | None = None  # the site returns a tuple (apply_rotary_pos_emb's (q, k)): which element
    norm: str | None = None  # "rms" / "layer": the norm's hook_scale, computed from its input (see above)
    positions: bool = False  # the module sees positions only (output [1, pos, d]): TL repeats it over the batch


def _softmax(attn: str) -> str:  # "{fn}": the calls from the attention's forward to the softmax, see `attention_fn`
    return attn + ".source{fn}.nn_functional_softmax_0"


def _rotary(attn: str, item: int) -> Site:  # item 0: hook_rot_q, 1: hook_rot_k ([batch, head, pos, d_head] in HF)
    return Site(attn + ".source.apply_rotary_pos_emb_0", "output", item=item, transpose=True)


def _scale(norm: str, kind: str = "rms") -> Site:
    return Site(norm, "input", norm=kind)


def _with(base: dict[str, Site], after: dict[str, dict[str, Site]]) -> dict[str, Site]:
    """`base` with the sites in after[name] inserted right after `name`: a table's order is execution order."""
    out = {}
    for name, s in base.items():
        out[name] = s
        out.update(after.get(name, {}))
    return out


# Llama, Mistral, Qwen2 (SmolLM2 is a Llama): pre-norm, separate q/k/v projections, gated MLP.
_L = "model.layers.{l}"
_A = _L + ".self_attn"
LLAMA = {
    "hook_embed": Site("model.embed_tokens", "output"),
    "blocks.{l}.hook_resid_pre": Site(_L, "input"),
    "blocks.{l}.ln1.hook_scale": _scale(_L + ".input_layernorm"),
    "blocks.{l}.ln1.hook_out": Site(_L + ".input_layernorm", "output"),
    "blocks.{l}.attn.hook_q": Site(_A + ".q_proj", "output", "q"),
    "blocks.{l}.attn.hook_k": Site(_A + ".k_proj", "output", "kv"),
    "blocks.{l}.attn.hook_v": Site(_A + ".v_proj", "output", "kv"),
    "blocks.{l}.attn.hook_rot_q": _rotary(_A, 0),
    "blocks.{l}.attn.hook_rot_k": _rotary(_A, 1),
    "blocks.{l}.attn.hook_attn_scores": Site(_softmax(_A), "input"),
    "blocks.{l}.attn.hook_pattern": Site(_softmax(_A), "output"),
    "blocks.{l}.attn.hook_z": Site(_A + ".o_proj", "input", "q"),
    "blocks.{l}.hook_attn_out": Site(_A + ".o_proj", "output"),
    "blocks.{l}.hook_resid_mid": Site(_L + ".post_attention_layernorm", "input"),
    "blocks.{l}.ln2.hook_scale": _scale(_L + ".post_attention_layernorm"),
    "blocks.{l}.ln2.hook_out": Site(_L + ".post_attention_layernorm", "output"),
    "blocks.{l}.mlp.hook_pre": Site(_L + ".mlp.gate_proj", "output"),
    "blocks.{l}.mlp.hook_pre_linear": Site(_L + ".mlp.up_proj", "output"),
    "blocks.{l}.mlp.hook_post": Site(_L + ".mlp.down_proj", "input"),
    "blocks.{l}.hook_mlp_out": Site(_L + ".mlp", "output"),
    "blocks.{l}.hook_resid_post": Site(_L, "output"),
    "ln_final.hook_scale": _scale("model.norm"),
    "ln_final.hook_out": Site("model.norm", "output"),
    "hook_unembed": Site("lm_head", "output"),
}

# Qwen3: Llama plus an RMSNorm on each head's query and key, applied before the transpose (module
# output [batch, pos, head, d_head]; the bridge's hook_q_normed is [batch, head, pos, d_head]).
QWEN3 = _with(LLAMA, {
    "blocks.{l}.attn.hook_q": {"blocks.{l}.attn.hook_q_normed": Site(_A + ".q_norm", "output", transpose=True)},
    "blocks.{l}.attn.hook_k": {"blocks.{l}.attn.hook_k_normed": Site(_A + ".k_norm", "output", transpose=True)},
})

# Gemma-2: Llama's projections and gated MLP, plus a norm after the attention and after the MLP: the
# bridge's hook_attn_out / hook_mlp_out are those norms' outputs (what is added to the residual),
# attn.hook_out / mlp.hook_out the raw o_proj / MLP outputs; ln2 is pre_feedforward_layernorm. The
# embedding module multiplies by sqrt(d_model) itself, so hook_embed is the scaled embedding.
GEMMA2 = {
    "hook_embed": Site("model.embed_tokens", "output"),
    "blocks.{l}.hook_resid_pre": Site(_L, "input"),
    "blocks.{l}.ln1.hook_scale": _scale(_L + ".input_layernorm"),
    "blocks.{l}.ln1.hook_out": Site(_L + ".input_layernorm", "output"),
    "blocks.{l}.attn.hook_q": Site(_A + ".q_proj", "output", "q"),
    "blocks.{l}.attn.hook_k": Site(_A + ".k_proj", "output", "kv"),
    "blocks.{l}.attn.hook_v": Site(_A + ".v_proj", "output", "kv"),
    "blocks.{l}.attn.hook_rot_q": _rotary(_A, 0),
    "blocks.{l}.attn.hook_rot_k": _rotary(_A, 1),
    "blocks.{l}.attn.hook_attn_scores": Site(_softmax(_A), "input"),  # soft-capped, then masked
    "blocks.{l}.attn.hook_pattern": Site(_softmax(_A), "output"),
    "blocks.{l}.attn.hook_z": Site(_A + ".o_proj", "input", "q"),
    "blocks.{l}.attn.hook_out": Site(_A + ".o_proj", "output"),
    "blocks.{l}.ln1_post.hook_scale": _scale(_L + ".post_attention_layernorm"),
    "blocks.{l}.hook_attn_out": Site(_L + ".post_attention_layernorm", "output"),
    "blocks.{l}.hook_resid_mid": Site(_L + ".pre_feedforward_layernorm", "input"),
    "blocks.{l}.ln2.hook_scale": _scale(_L + ".pre_feedforward_layernorm"),
    "blocks.{l}.ln2.hook_out": Site(_L + ".pre_feedforward_layernorm", "output"),
    "blocks.{l}.mlp.hook_pre": Site(_L + ".mlp.gate_proj", "output"),
    "blocks.{l}.mlp.hook_pre_linear": Site(_L + ".mlp.up_proj", "output"),
    "blocks.{l}.mlp.hook_post": Site(_L + ".mlp.down_proj", "input"),
    "blocks.{l}.mlp.hook_out": Site(_L + ".mlp", "output"),
    "blocks.{l}.ln2_post.hook_scale": _scale(_L + ".post_feedforward_layernorm"),
    "blocks.{l}.hook_mlp_out": Site(_L + ".post_feedforward_layernorm", "output"),
    "blocks.{l}.hook_resid_post": Site(_L, "output"),
    "ln_final.hook_scale": _scale("model.norm"),
    "ln_final.hook_out": Site("model.norm", "output"),
    "hook_unembed": Site("lm_head", "output"),  # before the final logit soft-capping, as on the bridge
}

# Gemma-3 (text): Gemma-2 plus q_norm / k_norm, applied after the transpose ([batch, head, pos, d_head]).
GEMMA3 = _with(GEMMA2, {"blocks.{l}.attn.hook_v": {
    "blocks.{l}.attn.hook_q_normed": Site(_A + ".q_norm", "output"),
    "blocks.{l}.attn.hook_k_normed": Site(_A + ".k_norm", "output"),
}})

# GPT-2: Conv1D projections, q|k|v fused in c_attn (output [batch, pos, 3 * d_model], q first), GELU MLP,
# learned position embeddings (wpe sees the positions only: [1, pos, d_model], added to every row). With
# reorder_and_upcast_attn the softmax is in GPT2Attention's own method (`attention_fn`).
_H = "transformer.h.{l}"
GPT2 = {
    "hook_embed": Site("transformer.wte", "output"),
    "hook_pos_embed": Site("transformer.wpe", "output", positions=True),
    "blocks.{l}.hook_resid_pre": Site(_H, "input"),
    "blocks.{l}.ln1.hook_scale": _scale(_H + ".ln_1", "layer"),
    "blocks.{l}.ln1.hook_out": Site(_H + ".ln_1", "output"),
    "blocks.{l}.attn.hook_q": Site(_H + ".attn.c_attn", "output", "q", part=0),
    "blocks.{l}.attn.hook_k": Site(_H + ".attn.c_attn", "output", "q", part=1),
    "blocks.{l}.attn.hook_v": Site(_H + ".attn.c_attn", "output", "q", part=2),
    "blocks.{l}.attn.hook_attn_scores": Site(_softmax(_H + ".attn"), "input"),
    "blocks.{l}.attn.hook_pattern": Site(_softmax(_H + ".attn"), "output"),
    "blocks.{l}.attn.hook_z": Site(_H + ".attn.c_proj", "input", "q"),
    "blocks.{l}.hook_attn_out": Site(_H + ".attn.c_proj", "output"),
    "blocks.{l}.hook_resid_mid": Site(_H + ".ln_2", "input"),
    "blocks.{l}.ln2.hook_scale": _scale(_H + ".ln_2", "layer"),
    "blocks.{l}.ln2.hook_out": Site(_H + ".ln_2", "output"),
    "blocks.{l}.mlp.hook_pre": Site(_H + ".mlp.c_fc", "output"),
    "blocks.{l}.mlp.hook_post": Site(_H + ".mlp.c_proj", "input"),
    "blocks.{l}.hook_mlp_out": Site(_H + ".mlp", "output"),
    "blocks.{l}.hook_resid_post": Site(_H, "output"),
    "ln_final.hook_scale": _scale("transformer.ln_f", "layer"),
    "ln_final.hook_out": Site("transformer.ln_f", "output"),
    "hook_unembed": Site("lm_head", "output"),
}

# GPT-NeoX / Pythia: q|k|v fused in query_key_value with each head's three parts side by side (output
# [batch, pos, head * 3 * d_head]); hook_q / hook_k are before the (partial) rotary embedding. HF rotates
# them in apply_rotary_pos_emb as Llama does, but TransformerBridge fires no hook_rot_q / hook_rot_k for
# GPT-NeoX, and a name the bridge lacks exists on neither backend (`hooks.hook_names` lists the bridge's).
# Attention and MLP read the same residual (use_parallel_residual), so there is no hook_resid_mid; ln2 is
# post_attention_layernorm, applied to the block's input.
_N = "gpt_neox.layers.{l}"
NEOX = {
    "hook_embed": Site("gpt_neox.embed_in", "output"),
    "blocks.{l}.hook_resid_pre": Site(_N, "input"),
    "blocks.{l}.ln1.hook_scale": _scale(_N + ".input_layernorm", "layer"),
    "blocks.{l}.ln1.hook_out": Site(_N + ".input_layernorm", "output"),
    "blocks.{l}.attn.hook_q": Site(_N + ".attention.query_key_value", "output", "q", part=0, interleaved=True),
    "blocks.{l}.attn.hook_k": Site(_N + ".attention.query_key_value", "output", "q", part=1, interleaved=True),
    "blocks.{l}.attn.hook_v": Site(_N + ".attention.query_key_value", "output", "q", part=2, interleaved=True),
    "blocks.{l}.attn.hook_attn_scores": Site(_softmax(_N + ".attention"), "input"),
    "blocks.{l}.attn.hook_pattern": Site(_softmax(_N + ".attention"), "output"),
    "blocks.{l}.attn.hook_z": Site(_N + ".attention.dense", "input", "q"),
    "blocks.{l}.hook_attn_out": Site(_N + ".attention.dense", "output"),
    "blocks.{l}.ln2.hook_scale": _scale(_N + ".post_attention_layernorm", "layer"),
    "blocks.{l}.ln2.hook_out": Site(_N + ".post_attention_layernorm", "output"),
    "blocks.{l}.mlp.hook_pre": Site(_N + ".mlp.dense_h_to_4h", "output"),
    "blocks.{l}.mlp.hook_post": Site(_N + ".mlp.dense_4h_to_h", "input"),
    "blocks.{l}.hook_mlp_out": Site(_N + ".mlp", "output"),
    "blocks.{l}.hook_resid_post": Site(_N, "output"),
    "ln_final.hook_scale": _scale("gpt_neox.final_layer_norm", "layer"),
    "ln_final.hook_out": Site("gpt_neox.final_layer_norm", "output"),
    "hook_unembed": Site("lm_head", "output"),
}

# HF config.model_type -> table.
FAMILIES: dict[str, dict[str, Site]] = {
    "llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA, "qwen3": QWEN3,
    "gemma2": GEMMA2, "gemma3_text": GEMMA3, "gpt2": GPT2, "gpt_neox": NEOX,
}


def model_type(hf_module) -> str | None:
    return getattr(getattr(hf_module, "config", None), "model_type", None)


def table(hf_module, who: str = "this model") -> dict[str, Site]:
    """The site table of an HF model's family; an unmapped family is an InterpError naming the mapped ones."""
    kind = model_type(hf_module)
    if kind not in FAMILIES:
        raise InterpError(
            f"The nnsight backend maps hook names for these HF model families (config.model_type): "
            f"{', '.join(sorted(FAMILIES))}; {who} is {kind!r}. Use the transformer_lens backend for it "
            "(the default: drop backend=\"nnsight\" / --backend nnsight)."
        )
    return FAMILIES[kind]


def site(sites: dict[str, Site], name: str) -> tuple[Site, int | None] | None:
    """The site of TransformerLens hook `name` and its layer, or None when the table has no such name."""
    head, _, rest = name.partition(".")
    if head == "blocks" and rest.partition(".")[0].isdigit():
        layer, _, key = rest.partition(".")
        s = sites.get("blocks.{l}." + key)
        return (s, int(layer)) if s else None
    s = sites.get(name)
    return (s, None) if s else None


def execution_key(sites: dict[str, Site], name: str) -> tuple[float, int]:
    """Sort key putting names in the order the HF model computes them: layer by layer, each layer in the
    table's order (names outside the blocks come before or after them, as listed)."""
    keys = list(sites)
    _, layer = site(sites, name)
    key = name if layer is None else "blocks.{l}." + name.split(".", 2)[2]
    i = keys.index(key)
    first_block = next(j for j, k in enumerate(keys) if k.startswith("blocks."))
    return (layer if layer is not None else (-1 if i < first_block else float("inf")), i)


def softmax_path(sites: dict[str, Site]) -> str:
    """Envoy path (with "{l}" and "{fn}") of the family's attention softmax, which `.source` must reach first."""
    return sites["blocks.{l}.attn.hook_pattern"].path


def attention_fn(hf_module) -> str:
    """The "{fn}" part of the softmax paths: the calls from the attention's forward to the function that
    computes the softmax, normally the eager attention function it gets from `attention_interface`.
    Creating a TransformerBridge for Gemma-2/3 replaces those modules' module-level
    `eager_attention_forward` with a wrapper (it fires hook_rot_q/k for bridged modules, then calls the
    original), for every model in the process from then on; a plain model then reaches the softmax one
    call deeper. GPT-2 with `reorder_and_upcast_attn` computes its attention in its own method
    (`_upcast_and_reordered_attn`: the scores in float32 with the scaling folded into baddbmm)."""
    config = hf_module.config
    if model_type(hf_module) == "gpt2" and getattr(config, "reorder_and_upcast_attn", False):
        return ".self__upcast_and_reordered_attn_0.source"
    home = type(hf_module).__module__
    fn = getattr(sys.modules[home], "eager_attention_forward", None)
    wrapped = fn is not None and fn.__module__ != home
    return ".attention_interface_1.source" + ("._ORIGINAL_EAGER_ATTENTION_FORWARD_0.source" if wrapped else "")


def _heads(s: Site, info) -> tuple[int, int] | None:
    return {"q": (info.n_heads, info.d_head), "kv": (info.n_kv_heads, info.d_head)}.get(s.split)


def to_tl(s: Site, act: Tensor, info, batch: int = 1) -> Tensor:
    """A module's tensor at site `s` in TransformerLens's shape, on a `batch`-row input (a norm's scale:
    `norm_scale`)."""
    if s.positions:
        return act.expand(batch, *act.shape[1:])
    if s.item is not None:
        act = act[s.item]
    heads = _heads(s, info)
    if s.part is not None:  # [..., 3 * heads * d_head] -> [..., heads, d_head]
        n, d = heads
        if s.interleaved:
            return act.unflatten(-1, (n, 3, d))[..., s.part, :]
        return act.unflatten(-1, (3, n, d))[..., s.part, :, :]
    if heads:
        return act.unflatten(-1, heads)
    return act.transpose(1, 2) if s.transpose else act


def from_tl(s: Site, act: Tensor, new: Tensor, info) -> Tensor:
    """The module's tensor at site `s` (currently `act`) with its TransformerLens view replaced by `new`
    (a norm's scale: `rescale_norm`)."""
    if s.item is not None:
        items = list(act)
        items[s.item] = from_tl(replace(s, item=None), items[s.item], new, info)
        return tuple(items)
    if s.part is not None:
        n, d = _heads(s, info)
        dim = -2 if s.interleaved else -3
        parts = list(act.unflatten(-1, (n, 3, d) if s.interleaved else (3, n, d)).unbind(dim))
        parts[s.part] = new.to(act)
        return torch.stack(parts, dim).flatten(-3)
    if _heads(s, info):
        return new.flatten(-2)
    return new.transpose(1, 2) if s.transpose else new


def _eps(norm: torch.nn.Module) -> float:
    return norm.variance_epsilon if hasattr(norm, "variance_epsilon") else norm.eps  # Llama/Qwen; Gemma, LayerNorm


def norm_scale(s: Site, norm: torch.nn.Module, x: Tensor) -> Float[Tensor, "batch pos 1"]:
    """TransformerLens's hook_scale of `norm` (site `s`) on input x: sqrt(mean(x²) + eps), x centred for
    LayerNorm, in float32 as TransformerLens computes it."""
    x = x.float()
    if s.norm == "layer":
        x = x - x.mean(-1, keepdim=True)
    return (x.pow(2).mean(-1, keepdim=True) + _eps(norm)).sqrt()


def rescale_norm(norm: torch.nn.Module, out: Tensor, scale: Tensor, new: Tensor) -> Tensor:
    """The output `out` of `norm` had its scale been `new` instead of `scale`: (out - b) * scale / new + b."""
    bias = getattr(norm, "bias", None)
    bias = 0.0 if bias is None else bias.float()
    return ((out.float() - bias) * (scale / new.float()) + bias).to(out.dtype)


# ------------------------------------------------------------------------------ weights, TL layout


def out_proj(hf_module, layer: int, info) -> Float[Tensor, "head d_head d_model"]:
    """Per-head attention output matrix W_O of `layer`, TransformerLens layout, detached: the weight of the
    module whose input is hook_z. nn.Linear stores [d_model, heads * d_head]; GPT-2's Conv1D the transpose."""
    from transformers.pytorch_utils import Conv1D

    proj = hf_module.get_submodule(table(hf_module)["blocks.{l}.attn.hook_z"].path.format(l=layer))
    w = proj.weight.detach()
    w = w if isinstance(proj, Conv1D) else w.T  # [heads * d_head, d_model]
    return w.reshape(info.n_heads, info.d_head, info.d_model)


def unembed(hf_module) -> Float[Tensor, "d_model d_vocab"]:
    """The unembedding W_U, TransformerLens layout, detached (the embedding itself where they are tied).
    Gemma-2's final logit soft-capping comes after it, as after hook_unembed."""
    return hf_module.get_submodule(table(hf_module)["hook_unembed"].path).weight.detach().T


def final_norm(hf_module) -> torch.nn.Module:
    """The norm applied after the last block, before the unembedding (the module whose output is
    ln_final.hook_out: `model.norm` for Llama/Qwen/Gemma, `transformer.ln_f` for GPT-2,
    `gpt_neox.final_layer_norm` for NeoX). HF's last hook_resid_post comes before it."""
    kind = model_type(hf_module)
    if kind not in FAMILIES:
        raise InterpError(f"The final norm is known for these HF model families (config.model_type): "
                          f"{', '.join(sorted(FAMILIES))}; this model is {kind!r}.")
    return hf_module.get_submodule(FAMILIES[kind]["ln_final.hook_out"].path)
