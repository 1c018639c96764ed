"""Steering (interp.steering) on tiny models: CAA vectors, SAE-feature patches, steered generation, errors."""

import json
from pathlib import Path

import pytest
import torch

from interp import InterpError
from interp.hooks import capture, run
from interp.models import load_model
from interp.sae import SAE, SAEConfig
from interp import steering as S

POS = ["ab cd", "hello", "xyz!"]
NEG = ["qq", "the end.", "zz top"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from tiny_models import make_tiny

    return load_model(str(make_tiny(tmp_path_factory.mktemp("steer") / "llama", "llama")), quiet=True)


@pytest.fixture(scope="module")
def toy():
    return load_model("toy:2l")


def hand_sae(d_in: int, d_sae: int, hook: str) -> SAE:
    """A ReLU SAE with orthonormal tied encoder/decoder rows and a large encoder bias (every feature fires on
    these activations): re-encoding x + δ·W_dec[i] moves only feature i, by exactly δ."""
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, kind="relu", hook_name=hook))
    q, _ = torch.linalg.qr(torch.randn(d_in, d_sae, generator=torch.Generator().manual_seed(1)))  # [d_in, d_sae], orthonormal columns
    with torch.no_grad():
        sae.W_dec.copy_(q.T)
        sae.W_enc.copy_(q.T)
        sae.b_enc.fill_(20.0)
        sae.b_dec.copy_(torch.randn(d_in, generator=torch.Generator().manual_seed(2)) * 0.1)
    return sae.eval()


@pytest.mark.parametrize("name", ["toy", "llama"])
@pytest.mark.parametrize("position", ["last", "mean"])
def test_caa_vector_is_the_hand_computed_mean_difference(name, position, request):
    model = request.getfixturevalue(name)
    texts_pos, texts_neg = ([[1, 2, 3], [4, 5], [6, 7, 8, 9]], [[9, 9], [3, 1, 4, 1]]) if name == "toy" else (POS, NEG)
    v = S.caa_vector(model, texts_pos, texts_neg, layer=1, position=position, batch_size=2)
    hook = "blocks.1.hook_resid_post"

    def one(p):
        ids = model.prompt(p) if isinstance(p, str) else p
        act = capture(model, torch.tensor([ids]), [hook])[hook][0]  # [pos, d_model]
        return act[-1] if position == "last" else act.mean(0)

    want = torch.stack([one(p) for p in texts_pos]).mean(0) - torch.stack([one(p) for p in texts_neg]).mean(0)
    assert v.hook == hook and v.layer == 1 and v.model == model.spec
    torch.testing.assert_close(v.vector, want, atol=1e-5, rtol=1e-5)
    assert v.info["n_positive"] == len(texts_pos) and v.info["position"] == position and v.info["resid_norm"] > 0


def test_a_vector_file_round_trips_with_its_metadata(llama, tmp_path):
    v = S.caa_vector(llama, POS, NEG, layer=0, site="resid_pre")
    back = S.SteeringVector.load(v.save(tmp_path / "v.safetensors"))
    assert back.hook == "blocks.0.hook_resid_pre" and back.model == llama.spec and back.method == "caa"
    assert back.info == v.info and back.norm == pytest.approx(v.norm)
    torch.testing.assert_close(back.vector, v.vector)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "v.safetensors"), "pt") as f:
        assert float(f.metadata()["norm"]) == pytest.approx(v.norm, rel=1e-5)
    (tmp_path / "junk").write_bytes(b"not a tensor file")
    with pytest.raises(InterpError, match="not a steering vector file"):
        S.SteeringVector.load(tmp_path / "junk")
    with pytest.raises(InterpError, match="No steering vector file"):
        S.SteeringVector.load(tmp_path / "absent")


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_alpha_zero_changes_nothing_and_alpha_moves_along_the_vector(llama, backend):
    v = S.caa_vector(llama, POS, NEG, layer=0)
    tokens = torch.tensor([llama.prompt("steer me")])
    last = "blocks.1.hook_resid_post"
    clean, acts = run(llama, tokens, capture=[last], backend=backend)
    zero, _ = run(llama, tokens, patch=S.steer(llama, v, 0.0), backend=backend)
    torch.testing.assert_close(zero, clean, atol=0, rtol=0)
    unit = v.vector / v.vector.norm()
    proj = []
    for alpha in (-4.0, -2.0, 0.0, 2.0, 4.0):
        logits, acts = run(llama, tokens, capture=[last], patch=S.steer(llama, v, alpha), backend=backend)
        proj.append(float(acts[last][0, -1] @ unit))  # the final residual's projection onto the vector
        if alpha != 0:
            assert not torch.allclose(logits, clean)
    assert all(b > a for a, b in zip(proj, proj[1:])), proj


