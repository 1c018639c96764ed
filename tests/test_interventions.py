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


def test_force_sink_makes_a_head_write_its_position0_value_everywhere():
    from interp.hooks import run
    from interp.interventions import head_patch

    m = load_model("toy:attn-only-2l", seed=0)
    tokens = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    names = ["blocks.1.attn.hook_z", "blocks.1.attn.hook_v", "blocks.1.attn.hook_pattern"]
    _, acts = run(m, tokens, patch=head_patch("sink", 1, [2]), capture=names)
    z, v, pattern = (acts[n] for n in names)
    assert torch.equal(pattern[:, 2, :, 0], torch.ones(2, 10)) and pattern[:, 2, :, 1:].abs().sum() == 0
    assert torch.allclose(z[:, :, 2], v[:, :1, 2].expand(-1, 10, -1))  # every query reads v_0
    assert not torch.allclose(z[:, :, 1], v[:, :1, 1].expand(-1, 10, -1))  # other heads untouched


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_force_sink_reads_the_shared_kv_head_under_gqa(tiny_llama_dir, backend):
    from interp.hooks import run
    from interp.interventions import head_patch

    m = load_model(str(tiny_llama_dir))  # 4 query heads, 2 KV heads: heads 2, 3 read KV head 1
    tokens = torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(0))
    _, acts = run(m, tokens, patch=head_patch("sink", 1, [3]), capture=["blocks.1.attn.hook_z", "blocks.1.attn.hook_v"], backend=backend)
    z, v = acts["blocks.1.attn.hook_z"], acts["blocks.1.attn.hook_v"]
    assert torch.allclose(z[:, :, 3], v[:, :1, 1].expand(-1, 7, -1), atol=1e-6)


def test_head_intervention_deltas_per_sequence_agree_with_head_ablation_deltas():
    from interp.interventions import head_intervention_deltas, model_sequence_losses, logit_sequence_losses

    m = load_model("toy:attn-only-2l", seed=0)
    tokens = torch.randint(0, 64, (6, 12), generator=torch.Generator().manual_seed(1))
    heads = [(0, 1), (1, 3)]
    zero = head_intervention_deltas(m, tokens, heads, "zero", batch_size=4, quiet=True)  # [head, sequence]
    ref = head_ablation_deltas(m, tokens, heads, batch_size=6, quiet=True)
    assert zero.shape == (2, 6)
    assert zero.mean(1).tolist() == pytest.approx([ref[0, 1].item(), ref[1, 3].item()], abs=1e-5)
    sink = head_intervention_deltas(m, tokens, heads, "sink", clean=model_sequence_losses(m, tokens), quiet=True)
    assert (sink.abs() > 0).all() and not torch.allclose(sink, zero)
    logits = m.forward(tokens)
    assert logit_sequence_losses(logits, tokens).mean().item() == pytest.approx(next_token_loss(logits, tokens).item(), abs=1e-5)
    with pytest.raises(InterpError, match="Unknown head intervention 'mean'"):
        head_intervention_deltas(m, tokens, heads, "mean")
    with pytest.raises(InterpError, match="Layer 5 is out of range"):
        head_intervention_deltas(m, tokens, [(5, 0)], "sink")


# ------------------------------------------------------- initial-token attention scaling (ZeroTuning)


def _rescale_pattern(gamma, heads):
    """Reference: scale the post-softmax attention to key 0 by γ in `heads`, then renormalise the rows."""
    def patch(pattern):
        pattern = pattern.clone()
        pattern[:, heads, :, 0] *= gamma
        pattern[:, heads] /= pattern[:, heads].sum(-1, keepdim=True)
        return pattern

    return patch


@pytest.mark.parametrize("gamma", [0.5, 2.0, 4.0])
@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_scale_initial_attention_is_post_softmax_scale_and_renormalise(smollm2, gamma, backend):
    from interp.hooks import run
    from interp.interventions import scale_initial_attention

    layers, heads = [0, 7, 19], [0, 4, 8]
    tokens = torch.randint(100, 5000, (2, 10), generator=torch.Generator().manual_seed(0))
    clean, _ = run(smollm2, tokens, backend=backend)
    scaled, _ = run(smollm2, tokens, patch=scale_initial_attention(gamma, layers, heads, model=smollm2), backend=backend)
    reference, _ = run(smollm2, tokens, patch={f"blocks.{l}.attn.hook_pattern": _rescale_pattern(gamma, heads) for l in layers},
                       backend=backend)
    torch.testing.assert_close(scaled, reference, rtol=1e-5, atol=2e-4)
    assert (scaled - clean).abs().max() > 0.05  # the intervention does something


