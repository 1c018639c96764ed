import pytest
import torch

from interp import InterpError
from interp.hooks import HookNameError, capture, hook_names, hook_shapes, run
from interp.interventions import zero_heads
from interp.models import load_model

LAYERS = (0, 14, 29)
NAMES = [f"blocks.{l}.{h}" for l in LAYERS for h in ("attn.hook_pattern", "hook_resid_post", "attn.hook_v")]


@pytest.fixture(scope="module")
def prose_tokens(smollm2):
    text = ("Return a new list containing all items from the iterable in ascending order. A custom key function "
            "can be supplied to customize the sort order, and the reverse flag can be set to request the result "
            "in descending order.")
    return smollm2.to_tokens([text, text[40:] + " " + text], 32, prepend_sink=True)


def test_smollm2_backends_agree_at_three_layers(smollm2, prose_tokens):
    tl = capture(smollm2, prose_tokens, NAMES, backend="transformer_lens")
    nn = capture(smollm2, prose_tokens, NAMES, backend="nnsight")
    for name in NAMES:
        assert tl[name].shape == nn[name].shape, name
        assert (tl[name] - nn[name]).abs().max().item() < 1e-4, name
    assert tl["blocks.0.attn.hook_v"].shape == (2, 32, 3, 64)  # per KV head
    assert tl["blocks.0.attn.hook_pattern"].shape == (2, 9, 32, 32)  # per query head


def test_smollm2_patches_agree_between_backends(smollm2, prose_tokens):
    patch = {"blocks.4.attn.hook_z": zero_heads([1, 7]), "blocks.20.hook_resid_post": lambda r: r * 0.5}
    out = {b: run(smollm2, prose_tokens, capture=["blocks.4.attn.hook_z", "blocks.25.hook_resid_post"], patch=patch, backend=b)
           for b in ("transformer_lens", "nnsight")}
    (l_tl, a_tl), (l_nn, a_nn) = out["transformer_lens"], out["nnsight"]
    assert (l_tl - l_nn).abs().max().item() < 1e-3
    assert (l_tl - smollm2.forward(prose_tokens)).abs().max().item() > 1.0  # the patch did something
    assert a_tl["blocks.4.attn.hook_z"][:, :, [1, 7]].abs().max().item() == 0.0  # capture sees the patched value
    assert (a_tl["blocks.25.hook_resid_post"] - a_nn["blocks.25.hook_resid_post"]).abs().max().item() < 1e-3


def test_every_nnsight_name_matches_the_bridge_on_a_gqa_llama(tiny_llama_dir):
    m = load_model(str(tiny_llama_dir))
    tokens = torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(0))
    names = hook_names(m, "nnsight")
    assert len(names) == 2 + 20 * 2 + 2  # embed, unembed; 20 per layer (rot_q/k, ln1/ln2 scales included); ln_final's scale and output
    tl, nn = capture(m, tokens, names), capture(m, tokens, names, backend="nnsight")
    for name in names:
        if name.endswith("hook_attn_scores"):  # compare the causal part; the masked part is -inf-like on both
            keep = torch.ones(7, 7).tril().bool()
            tl[name], nn[name] = tl[name][..., keep], nn[name][..., keep]
        assert (tl[name] - nn[name]).abs().max().item() < 1e-5, name


