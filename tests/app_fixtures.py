"""Stored runs for the dashboard tests, made by the real code paths on a tiny budget: a `sinks`
run on SmolLM2 and one on a random 2-layer Llama folder (its claims fail: a random model has no
sinks), a partial Bigram-Backcopy run with a toy checkpoint, two in-context-classification networks
with their training metrics, a TopK SAE on a SmolLM2 store, and two attribution graphs through the tiny
Llama's quick transcoders."""

from __future__ import annotations

import os
from pathlib import Path


def make_tiny_llama(folder: Path, tokenizer) -> Path:
    """A 2-layer random Llama (GQA: 4 query / 2 KV heads) saved as a local HF folder, with `tokenizer` (SmolLM2's)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_runs(root: Path, tiny_llama: Path) -> Path:
    old = {k: os.environ.get(k) for k in ("INTERP_RUNS", "INTERP_CACHE")}
    os.environ["INTERP_RUNS"] = str(root)  # the CLI and create_run write under it
    os.environ["INTERP_CACHE"] = str(root.parent / "cache")  # the transcoders' store set (its path is recorded)
    try:
        _make(root, tiny_llama)
    finally:
        for k, v in old.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    return root


def _make(root: Path, tiny_llama: Path) -> None:
    from experiments import bigram_backcopy, icl_classification
    from interp.cli import main
    from interp.config import build, to_dict
    from interp.runs import create_run
    from interp.sae.train import SAETrainConfig, train_sae
    from interp.store import cache_activations

    assert main(["run", "sinks", "--quick", "--quiet", "--set", "n_texts=2", "--set", "seq_len=16"]) in (0, 1)
    assert main(["run", "sinks", "--quick", "--quiet", "--set", f"model={tiny_llama}", "--set", "n_texts=2",
                 "--set", "seq_len=16", "--set", "first_late_layer=1"]) == 1  # a failing claim, on another model

    cfg = build(bigram_backcopy.Config, base={"trainer.steps": 60, "trainer.eval_every": 20, "eval_batch": 32, "deep": False})
    run = create_run("bigram_backcopy", to_dict(cfg))
    bigram_backcopy.train_variant(cfg, "softmax_1l", str(run.dir / "softmax_1l"))

    icfg = icl_classification.Config(steps=60, short_steps=60, eval_every=30, eval_size=200, sgd=False)
    run = create_run("icl_classification", to_dict(icfg))
    for job in icl_classification.main_jobs(icfg)[:2]:  # two jobs: two runs with the same metrics
        icl_classification.train_job(icfg, job, str(run.dir / job.name))

    # two attribution graphs through per-layer transcoders of the tiny Llama, for the Attribution-graph page;
    # before the SAE below, which stays the newest SAE folder (the Features and Steering pages open it)
    assert main(["run", "attribution_graphs", "--quick", "--quiet", "--set", "ctx=32", "--set", f"model={tiny_llama}",
                 "--set", "prompts=2"]) == 0

    store = root.parent / "store"
    cache_activations("smollm2-135m", "blocks.3.hook_resid_post", 2048, store, ctx_len=32, shard_tokens=1024, quiet=True)
    tcfg = SAETrainConfig(store=str(store), expansion=2, k=8, batch_size=256, tokens=256 * 8, log_every=2,
                          stats_tokens=1024, buffer_tokens=1024, threads=1)
    sae_run = create_run("sae", to_dict(tcfg))
    train_sae(tcfg, sae_run, quiet=True)
    # its evaluation (core suite: the probing and absorption suites need thousands of SmolLM2 texts), for the Features page
    assert main(["sae", "eval", str(sae_run.dir / "sae"), "--store", str(store), "--tokens", "1024", "--sequences", "2", "--quiet"]) == 0

