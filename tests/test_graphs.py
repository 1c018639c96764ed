"""interp.graphs on hand-built stores and SAEs: exact degrees and coverage, chunked streaming, the
rows it leaves out, sampling exactly n occurrences per token, and bad input."""

import numpy as np
import pytest
import torch

from interp import InterpError, graphs
from interp.graphs import (
    eligible_rows,
    function_tokens,
    sample_occurrences,
    sampled_graph,
    spearman,
    token_feature_graph,
)
from interp.sae.models import SAE, SAEConfig
from interp.store import StoreWriter

D = 4  # d_in = d_sae: feature f reads coordinate f
BOS = 0


def identity_sae(max_norm: float = 0.0, k: int = 1, hook: str = "") -> SAE:
    sae = SAE(SAEConfig(d_in=D, d_sae=D, kind="topk", k=k, max_norm=max_norm, hook_name=hook))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(D))
        sae.W_dec.copy_(torch.eye(D))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def make_store(folder, tokens: np.ndarray, acts: torch.Tensor, keep_first: bool = False, shard: int = 5, with_tokens: bool = True):
    """A store of `acts` (rows in sequence order) over token sequences `tokens` [seq, ctx]."""
    w = StoreWriter(folder, dict(model="synthetic", hook="blocks.0.hook_resid_post", d_in=acts.shape[1], dtype="float16",
                                 n_tokens=acts.shape[0], ctx_len=tokens.shape[1], keep_first=keep_first))
    for i, lo in enumerate(range(0, acts.shape[0], shard)):
        w.write_shard(i, acts[lo:lo + shard])
    if with_tokens:
        w.write_tokens(tokens)
    return w.finish()


# Three sequences of BOS + 4 tokens; each stored row is 2·e_f for the feature listed (None: a zero row,
# where TopK picks a feature with value 0, which is not an activation).
TOKENS = np.array([[BOS, 5, 6, 5, 7], [BOS, 5, 5, 6, 8], [BOS, 7, 5, 6, 5]], dtype=np.int32)
FEATURES = [0, 1, 2, 0, 0, 0, 1, 3, None, 3, 1, 0]


def hand_store(folder, keep_first: bool = False, outlier: bool = False):
    rows = []
    for seq, feats in zip(TOKENS, np.array(FEATURES, dtype=object).reshape(3, 4)):
        if keep_first:
            rows.append(torch.full((D,), 500.0 if outlier else 1.0))  # the BOS row
        for f in feats:
            rows.append(torch.zeros(D) if f is None else 2 * torch.eye(D)[f])
    return make_store(folder, TOKENS, torch.stack(rows), keep_first=keep_first)


def test_hand_built_graph_has_exact_degrees_and_coverage(tmp_path):
    store = hand_store(tmp_path / "s")
    g = token_feature_graph(identity_sae(), store)
    assert g.tokens.tolist() == [5, 6, 7, 8] and g.counts.tolist() == [6, 3, 2, 1]
    # token 5 fires features {0, 2, 3}; 6: {1}; 7: {0} (its other row is zero); 8: {3}
    assert g.token_degree().tolist() == [3, 1, 1, 1]
    assert g.feature_degree().tolist() == [2, 1, 1, 2]  # f0: {5, 7}; f1: {6}; f2: {5}; f3: {5, 8}
    assert sorted(zip(g.edge_tokens.tolist(), g.edge_features.tolist())) == [(5, 0), (5, 2), (5, 3), (6, 1), (7, 0), (8, 3)]
    assert g.active_features() == 4 and g.rows == 12 and g.left_out == 0
    assert g.by_frequency().tolist() == [5, 6, 7, 8]
    assert g.coverage().tolist() == [0.75, 1.0, 1.0, 1.0]
    assert g.coverage(np.array([8, 7, 6])).tolist() == [0.25, 0.5, 0.75]  # any order; ids reach what they connect to
    assert g.coverage(np.array([99, 5])).tolist() == [0.0, 0.75]  # an id absent from the graph reaches nothing


def test_position_zero_and_outliers_are_left_out(tmp_path):
    """A store that kept position 0 gives the same graph (BOS rows skipped), and outlier rows (norm above
    the SAE's max_norm) add no edge and no occurrence."""
    plain = token_feature_graph(identity_sae(), hand_store(tmp_path / "a"))
    kept = token_feature_graph(identity_sae(), hand_store(tmp_path / "b", keep_first=True))
    assert np.array_equal(kept.keys, plain.keys) and np.array_equal(kept.counts, plain.counts)
    assert kept.left_out == 3 and BOS not in kept.tokens
    store = hand_store(tmp_path / "c", keep_first=True, outlier=True)
    assert eligible_rows(identity_sae(max_norm=10.0), store).sum() == 12
    acts = store.read()
    acts[3] = 100 * torch.eye(D)[2]  # row 3 (token 5, the only row firing f2) becomes an outlier
    outlier = make_store(tmp_path / "d", TOKENS, acts, keep_first=True)
    g = token_feature_graph(identity_sae(max_norm=10.0), outlier)
    assert g.counts.tolist() == [5, 3, 2, 1] and g.token_degree().tolist() == [2, 1, 1, 1] and g.left_out == 4
    assert g.feature_degree().tolist() == [2, 1, 0, 2] and g.active_features() == 3