def test_toy_model_backends_agree_and_patch():
    m = load_model("toy:2l", seed=1)
    tokens = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(0))
    names = hook_names(m, "nnsight")
    # Every HookedTransformer hook point is a module nnsight can reach, except ln1's: TransformerLens
    # calls ln1 three times a forward pass (query, key and value input) and nnsight sees one call.
    assert set(hook_names(m)) - set(names) == {f"blocks.{l}.ln1.{h}" for l in (0, 1) for h in ("hook_scale", "hook_normalized")}
    with pytest.raises(HookNameError, match="fires 3 times per forward pass"):
        capture(m, tokens, ["blocks.0.ln1.hook_scale"], backend="nnsight")
    tl, nn = capture(m, tokens, names), capture(m, tokens, names, backend="nnsight")
    # (A hook on ln.hook_scale makes LayerNorm use TransformerLens's own arithmetic instead of the
    # fused kernel: the two agree to float rounding, hence 1e-5 rather than exact.)
    assert all(torch.allclose(tl[n], nn[n], atol=1e-5) for n in names)
    patch = {"blocks.1.attn.hook_pattern": lambda p: torch.zeros_like(p).index_fill_(-1, torch.tensor([0]), 1.0)}
    l_tl, _ = run(m, tokens, patch=patch)
    l_nn, _ = run(m, tokens, patch=patch, backend="nnsight")
    assert torch.allclose(l_tl, l_nn, atol=1e-5) and not torch.allclose(l_tl, m.forward(tokens), atol=1e-3)


def test_stop_early_returns_activations_without_logits(smollm2, prose_tokens):
    for backend in ("transformer_lens", "nnsight"):
        logits, acts = run(smollm2, prose_tokens, capture=["blocks.2.hook_resid_post"], backend=backend, stop_early=True)
        assert logits is None and acts["blocks.2.hook_resid_post"].shape == (2, 32, 576)


def test_unknown_hook_name_lists_the_closest_valid_names(smollm2, prose_tokens):
    with pytest.raises(HookNameError) as e:
        capture(smollm2, prose_tokens, ["blocks.3.hook_resid_pots"])
    assert "blocks.3.hook_resid_post" in str(e.value) and "interp hooks" in str(e.value)
    with pytest.raises(HookNameError, match="exists on the transformer_lens backend"):
        capture(smollm2, prose_tokens, ["blocks.3.ln1.hook_normalized"], backend="nnsight")
    with pytest.raises(InterpError, match="backend"):
        capture(smollm2, prose_tokens, ["blocks.3.hook_resid_post"], backend="pyvene")


def test_bad_patch_shapes_and_inputs_are_clear_errors(smollm2, prose_tokens):
    with pytest.raises(InterpError, match="shape"):
        run(smollm2, prose_tokens, patch={"blocks.1.hook_resid_post": torch.zeros(1, 2, 3)})
    with pytest.raises(InterpError, match="context"):
        run(load_model("toy:2l"), torch.zeros(1, 129, dtype=torch.long))
    with pytest.raises(InterpError, match="non-empty"):
        run(smollm2, torch.zeros(0, 4, dtype=torch.long))


def test_hook_shapes_are_symbolic_in_batch_and_pos(smollm2):
    shapes = hook_shapes(smollm2)
    assert shapes["blocks.3.attn.hook_pattern"] == ("batch", "9", "pos", "pos")
    assert shapes["blocks.3.attn.hook_v"] == ("batch", "pos", "3", "64")
    names = list(shapes)
    assert names.index("blocks.3.attn.hook_v") < names.index("blocks.3.attn.hook_pattern") < names.index("blocks.3.hook_resid_post")


def test_nnsight_on_an_unmapped_hf_family_says_which_backend_to_use(tmp_path, smollm2):
    from transformers import OPTConfig, OPTForCausalLM

    OPTForCausalLM(OPTConfig(vocab_size=smollm2.info.d_vocab, hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                             max_position_embeddings=32, word_embed_proj_dim=32)).save_pretrained(tmp_path)
    smollm2.tokenizer.save_pretrained(tmp_path)
    m = load_model(str(tmp_path))
    tokens = torch.randint(0, 1000, (1, 5))
    with pytest.raises(InterpError, match="Use the transformer_lens backend"):
        capture(m, tokens, ["blocks.0.hook_resid_post"], backend="nnsight")
    assert capture(m, tokens, ["blocks.0.hook_resid_post"])["blocks.0.hook_resid_post"].shape == (1, 5, 32)
