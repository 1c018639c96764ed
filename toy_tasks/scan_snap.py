"""Scan and Snap (Tian et al., NeurIPS 2023): a 1-layer attention model's training dynamics.

Task (as in the paper's code, luckmatters/ssl/real-dataset `Dataset2`): `n_query` query tokens, each
followed by `next_per_query` possible next tokens; each (query, next) pair is a fact n. Every fact
owns `n_distinct` distinct tokens with unnormalised probabilities 0.1, 0.2, ..., 1.0 and shares
`n_common` common tokens (probability 1 each). A sample draws a fact uniformly, T-1 context tokens
i.i.d. from P(.|n), then the fact's query token; the label is its next token.
Token ids: common tokens first, then each fact's distinct tokens, then query tokens, then next tokens.

Model (`ScanSnap`, the paper's reparameterisation, no positional encoding): the query token m attends
to the context tokens with logits Z[m, x_t] (the query does not attend to itself); the attended
one-hot mixture f = Σ_t softmax_t · e_{x_t} is L2-normalised and decoded by Y: logits = Y f̃, a
cross-entropy over the whole vocabulary. Z and Y have their own SGD learning rates (momentum 0.9).

Observable: c_n(l) ∝ P(l|n) · exp(Z[m_n, l]), the attention token l receives for fact n in the
long-sequence limit, and two entropies of it (natural log, averaged over facts): over fact n's whole
support (`entropy_c`), and over its distinct tokens alone, renormalised (`entropy_distinct`). The
second is the "average entropy of c_n" of the paper's Figure 6: its released data (luckmatters,
ssl/real-dataset/scan_snap/figure_6_data.pkl) sit below that quantity's initial value (2.15 nats,
ln 10 = 2.30 at most), where the whole-support entropy starts at 2.90, and our runs reproduce them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn


@dataclass
class SSTask:
    P: Float[Tensor, "fact vocab"]  # context distribution of each fact
    query: Int[Tensor, " fact"]  # query token of each fact
    label: Int[Tensor, " fact"]  # next token of each fact
    common: Int[Tensor, " n_common"]
    distinct: Int[Tensor, "fact n_distinct"]  # in order of increasing probability

    @property
    def vocab(self) -> int:
        return self.P.shape[1]


def make_task(n_query: int = 2, next_per_query: int = 1, n_common: int = 10, n_distinct: int = 10) -> SSTask:
    n_facts = n_query * next_per_query
    M = n_common + n_facts * n_distinct + n_query + n_facts
    common = torch.arange(n_common)
    distinct = n_common + torch.arange(n_facts * n_distinct).reshape(n_facts, n_distinct)
    P = torch.zeros(n_facts, M)
    P[:, common] = 1.0
    P.scatter_(1, distinct, torch.linspace(0.1, 1.0, n_distinct).expand(n_facts, -1).contiguous())
    P /= P.sum(1, keepdim=True)
    query = n_common + n_facts * n_distinct + torch.arange(n_facts) // next_per_query
    label = n_common + n_facts * n_distinct + n_query + torch.arange(n_facts)
    return SSTask(P=P, query=query, label=label, common=common, distinct=distinct)


def sample(task: SSTask, batch: int, seq_len: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(context [batch, seq_len-1], query [batch], label [batch]), all drawn with array ops."""
    facts = torch.randint(len(task.query), (batch,), generator=generator)
    context = torch.multinomial(task.P[facts], seq_len - 1, replacement=True, generator=generator)
    return context, task.query[facts], task.label[facts]


class ScanSnap(nn.Module):
    """Attention logits Z (query token x key token) and decoder Y (output token x input token)."""

    def __init__(self, vocab: int, zero_init: bool = True, generator: torch.Generator | None = None):
        super().__init__()
        if zero_init:
            Z, Y = torch.zeros(vocab, vocab), torch.zeros(vocab, vocab)
        else:  # nn.Linear's default, U(-1/sqrt(M), 1/sqrt(M)), as the paper's code
            bound = vocab**-0.5
            Z = (torch.rand(vocab, vocab, generator=generator) * 2 - 1) * bound
            Y = (torch.rand(vocab, vocab, generator=generator) * 2 - 1) * bound
        self.Z, self.Y = nn.Parameter(Z), nn.Parameter(Y)

    def forward(self, context: Int[Tensor, "batch ctx"], query: Int[Tensor, " batch"]) -> Float[Tensor, "batch vocab"]:
        logits = self.Z[query[:, None], context]  # [batch, ctx]
        attn = logits.softmax(-1)
        f = torch.zeros(len(query), self.Z.shape[0], dtype=attn.dtype).scatter_add(1, context, attn)  # [batch, vocab]
        f = f / f.norm(dim=-1, keepdim=True)
        return f @ self.Y.T


def loss(model: ScanSnap, batch) -> Tensor:
    context, query, label = batch
    return nn.functional.cross_entropy(model(context, query), label)


def attention_c(model: ScanSnap, task: SSTask) -> Float[Tensor, "fact vocab"]:
    """c_n(l) ∝ P(l|n) exp(Z[m_n, l]), normalised over l."""
    w = task.P * model.Z.detach()[task.query].exp()
    return w / w.sum(1, keepdim=True)


def entropy_c(c: Float[Tensor, "fact vocab"]) -> float:
    """Entropy (nats) of c_n over its support, averaged over facts."""
    return _mean_entropy(c)


def entropy_distinct(c: Float[Tensor, "fact vocab"], task: SSTask) -> float:
    """Entropy (nats) of c_n over fact n's distinct tokens alone, renormalised, averaged over facts."""
    d = c.gather(1, task.distinct)
    return _mean_entropy(d / d.sum(1, keepdim=True))


def _mean_entropy(p: Float[Tensor, "fact k"]) -> float:
    return (-(p * p.clamp(min=1e-30).log()).sum(1)).mean().item()
