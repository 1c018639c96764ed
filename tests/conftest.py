"""Shared fixtures. Nothing may touch a model hub: HF_HUB_OFFLINE is set before anything imports."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M, loaded once per test session (`make test` fetches it first)."""
    from interp.models import load_model

    return load_model("smollm2-135m", quiet=True)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2):
    """A 2-layer random Llama (GQA: 4 query / 2 KV heads) saved as a local HF folder, with SmolLM2's tokenizer."""
    from app_fixtures import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2.tokenizer)


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
