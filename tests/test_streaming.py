"""StreamingLLM reproduction: the quick mode's claims, the mask = KV-cache eviction equivalence, bad input."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from experiments.streaming import masked_nll
from interp.cli import main
from interp.corpus import mixed_texts
from interp.hooks import run
from interp.interventions import attention_window, evicting_cache_logits


def test_quick_mode_reproduces_the_claims(capsys, runs_dir):
    code = main(["run", "streaming", "--quick", "--quiet"])
    out = capsys.readouterr().out
    run_dir = Path(out.strip().splitlines()[-1])
    results = json.loads((run_dir / "results.json").read_text())
    claims = {c["name"]: c for c in results["claims"]}
    assert list(claims) == [f"{c}[W=64,{cond}]" for cond in ("raw", "endoftext")
                            for c in ("window_collapses", "sinks_match_recompute", "one_sink_recovers")] + \
        ["mask_equals_kv_cache[raw]", "mask_equals_kv_cache[endoftext]", "masked_forward_memory"]
    assert code == 0, [c for c in results["claims"] if not c["passed"]]
    raw, eot = results["conditions"]["raw"], results["conditions"]["endoftext"]
    assert eot["position0_token"] == "<|endoftext|>" and raw["position0_token"] != "<|endoftext|>"
    assert raw["newline_position0_token"] == "Ċ"
    for cond in (raw, eot):
        p = cond["ppl"]["W=64"]
        assert set(p) == {"dense", "window", "sinks_1", "sinks_2", "sinks_4", "newline_sinks_4"}
        assert p["dense"] < p["sinks_4"] < p["window"]  # limiting attention costs something; sinks cost far less
        assert cond["ppl_recompute_positions"]["W=64"]["n_positions"] == len(range(128, 512, 8))
    memory = results["memory"]
    assert memory["seq_len"] == 512 and memory["dense_peak_mib"] > 0
    assert abs(claims["masked_forward_memory"]["value"] - (memory["masked_peak_mib"] - memory["dense_peak_mib"])) < 1e-9
    assert {o["name"] for o in results["observations"]} >= {"newline_sinks[W=64,raw]", "position0_token[endoftext]"}
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    assert figures == {"ppl_by_variant.json", "nll_by_position_W64_raw.json", "nll_by_position_W64_endoftext.json"}


def test_mask_equals_an_evicting_kv_cache(smollm2):
    """Masking the pre-softmax scores to 2 sinks + an 8-token window gives the logits of a real HF
    KV cache run token by token that evicts everything else without shifting positions; a mask off
    by one token (window or sinks) differs at every position where the two caches differ."""
    text = mixed_texts(1)[0].text
    tokens = torch.cat([smollm2.to_tokens([text], 40), smollm2.to_tokens([text], 40, prepend_sink=True)])  # [2, 40]
    cached = evicting_cache_logits(smollm2, tokens, window=8, sinks=2)  # [2, 40, d_vocab]
    dense = smollm2.forward(tokens)
    assert (dense - cached)[:, :10].abs().max() < 1e-3  # nothing evicted yet
    assert (dense - cached)[:, 10:].abs().amax(-1).min() > 0.1  # from position 10 on the cache has dropped keys
    for backend in ("transformer_lens", "nnsight"):
        masked, _ = run(smollm2, tokens, patch=attention_window(smollm2, 8, 2), backend=backend)
        assert (masked - cached).abs().max() < 1e-3, backend  # float32 noise: ~1e-4 raw, ~7e-4 after <|endoftext|>
    for window, sinks in [(9, 2), (7, 2), (8, 1), (8, 3)]:
        other, _ = run(smollm2, tokens, patch=attention_window(smollm2, window, sinks))
        assert (other - cached)[:, 10:].abs().amax(-1).min() > 0.1, (window, sinks)
    # The experiment's scoring path (final norm, then the unembedding of scored positions only) gives the cache's NLL.
    nll = masked_nll(smollm2, tokens[1], 10, attention_window(smollm2, 8, 2), "transformer_lens")
    assert (nll - F.cross_entropy(cached[1, 9:-1], tokens[1, 10:], reduction="none")).abs().max() < 1e-3


@pytest.mark.parametrize("setting, message", [
    ("windows=[600]", "larger than the text"),
    ("windows=[300]", "counts only positions ≥ 2W"),
    ("windows=[]", "windows = (empty) must not be empty"),
    ("windows=64,0", "holds 0, which must be ≥ 1"),
    ("backend=nnsigth", "backend = 'nnsigth' must be one of transformer_lens, nnsight"),
])
def test_bad_settings_are_clear_errors_before_any_run_folder(setting, message, capsys, runs_dir):
    assert main(["run", "streaming", "--quick", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not runs_dir.exists() or not any(runs_dir.rglob("config.json"))