def random_store(folder, n_seqs=40, ctx=9, vocab=12, seed=0, shard=37):
    rng = np.random.default_rng(seed)
    tokens = np.concatenate([np.zeros((n_seqs, 1), np.int32),
                             rng.zipf(1.5, (n_seqs, ctx - 1)).clip(max=vocab).astype(np.int32)], axis=1)
    acts = torch.from_numpy(rng.standard_normal((n_seqs * (ctx - 1), D))).float()
    return make_store(folder, tokens, acts, shard=shard)


def dense_reference(sae, store):
    """Degrees from the dense token x feature activation matrix (fine at this size)."""
    ids = store.row_tokens()
    z = sae.dense_encode(store.read()) > 0  # [rows, d_sae]
    return {int(t): int(z[torch.from_numpy(ids == t)].any(0).sum()) for t in np.unique(ids)}


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 10_000])
def test_streaming_in_chunks_gives_the_one_chunk_graph(tmp_path, monkeypatch, chunk_rows):
    store = random_store(tmp_path / "s")
    sae = identity_sae(k=2)
    whole = token_feature_graph(sae, store, chunk_rows=10 ** 6)
    assert dict(zip(whole.tokens.tolist(), whole.token_degree().tolist())) == dense_reference(sae, store)
    monkeypatch.setattr(graphs, "MERGE_MIN", 0)  # merge pending keys as often as the rule allows
    g = token_feature_graph(sae, store, chunk_rows=chunk_rows)
    assert np.array_equal(g.keys, whole.keys) and np.array_equal(g.counts, whole.counts) and g.rows == whole.rows


def test_sampling_exactly_n_occurrences_per_token(tmp_path):
    store = random_store(tmp_path / "s")
    sae = identity_sae(k=2)
    ids, ok = store.row_tokens(), eligible_rows(sae, store)
    rows = sample_occurrences(ids, ok, 5, seed=3)
    tok, n = np.unique(ids[rows], return_counts=True)
    have = np.unique(ids, return_counts=True)
    assert tok.tolist() == have[0][have[1] >= 5].tolist() and set(n.tolist()) == {5}  # every token with ≥ 5, exactly 5
    assert len(np.unique(rows)) == len(rows) and np.array_equal(rows, np.sort(rows))
    assert np.array_equal(sample_occurrences(ids, ok, 5, seed=3), rows)  # seeded
    assert not np.array_equal(sample_occurrences(ids, ok, 5, seed=4), rows)
    g = sampled_graph(sae, store, 5, seed=3)
    assert g.tokens.tolist() == tok.tolist() and set(g.counts.tolist()) == {5}
    sub = token_feature_graph(sae, store, rows)  # the same rows, given explicitly
    assert np.array_equal(sub.keys, g.keys)
    full = token_feature_graph(sae, store)
    full_deg = dict(zip(full.tokens.tolist(), full.token_degree().tolist()))
    assert all(d <= full_deg[t] for t, d in zip(g.tokens.tolist(), g.token_degree().tolist()))
    ok[rows[:3]] = False  # ineligible rows (outliers, position 0) are never drawn
    assert not set(sample_occurrences(ids, ok, 5, seed=3).tolist()) & set(rows[:3].tolist())


def test_function_tokens_and_spearman():
    counts = np.array([10, 0, 5, 3, 2, 0])
    assert function_tokens(counts, 0.4).tolist() == [0]  # 10 / 20 ≥ 0.4
    assert function_tokens(counts, 0.5).tolist() == [0]  # exactly the share
    assert function_tokens(counts, 0.6).tolist() == [0, 2]
    assert function_tokens(np.array([3, 3, 3]), 0.5).tolist() == [0, 1]  # ties: smaller id first
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 100])) == pytest.approx(1.0)
    with pytest.raises(InterpError, match="share"):
        function_tokens(counts, 0.0)


def test_bad_input_is_a_clear_error(tmp_path):
    store = hand_store(tmp_path / "s")
    wide = SAE(SAEConfig(d_in=D + 1, d_sae=8, kind="topk", k=1))
    with pytest.raises(InterpError, match="width d_in = 5.*holds width 4"):
        token_feature_graph(wide, store)
    with pytest.raises(InterpError, match="hook 'blocks.9.hook_resid_post'"):
        token_feature_graph(identity_sae(hook="blocks.9.hook_resid_post"), store)
    bare = make_store(tmp_path / "bare", TOKENS, torch.ones(12, D), with_tokens=False)
    with pytest.raises(InterpError, match="no tokens.npy"):
        token_feature_graph(identity_sae(), bare)
    with pytest.raises(InterpError, match="chunk_rows"):
        token_feature_graph(identity_sae(), store, chunk_rows=0)
    with pytest.raises(InterpError, match="Row indices"):
        token_feature_graph(identity_sae(), store, rows=np.array([0, 12]))
    with pytest.raises(InterpError, match="at least one occurrence"):
        sampled_graph(identity_sae(), store, 0)
    with pytest.raises(InterpError, match="No token occurs 7 times"):
        sampled_graph(identity_sae(), store, 7)
