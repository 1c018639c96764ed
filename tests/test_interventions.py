import pytest
import torch

from interp import InterpError
from interp.attention import alpha, classify_heads
from interp.hooks import capture
from interp.interventions import head_ablation_deltas, next_token_loss
from interp.models import load_model


def test_head_ablation_deltas_and_dormant_classification():
    """Head 1.2 writes nothing (W_O = 0): ablating it costs exactly 0 nats, every other head costs
    something. Given that it also sinks (α_0 = 1), it is the only dormant head."""
    m = load_model("toy:attn-only-2l", seed=0)
    with torch.no_grad():
        m.module.blocks[1].attn.W_O[2].zero_()
    tokens = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    deltas = head_ablation_deltas(m, tokens, quiet=True)
    assert deltas.shape == (2, 4) and deltas[1, 2].item() == 0.0
    assert (deltas.abs() > 0).sum().item() == 7
    pattern = capture(m, tokens, ["blocks.1.attn.hook_pattern"])["blocks.1.attn.hook_pattern"]
    alpha0 = torch.zeros(2, 4)
    alpha0[1] = alpha(pattern).mean(0)[:, 0]
    alpha0[1, 2] = 1.0  # head 1.2 sinks
    dormant = classify_heads(alpha0, deltas, sink_threshold=0.5, loss_threshold=1e-6)
    assert dormant.nonzero().tolist() == [[1, 2]]


def test_selected_heads_only_and_bad_indices():
    m = load_model("toy:attn-only-1l")
    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    deltas = head_ablation_deltas(m, tokens, heads=[(0, 1)], quiet=True)
    assert torch.isnan(deltas[0, 0]) and not torch.isnan(deltas[0, 1])
    with pytest.raises(InterpError, match="Layer 3 is out of range"):
        head_ablation_deltas(m, tokens, heads=[(3, 0)])
    with pytest.raises(InterpError, match="Head 9 is out of range"):
        head_ablation_deltas(m, tokens, heads=[(0, 9)])


def test_next_token_loss_of_a_perfect_predictor_is_zero():
    tokens = torch.tensor([[1, 2, 3]])
    logits = torch.full((1, 3, 5), -1e4)
    logits[0, 0, 2] = logits[0, 1, 3] = 1e4
    assert next_token_loss(logits, tokens).item() == 0.0


def test_head_activity_finds_dormant_sink_heads_in_smollm2(smollm2):
    from interp.attention import head_activity
    from interp.corpus import mixed_texts

    tokens = smollm2.to_tokens([t.text for t in mixed_texts(4)], 32)
    heads = [(20, h) for h in range(9)]
    r = head_activity(smollm2, tokens, heads=heads, sink_threshold=0.5, loss_threshold=0.01)
    assert r["alpha0"].shape == (30, 9) and ((r["alpha0"] >= 0) & (r["alpha0"] <= 1)).all()
    assert torch.isnan(r["delta_loss"][0]).all() and not torch.isnan(r["delta_loss"][20]).any()
    dormant = r["dormant"].nonzero().tolist()
    assert dormant and all(layer == 20 for layer, _ in dormant)  # only evaluated heads can be dormant
    for layer, head in dormant:
        assert r["alpha0"][layer, head] > 0.5 and abs(r["delta_loss"][layer, head]) < 0.01


def test_zero_ablate_removes_a_whole_component():
    from interp.hooks import run
    from interp.interventions import zero_ablate

    m = load_model("toy:2l", seed=0)
    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    _, acts = run(m, tokens, patch={"blocks.0.hook_mlp_out": zero_ablate}, capture=["blocks.0.hook_resid_post", "blocks.0.hook_resid_mid"])
    assert torch.equal(acts["blocks.0.hook_resid_post"], acts["blocks.0.hook_resid_mid"])  # the MLP adds nothing
