"""Models in a compute dtype: load_model(dtype=...), both backends on a bfloat16 model, metrics in float32,
`interp probe --dtype`, `interp cache --model-dtype` recorded in the manifest, experiments' dtype field."""

import json

import pytest
import torch

from interp import InterpError
from interp.attention import alpha, residual_norms, sink_delta_logit
from interp.cli import MODEL_DTYPE_CHOICES, main
from interp.config import build
from interp.hooks import run
from interp.models import MODEL_DTYPES, load_model

PATTERN = "blocks.1.attn.hook_pattern"
RESID = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def tiny_pair(tiny_llama_dir):
    return {dt: load_model(str(tiny_llama_dir), quiet=True, dtype=dt) for dt in ("float32", "bfloat16")}


def test_hf_model_loads_in_bfloat16_and_both_backends_run_it(tiny_pair):
    f32, b16 = tiny_pair["float32"], tiny_pair["bfloat16"]
    assert (f32.dtype, b16.dtype) == ("float32", "bfloat16")
    assert {p.dtype for p in b16.module.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in f32.module.parameters()} == {torch.float32}
    tokens = torch.tensor([b16.encode("def add(a, b):\n    return a + b\n")[:12]])
    ref, ref_acts = run(f32, tokens, capture=[PATTERN, RESID])
    for backend in ("transformer_lens", "nnsight"):
        logits, acts = run(b16, tokens, capture=[PATTERN, RESID], backend=backend)
        assert logits.dtype == torch.bfloat16 and acts[RESID].dtype == torch.bfloat16
        diff = (logits.float() - ref.float()).abs().max().item()
        assert 0 < diff < 0.05, f"{backend}: bfloat16 logits differ from float32 by {diff}"  # rounded, not broken
        assert (acts[PATTERN].float() - ref_acts[PATTERN]).abs().max() < 0.02
    assert next(b16.tl.parameters()).dtype == torch.bfloat16  # the bridge keeps the weights' dtype


def test_toy_model_in_half_precision_holds_the_float32_weights_rounded():
    f32, f16 = load_model("toy:2l", seed=3), load_model("toy:2l", seed=3, dtype="float16")
    assert f16.dtype == "float16" and f16.module.cfg.dtype == torch.float16
    w32, w16 = f32.module.W_Q, f16.module.W_Q
    assert w16.dtype == torch.float16 and torch.equal(w16, w32.half())
    tokens = torch.tensor([[1, 5, 7, 2, 9]])
    assert f16.forward(tokens).dtype == torch.float16
    assert torch.allclose(f16.forward(tokens).float(), f32.forward(tokens), atol=0.05)


def test_unknown_dtype_is_an_error_naming_the_choices():
    with pytest.raises(InterpError, match="float32, bfloat16, float16"):
        load_model("toy:2l", dtype="fp8")
    assert MODEL_DTYPE_CHOICES == list(MODEL_DTYPES)  # the CLI's list (kept torch-free) is the library's


def test_metrics_compute_in_float32_from_bfloat16_activations():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 16, 16) * 4
    pattern = scores.masked_fill(torch.ones(16, 16, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    low = pattern.bfloat16()
    a = alpha(low)
    assert a.dtype == torch.float32
    assert torch.allclose(a, alpha(low.float()), atol=1e-6)  # the same numbers as from a float32 copy
    resid = torch.randn(2, 16, 64).bfloat16() * 50
    assert residual_norms(resid).dtype == torch.float32
    assert torch.allclose(residual_norms(resid), resid.float().norm(dim=-1))
    assert sink_delta_logit(scores.bfloat16()).dtype == torch.float32


def test_probe_runs_in_the_asked_dtype(tiny_llama_dir, capsys):
    argv = ["probe", str(tiny_llama_dir), "Hello world, again", "--hook", PATTERN, "--prepend-sink"]
    assert main([*argv, "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "dtype bfloat16" in out and "α_0" in out
    assert main(argv) == 0 and "dtype float32" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*argv, "--dtype", "int8"])


def test_cache_records_the_model_dtype_and_finishes_only_in_it(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["cache", "--model", "toy:2l", "--hook", RESID, "--tokens", "300", "--out", str(out), "--ctx", "32", "--quiet"]
    assert main([*argv, "--model-dtype", "bfloat16"]) == 0
    assert "forwards in bfloat16" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_dtype"] == "bfloat16" and manifest["dtype"] == "float16"
    assert main(argv) == 2  # float32 forwards would not continue a bfloat16 store
    assert "model_dtype: the store has 'bfloat16', this asks for 'float32'" in capsys.readouterr().err

    # A store written before model_dtype was recorded was computed in float32.
    legacy = tmp_path / "legacy"
    assert main(["cache", "--model", "toy:2l", "--hook", RESID, "--tokens", "300", "--out", str(legacy), "--ctx", "32", "--quiet"]) == 0
    m = json.loads((legacy / "manifest.json").read_text())
    assert m.pop("model_dtype") == "float32"
    (legacy / "manifest.json").write_text(json.dumps(m))
    capsys.readouterr()
    assert main(["cache", "--model", "toy:2l", "--hook", RESID, "--tokens", "300", "--out", str(legacy), "--ctx", "32", "--quiet"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert main(["cache", "--model", "toy:2l", "--hook", RESID, "--tokens", "300", "--out", str(legacy), "--ctx", "32",
                 "--model-dtype", "bfloat16", "--quiet"]) == 2


def test_experiment_configs_take_a_dtype():
    from experiments import bigram_subnetworks, sae_variants, sinks, streaming

    assert build(sinks.Config, None, ["dtype=bfloat16"]).dtype == "bfloat16"
    assert build(streaming.Config).dtype == "float32"  # its KV-cache check needs float32 (BENCHMARKS.md)
    assert build(sae_variants.Config).dtype == "bfloat16"
    with pytest.raises(InterpError, match="dtype"):
        build(sinks.Config, None, ["dtype=float64"])
    with pytest.raises(InterpError, match="dtype"):
        build(bigram_subnetworks.Config, None, ["dtype=bfloat16"])  # its masks train by gradients: float32 only
