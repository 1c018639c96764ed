"""SAEBench's core metrics on SAEs whose answers are known, and the suite's table and bad input."""

import math

import pytest
import torch

from interp import InterpError
from interp.sae import SAE, SAEConfig
from interp.sae.evals import core_metrics, max_cosine
from interp.sae.suite import headline, parse_suites, summary


def signed_basis_sae(d: int = 4, k: int | None = None) -> SAE:
    """Features ±e_i (encoder = decoder): with k = d every x is reconstructed exactly, since ReLU keeps
    x_i on +e_i or −x_i on −e_i and nothing else fires."""
    sae = SAE(SAEConfig(d_in=d, d_sae=2 * d, kind="topk", k=k or d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def test_a_perfect_reconstruction_scores_one_everywhere():
    x = torch.randn(512, 4, generator=torch.Generator().manual_seed(0))
    m = core_metrics(signed_basis_sae(), x)
    rq, sh = m["reconstruction_quality"], m["shrinkage"]
    assert rq["explained_variance"] == pytest.approx(1, abs=1e-6) and rq["mse"] == pytest.approx(0, abs=1e-9)
    assert rq["cossim"] == pytest.approx(1, abs=1e-6) and rq["explained_variance_legacy"] == pytest.approx(1, abs=1e-6)
    assert sh["l2_ratio"] == pytest.approx(1, abs=1e-6) and sh["relative_reconstruction_bias"] == pytest.approx(1, abs=1e-6)
    assert m["sparsity"]["l0"] == pytest.approx(4)
    assert m["sparsity"]["l1"] == pytest.approx(x.abs().sum(-1).mean().item(), rel=1e-5)  # Σ_i |x_i|
    misc = m["misc_metrics"]
    # each signed feature fires on about half the tokens: all alive, all above 10%
    assert misc["frac_alive"] == 1 and misc["freq_over_10_percent"] == 1 and misc["normalized_freq_over_1_percent"] == 1
    assert misc["average_encoder_decoder_cosine_sim"] == pytest.approx(1)
    assert misc["average_max_decoder_cosine_sim"] == pytest.approx(0, abs=1e-7)  # ±e_i: cosines 0 and −1 only
    assert m["features"]["feature_density"] == pytest.approx([0.5] * 8, abs=0.1)


def test_shrinkage_and_bias_follow_a_scaled_decoder():
    """Halving the decoder halves every reconstruction: L2 ratio 0.5, relative bias 0.5, cosine still 1,
    explained variance 1 − E|x/2|² / Var = 0.75 for centred data."""
    sae = signed_basis_sae(d=8)
    with torch.no_grad():
        sae.W_dec.mul_(0.5)
    x = torch.randn(20000, 8, generator=torch.Generator().manual_seed(1))
    m = core_metrics(sae, x)
    assert m["shrinkage"]["l2_ratio"] == pytest.approx(0.5, abs=1e-5)
    assert m["shrinkage"]["relative_reconstruction_bias"] == pytest.approx(0.5, abs=1e-5)
    assert m["reconstruction_quality"]["cossim"] == pytest.approx(1, abs=1e-5)
    assert m["reconstruction_quality"]["explained_variance"] == pytest.approx(0.75, abs=0.01)


def test_dead_and_dense_features_are_counted():
    """k = 1 of 8 signed features on data that lives on the first axis: only ±e_0 ever fire."""
    x = torch.zeros(1000, 4)
    x[:, 0] = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    m = core_metrics(signed_basis_sae(k=1), x)
    misc = m["misc_metrics"]
    assert misc["frac_alive"] == pytest.approx(2 / 8) and misc["freq_over_10_percent"] == pytest.approx(2 / 8)
    assert m["reconstruction_quality"]["explained_variance"] == pytest.approx(1, abs=1e-6)


def test_max_cosine_ignores_each_row_itself():
    rows = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    assert max_cosine(rows, chunk=2).tolist() == pytest.approx([math.sqrt(0.5), math.sqrt(0.5), 0.0])


def test_the_summary_shows_every_sae_and_headline():
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(3))
    results = {"exact": {"core": core_metrics(signed_basis_sae(), x)}, "k1": {"core": core_metrics(signed_basis_sae(k=1), x)}}
    table = summary(results)
    assert "exact" in table.splitlines()[0] and "k1" in table.splitlines()[0]
    assert headline(results["exact"])["cosine"] == pytest.approx(1)
    assert "explained variance" in table and "CE score" not in table  # no splice, no CE row


def test_bad_input_is_refused_with_what_to_do():
    with pytest.raises(InterpError, match="subset of core, probing, absorption"):
        parse_suites("core,sparsity")
    with pytest.raises(InterpError, match="subset"):
        parse_suites(" , ")
    assert parse_suites("probing, core,probing") == ["probing", "core"]
    sae = signed_basis_sae()
    sae.cfg.max_norm = 0.1
    with pytest.raises(InterpError, match="No activations to evaluate"):
        core_metrics(sae, torch.ones(10, 4))


@pytest.mark.parametrize("arch", ["standard", "jumprelu", "topk"])
def test_an_sae_saelens_saved_is_scored_from_saelens_own_reconstruction(arch, tmp_path):
    """SAEs written by SAELens itself load and get the core metrics SAELens's own encode/decode imply."""
    import sae_lens

    from interp.sae.io import load_sae

    d_in, d_sae = 16, 48
    cls, cfg_cls = {"standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig),
                    "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig),
                    "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig)}[arch]
    lens = cls(cfg_cls(d_in=d_in, d_sae=d_sae, **({"k": 6} if arch == "topk" else {})))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in lens.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        if arch == "jumprelu":
            lens.threshold.copy_(torch.rand(d_sae, generator=g) * 0.2)
    lens.save_model(str(tmp_path))
    x = torch.randn(2048, d_in, generator=g)
    with torch.no_grad():
        z = lens.encode(x)
        rec = lens.decode(z)
    m = core_metrics(load_sae(tmp_path), x)
    ev = 1 - (x - rec).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert m["reconstruction_quality"]["explained_variance"] == pytest.approx(ev.item(), abs=1e-4)
    assert m["sparsity"]["l0"] == pytest.approx((z > 0).sum(-1).float().mean().item(), abs=1e-3)
    assert m["features"]["feature_density"] == pytest.approx((z > 0).float().mean(0).tolist(), abs=1e-6)
