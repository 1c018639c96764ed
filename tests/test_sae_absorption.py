"""Feature absorption (interp/sae/absorption.py) on hand-built activations and SAEs with known answers.

Every word of letter c reads x = 3·e_c (e_0..e_25: the first 26 axes of a 64-wide space); the probe is
W = e_c, b = -1.5, exact on every word. Extra axes carry token- or group-specific parts."""

from types import SimpleNamespace

import pytest
import torch

from interp import InterpError
from interp.models import ModelInfo
from interp.sae import SAE, SAEConfig
from interp.sae.absorption import LETTERS, AbsorptionConfig, absorption, probe_quality, score, spelling, train_probe

D, D_SAE, N_TRAIN, N_TEST = 64, 32, 8, 4
ABSORBED = [26, 27, 28, 29]  # token axes of the four extra test words of "a" whose letter latent stays silent
B1, B2 = 30, 31  # group axes of the two halves of "b"'s words
PROBE = (torch.eye(D)[:26], torch.full((26,), -1.5))
FAST = AbsorptionConfig(max_k=3)  # k = 1..3 covers every case here; each k costs 26 small regressions


def e(i: int) -> torch.Tensor:
    return torch.eye(D)[i]


def words(absorbed: bool = False, split: bool = False):
    """(x_train, y_train, x_test, y_test): N_TRAIN / N_TEST words per letter, plus the absorbed test words."""
    def one(n):
        xs, ys = [], []
        for c in range(26):
            for j in range(n):
                x = 3 * e(c)
                if split and c == 1:
                    x = x + e(B1 if j % 2 else B2)
                xs.append(x)
                ys.append(c)
        return xs, ys
    (xtr, ytr), (xte, yte) = one(N_TRAIN), one(N_TEST)
    if absorbed:
        xte += [3 * e(0) + 2 * e(t) for t in ABSORBED]
        yte += [0] * len(ABSORBED)
    return torch.stack(xtr), torch.tensor(ytr), torch.stack(xte), torch.tensor(yte)


def sae(absorbed: bool = False, split: bool = False) -> SAE:
    """ReLU SAE: latent c reads and writes e_c. `absorbed`: latent 0 is silenced by the token axes, and
    latents 26..29 each read one token axis and write along 3·e_0 + 2·e_token (cos 0.83 with the probe).
    `split`: latent 1 reads only the first half of "b"'s words, latent 31 the second, both write e_1."""
    s = SAE(SAEConfig(d_in=D, d_sae=D_SAE, kind="relu"))
    enc, dec = torch.zeros(D_SAE, D), torch.zeros(D_SAE, D)
    for c in range(26):
        enc[c], dec[c] = e(c), e(c)
    for f in range(26, D_SAE):  # spare latents: read and write an axis no word uses
        enc[f] = dec[f] = e(32 + f)
    if absorbed:
        enc[0] = e(0) - 3 * sum(e(t) for t in ABSORBED)
        for f, t in zip(range(26, 30), ABSORBED):
            enc[f] = e(t)
            dec[f] = (3 * e(0) + 2 * e(t)) / 13 ** 0.5
    if split:
        enc[1], enc[31], dec[31] = e(B1), e(B2), e(1)
    with torch.no_grad():
        s.W_enc.copy_(enc)
        s.W_dec.copy_(dec)
    return s.eval()


def test_one_latent_per_letter_absorbs_nothing_and_does_not_split():
    out = score(sae(), *words(), FAST, probe=PROBE)
    assert out["evaluated"] and out["letters_evaluated"] == 26
    assert out["mean_absorption_fraction_score"] == 0 and out["mean_full_absorption_score"] == 0
    assert out["mean_num_split_features"] == 1
    for i, c in enumerate(LETTERS):
        r = out["letters"][c]
        assert r["main_latents"] == [i] and r["probe_f1"] == 1 and r["num_probe_true_positives"] == N_TEST
        assert r["f1_by_k"] == [1, 1, 1]


def test_a_silent_letter_latent_with_token_latents_firing_instead_counts_as_absorbed():
    out = score(sae(absorbed=True), *words(absorbed=True), FAST, probe=PROBE)
    a = out["letters"]["a"]
    n = N_TEST + len(ABSORBED)
    assert a["main_latents"] == [0] and a["num_probe_true_positives"] == n
    assert a["mean_absorption_fraction"] == pytest.approx(len(ABSORBED) / n)
    assert a["full_absorption_rate"] == pytest.approx(len(ABSORBED) / n) and a["num_full_absorption"] == len(ABSORBED)
    assert sorted(a["absorbing_latents"]) == [26, 27, 28, 29]
    assert all(out["letters"][c]["mean_absorption_fraction"] == 0 for c in LETTERS[1:])
    assert out["mean_absorption_fraction_score"] == pytest.approx(len(ABSORBED) / n / 26)
    assert out["mean_num_split_features"] == 1  # the token latents never fire on training words


def test_a_letter_split_over_two_latents_counts_two():
    out = score(sae(split=True), *words(split=True), FAST, probe=PROBE)
    b = out["letters"]["b"]
    assert sorted(b["main_latents"]) == [1, 31] and b["num_split_features"] == 2
    assert b["f1_by_k"][0] == pytest.approx(2 / 3) and b["f1_by_k"][1] == 1
    assert b["mean_absorption_fraction"] == 0  # both halves are covered by their own main latent
    assert out["mean_num_split_features"] == pytest.approx(27 / 26)