def test_gamma_one_leaves_logits_unchanged(smollm2):
    from interp.hooks import run
    from interp.interventions import attention_temperature, scale_initial_attention

    tokens = torch.randint(100, 5000, (2, 9), generator=torch.Generator().manual_seed(1))
    clean, _ = run(smollm2, tokens)
    every = {layer: None for layer in range(30)}
    for patch in (scale_initial_attention(1.0, model=smollm2), attention_temperature(1.0, every, model=smollm2)):
        assert torch.equal(run(smollm2, tokens, patch=patch)[0], clean)


def test_scale_initial_attention_on_a_toy_model_and_per_query_head_under_gqa(tiny_llama_dir):
    from interp.hooks import run
    from interp.interventions import scale_initial_attention

    m = load_model("toy:2l", seed=0)
    tokens = torch.randint(0, 64, (3, 8), generator=torch.Generator().manual_seed(2))
    scaled, _ = run(m, tokens, patch=scale_initial_attention(3.0, [1], [2], model=m))
    reference, _ = run(m, tokens, patch={"blocks.1.attn.hook_pattern": _rescale_pattern(3.0, [2])})
    torch.testing.assert_close(scaled, reference, rtol=1e-5, atol=1e-5)
    # GQA: query heads 2 and 3 share KV head 1; scaling head 3 leaves head 2's pattern alone.
    g = load_model(str(tiny_llama_dir))
    tokens = torch.randint(0, 1000, (2, 6), generator=torch.Generator().manual_seed(0))
    name = "blocks.1.attn.hook_pattern"
    clean = run(g, tokens, capture=[name])[1][name]
    pattern = run(g, tokens, capture=[name], patch=scale_initial_attention(2.0, [1], [3], model=g))[1][name]
    assert torch.equal(pattern[:, :3], clean[:, :3])
    a0, b0 = clean[:, 3, :, 0], pattern[:, 3, :, 0]
    torch.testing.assert_close(b0, 2 * a0 / (1 + a0), rtol=1e-5, atol=1e-6)


def test_scale_key_attention_per_row_keys_and_attention_temperature():
    from interp.hooks import run
    from interp.interventions import attention_temperature, scale_key_attention

    m = load_model("toy:attn-only-2l", seed=0)
    tokens = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(3))
    every = {0: None, 1: [1, 2]}
    rows, _ = run(m, tokens.expand(3, -1), patch=scale_key_attention(0.5, every, key=[0, 4, 8], model=m))
    for row, key in enumerate([0, 4, 8]):
        one, _ = run(m, tokens, patch=scale_key_attention(0.5, every, key=key, model=m))
        torch.testing.assert_close(rows[row], one[0], rtol=1e-5, atol=1e-5)
    # τ on all of a layer's heads = the query weights divided by τ
    hot, _ = run(m, tokens, patch=attention_temperature(0.7, {1: None}, model=m))
    with torch.no_grad():
        m.module.blocks[1].attn.W_Q /= 0.7
        m.module.blocks[1].attn.b_Q /= 0.7
    torch.testing.assert_close(hot, m.forward(tokens), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("gamma, layers, heads, message", [
    (0.0, [0], None, "γ must be a finite number > 0"),
    (-2, [0], None, "γ must be a finite number > 0"),
    (float("nan"), [0], None, "γ must be a finite number > 0"),
    (2.0, [5], None, "Layer 5 is out of range"),
    (2.0, [1], [4], "Head 4 is out of range"),
])
def test_scale_initial_attention_bad_input(gamma, layers, heads, message):
    from interp.interventions import attention_temperature, scale_initial_attention

    m = load_model("toy:attn-only-2l")  # 2 layers, 4 heads
    with pytest.raises(InterpError, match=message):
        scale_initial_attention(gamma, layers, heads, model=m)
    with pytest.raises(InterpError, match="needs the layers"):
        scale_initial_attention(2.0)
    with pytest.raises(InterpError, match="τ must be a finite number > 0"):
        attention_temperature(0, {0: None})


def test_scale_initial_attention_index_errors_at_run_time():
    from interp.hooks import run
    from interp.interventions import scale_initial_attention, scale_key_attention

    m = load_model("toy:attn-only-2l")  # 4 heads per layer
    tokens = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(0))
    with pytest.raises(InterpError, match="Head 6 is out of range"):
        run(m, tokens, patch=scale_initial_attention(2.0, [0], [6]))  # no model given: checked on the activation
    with pytest.raises(InterpError, match="Key position 7 is beyond"):
        run(m, tokens, patch=scale_key_attention(2.0, {0: None}, key=7))
    with pytest.raises(InterpError, match="one per row"):
        run(m, tokens, patch=scale_key_attention(2.0, {0: None}, key=[0, 1, 2]))


