"""A random sparse Markov chain: the toy language whose ideal predictor is exactly a bigram.

Each token has `fanout` successors with Dirichlet(1) weights (seeded); the first token of a sequence
is drawn from the chain's stationary distribution. Sampling is vectorised over the batch (one step
per position).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def chain(d_vocab: int = 64, fanout: int = 4, seed: int = 0) -> Float[Tensor, "vocab vocab"]:
    """Row-stochastic transition matrix with `fanout` successors per token."""
    g = torch.Generator().manual_seed(seed)
    P = torch.zeros(d_vocab, d_vocab)
    for x in range(d_vocab):
        succ = torch.randperm(d_vocab, generator=g)[:fanout]
        P[x, succ] = _dirichlet(fanout, g)
    return P


def _dirichlet(n: int, g: torch.Generator) -> Tensor:
    w = -torch.log(torch.rand(n, generator=g))  # Exp(1) draws, normalised: Dirichlet(1, ..., 1)
    return w / w.sum()


def stationary(P: Float[Tensor, "vocab vocab"], iters: int = 200) -> Float[Tensor, " vocab"]:
    pi = torch.full((P.shape[0],), 1 / P.shape[0])
    for _ in range(iters):
        pi = pi @ P
    return pi / pi.sum()


def sample(P: Float[Tensor, "vocab vocab"], batch: int, seq_len: int, generator: torch.Generator) -> Int[Tensor, "batch pos"]:
    """`batch` sequences of `seq_len` tokens from the chain."""
    out = torch.empty(batch, seq_len, dtype=torch.long)
    out[:, 0] = torch.multinomial(stationary(P), batch, replacement=True, generator=generator)
    cum = P.cumsum(1)
    for t in range(1, seq_len):
        u = torch.rand(batch, 1, generator=generator)
        out[:, t] = (cum[out[:, t - 1]] < u).sum(1).clamp(max=P.shape[0] - 1)
    return out


def model_config(d_vocab: int, n_layers: int = 2, d_model: int = 64, seq_len: int = 64) -> dict:
    """A small pre-LN transformer with MLPs (HookedTransformerConfig keyword arguments)."""
    return dict(n_layers=n_layers, d_model=d_model, n_heads=4, d_head=d_model // 4, d_mlp=4 * d_model,
                n_ctx=seq_len, d_vocab=d_vocab, act_fn="gelu", normalization_type="LN")
