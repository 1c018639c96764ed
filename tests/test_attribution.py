"""Attribution patching against activation patching. Where the metric is linear in a cell, AtP is exact,
and where it is linear in the attention pattern, AtP*'s QK fix is exact while plain AtP is not: those
cases are built here (attention-only toys without any norm), so every equality below can fail."""

import pytest
import torch

from interp import InterpError
from interp.attribution import attribute, feature_cells
from interp.hooks import run
from interp.models import load_model, toy_model
from interp.patching import Pair, activation_patching, metric, patch_cells, top_cells, verify
from interp.sae import SAE, SAEConfig

LINEAR = dict(n_layers=1, d_model=16, n_heads=2, d_head=8, n_ctx=12, d_vocab=20, attn_only=True,
              normalization_type=None, positional_embedding_type="standard")


def _pair(model, changed=(3,), T=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, model.info.d_vocab, (1, T), generator=g)
    corrupt = clean.clone()
    for p in changed:
        corrupt[0, p] = (clean[0, p] + 5) % model.info.d_vocab
    return Pair.of(model, clean, corrupt)


@pytest.mark.parametrize("noising", [False, True])
def test_atp_is_exact_where_the_metric_is_linear_in_the_cell(noising):
    """One attention-only layer, no norm: logits are linear in each head's z, so AtP = patching."""
    m = toy_model(LINEAR, seed=0)
    pair, score = _pair(m), metric("logit_diff", 2, 7)
    exact = activation_patching(m, pair, score, ["heads", "head_positions"], noising=noising)
    est = attribute(m, pair, score, ["heads", "head_positions"], noising=noising)
    assert exact.clean == pytest.approx(est.clean) and exact.corrupt == pytest.approx(est.corrupt)
    for fam in ("heads", "head_positions"):
        assert est.scores[fam].shape == exact.scores[fam].shape
        torch.testing.assert_close(est.scores[fam], exact.scores[fam], atol=1e-4, rtol=1e-4)


def test_qk_fix_is_exact_through_the_softmax_and_plain_atp_is_not():
    """In that model the metric is linear in the pattern: AtP* (exact softmax) equals patching q and k;
    AtP's linearisation through the softmax does not."""
    m = toy_model(LINEAR, seed=0)
    with torch.no_grad():  # sharp attention, as in a trained model: the softmax's curvature matters
        m.module.blocks[0].attn.W_Q.mul_(8.0)
    pair, score = _pair(m, changed=(2, 5, 8)), metric("logit_diff", 2, 7)
    exact = activation_patching(m, pair, score, ["q", "k"])
    star = attribute(m, pair, score, ["q", "k"], method="atp*")
    plain = attribute(m, pair, score, ["q", "k"], method="atp")
    for fam in ("q", "k"):
        torch.testing.assert_close(star.scores[fam], exact.scores[fam], atol=1e-4, rtol=1e-4)
    assert max((plain.scores[f] - exact.scores[f]).abs().max().item() for f in ("q", "k")) > 1e-2


def test_sae_features_are_exact_when_linear_and_the_spliced_model_is_unchanged():
    m = toy_model(LINEAR, seed=0)
    pair, score = _pair(m), metric("logit_diff", 2, 7)
    sae = SAE(SAEConfig(d_in=16, d_sae=24, kind="relu", hook_name="blocks.0.hook_resid_post"), seed=3).eval()
    est = attribute(m, pair, score, ["features"], sae=sae)
    assert est.scores["features"].shape == (24,)
    h = "blocks.0.hook_resid_post"
    src, base = run(m, pair.clean, capture=[h])[1], run(m, pair.corrupt, capture=[h])[1]
    cells = feature_cells(sae, h, src[h][0], base[h][0], range(24))
    values = patch_cells(m, pair.corrupt, {}, cells, score)
    exact = (values - est.corrupt) / (est.clean - est.corrupt)
    torch.testing.assert_close(est.scores["features"], exact, atol=1e-4, rtol=1e-4)
    assert (exact - est.scores["features"]).abs().max() < 1e-4 and exact.abs().max() > 1e-3  # features do matter


def test_grad_drop_is_the_mean_absolute_estimate_over_the_other_layers():
    """Two layers: cutting layer 0's writes leaves layer 1's gradient alone, and cutting layer 1 cuts
    layer 1's own heads off, so for layer-1 heads GradDrop is |AtP| (one other layer)."""
    m = toy_model({**LINEAR, "n_layers": 2}, seed=0)
    pair, score = _pair(m), metric("logit_diff", 2, 7)
    plain = attribute(m, pair, score, ["heads"])
    drop = attribute(m, pair, score, ["heads"], grad_drop=True)
    torch.testing.assert_close(drop.scores["heads"][1], plain.scores["heads"][1].abs(), atol=1e-5, rtol=1e-5)
    assert (drop.scores["heads"] >= 0).all() and drop.method == "atp + GradDrop"


def test_both_backends_give_the_same_scores(tiny_llama_dir):
    m = load_model(str(tiny_llama_dir), quiet=True)
    ids = m.encode("When Mary and John went to the store, John gave a drink to")
    bad = m.encode("When Mary and John went to the store, Mary gave a drink to")
    pair = Pair.of(m, ids, bad)
    score = metric("logit_diff", m.encode(" Mary")[0], m.encode(" John")[0])
    fams = ["resid", "heads", "mlp", "neurons", "q", "k"]
    a = attribute(m, pair, score, fams, method="atp*")
    b = attribute(m, pair, score, fams, method="atp*", backend="nnsight")
    for fam in fams:
        torch.testing.assert_close(a.scores[fam], b.scores[fam], atol=1e-4, rtol=1e-3)
    assert a.scores["k"].shape == (2, 2) and a.scores["neurons"].shape == (2, 64)


