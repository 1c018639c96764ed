"""Token–feature bipartite graphs: which SAE features fire on which tokens (function tokens).

    graph = token_feature_graph(sae, store)            # streams over the store in chunks
    graph.token_degree(), graph.feature_degree()       # distinct features per token, tokens per feature
    graph.coverage()                                    # share of the firing features the top-N tokens reach
    sampled = sampled_graph(sae, store, n=50, seed=0)   # every token drawn with exactly n occurrences

An edge (t, f) joins token id t and feature f when f is active (value > 0, the SAE in inference mode)
at one or more occurrences of t among the rows read. The builder never holds a dense tokens × features
matrix: each chunk of rows is encoded to sparse codes, turned into int64 keys t·d_sae + f, made unique
and merged into a sorted array of keys, so memory grows with the number of edges only.

Rows left out, consistently with SAE training (`interp.sae.train`) and the evaluations:
- position 0 of every sequence (the BOS / attention-sink token, 30-130x the others' norm). Stores
  drop it by default (keep_first = false); when a store kept it, the graph skips those rows itself.
- outliers: rows whose norm exceeds the SAE's `max_norm` (SAETrainConfig.outlier_norm × the median norm;
  SmolLM2's rare massive activations), which the SAE was trained without. They add no edge and are not
  counted as occurrences, so a token's count is the number of occurrences its degree was measured on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from interp import InterpError
from interp.sae.models import SAE
from interp.store import Store

MERGE_MIN = 1 << 20  # pending chunk keys are merged into the sorted edge array once they outnumber it and this


@dataclass
class TokenFeatureGraph:
    """Edges as sorted unique keys token_id · d_sae + feature, plus each token's occurrence count."""

    keys: Int[np.ndarray, " n_edges"]
    tokens: Int[np.ndarray, " n_tok"]  # token ids that occur in the rows read, ascending
    counts: Int[np.ndarray, " n_tok"]  # occurrences of each (rows read, left-out rows excluded)
    d_sae: int
    rows: int  # rows encoded
    left_out: int  # rows skipped (position 0, outliers)

    @property
    def edge_tokens(self) -> Int[np.ndarray, " n_edges"]:
        return self.keys // self.d_sae

    @property
    def edge_features(self) -> Int[np.ndarray, " n_edges"]:
        return self.keys % self.d_sae

    def token_degree(self) -> Int[np.ndarray, " n_tok"]:
        """Distinct features of each token in `tokens` (keys are sorted by token first)."""
        return np.diff(np.searchsorted(self.edge_tokens, np.append(self.tokens, np.iinfo(np.int64).max)))

    def feature_degree(self) -> Int[np.ndarray, " d_sae"]:
        """Distinct tokens each feature fires on."""
        return np.bincount(self.edge_features, minlength=self.d_sae)

    def active_features(self) -> int:
        """Features that fire at least once (degree ≥ 1)."""
        return int((self.feature_degree() > 0).sum())

    def by_frequency(self) -> Int[np.ndarray, " n_tok"]:
        """Token ids from most to least frequent (ties: smaller id first)."""
        return self.tokens[np.lexsort((self.tokens, -self.counts))]

    def coverage(self, order: Int[np.ndarray, " n"] | None = None) -> Float[np.ndarray, " n"]:
        """coverage[N - 1] = share of the active features that at least one of the first N tokens of
        `order` (token ids; default `by_frequency()`) connects to. Ids absent from the graph reach none."""
        order = self.by_frequency() if order is None else np.asarray(order, dtype=np.int64)
        if len(order) == 0 or len(np.unique(order)) != len(order):
            raise InterpError("coverage needs a non-empty order of distinct token ids.")
        rank = np.full(max(int(order.max()), int(self.tokens.max(initial=0))) + 1, len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        first = np.full(self.d_sae, len(order), dtype=np.int64)  # each feature's best-ranked token
        np.minimum.at(first, self.edge_features, rank[self.edge_tokens])
        reached = np.bincount(first[first < len(order)], minlength=len(order))
        return np.cumsum(reached) / max(self.active_features(), 1)


def check_pair(sae: SAE, store: Store) -> None:
    """The SAE must read the store's vectors: same width, and the same model and hook when both say."""
    c, m = sae.cfg, store.manifest
    if c.d_in != store.d_in:
        raise InterpError(f"The SAE reads vectors of width d_in = {c.d_in}, but the store {store.dir} holds width "
                          f"{store.d_in} ({m['model']} at {m['hook']}): use an SAE trained on this store's hook.")
    for what, ours, theirs in (("hook", c.hook_name, m["hook"]), ("model", c.model_name, m["model"])):
        if ours and theirs and ours != theirs:
            raise InterpError(f"The SAE was trained on {what} {ours!r}, but the store {store.dir} holds {what} "
                              f"{theirs!r}: its features mean nothing there. Use an SAE trained on {theirs!r}.")


def first_position_rows(store: Store) -> Bool[np.ndarray, " n_tokens"]:
    """True at the rows that hold position 0 of a sequence (none when the store dropped it)."""
    m = store.manifest
    if not m.get("keep_first", True):
        return np.zeros(store.n_tokens, dtype=bool)
    return np.arange(store.n_tokens) % m["ctx_len"] == 0


def _row_tokens(store: Store) -> Int[np.ndarray, " n_tokens"]:
    ids = store.row_tokens()
    if ids is None:
        raise InterpError(f"The store {store.dir} has no tokens.npy, so its rows cannot be matched to tokens: "
                          "write it with `interp cache` (synthetic stores need StoreWriter.write_tokens).")
    return ids.astype(np.int64)


@torch.no_grad()
def token_feature_graph(sae: SAE, store: Store, rows: Int[np.ndarray, " m"] | None = None, chunk_rows: int = 4096,
                        quiet: bool = True) -> TokenFeatureGraph:
    """The token–feature graph over the store's rows (`rows`: only those row indices), read and
    encoded `chunk_rows` at a time. Position 0 and outlier rows are left out (module docstring)."""
    check_pair(sae, store)
    if chunk_rows < 1:
        raise InterpError(f"chunk_rows is {chunk_rows}; it must be at least 1.")
    ids, first = _row_tokens(store), first_position_rows(store)
    if rows is not None:
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if len(rows) and (rows[0] < 0 or rows[-1] >= store.n_tokens):
            raise InterpError(f"Row indices must lie in 0..{store.n_tokens - 1}, the store's rows; got {rows[0]}..{rows[-1]}.")
    was, d_sae, max_norm = sae.training, sae.cfg.d_sae, sae.cfg.max_norm
    sae.eval()
    merged, pending = np.zeros(0, dtype=np.int64), []
    counts = np.zeros(int(ids.max(initial=0)) + 1, dtype=np.int64)
    n_rows = left_out = 0
    for lo in tqdm(range(0, store.n_tokens, chunk_rows), desc="token-feature graph", disable=quiet, leave=False):
        hi = min(lo + chunk_rows, store.n_tokens)
        sel = np.arange(lo, hi) if rows is None else rows[np.searchsorted(rows, lo):np.searchsorted(rows, hi)]
        if len(sel) == 0:
            continue
        x = store.read(lo, hi)[torch.from_numpy(sel - lo)]  # [m, d_in]
        skip = torch.from_numpy(first[sel])
        if max_norm:
            skip |= x.norm(dim=1) > max_norm
        keep = sel[~skip.numpy()]
        codes = sae.encode(x[~skip])
        on = codes.values > 0
        tok = torch.from_numpy(ids[keep])[codes.rows[on]]  # [nnz] token id of each active entry
        pending.append(np.unique((tok * d_sae + codes.cols[on]).numpy()))
        counts += np.bincount(ids[keep], minlength=len(counts))
        n_rows, left_out = n_rows + len(keep), left_out + len(sel) - len(keep)
        if sum(len(p) for p in pending) > max(len(merged), MERGE_MIN):  # amortised: merge when pending outgrows merged
            merged, pending = np.unique(np.concatenate([merged, *pending])), []
    sae.train(was)
    merged = np.unique(np.concatenate([merged, *pending]))
    tokens = np.flatnonzero(counts)
    return TokenFeatureGraph(merged, tokens, counts[tokens], d_sae, n_rows, left_out)


def eligible_rows(sae: SAE, store: Store, chunk_rows: int = 65536) -> Bool[np.ndarray, " n_tokens"]:
    """Rows the graph uses: not position 0 and not an outlier for this SAE."""
    ok = ~first_position_rows(store)
    if sae.cfg.max_norm:
        for lo in range(0, store.n_tokens, chunk_rows):
            hi = min(lo + chunk_rows, store.n_tokens)
            ok[lo:hi] &= (store.read(lo, hi).norm(dim=1) <= sae.cfg.max_norm).numpy()
    return ok


def sample_occurrences(ids: Int[np.ndarray, " n_rows"], eligible: Bool[np.ndarray, " n_rows"], n: int, seed: int = 0
                       ) -> Int[np.ndarray, " m"]:
    """Sorted row indices holding exactly `n` eligible occurrences of every token that has at least
    `n`, drawn without replacement. Token t's draw is seeded by (seed, t), so it does not depend on
    which other tokens there are."""
    if n < 1:
        raise InterpError(f"Sample at least one occurrence per token, not n = {n}.")
    rows = np.flatnonzero(eligible)
    tok = np.asarray(ids, dtype=np.int64)[rows]
    order = np.argsort(tok, kind="stable")
    tok, rows = tok[order], rows[order]
    starts = np.flatnonzero(np.r_[True, tok[1:] != tok[:-1]])
    ends = np.r_[starts[1:], len(tok)]
    picked = [np.random.default_rng([seed, int(tok[s])]).choice(rows[s:e], n, replace=False)
              for s, e in zip(starts, ends) if e - s >= n]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def sampled_graph(sae: SAE, store: Store, n: int, seed: int = 0, chunk_rows: int = 4096, quiet: bool = True) -> TokenFeatureGraph:
    """The graph on exactly `n` sampled occurrences of every token with at least `n` eligible ones, so
    that degrees compare tokens at equal chances (a frequent token otherwise gathers features just by
    occurring more). Every token in the result has count `n`."""
    check_pair(sae, store)
    rows = sample_occurrences(_row_tokens(store), eligible_rows(sae, store), n, seed)
    if len(rows) == 0:
        raise InterpError(f"No token occurs {n} times among the store's usable rows: lower n or use a larger store.")
    return token_feature_graph(sae, store, rows, chunk_rows, quiet)


def function_tokens(counts: Int[np.ndarray, " vocab"], share: float = 0.4) -> Int[np.ndarray, " k"]:
    """The smallest set of most frequent token ids (counts indexed by id) whose occurrences reach
    `share` of all occurrences, most frequent first (ties: smaller id first)."""
    counts = np.asarray(counts, dtype=np.int64)
    if not 0 < share <= 1 or counts.sum() <= 0:
        raise InterpError(f"function_tokens needs 0 < share ≤ 1 (got {share}) and some counted tokens.")
    order = np.lexsort((np.arange(len(counts)), -counts))
    k = int(np.searchsorted(np.cumsum(counts[order]), share * counts.sum() - 1e-9)) + 1
    return order[:k]


def spearman(a: Float[np.ndarray, " n"], b: Float[np.ndarray, " n"]) -> float:
    """Spearman's rank correlation (ties get their average rank)."""
    from scipy.stats import spearmanr

    if len(a) != len(b) or len(a) < 3:
        raise InterpError(f"Spearman's correlation needs two equally long series of at least 3 values; got {len(a)} and {len(b)}.")
    return float(spearmanr(a, b).statistic)