def test_the_trained_probe_finds_the_letter_directions():
    g = torch.Generator().manual_seed(0)
    x_train, y_train, x_test, y_test = words()
    x_train = x_train + 0.1 * torch.randn(x_train.shape, generator=g)
    W, b = train_probe(x_train, y_train)
    q = probe_quality(W, b, x_test, y_test)
    assert q["accuracy"] == 1 and q["mean_f1"] == 1
    assert (W[:, :26].argmax(1) == torch.arange(26)).all()  # each letter's row weighs its own axis most
    out = score(sae(), x_train, y_train, x_test, y_test, FAST)  # the same, with its own probe
    assert out["evaluated"] and out["mean_absorption_fraction_score"] == 0 and out["mean_num_split_features"] == 1


def test_a_probe_that_finds_no_letters_stops_the_eval_and_says_why():
    W, b = PROBE
    out = score(sae(), *words(), FAST, probe=(W, b - 10))  # every logit negative: no true positives, F1 0
    assert not out["evaluated"] and out["letters_evaluated"] == 0
    assert "F1" in out["reason"] and "spelling" in out["reason"]
    assert "mean_absorption_fraction_score" not in out


def test_bad_input_is_an_interp_error_that_says_what_to_do():
    x_train, y_train, x_test, y_test = words()
    keep = y_test != LETTERS.index("q")
    with pytest.raises(InterpError, match="No words start with q.*words_per_letter"):
        score(sae(), x_train, y_train, x_test[keep], y_test[keep], probe=PROBE)
    with pytest.raises(InterpError, match="d_in = 64"):
        score(sae(), x_train[:, :32], y_train, x_test[:, :32], y_test, probe=PROBE)
    stub = SimpleNamespace(spec="stub", info=ModelInfo(n_layers=4, n_heads=1, n_kv_heads=1, d_model=D, d_head=D,
                                                       d_vocab=10, n_ctx=64))
    with pytest.raises(InterpError, match="layers 0..3"):
        spelling(stub, layers=[7])
    with pytest.raises(InterpError, match="layers 0..3"):
        absorption(sae(), stub, hook="blocks.9.hook_resid_post")
    with pytest.raises(InterpError, match="does not name its hook"):
        absorption(sae(), stub)
    narrow = SAE(SAEConfig(d_in=16, d_sae=8, kind="relu", hook_name="blocks.1.hook_resid_post"))
    with pytest.raises(InterpError, match="width 16.*64 wide"):
        absorption(narrow, stub)


def test_config_defaults_are_saebenchs():
    c = AbsorptionConfig()
    assert (c.min_probe_f1, c.min_letters, c.max_k, c.f1_jump_threshold, c.sparse_l1) == (0.6, 20, 10, 0.03, 0.01)
    assert (c.icl_examples, c.train_share, c.probe_epochs, c.probe_lr) == (10, 0.8, 50, 1e-2)


def tiny_speller(folder):
    """A random 2-layer Llama whose BPE tokenizer (trained here) has 78 whole-word tokens, 3 per letter."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from interp.models import load_model

    texts = [f"\n {c}{end} has the first letter: {c.upper()}" for c in LETTERS for end in ("ot", "an", "ip")] * 4
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       special_tokens=["<|endoftext|>"], show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=D, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return load_model(str(folder), quiet=True)


def test_the_model_part_reads_each_word_where_its_own_prompt_ends(tmp_path):
    from interp.hooks import run
    from interp.sae.absorption import collect, prompts, vocabulary

    model = tiny_speller(tmp_path / "speller")
    cfg = AbsorptionConfig(words_per_letter=3, icl_examples=2, targets_per_prompt=4, max_k=2)
    words, ids, labels, train = vocabulary(model, cfg)
    assert len(words) == 78 and train.sum() == 52 and all(w[1] == LETTERS[y] for w, y in zip(words, labels.tolist()))
    seqs = prompts(model, ids, labels, train, cfg)
    toks, reads = seqs[0]
    j, at, colon = reads[-1]
    text = model.tokenizer.decode(toks[: colon + 1])
    assert text.endswith(f"\n{words[j]} has the first letter:") and text.count("has the first letter:") == 6
    hook = "blocks.1.hook_resid_post"
    acts, correct = collect(model, seqs, labels, [hook], cfg)
    alone = run(model, torch.tensor([toks[: at + 1]]), capture=[hook])[1][hook][0, -1]  # the prompt cut at the word
    assert torch.allclose(acts[hook][j], alone, atol=1e-5)
    s = SAE(SAEConfig(d_in=D, d_sae=D_SAE, kind="topk", k=4, hook_name=hook))
    report = absorption(s, model, layers=[0, 1], cfg=cfg)
    sp, ab = report["spelling"], report["absorption"]
    assert set(sp["probes"]) == {"blocks.0.hook_resid_post", hook} and sp["words"] == 78
    assert 0 <= sp["model_answers"]["accuracy"] <= 1 and "spell" in sp["verdict"]
    assert ab["hook"] == hook and set(ab["letters"]) == set(LETTERS) and ab["seconds"]["total"] > 0
    assert not ab["evaluated"] and "best at" in ab["reason"]  # a random model: its probes find no letters
    assert report["headline"]["fraction"] is None and report["headline"]["letters"] == ab["letters_evaluated"]
    with pytest.raises(InterpError, match="Unknown absorption setting.*words_per_letter"):
        spelling(model, words_per_word=3)
