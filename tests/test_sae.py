"""SAE activation rules, gradients, thresholds and SAELens files."""

import json

import pytest
import torch

from interp import InterpError
from interp.sae import SAE, SAEConfig
from interp.sae.io import load_sae, save_sae
from interp.sae.losses import aux_reconstruction_loss
from interp.sae.rules import fc_capacity, select_feature_choice, select_mutual_choice, select_topk, zipf_targets

# Hand-built pre-activations: 3 tokens x 4 features, all entries distinct.
PRE = torch.tensor([[0.9, 0.1, 0.5, -0.2],
                    [0.3, 0.8, 0.7, 0.6],
                    [0.05, 0.2, 0.4, 0.95]])


def pairs(rows, cols):
    return sorted(zip(rows.tolist(), cols.tolist()))


def test_topk_selects_each_tokens_k_largest():
    assert pairs(*select_topk(PRE, 2)) == [(0, 0), (0, 2), (1, 1), (1, 2), (2, 2), (2, 3)]


def test_mutual_choice_selects_the_k_times_batch_largest_entries():
    # k = 2, batch 3: the 6 largest of 12 entries; token 1 gets four, token 2 one, token 0 one.
    assert pairs(*select_mutual_choice(PRE, 2)) == sorted([(2, 3), (0, 0), (1, 1), (1, 2), (1, 3), (0, 2)])


def test_feature_choice_gives_each_feature_its_capacity():
    # k = 2, batch 3: 6 picks over 4 features -> capacities [2, 2, 1, 1]
    assert fc_capacity(4, 2, 3).tolist() == [2, 2, 1, 1]
    assert pairs(*select_feature_choice(PRE, 2)) == sorted([(0, 0), (1, 0), (1, 1), (2, 1), (1, 2), (2, 3)])


def test_feature_choice_columns_keep_at_most_m_on_random_batches():
    pre = torch.randn(64, 96, generator=torch.Generator().manual_seed(0))
    rows, cols = select_feature_choice(pre, 4)
    per_feature = torch.bincount(cols, minlength=96)
    assert (per_feature <= fc_capacity(96, 4, 64)).all() and per_feature.sum() == 4 * 64


def test_zipf_capacity_follows_density_rank_and_keeps_the_budget():
    # k = 2, batch 3, density ranks f1 > f3 > f2 > f0: wants 2.88, 1.44, 0.96, 0.72 -> [1, 3, 1, 1]
    density = torch.tensor([0.0, 0.5, 0.1, 0.3])
    assert fc_capacity(4, 2, 3, density).tolist() == [1, 3, 1, 1]
    density = torch.rand(500, generator=torch.Generator().manual_seed(0))
    m = fc_capacity(500, 16, 128, density)
    by_rank = m[density.argsort(descending=True)]
    assert m.sum() == 16 * 128 and m.max() == 128 and (by_rank[:-1] >= by_rank[1:]).all()
    pre = torch.randn(128, 500, generator=torch.Generator().manual_seed(1))
    rows, cols = select_feature_choice(pre, 16, density=density)
    assert (torch.bincount(cols, minlength=500) == m).all()  # no ties: every feature fills its capacity


def test_feature_choice_zipf_encodes_with_the_sae_density():
    sae = SAE(SAEConfig(d_in=8, d_sae=32, kind="feature_choice", k=4, fc_capacity="zipf"), seed=0).train()
    sae.density.copy_(torch.linspace(1, 0, 32) ** 3)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    per_feature = torch.bincount(sae.encode(x).cols, minlength=32)
    assert per_feature.sum() == 4 * 64 and (per_feature == fc_capacity(32, 4, 64, sae.density)).all()
    assert per_feature[0] > per_feature[-1]


