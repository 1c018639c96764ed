"""Bigram-Backcopy (Guo et al. 2024, "Active-Dormant Attention Heads").

A sequence starts with BOS (token 0). The first token is drawn from the non-trigger tokens. After a
non-trigger token x the next token is drawn from a bigram transition P(.|x); after a trigger token
the next token copies the token before the trigger. Triggers are the k most frequent tokens (by the
bigram chain's stationary distribution for a synthetic chain, by corpus frequency for characters).
A copied token is never a trigger (the token before a trigger is always produced by the bigram from a
non-trigger), so triggers never follow each other.

Bigrams:
- "char": a character bigram measured on the docstrings of the local standard library, over its
  `n_chars` most frequent characters (64, like the paper's 65-character Tiny Shakespeare; rarer
  characters are dropped from the text); rows from raw counts.
- "synthetic": a random sparse Markov chain: each token has `fanout` successors with Dirichlet(1)
  weights (seeded).

Choices the paper left open, and ours: the first token is drawn from the non-trigger tokens in
proportion to their frequency; the bigram excess is measured exactly, as KL(P(.|x_t) || model)
averaged over non-trigger positions t >= 1, rather than as a sampled cross-entropy difference.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import InterpError, attention
from interp.corpus import load_texts
from interp.hooks import run as run_hooks
from interp.interventions import zero_heads

BOS = 0


@dataclass
class BBTask:
    """A Bigram-Backcopy task over tokens 0..V (0 is BOS)."""

    P: Float[Tensor, "vocab vocab"]  # transition rows of non-BOS tokens; row/column 0 (BOS) unused
    first: Float[Tensor, " vocab"]  # distribution of the first token (non-triggers only)
    triggers: Int[Tensor, " k"]
    vocab: list[str]

    @property
    def d_vocab(self) -> int:
        return self.P.shape[0]

    @property
    def is_trigger(self) -> Tensor:
        mask = torch.zeros(self.d_vocab, dtype=torch.bool)
        mask[self.triggers] = True
        return mask


def char_task(n_triggers: int = 3, n_chars: int = 64, n_texts: int = 400) -> BBTask:
    """Character bigram from the standard library's docstrings, over its `n_chars` most frequent characters."""
    text = "\n".join(t.text for t in load_texts("prose", n_texts, seed=0, min_chars=200))
    alphabet = sorted(c for c, _ in Counter(text).most_common(n_chars))
    index = {c: i + 1 for i, c in enumerate(alphabet)}
    ids = torch.tensor([index[c] for c in text if c in index])
    V = len(alphabet) + 1
    counts = torch.zeros(V, V)
    counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1), accumulate=True)
    freq = torch.bincount(ids, minlength=V).float()
    return _task(counts, freq, n_triggers, ["<bos>", *alphabet])


def synthetic_task(n_tokens: int = 64, fanout: int = 8, n_triggers: int = 3, seed: int = 0) -> BBTask:
    """A random sparse Markov chain; triggers are the most frequent tokens of its stationary distribution."""
    rng = np.random.default_rng(seed)
    V = n_tokens + 1
    counts = torch.zeros(V, V)
    for x in range(1, V):  # one row per token: setup, not data generation
        succ = torch.from_numpy(rng.choice(n_tokens, size=fanout, replace=False) + 1)
        counts[x, succ] = torch.from_numpy(rng.dirichlet(np.ones(fanout))).float()
    P = counts / counts.sum(1, keepdim=True).clamp(min=1e-12)
    pi = torch.full((V,), 1.0 / n_tokens)
    pi[0] = 0
    for _ in range(500):  # stationary distribution by power iteration
        pi = pi @ P
    return _task(counts, pi, n_triggers, ["<bos>", *(f"t{i}" for i in range(1, V))])


def _task(counts: Tensor, freq: Tensor, n_triggers: int, vocab: list[str]) -> BBTask:
    counts = counts.clone()
    counts[0] = 0
    counts[:, 0] = 0
    freq = freq.clone()
    freq[0] = 0
    triggers = freq.argsort(descending=True)[:n_triggers]
    dead = counts.sum(1) == 0  # a token never followed by anything: let it restart from the first-token law
    P = counts / counts.sum(1, keepdim=True).clamp(min=1e-12)
    first = freq.clone()
    first[triggers] = 0
    first /= first.sum()
    P[dead] = first
    P[0] = first
    return BBTask(P=P, first=first, triggers=triggers, vocab=vocab)


def sample(task: BBTask, batch: int, seq_len: int, generator: torch.Generator) -> Int[Tensor, "batch pos"]:
    """Sequences [BOS, x_1, ..., x_{T-1}]; one vectorised step per position (the chain is sequential)."""
    x = torch.zeros(batch, seq_len, dtype=torch.long)
    x[:, 1] = torch.multinomial(task.first, batch, replacement=True, generator=generator)
    is_trigger = task.is_trigger
    for t in range(1, seq_len - 1):
        nxt = torch.multinomial(task.P[x[:, t]], 1, generator=generator).squeeze(1)
        x[:, t + 1] = torch.where(is_trigger[x[:, t]], x[:, t - 1], nxt)
    return x


