"""What a graph predicts (interp.circuits_verify) against forwards that compute it, on a tiny random Llama
with random transcoders: the identities hold for any weights."""

from __future__ import annotations

import copy

import pytest
import torch

from interp import InterpError
from interp.circuits import attribute_graph, record, replacement_forward
from interp.circuits_verify import (attention_patterns, demeaned, derivatives, predicted_ablation, source_shares,
                                    spliced_logits)
from test_circuits import TOKENS, tiny, transcoders


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = tiny(tmp_path_factory, "llama")
    tcs = transcoders(model)
    graph = attribute_graph(model, TOKENS, tcs, batch_size=16, max_feature_nodes=None)
    return model, tcs, graph, record(model, TOKENS, tcs)


def test_sources_carry_the_whole_target_value(setup):
    _, _, graph, _ = setup
    s = source_shares(graph)
    assert abs(s["missing"]) < 1e-4 * max(1.0, abs(s["value"]))
    assert 0 < s["error_share_abs"] < 1
    assert derivatives(graph)[graph.logit_index(0)] == 1.0


def test_predicted_ablations_are_the_frozen_linear_models_ablations(setup):
    """With norms, patterns and active sets frozen (replacement_forward live) the model is the graph's
    linear model, so zeroing a feature moves the target logit by exactly the prediction."""
    model, tcs, graph, rec = setup
    token = int(graph.logit_tokens[0])
    base = demeaned(replacement_forward(model, rec, tcs, live=True).logits[0, -1], token)
    pred = predicted_ablation(graph)
    for i in pred.abs().argsort(descending=True)[:6].tolist():
        layer, pos, feat = graph.active_features[int(graph.selected_features[i])].tolist()
        r = copy.copy(rec)
        r.acts = {**rec.acts, layer: rec.acts[layer].clone()}
        r.acts[layer][pos, feat] = 0
        got = demeaned(replacement_forward(model, r, tcs, live=True).logits[0, -1], token) - base
        assert float(got) == pytest.approx(float(pred[i]), abs=2e-4, rel=1e-3)


def test_spliced_model_with_errors_is_the_real_model_and_edits_move_one_feature(setup):
    model, tcs, graph, rec = setup
    batch = TOKENS[None].repeat(3, 1)
    real = rec.logits
    for patterns in (None, attention_patterns(rec)):
        out = spliced_logits(model, batch, tcs, errors=rec.errors, patterns=patterns)
        torch.testing.assert_close(out[0], real, atol=1e-4, rtol=1e-4)
    layer, pos, feat = graph.active_features[0].tolist()
    out = spliced_logits(model, batch, tcs, errors=rec.errors, edits=[None, (layer, pos, feat, 0.0), None])
    torch.testing.assert_close(out[2], real, atol=1e-4, rtol=1e-4)  # rows are independent
    assert not torch.allclose(out[1], real, atol=1e-4)
    torch.testing.assert_close(out[1, :pos], real[:pos], atol=1e-4, rtol=1e-4)  # causal: earlier positions kept
    with pytest.raises(InterpError, match="one .or None. per row"):
        spliced_logits(model, batch, tcs, edits=[None])
    with pytest.raises(InterpError, match="no transcoder"):
        spliced_logits(model, batch[:1], {0: tcs[0]}, edits=[(1, 0, 0, 0.0)])
    with pytest.raises(InterpError, match="logit nodes"):
        derivatives(graph, target=graph.n_logits)