def test_mutual_choice_equals_sae_lens_batchtopk():
    from sae_lens.saes.batchtopk_sae import BatchTopK

    pre = torch.randn(32, 200, generator=torch.Generator().manual_seed(1))
    ref = BatchTopK(k=8)(pre)  # ReLU, then the global top-(k·batch)
    ours = torch.zeros_like(pre)
    rows, cols = select_mutual_choice(pre, 8)
    ours[rows, cols] = pre[rows, cols].relu()
    assert torch.equal(ours, ref)


def test_mutual_choice_fast_path_matches_full_topk():
    pre = torch.randn(256, 1024, generator=torch.Generator().manual_seed(2))  # large enough for the sampled filter
    rows, cols = select_mutual_choice(pre, 16)
    full = pre.flatten().topk(16 * 256).indices
    assert pairs(rows, cols) == pairs(full // 1024, full % 1024)


@pytest.mark.parametrize("kind", ["topk", "mutual_choice", "feature_choice", "relu"])
def test_sparse_gradients_equal_a_dense_reference(kind):
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=8, d_sae=32, kind=kind, k=4), seed=1)
    with torch.no_grad():
        sae.b_dec += 0.1
        sae.b_enc += 0.05 * torch.randn(32)
    x = torch.randn(16, 8)
    codes = sae.encode(x)
    x_hat = sae.decode(codes)
    (x_hat - x).pow(2).sum().backward()
    sparse = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    pre = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    mask = torch.zeros_like(pre, dtype=torch.bool)
    mask[codes.rows, codes.cols] = True
    dense_hat = (pre.relu() * mask) @ sae.W_dec + sae.b_dec
    (dense_hat - x).pow(2).sum().backward()
    assert torch.allclose(x_hat, dense_hat, atol=1e-6)
    for n, p in sae.named_parameters():
        assert torch.allclose(sparse[n], p.grad, atol=1e-5), n
    if kind != "relu":
        assert codes.rows.numel() == 4 * 16


def test_aux_loss_uses_only_the_pool_and_trains_it():
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=8, d_sae=32, kind="topk", k=2), seed=0)
    x = torch.randn(64, 8)
    codes = sae.encode(x)
    x_hat = sae.decode(codes)
    pool = torch.zeros(32, dtype=torch.bool)
    pool[5:9] = True
    loss = aux_reconstruction_loss(sae, x, x_hat, codes.pre, pool, k_aux=3)
    loss.backward()
    touched = sae.W_dec.grad.abs().sum(1) > 0
    assert loss > 0 and touched[5:9].any() and not touched[~pool].any()
    assert aux_reconstruction_loss(sae, x, x_hat, codes.pre, torch.zeros(32, dtype=torch.bool), 3) == 0


def test_zipf_targets_sum_to_k_and_follow_rank():
    density = torch.tensor([0.0, 0.5, 0.1, 0.3])
    t = zipf_targets(density, k=1.0)
    assert torch.isclose(t.sum(), torch.tensor(1.0)) and t[1] > t[3] > t[2] > t[0]
    t = zipf_targets(density, k=3.0)  # 1 : 1/2 : 1/3 : 1/4 scaled to 3 puts the top at 1.44: it caps at 1, the rest take 2
    assert torch.isclose(t.sum(), torch.tensor(3.0)) and t[1] == 1 and torch.allclose(t[[3, 2, 0]], torch.tensor([6, 4, 3]) / 6.5)


def _trained_thresholds(kind: str) -> tuple[SAE, torch.Tensor]:
    """A k = 4 batch-rule SAE whose thresholds were learned over 40 passes of one batch (eval mode)."""
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=16, d_sae=64, kind=kind, k=4, threshold_lr=0.2), seed=0)
    x = torch.randn(512, 16)
    for _ in range(40):
        sae.update_thresholds(sae.encode(x))
    return sae.eval(), x


