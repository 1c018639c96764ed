"""A toy language model's data: the local corpus, tokenised with a real tokenizer, over a small vocabulary.

    data = corpus_lm(model.encode, counts, vocab=4096, seq_len=64, n_train=16384, n_held=256)
    batch = sample(data, 32, generator)              # [32, seq_len] toy ids

Sequences are `interp.corpus.token_chunks` of the standard library (whole files cut into `seq_len`
pieces, shuffled with the seed); the last `n_held` are held out. The vocabulary is remapped to keep a
toy model cheap: the `vocab - 1` most frequent real ids (by `counts`, ties to the smaller id) become
toy ids 0..vocab-2, in frequency order, and every other id becomes the one OOV id, vocab - 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from interp import InterpError
from interp.corpus import token_chunks


@dataclass
class CorpusLM:
    train: Int[Tensor, "n_train seq"]  # toy ids
    held: Int[Tensor, "n_held seq"]
    real_ids: Int[Tensor, " kept"]  # real (tokenizer) id of each toy id below the OOV id
    vocab: int  # toy vocabulary size, OOV id included

    @property
    def oov(self) -> int:
        return self.vocab - 1

    def toy_ids(self, real: Int[np.ndarray, " n"]) -> Int[Tensor, " n"]:
        """Toy ids of real token ids (OOV for ids outside the kept vocabulary)."""
        table = torch.full((max(int(self.real_ids.max()), int(np.max(real, initial=0))) + 1,), self.oov, dtype=torch.long)
        table[self.real_ids] = torch.arange(len(self.real_ids))
        return table[torch.as_tensor(np.asarray(real, dtype=np.int64))]


def corpus_lm(encode: Callable[[str], list[int]], counts: Int[np.ndarray, " real_vocab"], vocab: int = 4096,
              seq_len: int = 64, n_train: int = 16384, n_held: int = 256, seed: int = 0, quiet: bool = True) -> CorpusLM:
    """Corpus sequences over the `vocab - 1` most frequent ids of `counts` plus one OOV id."""
    counts = np.asarray(counts, dtype=np.int64)
    if vocab < 2 or vocab - 1 > int((counts > 0).sum()):
        raise InterpError(f"vocab = {vocab}: the toy vocabulary needs at least one kept id plus the OOV id, and at most "
                          f"{int((counts > 0).sum()) + 1} (the ids the counts saw, plus OOV).")
    if n_train < 1 or n_held < 1 or seq_len < 2:
        raise InterpError(f"Need n_train ≥ 1, n_held ≥ 1 and seq_len ≥ 2; got {n_train}, {n_held}, {seq_len}.")
    real = np.lexsort((np.arange(len(counts)), -counts))[: vocab - 1]
    data = CorpusLM(torch.zeros(0), torch.zeros(0), torch.from_numpy(real.copy()), vocab)
    chunks = token_chunks(encode, seq_len, n_train + n_held, seed=seed, quiet=quiet)  # [n, seq] real ids
    ids = data.toy_ids(chunks.reshape(-1)).reshape(chunks.shape)
    data.train, data.held = ids[:n_train], ids[n_train:]
    return data


def sample(data: CorpusLM, batch_size: int, generator: torch.Generator) -> Int[Tensor, "batch seq"]:
    """`batch_size` training sequences drawn uniformly (with replacement)."""
    return data.train[torch.randint(len(data.train), (batch_size,), generator=generator)]


def model_config(data: CorpusLM, n_layers: int = 2, d_model: int = 128, n_heads: int = 4) -> dict:
    """A small pre-LN GPT: learned positions, GELU MLPs (4 × d_model), untied unembedding."""
    if d_model % n_heads:
        raise InterpError(f"d_model = {d_model} must be a multiple of n_heads = {n_heads}.")
    return dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_model // n_heads, d_mlp=4 * d_model,
                n_ctx=data.train.shape[1], d_vocab=data.vocab, act_fn="gelu", normalization_type="LN",
                positional_embedding_type="standard")
