"""Each sink metric pinned on hand-built inputs with exact expected numbers."""

import math

import pytest
import torch

from interp import attention


def causal(rows):
    """A [q, k] pattern from its lower-triangular rows."""
    T = len(rows)
    A = torch.zeros(T, T)
    for q, row in enumerate(rows):
        A[q, : len(row)] = torch.tensor(row)
    return A


# Query rows of a 4-token pattern (each sums to 1).
A = causal([[1.0], [0.5, 0.5], [0.8, 0.1, 0.1], [0.7, 0.1, 0.1, 0.1]])


def test_alpha_is_mean_over_queries_at_or_after_the_key():
    a = attention.alpha(A)
    # k=0: (1 + .5 + .8 + .7)/4; k=1: (.5 + .1 + .1)/3; k=2: (.1 + .1)/2; k=3: .1/1
    assert torch.allclose(a, torch.tensor([0.75, 0.7 / 3, 0.1, 0.1]))


def test_alpha_ignores_anything_above_the_diagonal():
    noisy = A + torch.triu(torch.ones(4, 4), diagonal=1) * 9.0
    assert torch.allclose(attention.alpha(noisy), attention.alpha(A))


def test_alpha_keeps_leading_dims():
    batch = torch.stack([A, A.flip(0) * 0]).reshape(2, 1, 1, 4, 4)  # [batch, layer, head, q, k]
    assert attention.alpha(batch).shape == (2, 1, 1, 4)


def test_sink_rate_counts_sample_layer_head_triples_above_epsilon():
    # alpha_per_sample [batch=2, layer=1, head=2, k=3]
    a = torch.tensor([[[[0.9, 0.1, 0.0], [0.2, 0.5, 0.3]]], [[[0.31, 0.3, 0.0], [0.3, 0.0, 0.7]]]])
    rates = attention.sink_rate(a, epsilon=0.3)
    # k=0: 0.9, 0.31 above (0.2, 0.3 not: strict) -> 2/4; k=1: 0.5 -> 1/4; k=2: 0.7 -> 1/4 (0.3 is not > 0.3)
    assert rates.tolist() == [0.5, 0.25, 0.25]


def test_value_norms_per_kv_head_and_position():
    v = torch.zeros(1, 2, 1, 2)  # [batch, pos, kv_head, d_head]
    v[0, 0, 0] = torch.tensor([3.0, 4.0])
    v[0, 1, 0] = torch.tensor([0.0, 2.0])
    assert attention.value_norms(v).tolist() == [[[5.0, 2.0]]]


def test_output_value_norms_map_query_heads_to_their_kv_head():
    # 4 query heads share 2 KV heads: heads 0,1 read KV 0; heads 2,3 read KV 1 (HF repeat_kv order).
    v = torch.zeros(1, 1, 2, 2)
    v[0, 0, 0] = torch.tensor([1.0, 0.0])
    v[0, 0, 1] = torch.tensor([0.0, 1.0])
    W_O = torch.zeros(4, 2, 3)  # [head, d_head, d_model]
    W_O[0, 0] = torch.tensor([2.0, 0, 0])  # head 0 writes 2 for KV 0's value
    W_O[1, 1] = torch.tensor([7.0, 0, 0])  # head 1 only reads the direction KV 0 lacks -> 0
    W_O[2, 1] = torch.tensor([0, 3.0, 4.0])  # head 2 reads KV 1 -> norm 5
    W_O[3, 0] = torch.tensor([1.0, 0, 0])  # head 3 reads KV 1 along a direction it lacks -> 0
    out = attention.output_value_norms(v, W_O)  # [batch, head, pos]
    assert out[0, :, 0].tolist() == [2.0, 0.0, 5.0, 0.0]


def test_residual_norms_and_position0_ratio():
    resid = torch.tensor([[[6.0, 8.0], [1.0, 0.0], [0.0, 3.0], [2.0, 0.0]]])  # norms 10, 1, 3, 2
    norms = attention.residual_norms(resid)
    assert norms.tolist() == [[10.0, 1.0, 3.0, 2.0]]
    assert attention.position0_ratio(norms, "mean").item() == pytest.approx(5.0)
    assert attention.position0_ratio(norms, "median").item() == pytest.approx(5.0)
    assert attention.position0_ratio(norms, "max").item() == pytest.approx(10 / 3)


def test_sink_delta_logit_compares_the_sink_with_the_keys_between_it_and_the_query():
    neg = -1e9  # masked entries (what a causal mask writes) must not count
    scores = torch.tensor([
        [5.0, neg, neg, neg],
        [4.0, 1.0, neg, neg],  # no key strictly between sink and query: left out
        [6.0, 2.0, 0.0, neg],  # 6 - 2 = 4 (the query's own key, 0.0, is excluded)
        [3.0, 1.0, 2.0, 9.0],  # 3 - mean(1, 2) = 1.5
    ])
    assert attention.sink_delta_logit(scores).item() == pytest.approx(2.75)  # mean(4, 1.5)
    per_q = attention.sink_delta_logit(scores, per_query=True)
    assert torch.isnan(per_q[:2]).all() and per_q[2:].tolist() == pytest.approx([4.0, 1.5])
    batched = torch.stack([scores, scores + 1.0])  # a constant shift changes nothing
    assert attention.sink_delta_logit(batched).tolist() == pytest.approx([2.75, 2.75])