def test_thresholds_make_batch_rules_batch_independent():
    sae, x = _trained_thresholds("mutual_choice")
    one = torch.cat([sae.encode(x[i : i + 1]).dense() for i in range(8)])
    batch = sae.encode(x[:8]).dense()
    assert torch.equal(one > 0, batch > 0) and torch.allclose(one, batch, atol=1e-5)  # one token alone = in a batch
    assert 2 < sae.encode(x).l0().mean() < 8  # the thresholds keep about k features per token


def test_calibrated_thresholds_give_k_features_per_token():
    sae, x = _trained_thresholds("feature_choice")
    before, fresh = sae.threshold.clone(), torch.randn(512, 16)
    factor = sae.calibrate_thresholds(fresh)
    assert torch.allclose(sae.threshold, before * factor)  # one factor for every feature
    assert abs(sae.encode(fresh).l0().mean().item() - 4) <= 2 / 512  # k per token on the calibration rows
    assert sae.calibrate_thresholds(fresh) == pytest.approx(1.0, abs=1e-5)  # calibrating again changes nothing
    topk = SAE(SAEConfig(d_in=16, d_sae=64, kind="topk", k=4), seed=0)
    assert topk.calibrate_thresholds(x) == 1.0


def test_bad_config_and_input_errors():
    with pytest.raises(InterpError, match="k = 100 must be between 1 and d_sae = 64"):
        SAE(SAEConfig(d_in=8, d_sae=64, k=100))
    with pytest.raises(InterpError, match="Unknown SAE kind"):
        SAE(SAEConfig(kind="gated"))
    with pytest.raises(InterpError, match="Feature Choice capacity"):
        SAE(SAEConfig(kind="feature_choice", fc_capacity="linear"))
    with pytest.raises(InterpError, match="d_in = 8"):
        SAE(SAEConfig(d_in=8, d_sae=16, k=2)).encode(torch.randn(3, 9))


@pytest.mark.parametrize("kind", ["topk", "mutual_choice", "feature_choice", "relu"])
def test_sae_lens_loads_our_files_and_encodes_identically(kind, tmp_path):
    from sae_lens import SAE as LensSAE

    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=16, d_sae=64, kind=kind, k=4, model_name="toy", hook_name="blocks.0.hook_resid_post"), seed=3)
    x = torch.randn(256, 16)
    with torch.no_grad():
        sae.b_dec += 0.3
        sae.b_enc -= 0.1
    for _ in range(10):
        sae.update_thresholds(sae.encode(x))
    sae.threshold[0] = float("inf")  # a feature never selected in training
    save_sae(sae, tmp_path / "sae")
    lens = LensSAE.load_from_disk(str(tmp_path / "sae"))
    ours = load_sae(tmp_path / "sae")
    z_ref = lens.encode(x)
    assert (z_ref - ours.dense_encode(x)).abs().max() < 1e-5
    assert (z_ref - sae.dense_encode(x)).abs().max() < 1e-5
    assert (lens.decode(z_ref) - ours.decode(ours.encode(x))).abs().max() < 1e-5


def test_feature_density_round_trips_in_sae_lens_sparsity_file(tmp_path):
    from safetensors.torch import load_file

    sae = SAE(SAEConfig(d_in=8, d_sae=16, kind="feature_choice", k=2, fc_capacity="zipf"))
    sae.density.copy_(torch.tensor([0.5, 0.0] + [1e-3 * i for i in range(14)]))
    save_sae(sae, tmp_path / "sae")
    log_density = load_file(str(tmp_path / "sae" / "sparsity.safetensors"))["sparsity"]  # SAELens: log10(density + 1e-10)
    assert torch.allclose(log_density, torch.log10(sae.density + 1e-10))
    back = load_sae(tmp_path / "sae")
    assert back.cfg.fc_capacity == "zipf" and torch.allclose(back.density, sae.density, rtol=1e-5, atol=1e-9)


