"""Shared fixtures. Nothing may touch a model hub: HF_HUB_OFFLINE is set before anything imports."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M, loaded once per test session (`make test` fetches it first)."""
    from interp.models import load_model

    return load_model("smollm2-135m", quiet=True)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2):
    """A 2-layer random Llama (GQA: 4 query / 2 KV heads) saved as a local HF folder, with SmolLM2's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    cfg = LlamaConfig(vocab_size=smollm2.info.d_vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    smollm2.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("INTERP_RUNS", str(root))
    return root


@pytest.fixture(scope="session")
def stored_runs(tmp_path_factory, smollm2, tiny_llama_dir):
    """Runs for the dashboard tests (tests/app_fixtures.py), made once per session."""
    from app_fixtures import make_runs

    return make_runs(tmp_path_factory.mktemp("app") / "runs", tiny_llama_dir)
