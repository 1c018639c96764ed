"""interp.subnetworks: the sparse bigram target, masked forwards, mask training, residual rotation."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from interp import InterpError
from interp import subnetworks as sn
from interp.models import toy_model


def test_bigram_probabilities_by_hand():
    # pairs: (0,1) x2, (1,0), (1,2); unigram counts 2, 2, 1, 0 -> add-one (3, 3, 2, 1) / 9
    bg = sn.count_bigram(np.array([[0, 1, 0, 1, 2]]), d_vocab=4)
    u = torch.tensor([3, 3, 2, 1]) / 9
    p = lambda x, y: math.exp(bg.log_prob(torch.tensor([x]), torch.tensor([y])).item())
    assert p(0, 1) == pytest.approx(2 / 3 * 1 + 1 / 3 * u[1].item())  # 1 type over 2 counts: back-off 1/3
    assert p(0, 2) == pytest.approx(1 / 3 * u[2].item())
    assert p(1, 0) == pytest.approx(2 / 4 * 1 / 2 + 2 / 4 * u[0].item())  # 2 types over 2 counts: back-off 1/2
    assert p(3, 2) == pytest.approx(u[2].item())  # an unseen context is the unigram
    for x in range(4):
        assert sum(p(x, y) for y in range(4)) == pytest.approx(1.0, abs=1e-6)


def test_cross_entropy_equals_the_dense_target():
    rng = np.random.default_rng(0)
    V = 11
    bg = sn.count_bigram(rng.integers(0, V - 1, size=(20, 30)), d_vocab=V)  # token V-1 never seen
    xs, ys = torch.meshgrid(torch.arange(V), torch.arange(V), indexing="ij")
    dense = bg.log_prob(xs.flatten(), ys.flatten()).exp().view(V, V)  # [current, next]
    assert torch.allclose(dense.sum(1), torch.ones(V), atol=1e-6)
    logits = torch.randn(50, V, dtype=torch.float64)
    current = torch.randint(0, V, (50,))
    expected = -(dense[current].double() * logits.log_softmax(-1)).sum(-1)
    assert torch.allclose(bg.cross_entropy(logits, current), expected, atol=1e-5)
    padded = torch.cat([logits, torch.zeros(50, 3, dtype=torch.float64)], 1)  # padded vocabulary: extra logits ignored
    assert torch.allclose(bg.cross_entropy(padded, current), expected, atol=1e-5)


def test_unembedded_cross_entropy_is_the_plain_loss_and_its_gradient():
    rng = np.random.default_rng(1)
    V, d, n = 37, 8, 23
    bg = sn.count_bigram(rng.integers(0, V - 2, size=(30, 20)), d_vocab=V)
    weight, bias = torch.randn(V + 3, d), torch.randn(V + 3)  # three padded rows: ignored
    current = torch.randint(0, V, (n,))
    scale = torch.rand(n)  # a non-uniform incoming gradient
    states = torch.randn(n, d, requires_grad=True)
    plain = bg.cross_entropy(states @ weight.T + bias, current)
    (plain * scale).sum().backward()
    expected_grad, states.grad = states.grad.clone(), None
    fused = bg.unembedded_cross_entropy(states, weight, current, bias, chunk=5)  # chunks that do not divide n
    (fused * scale).sum().backward()
    assert torch.allclose(fused, plain, atol=1e-5)
    assert torch.allclose(states.grad, expected_grad, atol=1e-5)
    with torch.no_grad():  # no gradient wanted: the same losses
        assert torch.allclose(bg.unembedded_cross_entropy(states, weight, current, bias), plain, atol=1e-5)
    states.grad = None
    low = bg.unembedded_cross_entropy(states, weight.bfloat16(), current, bias)  # bfloat16 matmuls, float32 loss
    (low * scale).sum().backward()
    assert low.dtype == torch.float32 and states.grad.dtype == torch.float32
    assert torch.allclose(low, plain, atol=0.05)
    assert torch.nn.functional.cosine_similarity(states.grad.flatten(), expected_grad.flatten(), dim=0) > 0.999
    with pytest.raises(InterpError, match="vocabulary size"):
        bg.unembedded_cross_entropy(states, weight[: V - 1], current)


def test_final_states_unembed_to_the_logits():
    model = _toy()
    tokens = torch.randint(0, 12, (2, 9))
    weights = {n: torch.zeros_like(p) for n, p in sn.weight_matrices(model, [1]).items()}
    w, b = sn.unembedding(model)
    states = sn.forward(model, tokens, weights, unembed=False)  # [batch, pos, d_model]
    assert states.shape == (2, 9, 32)
    assert torch.allclose(states @ w.T + b, sn.forward(model, tokens, weights), atol=1e-5)


def test_bad_bigram_input():
    with pytest.raises(InterpError, match="outside the vocabulary"):
        sn.count_bigram(np.array([[0, 5]]), d_vocab=4)
    with pytest.raises(InterpError, match="at least 2 positions"):
        sn.count_bigram(np.array([[0], [1]]), d_vocab=4)
    bg = sn.count_bigram(np.array([[0, 1, 2]]), d_vocab=4)
    with pytest.raises(InterpError, match="vocabulary size"):
        bg.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]))


def _toy(bias=True, layers=3):
    cfg = dict(n_layers=layers, d_model=32, n_heads=2, d_head=16, d_mlp=64, n_ctx=16, d_vocab=12, act_fn="gelu",
               normalization_type="LN", bias=bias)
    return toy_model(cfg, seed=1)


def test_forward_skips_zeroed_blocks_exactly():
    model = _toy(bias=False)
    W = sn.weight_matrices(model)
    assert all(sn.block_of(n) in (0, 1, 2) and p.ndim >= 2 for n, p in W.items())
    assert {sn.part_of(n) for n in W} == {"attn", "mlp"}
    zero = {n: torch.zeros_like(p) for n, p in W.items() if sn.block_of(n) > 0}
    assert sn._identity_blocks(model, zero) == {1, 2}
    tokens = torch.randint(0, 12, (3, 10))
    skipped = sn.forward(model, tokens, zero)
    full = sn.forward(model, tokens, zero, skip_identity=False)
    assert torch.allclose(skipped, full, atol=1e-5)
    assert len(model.module.blocks) == 3  # the block list is restored
    assert torch.allclose(sn.forward(model, tokens, {}), model.forward(tokens), atol=1e-6)


def test_a_block_with_a_bias_is_not_skipped():
    model = _toy(bias=True)
    with torch.no_grad():
        model.module.blocks[1].attn.b_O.fill_(0.5)
    zero = {n: torch.zeros_like(p) for n, p in sn.weight_matrices(model).items() if sn.block_of(n) > 0}
    assert sn._identity_blocks(model, zero) == {2}
    tokens = torch.randint(0, 12, (2, 8))
    assert torch.allclose(sn.forward(model, tokens, zero), sn.forward(model, tokens, zero, skip_identity=False), atol=1e-5)


def test_smollm2_first_blocks_alone_equal_the_zeroed_model(smollm2):
    W = sn.weight_matrices(smollm2)
    assert len(W) == 30 * 7 and all(".layers." in n for n in W)
    zero = {n: torch.zeros_like(p) for n, p in W.items() if sn.block_of(n) >= 2}
    tokens = torch.tensor([smollm2.encode("def add(a, b):\n    return a + b\n")[:12]])
    assert torch.allclose(sn.forward(smollm2, tokens, zero), sn.forward(smollm2, tokens, zero, skip_identity=False), atol=1e-4)
    w, b = sn.unembedding(smollm2)  # HF: the base model's output (after the final norm), unembedded
    assert b is None
    assert torch.allclose(sn.forward(smollm2, tokens, zero, unembed=False) @ w.T, sn.forward(smollm2, tokens, zero), atol=1e-4)


def test_train_masks_keeps_fewer_weights_under_a_larger_lambda():
    model = _toy(bias=False, layers=2)
    rng = np.random.default_rng(0)
    corpus = np.tile(np.arange(12), (8, 3))[:, :16]  # a deterministic cycle: x -> x + 1
    bg = sn.count_bigram(corpus, 12)
    loss = lambda logits, tok: bg.cross_entropy(logits[:, :-1].flatten(0, 1), tok[:, :-1]).mean()

    def batches():
        while True:
            yield torch.from_numpy(corpus[rng.integers(0, 8, 4)]).long()

    masked = [n for n in sn.weight_matrices(model) if sn.block_of(n) == 0]
    zeroed = [n for n in sn.weight_matrices(model) if sn.block_of(n) == 1]
    grads = [p.requires_grad for p in model.module.parameters()]
    kept = {}
    for lam in (0.01, 100.0):
        cfg = sn.MaskConfig(lam=lam, lr=0.05, temperature_growth=1.05, max_steps=300, log_every=10)
        sub, history = sn.train_masks(model, masked, zeroed, batches(), loss, cfg)
        assert set(sub.masks) == set(masked) and sub.zeroed == zeroed
        assert all(m.dtype == torch.bool and m.shape == dict(model.module.named_parameters())[n].shape for n, m in sub.masks.items())
        assert history[-1]["step"] < 300  # the stopping rule fired
        assert history[-1]["undecided_share"] < 0.01 * history[-1]["kept_share"] or history[-1]["undecided_share"] == 0
        kept[lam] = sub.share()
    assert kept[100.0] < kept[0.01]
    assert [p.requires_grad for p in model.module.parameters()] == grads  # weights frozen only while training
    assert torch.tensor(1e-40).item() != 0  # denormals are flushed only while masks train
    with pytest.raises(InterpError, match="unknown parameters"):
        sn.train_masks(model, ["blocks.0.nope"], [], batches(), loss, sn.MaskConfig())


def test_random_like_keeps_the_count_per_matrix():
    masks = {"a": torch.rand(5, 7) > 0.7, "b": torch.rand(3, 4, 2) > 0.2}
    sub = sn.Subnetwork(masks, ["c"])
    rand = sn.random_like(sub, seed=3)
    assert rand.kept() == sub.kept() and rand.zeroed == ["c"]
    assert any(not torch.equal(rand.masks[n], masks[n]) for n in masks)


def test_ridge_map_matches_sklearn_and_rotations():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 6, generator=g), torch.randn(300, 6, generator=g)
    ours = sn.ridge_map(x, y, alpha=1.0)
    ref = Ridge(alpha=1.0, fit_intercept=True).fit(x.numpy(), y.numpy()).coef_
    assert np.allclose(ours.numpy(), ref, atol=1e-8)
    streamed = sn.Moments()  # chunk by chunk, an offset mean (as residual streams have) and two targets
    for i in range(0, 300, 70):
        streamed.add(x[i: i + 70].double() + 50, y=y[i: i + 70], z=2 * y[i: i + 70])
    assert streamed.n == 300
    assert np.allclose(streamed.ridge("y").numpy(), ref, atol=1e-8)
    assert np.allclose(streamed.ridge("z").numpy(), 2 * ref, atol=1e-8)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    rot = torch.block_diag(*[torch.tensor([[c, -s], [s, c]])] * 3)
    assert sn.median_rotation(rot) == pytest.approx(30.0)
    assert sn.median_rotation(torch.eye(4)) == pytest.approx(0.0)
    assert sn.median_rotation(sn.ridge_map(x, x @ rot.T.float(), alpha=1e-6)) == pytest.approx(30.0, abs=0.01)
    with pytest.raises(InterpError, match="square"):
        sn.median_rotation(torch.zeros(2, 3))