def test_loading_foreign_or_broken_sae_files(tmp_path):
    sae = SAE(SAEConfig(d_in=8, d_sae=16, kind="topk", k=2))
    save_sae(sae, tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "cfg.json").read_text())
    del cfg["d_sae"]
    (tmp_path / "a" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(InterpError, match="lacks the field"):
        load_sae(tmp_path / "a")
    with pytest.raises(InterpError, match="sae_weights.safetensors is missing"):
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "cfg.json").write_text("{}")
        load_sae(tmp_path / "b")
    # a foreign SAELens config without our "interp" block still loads (standard -> relu)
    save_sae(SAE(SAEConfig(d_in=8, d_sae=16, kind="relu")), tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "cfg.json").read_text())
    del cfg["interp"]
    (tmp_path / "c" / "cfg.json").write_text(json.dumps(cfg))
    assert load_sae(tmp_path / "c").cfg.kind == "relu"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_topk_prefilter_is_exact(dtype):
    """The grouped prefilter (d_sae 1536, k 8: 96 groups of 16) picks each row's k largest values."""
    pre = torch.randn(128, 1536, generator=torch.Generator().manual_seed(3)).to(dtype)
    rows, cols = select_topk(pre, 8)
    got = pre[rows, cols].view(128, 8).float().sort(1).values
    want = pre.float().topk(8, dim=1).values.sort(1).values
    assert torch.equal(rows, torch.arange(128).repeat_interleave(8)) and torch.equal(got, want)


def test_batch_rules_keep_their_quota_when_values_tie():
    """Pre-activations on a coarse grid (as bfloat16's 8 mantissa bits make them): many entries equal the
    cut, and the rules still select exactly k·batch entries (MC) and m_f per feature (FC)."""
    g = torch.Generator().manual_seed(4)
    pre = torch.randint(0, 6, (64, 96), generator=g).float()
    rows, cols = select_mutual_choice(pre, 4)
    chosen = torch.zeros_like(pre, dtype=torch.bool)
    chosen[rows, cols] = True
    assert rows.numel() == 4 * 64 and pre[chosen].min() >= pre[~chosen].max()
    assert (rows[1:] >= rows[:-1]).all()  # still in row order
    rows, cols = select_feature_choice(pre, 4)
    assert torch.equal(torch.bincount(cols, minlength=96), fc_capacity(96, 4, 64))
    for f in range(96):  # every feature took its largest tokens
        mine = pre[rows[cols == f], f]
        rest = pre[:, f][~torch.isin(torch.arange(64), rows[cols == f])]
        assert mine.min() >= rest.max()


def test_transcoder_reconstructs_its_output_hook_with_the_sparse_gradients_of_a_dense_one():
    """A skip transcoder's ŷ = topk(pre) @ W_dec + b_dec + x @ W_skip.T, with pre from x − b_in: its sparse
    forward and backward equal the same formula on dense tensors, and b_in (a fixed buffer) gets no gradient."""
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=12, d_sae=40, k=5, transcoder=True, d_out=20, skip=True))
    with torch.no_grad():
        sae.b_in.normal_()
        sae.W_skip.normal_(std=0.1)
        sae.b_dec.normal_()
    sae.train()
    x = torch.randn(16, 12)
    y = sae(x)
    y.pow(2).sum().backward()
    got = {n: p.grad.clone() for n, p in sae.named_parameters()}
    params = {n: p.detach().clone().requires_grad_() for n, p in sae.named_parameters()}
    pre = (x - sae.b_in) @ params["W_enc"].T + params["b_enc"]
    top = pre.topk(5, dim=1)
    z = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
    want = z @ params["W_dec"] + params["b_dec"] + x @ params["W_skip"].T
    assert torch.allclose(y, want, atol=1e-5)
    want.pow(2).sum().backward()
    for n, p in params.items():
        assert torch.allclose(got[n], p.grad, atol=1e-4), n
    assert not sae.b_in.requires_grad and y.shape == (16, 20)
    with pytest.raises(InterpError, match="needs transcoder = True"):
        SAEConfig(d_in=12, d_out=20).check()