def test_window_blocked_follows_its_definition():
    from interp.interventions import window_blocked

    for n_query, n_key, window, sinks in [(7, 7, 3, 0), (7, 7, 3, 2), (3, 9, 2, 1), (5, 5, 9, 0)]:
        got = window_blocked(n_query, n_key, window, sinks)
        for qi in range(n_query):
            i = n_key - n_query + qi  # the query's absolute position
            for j in range(n_key):
                assert got[qi, j].item() == (not (j <= i and (j < sinks or i - j < window))), (n_query, n_key, window, sinks, i, j)


def test_attention_window_limits_the_pattern_on_a_toy_model():
    from interp.hooks import run
    from interp.interventions import attention_window, evicting_cache_logits

    m = load_model("toy:attn-only-2l", seed=0)
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    dense, _ = run(m, tokens)
    wide, _ = run(m, tokens, patch=attention_window(m, window=12))
    assert torch.equal(dense, wide)  # a window as long as the text blocks nothing
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(2)]
    _, acts = run(m, tokens, patch=attention_window(m, window=3, sinks=1), capture=names)
    for name in names:
        pattern = acts[name]  # [batch, head, q, k]
        allowed = torch.tensor([[k <= q and (k < 1 or q - k < 3) for k in range(12)] for q in range(12)])
        assert pattern[..., ~allowed].abs().max() == 0 and pattern[..., 5, [0, 3, 4, 5]].min() > 0
        assert torch.allclose(pattern.sum(-1), torch.ones(()))
    _, only_self = run(m, tokens, patch=attention_window(m, window=1), capture=names[:1])
    assert torch.allclose(only_self[names[0]], torch.eye(12).expand(2, 4, 12, 12))
    with pytest.raises(InterpError, match="window must be a whole number"):
        attention_window(m, window=0)
    with pytest.raises(InterpError, match="sink tokens must be a whole number"):
        attention_window(m, window=4, sinks=-1)
    with pytest.raises(InterpError, match="HF model's own KV cache"):
        evicting_cache_logits(m, tokens, window=4)


def _pair():
    m = load_model("toy:attn-only-2l", seed=0)
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(0, 64, (1, 12), generator=g)
    corrupt = clean.clone()
    corrupt[0, 4] = (clean[0, 4] + 7) % 64
    return m, clean, corrupt


def test_residual_patching_restores_exactly_the_changed_embedding():
    """At layer 0, resid_pre is the embedding: restoring the one changed position gives the clean
    run (1.0), any other position changes nothing (0.0)."""
    from interp.interventions import patch_residual

    m, clean, corrupt = _pair()
    r = patch_residual(m, clean, corrupt, good=3, bad=5)
    assert r.shape == (2, 12)
    assert r[0, 4].item() == pytest.approx(1.0, abs=1e-5)
    assert r[0].abs()[torch.arange(12) != 4].max().item() < 1e-5
    assert r[1, :4].abs().max().item() < 1e-5  # positions before the change are identical in both runs


def test_noising_breaks_exactly_at_the_changed_embedding():
    """Noising runs the clean prompt with one corrupted activation: at layer 0 the changed position
    gives the corrupted run (0.0, on the same clean = 1 scale), every other position leaves it clean."""
    from interp.interventions import patch_residual

    m, clean, corrupt = _pair()
    r = patch_residual(m, clean, corrupt, good=3, bad=5, noising=True)
    assert r[0, 4].item() == pytest.approx(0.0, abs=1e-5)
    assert (r[0] - 1)[torch.arange(12) != 4].abs().max().item() < 1e-5
    assert (r[1, :4] - 1).abs().max().item() < 1e-5