def test_sink_delta_logit_leaves_out_keys_a_sliding_window_masks():
    lo = torch.finfo(torch.float32).min  # what HF's eager attention writes for a masked key
    scores = torch.tensor([
        [5.0, lo, lo, lo],
        [4.0, 1.0, lo, lo],
        [6.0, 2.0, 0.0, lo],
        [3.0, lo, 2.0, 9.0],  # key 1 is outside the window: 3 - 2 = 1
    ])
    assert attention.sink_delta_logit(scores, per_query=True)[2:].tolist() == pytest.approx([4.0, 1.0])
    scores[3, 0] = lo  # the sink itself outside the window: no Δlogit for that query
    per_q = attention.sink_delta_logit(scores, per_query=True)
    assert torch.isnan(per_q[3]) and attention.sink_delta_logit(scores).item() == pytest.approx(4.0)


def test_classify_heads_needs_both_sinking_and_harmless_ablation():
    alpha0 = torch.tensor([[0.9, 0.9, 0.2, 0.6]])
    dloss = torch.tensor([[0.001, 0.5, 0.001, -0.005]])
    dormant = attention.classify_heads(alpha0, dloss, sink_threshold=0.5, loss_threshold=0.01)
    assert dormant.tolist() == [[True, False, False, True]]


def test_alpha_on_a_real_softmax_pattern_sums_consistently():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 8, 8).masked_fill(torch.ones(8, 8).triu(1).bool(), -math.inf)
    pattern = scores.softmax(-1)
    a = attention.alpha(pattern)
    # Sum over keys of α_k · (T − k) equals the number of queries (each row sums to 1).
    weighted = (a * torch.arange(8, 0, -1)).sum(-1)
    assert torch.allclose(weighted, torch.full((2, 3), 8.0))


def _H(ps):
    """Entropy (nats) of a list of probabilities."""
    return -sum(p * math.log(p) for p in ps if p > 0)


SINK = causal([[1.0], [1.0, 0], [1.0, 0, 0], [1.0, 0, 0, 0]])
PREV = causal([[1.0], [1.0, 0], [0, 1.0, 0], [0, 0, 1.0, 0]])
UNIFORM = causal([[1.0], [1 / 2] * 2, [1 / 3] * 3, [1 / 4] * 4])


def test_attention_entropies_of_a_sink_a_previous_token_and_a_uniform_head():
    e = attention.attention_entropies(torch.stack([SINK, PREV, UNIFORM]))  # [3] each
    # Sink: every query one-hot (row 0); key 0 receives 1 from each of its 4 queries (col 1); all mass on key 0.
    # Previous-token: rows one-hot; key 0 is seen by queries 0 and 1 (weight 2, H = log 2 / log 4), keys 1, 2
    # by one query each (weight 1, H = 0): col = 2·0.5 / 4. Mass over keys (2, 1, 1, 0)/4.
    # Uniform: rows uniform (1); columns 1/(q+1) for q ≥ k, weighted by what each key receives.
    cols = [[1, 1 / 2, 1 / 3, 1 / 4], [1 / 2, 1 / 3, 1 / 4], [1 / 3, 1 / 4]]
    col_h = [_H([c / sum(col) for c in col]) / math.log(len(col)) for col in cols]
    weights = [sum(col) for col in cols]
    uniform_col = sum(w * h for w, h in zip(weights, col_h)) / sum(weights)
    received = [25 / 12, 13 / 12, 7 / 12, 3 / 12]
    assert e["row"].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=1e-6)
    assert e["col"].tolist() == pytest.approx([1.0, 0.25, uniform_col], abs=1e-6)
    assert e["mass"].tolist() == pytest.approx([0.0, 0.75, _H([r / 4 for r in received]) / math.log(4)], abs=1e-6)


def test_attention_entropies_keep_leading_dims_and_ignore_the_masked_triangle():
    noisy = SINK + torch.triu(torch.ones(4, 4), diagonal=1) * 0.3
    e = attention.attention_entropies(noisy.expand(2, 5, 4, 4))
    assert e["row"].shape == (2, 5) and torch.allclose(e["col"], torch.ones(2, 5))
    with pytest.raises(Exception, match="at least 2 positions"):
        attention.attention_entropies(torch.ones(1, 1))


def test_dormant_by_entropy_flags_only_low_row_and_high_column_entropy():
    e = attention.attention_entropies(torch.stack([SINK, PREV, UNIFORM]))
    assert attention.dormant_by_entropy(e["row"], e["col"], row_max=0.3, col_min=0.7).tolist() == [True, False, False]
    row, col = torch.tensor([0.3, 0.31, 0.1]), torch.tensor([0.7, 0.9, 0.69])
    assert attention.dormant_by_entropy(row, col, 0.3, 0.7).tolist() == [True, False, False]  # thresholds inclusive