def test_kl_and_prob_metrics_and_verifying_the_top_cells(tiny_llama_dir):
    m = load_model(str(tiny_llama_dir), quiet=True)
    pair = Pair.of(m, m.encode("the cat sat on the mat"), m.encode("the dog sat on the mat"))
    clean_logits = run(m, pair.clean)[0]
    kl = metric("kl", reference=clean_logits)
    assert kl(clean_logits).item() == pytest.approx(0.0, abs=1e-5)
    est = attribute(m, pair, kl, ["mlp"], metric_name="kl")
    assert est.clean == pytest.approx(0.0, abs=1e-5) and est.corrupt > 0
    top = top_cells(est.scores["mlp"], 3)
    checked = verify(m, pair, kl, "mlp", top)
    full = activation_patching(m, pair, kl, ["mlp"])
    torch.testing.assert_close(checked, torch.stack([full.scores["mlp"][c] for c in top]))
    p = metric("prob", good=5)
    assert 0 <= p(clean_logits).item() <= 1


def test_bad_input_is_named():
    m = toy_model(LINEAR, seed=0)
    pair, score = _pair(m), metric("logit_diff", 2, 7)
    with pytest.raises(InterpError, match="same length"):
        Pair.of(m, pair.clean, pair.corrupt[:, :-1])
    with pytest.raises(InterpError, match="Unknown component family 'head'"):
        attribute(m, pair, score, ["head"])
    with pytest.raises(InterpError, match="no blocks.0.hook_mlp_out"):
        attribute(m, pair, score, ["mlp"])
    with pytest.raises(InterpError, match="Unknown attribution method"):
        attribute(m, pair, score, ["heads"], method="eap")
    with pytest.raises(InterpError, match="needs an SAE"):
        attribute(m, pair, score, ["features"])
    sae = SAE(SAEConfig(d_in=16, d_sae=8, kind="relu", hook_name="blocks.3.hook_resid_post"))
    with pytest.raises(InterpError, match="does not have"):
        attribute(m, pair, score, ["features"], sae=sae)
    with pytest.raises(InterpError, match="correct and a wrong answer"):
        metric("logit_diff", good=1)
    with pytest.raises(InterpError, match="Unknown metric"):
        metric("loss")


def test_patch_command_writes_every_map_with_its_labels(tiny_llama_dir, tmp_path, capsys):
    import json

    from interp.cli import main

    out = tmp_path / "p.json"
    args = ["patch", str(tiny_llama_dir), "--clean", "When Mary and John went out, John gave it to",
            "--corrupt", "When Mary and John went out, Mary gave it to", "--answer", " Mary", "--wrong", " John"]
    assert main([*args, "--components", "resid,heads,mlp,k", "--method", "atp*", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("atp* on ") and "heads" in said and f"wrote {out}" in said
    d = json.loads(out.read_text())
    assert d["method"] == "atp*" and d["metric"] == "logit_diff" and d["metric_clean"] > d["metric_corrupt"]
    heads, resid = d["components"]["heads"], d["components"]["resid"]
    assert heads["axes"] == ["layer", "head"] and heads["labels"]["head"] == [0, 1, 2, 3]
    assert len(heads["scores"]) == 2 and len(heads["scores"][0]) == 4 and d["components"]["k"]["axes"] == ["layer", "kv_head"]
    assert resid["labels"]["position"][0].startswith("0:") and len(resid["labels"]["position"]) == len(resid["scores"][0])
    assert main([*args, "--components", "heads", "--method", "activation", "--metric", "kl", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["method"] == "activation" and d["metric_clean"] == pytest.approx(0.0, abs=1e-5)


def test_patch_command_rejects_bad_input(tiny_llama_dir, capsys):
    from interp.cli import main

    base = ["patch", str(tiny_llama_dir), "--clean", "Mary gave John a", "--answer", " Mary", "--wrong", " John"]
    assert main([*base, "--corrupt", "Mary gave a"]) == 2
    assert "same length" in capsys.readouterr().err
    assert main([*base, "--corrupt", "John gave Mary a", "--answer", " Mary Ann"]) == 2
    assert "give a single token" in capsys.readouterr().err
    assert main([*base, "--corrupt", "John gave Mary a", "--components", "features"]) == 2
    assert "needs --sae" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["gemma3", "gpt2", "gpt_neox"])
def test_attribution_runs_on_other_families_and_agrees_across_backends(family, tmp_path):
    """Gemma-3 (sliding windows, GQA, its BOS), GPT-2 and NeoX: the same scores from both backends, and AtP*'s
    QK fix through each family's own attention (soft-capping, q/k norms, rotary or not)."""
    from tiny_models import make_tiny

    m = load_model(str(make_tiny(tmp_path / family, family, add_bos=family == "gemma3")), quiet=True)
    pair = Pair.of(m, m.prompt("abcdefgh"), m.prompt("abcdxfgh"))
    score = metric("logit_diff", m.encode("i")[0], m.encode("y")[0])
    fams = ["heads", "mlp", "q", "k"]
    a = attribute(m, pair, score, fams, method="atp*")
    b = attribute(m, pair, score, fams, method="atp*", backend="nnsight")
    for fam in fams:
        torch.testing.assert_close(a.scores[fam], b.scores[fam], atol=1e-4, rtol=1e-3)
    exact = activation_patching(m, pair, score, ["heads"])
    assert a.scores["heads"].shape == exact.scores["heads"].shape == (m.info.n_layers, m.info.n_heads)