def test_head_noising_matches_one_head_at_a_time():
    from interp.hooks import run
    from interp.interventions import logit_diff, patch_heads

    m, clean, corrupt = _pair()
    noised = patch_heads(m, clean, corrupt, 3, 5, noising=True)
    lo, hi = (logit_diff(run(m, t)[0], 3, 5).item() for t in (corrupt, clean))
    name = "blocks.1.attn.hook_z"
    z = capture(m, corrupt, [name])[name]

    def one(act):
        act = act.clone()
        act[:, :, 2] = z[:, :, 2]
        return act

    want = (logit_diff(run(m, clean, patch={name: one})[0], 3, 5).item() - lo) / (hi - lo)
    assert noised[1, 2].item() == pytest.approx(want, abs=1e-4)


def test_batched_head_patching_and_ablation_match_one_head_at_a_time():
    from interp.hooks import run
    from interp.interventions import ablate_heads, logit_diff, patch_heads, zero_heads

    m, clean, corrupt = _pair()
    good, bad = 3, 5
    patched, ablated = patch_heads(m, clean, corrupt, good, bad), ablate_heads(m, clean, good, bad)
    assert patched.shape == ablated.shape == (2, 4)
    lo, hi = (logit_diff(run(m, t)[0], good, bad).item() for t in (corrupt, clean))
    base = logit_diff(run(m, clean)[0], good, bad).item()
    for layer, head in [(0, 1), (1, 3)]:
        name = f"blocks.{layer}.attn.hook_z"
        z = capture(m, clean, [name])[name]

        def one(act, head=head, z=z):
            act = act.clone()
            act[:, :, head] = z[:, :, head]
            return act

        want = (logit_diff(run(m, corrupt, patch={name: one})[0], good, bad).item() - lo) / (hi - lo)
        assert patched[layer, head].item() == pytest.approx(want, abs=1e-4)
        zeroed = logit_diff(run(m, clean, patch={name: zero_heads([head])})[0], good, bad).item()
        assert ablated[layer, head].item() == pytest.approx(zeroed - base, abs=1e-4)


def test_patching_needs_prompts_of_one_length():
    from interp.interventions import patch_residual

    m, clean, _ = _pair()
    with pytest.raises(InterpError, match="same length"):
        patch_residual(m, clean, clean[:, :-1], 3, 5)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gemma3", "gpt2"])
def test_last_token_logits_unembeds_only_the_last_positions_and_agrees_with_the_full_forward(family, tmp_path, monkeypatch):
    """The pass stops at the last residual and unembeds one position per prompt (soft-capping included,
    Gemma-2); a patch after that residual makes it run the whole forward instead. Both agree with it."""
    from interp import interventions
    from interp.hooks import run
    from interp.interventions import last_token_logits, scale_initial_attention
    from tiny_models import make_tiny

    stops = []
    monkeypatch.setattr(interventions, "run", lambda *a, **k: stops.append(k.get("stop_early", False)) or run(*a, **k))
    m = load_model(str(make_tiny(tmp_path / family, family)))
    prompts = [[5, 9, 30, 41, 7], [8, 3], [100, 101, 102]]
    patch = scale_initial_attention(2.0, model=m)
    for backend in ("transformer_lens", "nnsight"):
        fast = last_token_logits(m, prompts, patch=patch, backend=backend)
        assert not fast.requires_grad  # scores: no autograd graph kept behind them
        for i, p in enumerate(prompts):
            full, _ = run(m, torch.tensor([p]), patch=patch, backend=backend)
            assert torch.allclose(fast[i], full[0, -1].float(), atol=1e-4), (family, backend, i)
    assert stops == [True, True]  # one batch per backend, each stopped at the last residual
    late = {"ln_final.hook_scale": lambda s: s * 2}  # after the last residual: the whole forward, and it changes the logits
    assert not torch.allclose(last_token_logits(m, prompts, patch=late), last_token_logits(m, prompts), atol=1e-3)
    assert stops[2:] == [False, True]