def test_start_leaves_earlier_positions_alone_and_both_backends_agree(llama):
    v = S.caa_vector(llama, POS, NEG, layer=1)
    tokens = torch.tensor([llama.prompt("a longer prompt")])
    hook = "blocks.1.hook_resid_post"
    clean = capture(llama, tokens, [hook])[hook]
    got = {}
    for backend in ("transformer_lens", "nnsight"):
        got[backend], acts = run(llama, tokens, capture=[hook], patch=S.steer(llama, v, 3.0, start=4), backend=backend)
        torch.testing.assert_close(acts[hook][:, :4], clean[:, :4])
        torch.testing.assert_close(acts[hook][:, 4:], clean[:, 4:] + 3.0 * v.vector, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["transformer_lens"], got["nnsight"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_clamping_a_feature_sets_it_exactly_and_keeps_the_error_term(llama, backend):
    hook = "blocks.1.hook_resid_post"
    sae = hand_sae(llama.info.d_model, 8, hook)
    tokens = torch.tensor([llama.prompt("clamp this one")])
    x = capture(llama, tokens, [hook])[hook][0]  # [pos, d]
    _, acts = run(llama, tokens, capture=[hook], patch=S.feature_steering(llama, sae, 3, value=2.5, start=2), backend=backend)
    y = acts[hook][0]
    z_x, z_y = sae.dense_encode(x), sae.dense_encode(y)  # [pos, d_sae]
    assert (z_x > 0).all()  # the premise of exact read-back
    z_set = z_x.clone()
    z_set[:, 3] = 2.5
    err = S.sae_error(sae, x)
    torch.testing.assert_close(y[2:], (z_set @ sae.W_dec + sae.b_dec).detach()[2:] + err[2:], atol=1e-5, rtol=0)  # the definition
    torch.testing.assert_close(y[:2], x[:2])  # before `start`: untouched
    torch.testing.assert_close(z_y[2:, 3], torch.full_like(z_y[2:, 3], 2.5), atol=1e-5, rtol=0)
    others = [i for i in range(8) if i != 3]
    torch.testing.assert_close(z_y[:, others], z_x[:, others], atol=1e-5, rtol=0)
    torch.testing.assert_close(S.sae_error(sae, y), S.sae_error(sae, x), atol=1e-5, rtol=0)
    # Clamping to 0 switches the feature off where it fired.
    _, acts = run(llama, tokens, capture=[hook], patch=S.feature_steering(llama, sae, 3, value=0.0), backend=backend)
    assert float(sae.dense_encode(acts[hook][0])[:, 3].abs().max()) < 1e-5


def test_adding_a_feature_adds_its_decoder_row(llama):
    hook = "blocks.0.hook_resid_post"
    sae = hand_sae(llama.info.d_model, 8, hook)
    tokens = torch.tensor([llama.prompt("add")])
    x = capture(llama, tokens, [hook])[hook]
    _, acts = run(llama, tokens, capture=[hook], patch=S.feature_steering(llama, sae, 5, alpha=-1.5, layer=0))
    torch.testing.assert_close(acts[hook], x - 1.5 * sae.W_dec[5].detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_clamping_a_transcoder_feature_reads_its_input_and_writes_its_output_at_one_position(llama, backend):
    d = llama.info.d_model
    tc = SAE(SAEConfig(d_in=d, d_sae=16, k=4, transcoder=True, d_out=d, skip=True,
                       hook_name="blocks.1.ln2.hook_out", hook_name_out="blocks.1.hook_mlp_out"), seed=3)
    tokens = torch.tensor([llama.prompt("clamp a transcoder")])
    names = [tc.cfg.hook_name, tc.cfg.hook_name_out]
    clean = capture(llama, tokens, names)
    x, y = clean[names[0]][0], clean[names[1]][0]  # [pos, d]
    z = tc.dense_encode(x)[:, 2].detach()
    _, acts = run(llama, tokens, capture=names, backend=backend,
                  patch=S.feature_steering(llama, tc, 2, value=3.0, position=1))
    want = y.clone()
    want[1] += (3.0 - z[1]) * tc.W_dec[2].detach()
    torch.testing.assert_close(acts[names[1]][0], want, atol=1e-5, rtol=1e-5)  # position 1 only, the input read
    _, acts = run(llama, tokens, capture=names, patch=S.feature_steering(llama, tc, 2, alpha=2.0, position=0))
    want = y.clone()
    want[0] += 2.0 * tc.W_dec[2].detach()
    torch.testing.assert_close(acts[names[1]][0], want, atol=1e-5, rtol=1e-5)
    with pytest.raises(InterpError, match="position"):
        S.feature_steering(llama, tc, 2, value=1.0, position=-1)


def test_greedy_is_deterministic_sampling_reproducible_and_eos_stops(llama, monkeypatch):
    v = S.caa_vector(llama, POS, NEG, layer=1)
    patch = S.steer(llama, v, 50.0)
    out = S.compare(llama, "once upon", patch, max_new_tokens=6, seed=3)
    again = S.compare(llama, "once upon", patch, max_new_tokens=6, seed=3)
    assert {m: {k: c.tokens for k, c in p.items()} for m, p in out.items()} == \
           {m: {k: c.tokens for k, c in p.items()} for m, p in again.items()}
    assert out["greedy"]["steered"].tokens != out["greedy"]["unsteered"].tokens  # a large α changes the continuation
    other = S.generate(llama, "once upon", None, 6, sample=True, seed=4)
    assert other.tokens != out["sampled"]["unsteered"].tokens
    assert all(len(c.tokens) == 6 and c.stopped == "max_new_tokens" for p in out.values() for c in p.values())
    assert out["greedy"]["unsteered"].text == llama.tokenizer.decode(out["greedy"]["unsteered"].tokens)
    # The model's EOS ends a continuation: make its first greedy token the EOS.
    first = out["greedy"]["unsteered"].tokens[0]
    assert S.eos_id(llama) == llama.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    monkeypatch.setattr(S, "eos_id", lambda model: first)
    c = S.generate(llama, "once upon", max_new_tokens=6)
    assert c.tokens == [first] and c.stopped == "eos"


def test_generation_starts_from_model_prompt(tmp_path):
    from tiny_models import make_tiny

    gemma = load_model(str(make_tiny(tmp_path / "g", "gemma3", add_bos=True)), quiet=True)
    assert gemma.needs_bos
    text = S.generate(gemma, "hi there", max_new_tokens=4)
    assert text.tokens == S.generate(gemma, [gemma.sink_token_id, *gemma.encode("hi there")], max_new_tokens=4).tokens
    v = S.caa_vector(gemma, ["good"], ["bad"], layer=1)
    assert v.info["n_positive"] == 1 and torch.isfinite(v.vector).all()
    nn = S.generate(gemma, "hi there", S.steer(gemma, v, 5.0), max_new_tokens=4, backend="nnsight")
    tl = S.generate(gemma, "hi there", S.steer(gemma, v, 5.0), max_new_tokens=4)
    assert nn.tokens == tl.tokens


def test_bad_input_is_a_clear_error(llama, toy):
    v = S.caa_vector(llama, POS, NEG, layer=1)
    with pytest.raises(InterpError, match=r"Layer 2 is out of range: .* has layers 0..1"):
        S.caa_vector(llama, POS, NEG, layer=2)
    with pytest.raises(InterpError, match=r"Layer 5 is out of range"):
        S.steer(llama, v, 1.0, layer=5)
    with pytest.raises(InterpError, match="Unknown steering site"):
        S.caa_vector(llama, POS, NEG, layer=0, site="attn_out")
    with pytest.raises(InterpError, match="width 32 but blocks.1.hook_resid_post of toy:2l has width 64"):
        S.steer(toy, v, 1.0)  # a vector of another model
    with pytest.raises(InterpError, match="needs a layer"):
        S.steer(llama, torch.zeros(32), 1.0)
    with pytest.raises(InterpError, match="one direction"):
        S.steer(llama, torch.zeros(2, 32), 1.0, layer=0)
    with pytest.raises(InterpError, match="both sides"):
        S.caa_vector(llama, POS, [], layer=0)
    sae = hand_sae(32, 8, "blocks.1.hook_resid_post")
    with pytest.raises(InterpError, match=r"Unknown feature 8: this SAE has features 0..7"):
        S.feature_steering(llama, sae, 8, alpha=1.0)
    with pytest.raises(InterpError, match=r"The SAE reads blocks.1.hook_resid_post, not layer 0"):
        S.feature_steering(llama, sae, 0, alpha=1.0, layer=0)
    with pytest.raises(InterpError, match="exactly one of alpha"):
        S.feature_steering(llama, sae, 0, alpha=1.0, value=2.0)
    with pytest.raises(InterpError, match=r"d_in = 32\) has width 32 but blocks.1.hook_resid_post of toy:2l has width 64"):
        S.feature_steering(toy, sae, 0, alpha=1.0)
    with pytest.raises(InterpError, match="does not say which hook"):
        S.feature_steering(llama, hand_sae(32, 8, ""), 0, alpha=1.0)
    with pytest.raises(InterpError, match="Unknown hook name"):
        S.feature_steering(llama, hand_sae(32, 8, "blocks.1.hook_resid_mid_typo"), 0, alpha=1.0)
    with pytest.raises(InterpError, match="at least one new token"):
        S.generate(llama, "x", max_new_tokens=0)


def test_contrast_sets_come_from_the_repo_data_through_the_registry():
    from interp.registry import experiment

    pos, neg = experiment("steering").contrast_sets(20, seed=1)
    assert len(pos) == len(neg) == 20 and not set(pos) & set(neg)
    items = {json.loads(line)["text"]: json.loads(line) for line in
             (Path(__file__).parents[1] / "experiments/data/zerotuning/sentiment.jsonl").read_text().splitlines()}
    assert {items[t]["label"] for t in pos} == {"positive"} and {items[t]["label"] for t in neg} == {"negative"}
    assert {items[t]["split"] for t in pos + neg} == {"validation"}
    with pytest.raises(InterpError, match="fewer than the 51"):
        experiment("steering").contrast_sets(51)


@pytest.mark.parametrize("contrast", ["review", "prompt"])
def test_quick_run_on_a_tiny_model_writes_claims_and_the_vector(contrast, capsys, runs_dir, tiny_llama_dir):
    from interp.cli import main

    code = main(["run", "steering", "--quick", "--quiet", "--set", f"model={tiny_llama_dir}", "--set", "layer=1", "--set", f"contrast={contrast}",
                 "--set", "n_test=6", "--set", "n_train=4", "--set", "n_ppl=2", "--set", "seq_len=16"])
    out = capsys.readouterr().out
    assert code in (0, 1), out  # a random model may fail a claim
    run_dir = Path(out.strip().splitlines()[-1])
    r = json.loads((run_dir / "results.json").read_text())
    assert [c["name"] for c in r["claims"]] == ["perplexity_small_alpha"]  # the quick budget asserts no readout claim
    assert [c["name"] for c in r["unasserted_claims"]] == ["readout_monotone_in_alpha"]
    assert "not asserted" in r["observations"][0]["statement"]
    assert r["alphas"] == [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0] and r["n_test"] == 6
    assert r["ppl_increase"][3] == 0.0 and len(r["readout_mean"]) == 7
    assert r["answer_tokens"] == ["Positive", "Negative"] and r["prompt_style"] == "chat"  # right after the assistant turn: no space
    lo, hi = r["monotone_share_ci95"]
    assert 0 <= lo <= r["monotone_share"] <= hi <= 1
    v = S.SteeringVector.load(run_dir / "vector.safetensors")
    assert v.hook == "blocks.1.hook_resid_post" and v.info["n_positive"] == v.info["n_negative"] == 4
    assert r["vector"]["contrast"] == contrast and r["vector"]["norm"] == pytest.approx(v.norm)
    if contrast == "review":
        from experiments.steering import contrast_sets

        model = load_model(str(tiny_llama_dir), quiet=True)
        torch.testing.assert_close(v.vector, S.caa_vector(model, *contrast_sets(4), layer=1).vector, atol=1e-5, rtol=1e-5)
    assert main(["run", "steering", "--quick", "--set", "alphas=-1,0,1"]) == 2
    assert "at least 5 distinct values" in capsys.readouterr().err