def positions(task: BBTask, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean [batch, pos-1] masks of query positions t whose next token is a copy (x_t a trigger)
    and of non-trigger positions t >= 1 (next token from the bigram)."""
    current = tokens[:, :-1]
    trig = task.is_trigger[current]
    non = ~trig
    non[:, 0] = False  # position 0 is BOS: its next token follows the first-token law
    return trig, non


def losses(task: BBTask, logits: Tensor, tokens: Tensor) -> dict[str, float]:
    """Backcopy loss (cross-entropy at trigger positions) and bigram excess (KL to the oracle at
    non-trigger positions)."""
    trig, non = positions(task, tokens)
    logp = logits[:, :-1].float().log_softmax(-1)  # [batch, pos-1, vocab]
    target = tokens[:, 1:]
    backcopy = -logp.gather(-1, target[..., None]).squeeze(-1)[trig].mean()
    oracle = task.P[tokens[:, :-1]][non]  # [n, vocab]
    kl = (oracle * (oracle.clamp(min=1e-30).log() - logp[non])).sum(-1).mean()
    return {"backcopy_loss": backcopy.item(), "bigram_excess": kl.item()}


def probe(model, task: BBTask, tokens: Tensor) -> dict[str, float]:
    """Every metric the claims and the dashboard need, per layer (suffix _L{layer}), head 0."""
    L = model.info.n_layers
    names = [f"blocks.{l}.{h}" for l in range(L) for h in ("attn.hook_v", "attn.hook_attn_scores", "attn.hook_pattern", "hook_resid_post")]
    logits, acts = run_hooks(model, tokens, capture=names)
    out = losses(task, logits, tokens)
    trig, non = positions(task, tokens)
    T = tokens.shape[1]
    q = torch.arange(T - 1)
    for l in range(L):
        A = acts[f"blocks.{l}.attn.hook_pattern"][:, 0, :-1]  # [batch, q (0..T-2), k]
        out[f"attn_bos_nontrigger_L{l}"] = A[..., 0][non].mean().item()
        out[f"attn_bos_trigger_L{l}"] = A[..., 0][trig].mean().item()
        prev = A[:, q[1:], q[1:] - 1]  # [batch, T-2]: attention of query t to key t-1
        out[f"attn_prev_trigger_L{l}"] = prev[trig[:, 1:]].mean().item()
        v = acts[f"blocks.{l}.attn.hook_v"]  # [batch, pos, head, d_head]
        wov = attention.output_value_norms(v, model.W_O(l))[:, 0]  # [batch, pos]
        out[f"wov_bos_ratio_L{l}"] = attention.position0_ratio(wov.mean(0)).item()
        out[f"v_bos_norm_L{l}"] = attention.value_norms(v)[:, 0, 0].mean().item()
        resid = attention.residual_norms(acts[f"blocks.{l}.hook_resid_post"]).mean(0)  # [pos]
        out[f"resid_bos_norm_L{l}"] = resid[0].item()
        out[f"resid_bos_ratio_L{l}"] = attention.position0_ratio(resid).item()
        dlogit = attention.sink_delta_logit(acts[f"blocks.{l}.attn.hook_attn_scores"][:, 0], per_query=True)[:, :-1]  # [batch, q]
        out[f"delta_logit_bos_nontrigger_L{l}"] = dlogit[non].nanmean().item()
        out[f"delta_logit_bos_trigger_L{l}"] = dlogit[trig].nanmean().item()
    return out


def ablation(model, task: BBTask, tokens: Tensor, layer: int) -> dict[str, float]:
    """Losses with layer `layer`'s head zeroed, and their change from the clean model."""
    clean = losses(task, run_hooks(model, tokens)[0], tokens)
    ablated = losses(task, run_hooks(model, tokens, patch={f"blocks.{layer}.attn.hook_z": zero_heads([0])})[0], tokens)
    return {**{f"ablated_{k}": v for k, v in ablated.items()}, **{f"delta_{k}": ablated[k] - clean[k] for k in clean}}


def model_config(task: BBTask, n_layers: int = 1, d_model: int = 64, seq_len: int = 64, attn_fn: str = "softmax") -> dict:
    """The paper's model: pre-LN, one head per layer, learned positions, an MLP per layer, untied unembedding."""
    return dict(n_layers=n_layers, d_model=d_model, n_heads=1, d_head=d_model, d_mlp=4 * d_model, n_ctx=seq_len,
                d_vocab=task.d_vocab, act_fn="relu", normalization_type="LN", positional_embedding_type="standard",
                attn_fn=attn_fn)


def make_task(bigram: str = "char", n_triggers: int = 3, seed: int = 0) -> BBTask:
    """The task by name: "char" (the corpus's character bigram) or "synthetic" (a chain drawn with `seed`)."""
    if bigram == "char":
        return char_task(n_triggers)
    if bigram == "synthetic":
        return synthetic_task(n_triggers=n_triggers, seed=seed)
    raise InterpError(f"Unknown bigram {bigram!r}: choose char or synthetic.")


def task_spec(bigram: str, n_triggers: int, seed: int) -> dict:
    """What a checkpoint saves beside its weights so that `from_spec` rebuilds its task."""
    return {"name": "bigram_backcopy", "bigram": bigram, "n_triggers": n_triggers, "seed": seed}


def from_spec(spec: dict) -> BBTask:
    return make_task(spec["bigram"], spec["n_triggers"], spec["seed"])


def build_model(task: BBTask, n_layers: int, attn_fn: str, d_model: int = 64, seq_len: int = 64, seed: int = 0):
    """The paper's model for `task`, initialised as its code does: weights N(0, 0.02), the token and position
    embeddings N(0, 1) (PyTorch's nn.Embedding default, not TransformerLens's N(0, 0.1)), seeded."""
    from interp.models import toy_model

    config = {**model_config(task, n_layers, d_model, seq_len, attn_fn), "initializer_range": 0.02}
    model = toy_model(config, seed=seed, vocab=task.vocab, sink_token_id=BOS, spec=f"bigram_backcopy:{n_layers}l-{attn_fn}")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.module.embed.W_E.copy_(torch.randn(model.module.embed.W_E.shape, generator=g))
        model.module.pos_embed.W_pos.copy_(torch.randn(model.module.pos_embed.W_pos.shape, generator=g))
    return model
