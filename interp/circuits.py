"""Attribution graphs from per-layer transcoders: circuit-tracer's algorithm (Ameisen et al. 2025), here.

    graph = attribute_graph(model, "The capital of France is", transcoders)   # transcoders: {layer: SAE}
    kept = prune(graph)                                                        # node 0.8, edge 0.98
    save_graph(graph, "graphs/france.json")                                    # circuit-tracer's JSON
    replacement_score(graph), completeness_score(graph)

Local replacement model (one prompt): a real forward records every layer's MLP input and output, every
attention pattern and every norm's scale (`record`). The replacement forward (`replacement_forward`) puts
the recorded patterns and scales back as constants, so each layer is linear in the residual stream, and
writes at each MLP output

    live:    (mask ⊙ pre(x)) @ W_dec + b_dec + x @ W_skip.T + error      x = the MLP input of this forward
    direct:  x @ W_skip.T + b_dec + writes                              writes = Σ a_s W_dec[s] + error, frozen

with error = real MLP output − transcoder(real MLP input), so both reproduce the real logits. `live` freezes
each feature's nonlinearity (its active set `mask`; an active feature's activation is its pre-activation);
`direct` is what the graph's edges are derivatives of: gradients reach a write only through the residual
stream, the frozen attention's OV paths and the skip paths, never through another feature.

Nodes, in circuit-tracer's order: the selected active features (sorted by layer, position, feature), the
error nodes (layer-major: layer · n_pos + pos), the token embeddings (per position), the logit targets.
`graph.adjacency_matrix[t, s]` is the direct effect of source s on target t (rows targets, columns sources,
circuit-tracer's convention): a_s · (s's decoder vector → t's input direction), the gradient of t's value at
s's write site dotted with what s writes there (a_s W_dec[s], the error vector, the token embedding).
A target's value is a feature's pre-activation (= its activation, when active) or a logit demeaned over the
vocabulary (the target direction is W_U[:, v] − mean_v' W_U[:, v']), and it is exactly linear:

    graph.values[t] = graph.adjacency_matrix[t].sum() + graph.bias[t]       (all active features kept)

The constant `bias` holds, for a feature target t at layer l: b_enc[t] − W_enc[t] · b_in (the encoder's
bias; b_in is the transcoder's fixed input centre) plus each earlier layer's b_dec carried to t through the
frozen linear model (Σ_{l' < l, p'} ∂value/∂write(l', p') · b_dec(l')); for a logit only the b_dec part.
Llama and Gemma-3 have no attention, norm or unembedding biases, so nothing else is constant. circuit-tracer
drops these constants (they are no node); here they are kept beside the graph.

Rows come from batched backward passes (`batch_size` targets per pass): one forward of the direct model
with grad, then `torch.autograd.grad(..., is_grads_batched=True)` with each target's direction (W_enc[t],
or the demeaned unembedding column) injected in its own batch row at its input site, as circuit-tracer
injects them in the rows of a batched forward. When more features are active than `max_feature_nodes`, the
logit rows come first and features are then visited in order of their influence on the logits, re-ranked
every `update_interval` batches (circuit-tracer's scheme).

Differences from circuit-tracer: position 0 (BOS) keeps its features and error (circuit-tracer zeroes them,
which leaves its graph incomplete at position 0); a layer with no transcoder is one error node per position
(its whole MLP output); the prompt is used as given (no BOS is prepended unless the model needs one).
Supported: HF Llama (SmolLM2) and Gemma-3, in float32. Pruning, scores and the JSON: `interp.circuits_prune`.

Measured (CPU, one torch thread): SmolLM2-135M, 10 tokens, 30 random skip transcoders (d_sae 4608, k 32):
9,600 active features, 7,500 kept, 10 logits: 33 s (backward passes ~26 s, feature ranking ~3 s); prune 5 s.
On SmolLM2 and Gemma-3-270m the replacement model's logits match the real ones to 2e-5 (logits up to 27)
and values = Σ edges + bias to 8e-6, every feature kept.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import InterpError, families
from interp.attribution import frozen
from interp.hooks import hook_shapes, run
from interp.models import Model
from interp.sae.models import SAE

FAMILIES = ("llama", "gemma3_text")  # HF model_type values the replacement model is written and tested for
EMBED_SITE = "blocks.0.hook_resid_pre"  # where the token embeddings enter the residual stream
FINAL_SITE = "unembed.hook_in"  # the final norm's output: logit directions are injected here


@dataclass
class Recording:
    """What one real forward leaves for the replacement model (batch dimension dropped unless noted)."""

    tokens: Int[Tensor, " pos"]
    logits: Float[Tensor, "pos d_vocab"]
    embed: Float[Tensor, "pos d_model"]  # what the embedding writes into the residual stream
    mlp_in: dict[int, Tensor]  # layer -> [pos, d_in], each transcoder's input
    mlp_out: list[Tensor]  # per layer [pos, d_model], what the MLP writes into the residual stream
    frozen: dict[str, Tensor]  # hook name -> recorded pattern / norm scale, batch kept ([1, ...])
    acts: dict[int, Tensor] = field(default_factory=dict)  # layer -> [pos, d_sae], 0 where inactive
    errors: list[Tensor] = field(default_factory=list)  # per layer [pos, d_model]: mlp_out − transcoder(mlp_in)
    writes: list[Tensor] = field(default_factory=list)  # per layer [pos, d_model]: Σ a W_dec + error


@dataclass
class Graph:
    """An attribution graph; node order [features, errors, tokens, logits] (see the module docstring)."""

    prompt: str
    tokens: Int[Tensor, " pos"]
    token_strs: list[str]  # each token decoded alone
    n_layers: int
    active_features: Int[Tensor, "n_active 3"]  # (layer, pos, feature) of every active feature
    activation_values: Float[Tensor, " n_active"]
    selected_features: Int[Tensor, " n_features"]  # indices into active_features: the feature nodes
    logit_tokens: Int[Tensor, " n_logits"]
    logit_strs: list[str]
    logit_probabilities: Float[Tensor, " n_logits"]
    adjacency_matrix: Float[Tensor, "n_nodes n_nodes"]  # [target, source]
    values: Float[Tensor, " n_nodes"]  # features: activation; logits: demeaned logit; errors, tokens: 0 (no inputs)
    bias: Float[Tensor, " n_nodes"]  # the constant part of each value (see the module docstring)
    model_spec: str = ""
    scan: str | None = None  # the transcoders' name, for the JSON's metadata
    seconds: float = 0.0

    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return len(self.selected_features)

    @property
    def n_logits(self) -> int:
        return len(self.logit_tokens)

    def error_index(self, layer: int, pos: int) -> int:
        return self.n_features + layer * self.n_pos + pos

    def token_index(self, pos: int) -> int:
        return self.n_features + self.n_layers * self.n_pos + pos

    def logit_index(self, i: int) -> int:
        return self.n_features + (self.n_layers + 1) * self.n_pos + i


# ------------------------------------------------------------------------------------------ checks


def check_model(model: Model) -> None:
    kind = families.model_type(model.module) if model.kind == "hf" else None
    if kind not in FAMILIES:
        raise InterpError(
            f"Attribution graphs are built for HF Llama-family (SmolLM2) and Gemma-3 models; {model.spec} is "
            f"{kind or 'a toy HookedTransformer'}. Load one of those (e.g. load_model('smollm2-135m'))."
        )
    if model.dtype != "float32":
        raise InterpError(f"{model.spec} is loaded in {model.dtype}; attribution graphs are exact only in float32: "
                          "load it with dtype='float32'.")
    if getattr(model.module.config, "final_logit_softcapping", None):
        raise InterpError(f"{model.spec} soft-caps its logits, which the linear replacement model cannot carry: "
                          "use a model without final_logit_softcapping.")


def _hooks_of(model: Model, layer: int) -> tuple[set[str], set[str]]:
    """The hooks a transcoder at `layer` may read (the MLP's input) and write (what is added to the residual)."""
    ins = {f"blocks.{layer}.ln2.hook_out", f"blocks.{layer}.mlp.hook_in"}
    outs = {f"blocks.{layer}.hook_mlp_out"}
    if families.model_type(model.module) == "llama":  # no post-MLP norm: the MLP's output is what is added
        outs.add(f"blocks.{layer}.mlp.hook_out")
    return ins, outs


def check_transcoders(model: Model, transcoders: dict[int, SAE]) -> dict[int, SAE]:
    """Each transcoder replaces one layer's MLP: it reads that MLP's input, predicts its output, widths match."""
    if not transcoders:
        raise InterpError("No transcoders given: pass {layer: SAE} with transcoder=True for the layers to replace.")
    shapes, L = hook_shapes(model), model.info.n_layers
    for layer, tc in transcoders.items():
        if not isinstance(layer, int) or not 0 <= layer < L:
            raise InterpError(f"Transcoder key {layer!r} is not a layer of {model.spec} (0..{L - 1}): key each by its layer.")
        cfg = tc.cfg
        if not cfg.transcoder:
            raise InterpError(f"The SAE for layer {layer} is not a transcoder (transcoder=False): an attribution graph "
                              "needs transcoders that predict each MLP's output from its input.")
        ins, outs = _hooks_of(model, layer)
        if cfg.hook_name not in ins or cfg.hook_name_out not in outs:
            raise InterpError(
                f"The layer-{layer} transcoder reads {cfg.hook_name!r} and writes {cfg.hook_name_out!r}; the graph "
                f"replaces that layer's MLP, so it must read {sorted(ins)[0]!r} and write {sorted(outs)[0]!r}. "
                "Train it on those hooks (or fix its cfg.hook_name / hook_name_out).")
        for name, width, what in ((cfg.hook_name, cfg.d_in, "d_in"), (cfg.hook_name_out, cfg.width_out, "d_out")):
            if shapes[name][-1] != str(width):
                raise InterpError(f"The layer-{layer} transcoder has {what} = {width} but {name} of {model.spec} has "
                                  f"width {shapes[name][-1]}: it was trained on another model; use one trained on this one.")
    return dict(sorted(transcoders.items()))


def prompt_tokens(model: Model, prompt: str | Sequence[int] | Tensor) -> Int[Tensor, " pos"]:
    """Token ids of a prompt: text through `model.prompt` (its BOS first when the model needs one), ids as given."""
    if isinstance(prompt, str):
        ids = torch.tensor(model.prompt(prompt), dtype=torch.long)
    else:
        ids = torch.as_tensor(prompt, dtype=torch.long).reshape(-1)
    if ids.numel() == 0:
        raise InterpError("The prompt has no tokens: give a non-empty text or token list.")
    model.check_length(ids.numel())
    bad = ids[(ids < 0) | (ids >= model.info.d_vocab)]
    if bad.numel():
        raise InterpError(f"Token ids {bad[:5].tolist()} are outside {model.spec}'s vocabulary 0..{model.info.d_vocab - 1}.")
    return ids


def target_tokens(model: Model, target) -> Int[Tensor, " n_targets"]:
    """A target given as a token id, a one-token string or a list of them, as vocabulary ids."""
    out = []
    target = target.tolist() if isinstance(target, Tensor) else target
    for t in (target if isinstance(target, (list, tuple)) else [target]):
        if isinstance(t, str):
            ids = model.encode(t)
            if len(ids) != 1:
                raise InterpError(f"The target {t!r} is {len(ids)} tokens of {model.spec}'s vocabulary, not one: "
                                  "give a single token (its text exactly as the tokenizer splits it, or its id).")
            t = ids[0]
        if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < model.info.d_vocab:
            raise InterpError(f"The target {t!r} is not a token of {model.spec}'s vocabulary: give an id in "
                              f"0..{model.info.d_vocab - 1} or a one-token string.")
        out.append(t)
    if not out:
        raise InterpError("The target list is empty: give at least one token, or target=None for the top logits.")
    return torch.tensor(out, dtype=torch.long)


# ------------------------------------------------------------------------------ replacement model


@contextmanager
def _quiet():
    with warnings.catch_warnings():  # the bridge warns when a hook edits a norm's scale: that is the point here
        warnings.filterwarnings("ignore", message="A forward hook edited hook_scale")
        yield


def frozen_names(model: Model) -> list[str]:
    """Every attention pattern and every norm scale (q/k norms and Gemma-3's post-norms included)."""
    return [n for n in hook_shapes(model) if n.endswith(("attn.hook_pattern", "hook_scale"))]


def active_mask(tc: SAE, x: Float[Tensor, "pos d_in"]) -> Float[Tensor, "pos d_sae"]:
    """The transcoder's activations on x (eval mode: batch-independent), dense; 0 where inactive."""
    was = tc.training
    tc.eval()
    try:
        with torch.no_grad():
            return tc.encode(x.float()).dense()
    finally:
        tc.train(was)


def record(model: Model, tokens: Int[Tensor, " pos"], transcoders: dict[int, SAE]) -> Recording:
    """One real forward: logits, embeddings, MLP inputs/outputs, patterns and scales; then each layer's
    activations, error and writes (Σ a W_dec + error, what the feature and error nodes write together)."""
    L = model.info.n_layers
    ins = {l: tc.cfg.hook_name for l, tc in transcoders.items()}
    outs = [transcoders[l].cfg.hook_name_out if l in transcoders else f"blocks.{l}.hook_mlp_out" for l in range(L)]
    names = [EMBED_SITE, *ins.values(), *outs, *frozen_names(model)]
    logits, acts = run(model, tokens[None], capture=names)
    rec = Recording(tokens, logits[0].float(), acts[EMBED_SITE][0], {l: acts[n][0] for l, n in ins.items()},
                    [acts[n][0] for n in outs], {n: acts[n] for n in frozen_names(model)})
    with torch.no_grad():
        for l in range(L):
            tc = transcoders.get(l)
            if tc is None:  # no transcoder: the whole MLP output is this layer's error
                rec.errors.append(rec.mlp_out[l])
                rec.writes.append(rec.mlp_out[l])
                continue
            x = rec.mlp_in[l]
            rec.acts[l] = a = active_mask(tc, x)
            linear = tc.b_dec + tc.skip_out(x)  # [pos, d_model]: what no node writes
            rec.errors.append(rec.mlp_out[l] - (a @ tc.W_dec + linear))
            rec.writes.append(rec.mlp_out[l] - linear)
    return rec


@dataclass
class Forward:
    """A replacement forward's outputs: logits, each transcoder's input and the final norm's output (with
    their autograd graph when run with grad), and the leaves every source writes through."""

    logits: Float[Tensor, "1 pos d_vocab"]
    mlp_in: dict[int, Tensor]  # layer -> [1, pos, d_in]
    final: Float[Tensor, "1 pos d_model"]
    embed: Float[Tensor, "1 pos d_model"]
    writes: list[Tensor]  # per layer [1, pos, d_model]


def replacement_forward(model: Model, rec: Recording, transcoders: dict[int, SAE], live: bool = False,
                        embed: Tensor | None = None, writes: list[Tensor] | None = None, grad: bool = False) -> Forward:
    """The local replacement model's forward (module docstring): patterns and norm scales frozen at `rec`.
    `embed` [pos, d_model] replaces the token embeddings; `writes` (per layer [pos, d_model]) what the nodes
    write at each MLP output: errors only when `live` (the features are recomputed), Σ a W_dec + error when
    not. Defaults: the recorded ones, which reproduce the real logits. With `grad`, embed and writes are
    leaves that require gradients."""
    writes = writes if writes is not None else (rec.errors if live else rec.writes)
    embed_leaf = (rec.embed if embed is None else embed)[None].detach().requires_grad_(grad)
    leaves = [w[None].detach().requires_grad_(grad) for w in writes]
    mlp_in: dict[int, Tensor] = {}
    final: list[Tensor] = []

    def keep_in(layer):
        def hook(act):
            mlp_in[layer] = act
            return act

        return hook

    def mlp_out(layer):
        def hook(act):
            tc = transcoders.get(layer)
            if tc is None:
                return leaves[layer]
            x = mlp_in[layer]  # [1, pos, d_in]; no indexing: a select's backward would copy a zero tensor
            out = tc.b_dec + tc.skip_out(x) + leaves[layer]
            if live:  # the features recomputed from this forward's input, their active sets frozen
                out = out + ((rec.acts[layer] > 0) * tc.pre_acts(x)) @ tc.W_dec
            return out

        return hook

    patch = {n: (lambda act, v=v: v) for n, v in rec.frozen.items()}
    patch[EMBED_SITE] = lambda act: embed_leaf
    for l, tc in transcoders.items():
        patch[tc.cfg.hook_name] = keep_in(l)
    for l in range(model.info.n_layers):
        patch[transcoders[l].cfg.hook_name_out if l in transcoders else f"blocks.{l}.hook_mlp_out"] = mlp_out(l)
    patch[FINAL_SITE] = lambda act: final.append(act) or act
    with _quiet(), frozen(model):
        logits, _ = run(model, rec.tokens[None], patch=patch, grad=grad)
    return Forward(logits, mlp_in, final[0], embed_leaf, leaves)


# ------------------------------------------------------------------------------------------ the graph


@dataclass
class Sources:
    """Every source column: the active features (sorted by layer, pos, feature), then errors, then tokens.
    What each writes is also laid out per write site (layer, pos): K slots, the site's features then its
    error, so one batched product per layer gives every edge from that layer."""

    index: Int[Tensor, "n_active 3"]  # (layer, pos, feature)
    values: Float[Tensor, " n_active"]  # activations
    encoder: Float[Tensor, "n_active d_in"]  # W_enc[s]: its input direction, as a target
    enc_bias: Float[Tensor, " n_active"]  # b_enc[s] − W_enc[s] · b_in
    site_vecs: Float[Tensor, "layer pos K d_model"]  # a_s W_dec[s] for the site's features, its error; 0-padded
    site_cols: Int[Tensor, "layer pos K"]  # each slot's column (−1: padding)
    embed: Float[Tensor, "pos d_model"]
    b_dec: Float[Tensor, "layer d_model"]  # 0 for a layer without a transcoder

    @property
    def n_cols(self) -> int:  # features + errors + tokens
        L, P = self.site_cols.shape[:2]
        return len(self.values) + (L + 1) * P


def sources(rec: Recording, transcoders: dict[int, SAE], n_layers: int) -> Sources:
    (n_pos, d), L = rec.embed.shape, n_layers
    idx, dec, enc, eb, vals = [], [], [], [], []
    b_dec = torch.zeros(L, d)
    with torch.no_grad():
        for l, tc in transcoders.items():
            pos, feat = rec.acts[l].nonzero(as_tuple=True)  # row-major: sorted by pos, then feature
            a = rec.acts[l][pos, feat]
            idx.append(torch.stack([torch.full_like(pos, l), pos, feat], 1))
            vals.append(a)
            dec.append(a[:, None] * tc.W_dec[feat])
            enc.append(tc.W_enc[feat])
            eb.append(tc.b_enc[feat] - tc.W_enc[feat] @ tc.b_center)
            b_dec[l] = tc.b_dec
        index = torch.cat(idx) if idx else torch.zeros(0, 3, dtype=torch.long)
        decoder = torch.cat(dec) if dec else torch.zeros(0, d)
        n = len(index)
        site = index[:, 0] * n_pos + index[:, 1]  # ascending
        count = torch.bincount(site, minlength=L * n_pos)
        K = int(count.max()) + 1 if n else 1
        slot = torch.arange(n) - (count.cumsum(0) - count)[site]  # the feature's place among its site's
        vecs, cols = torch.zeros(L * n_pos, K, d), torch.full((L * n_pos, K), -1)
        vecs[site, slot], cols[site, slot] = decoder, torch.arange(n)
        vecs[:, -1], cols[:, -1] = torch.stack(rec.errors).reshape(L * n_pos, d), n + torch.arange(L * n_pos)
    cat = lambda xs, *shape: torch.cat(xs) if xs else torch.zeros(0, *shape)  # noqa: E731
    return Sources(index, cat(vals), cat(enc, d), cat(eb), vecs.reshape(L, n_pos, K, d), cols.reshape(L, n_pos, K),
                   rec.embed.detach(), b_dec)


def logit_targets(model: Model, rec: Recording, target, max_n_logits: int, desired_logit_prob: float):
    """circuit-tracer's targets: the top logits at the last position until their probabilities reach
    `desired_logit_prob` (at most `max_n_logits`), or the given target tokens; their demeaned directions."""
    last = rec.logits[-1]  # [d_vocab]
    probs = torch.softmax(last, -1)
    if target is None:
        top_p, top = probs.topk(min(max_n_logits, len(probs)))
        ids = top[: int(torch.searchsorted(top_p.cumsum(0), desired_logit_prob)) + 1]
    else:
        ids = target_tokens(model, target)
    W_U = model.W_U.float()  # [d_model, d_vocab]
    vecs = (W_U[:, ids] - W_U.mean(1, keepdim=True)).T  # [n_logits, d_model]
    return ids, probs[ids], vecs, last[ids] - last.mean()


def edge_rows(fwd: Forward, src: Sources, layers: Tensor, positions: Tensor, vecs: Tensor,
              retain: bool = True) -> tuple[Float[Tensor, "batch n_cols"], Float[Tensor, " batch"]]:
    """One batched backward: row b is target b's direct effects from every source column, and the b_dec part
    of its constant. Target b's direction vecs[b] is injected at its input site (layer == n_layers: the final
    norm's output, i.e. a logit) at positions[b], in batch row b."""
    B, L = len(layers), len(fwd.writes)
    outs, grads_in = [], []
    for l in layers.unique().tolist():
        site = fwd.final if l == L else fwd.mlp_in[l]  # [1, pos, d]
        g = torch.zeros(B, *site.shape)  # [batch, 1, pos, d]
        sel = (layers == l).nonzero().squeeze(1)
        g[sel, 0, positions[sel]] = vecs[sel]
        outs.append(site)
        grads_in.append(g)
    got = torch.autograd.grad(outs, [fwd.embed, *fwd.writes], grads_in, retain_graph=retain, allow_unused=True,
                              is_grads_batched=True)
    rows, bias = torch.zeros(B, src.n_cols), torch.zeros(B)
    if got[0] is not None:
        rows[:, -len(src.embed):] = (got[0][:, 0] * src.embed).sum(-1)
    for l, g in enumerate(got[1:]):
        if g is not None:  # [batch, 1, pos, d]: layer l's write sites
            rows_l, bias_l = contract(g[:, 0], src.site_vecs[l], src.b_dec[l])
            cols = src.site_cols[l].flatten()
            rows[:, cols[cols >= 0]] = rows_l[:, cols >= 0]
            bias += bias_l
    return rows, bias


def contract(g: Float[Tensor, "batch pos d_model"], vecs: Float[Tensor, "pos K d_model"], b_dec: Float[Tensor, " d_model"]
             ) -> tuple[Float[Tensor, "batch pos_K"], Float[Tensor, " batch"]]:
    """Edges from one layer's write sites: the gradient there · what each source writes there (its slots), and
    the gradient · b_dec summed over positions."""
    per_site = torch.bmm(g.transpose(0, 1), vecs.transpose(1, 2))  # [pos, batch, K]
    return per_site.transpose(0, 1).reshape(len(g), -1), g.sum(1) @ b_dec


def attribute_graph(model: Model, prompt: str | Sequence[int] | Tensor, transcoders: dict[int, SAE], target=None,
                    max_feature_nodes: int | None = 7500, batch_size: int = 256, max_n_logits: int = 10,
                    desired_logit_prob: float = 0.95, update_interval: int = 4, scan: str | None = None) -> Graph:
    """The attribution graph of `prompt` (text or token ids) through `transcoders` ({layer: transcoder SAE});
    `target`: a token (id or one-token string) or list of them, or None for circuit-tracer's top logits."""
    from interp.circuits_prune import normalize, partial_influence

    t0 = time.perf_counter()
    check_model(model)
    transcoders = check_transcoders(model, transcoders)
    if batch_size < 1 or (max_feature_nodes is not None and max_feature_nodes < 0):
        raise InterpError(f"batch_size ({batch_size}) must be ≥ 1 and max_feature_nodes ({max_feature_nodes}) ≥ 0.")
    tokens = prompt_tokens(model, prompt)
    L, P = model.info.n_layers, len(tokens)
    rec = record(model, tokens, transcoders)
    ids, probs, logit_vecs, logit_values = logit_targets(model, rec, target, max_n_logits, desired_logit_prob)
    src = sources(rec, transcoders, L)
    fwd = replacement_forward(model, rec, transcoders, grad=True)
    n_active, n_logits = len(src.values), len(ids)
    n_keep = min(n_active if max_feature_nodes is None else max_feature_nodes, n_active)
    n_cols = src.n_cols  # features, errors, tokens; logits come last and have no outgoing edges
    total = n_cols + n_logits

    rows = torch.zeros(n_logits + n_keep, total)  # logit rows first, then features in visiting order
    rows_hat = torch.zeros_like(rows) if n_keep < n_active else None  # the same, normalised as they come: ranks
    bias = torch.zeros(n_logits + n_keep)
    row_node = torch.zeros(n_logits + n_keep, dtype=torch.long)  # each row's node index among `total`
    for i in range(0, n_logits, batch_size):
        j = min(i + batch_size, n_logits)
        r, b = edge_rows(fwd, src, torch.full((j - i,), L), torch.full((j - i,), P - 1), logit_vecs[i:j])
        rows[i:j, :n_cols], bias[i:j] = r, b
        if rows_hat is not None:
            rows_hat[i:j, :n_cols] = normalize(r)
        row_node[i:j] = torch.arange(i, j) + n_cols

    visited = torch.zeros(n_active, dtype=torch.bool)
    st = n_logits
    while st < n_logits + n_keep:
        if n_keep == n_active:
            pending = torch.arange(n_active)
        else:
            influence = partial_influence(rows_hat[:st], probs, row_node[:st])[:n_active]
            rank = influence.argsort(descending=True)
            pending = rank[~visited[rank]][:min(update_interval * batch_size, n_logits + n_keep - st)]
            # lowest layers first: a batch's backward pass stops at its highest target's layer
            pending = pending[src.index[pending, 0].argsort(stable=True)]
        for i in range(0, len(pending), batch_size):
            batch = pending[i:i + batch_size]
            layer, pos = src.index[batch, 0], src.index[batch, 1]
            r, b = edge_rows(fwd, src, layer, pos, src.encoder[batch], retain=st + len(batch) < n_logits + n_keep)
            rows[st:st + len(batch), :n_cols], bias[st:st + len(batch)] = r, b + src.enc_bias[batch]
            if rows_hat is not None:
                rows_hat[st:st + len(batch), :n_cols] = normalize(r)
            row_node[st:st + len(batch)] = batch
            visited[batch] = True
            st += len(batch)

    selected = visited.nonzero().squeeze(1)
    cols = torch.cat([selected, torch.arange(n_active, total)])  # unselected features' columns dropped
    n_nodes = n_keep + n_cols - n_active + n_logits
    A = torch.zeros(n_nodes, n_nodes)
    order = row_node.argsort()  # features ascending (= selected order), then logits
    A[:n_keep] = rows[order[:n_keep]][:, cols]
    A[-n_logits:] = rows[order[n_keep:]][:, cols]
    values, consts = torch.zeros(n_nodes), torch.zeros(n_nodes)
    values[:n_keep], values[-n_logits:] = src.values[selected], logit_values
    consts[:n_keep], consts[-n_logits:] = bias[order[:n_keep]], bias[order[n_keep:]]
    decode = lambda i: model.tokenizer.decode([int(i)])  # noqa: E731
    prompt_str = prompt if isinstance(prompt, str) else model.tokenizer.decode(tokens.tolist())
    return Graph(prompt_str, tokens, [decode(t) for t in tokens], L, src.index, src.values, selected, ids,
                 [decode(t) for t in ids], probs, A, values, consts, model.spec, scan, time.perf_counter() - t0)


from interp.circuits_prune import (completeness_score, graph_json, load_graph, prune, replacement_score,  # noqa: E402,F401
                                  save_graph)
