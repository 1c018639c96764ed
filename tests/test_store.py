"""The activation store: write and read back, resume, checksums, settings mismatches, shuffled and
sharded batches, bounded memory, the `interp cache` command."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from interp import InterpError
from interp.cli import main
from interp.corpus import token_chunks
from interp.hooks import capture
from interp.models import load_model
from interp.store import DTYPES, StoreWriter, cache_activations, open_store

HOOK = "blocks.1.hook_resid_post"
ARGS = dict(ctx_len=32, shard_tokens=512, batch_size=8, quiet=True)  # 3000 tokens: 97 sequences, 7 shards of 16


@pytest.fixture(scope="module")
def toy():
    return load_model("toy:2l")


@pytest.fixture(scope="module")
def toy_store(toy, tmp_path_factory):
    """An uninterrupted reference store."""
    return cache_activations(toy, HOOK, 3000, tmp_path_factory.mktemp("ref") / "store", **ARGS)


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _shards(folder) -> dict[str, bytes]:
    return {k: v for k, v in _files(folder).items() if k.startswith("shard_")}


def _id_store(folder, n: int = 5000, shard: int = 700, d: int = 8):
    """A synthetic store whose row r holds r, as (r // 1000, r % 1000) in columns 0 and 1 (exact in float16)."""
    w = StoreWriter(folder, dict(model="synthetic", hook="ids", d_in=d, dtype="float16", n_tokens=n))
    for i, lo in enumerate(range(0, n, shard)):
        r = torch.arange(lo, min(lo + shard, n))
        rows = torch.zeros(len(r), d)
        rows[:, 0], rows[:, 1] = r // 1000, r % 1000
        w.write_shard(i, rows)
    return w.finish()


def _ids(batch: torch.Tensor) -> torch.Tensor:
    return (batch[:, 0] * 1000 + batch[:, 1]).long()


def test_token_chunks_are_deterministic_whole_file_pieces():
    def encode(text):
        return [b % 64 for b in text.encode()]

    a = token_chunks(encode, 16, 50, seed=1, bos=63)
    assert a.shape == (50, 16) and a.dtype == np.int32 and (a[:, 0] == 63).all()
    assert np.array_equal(a, token_chunks(encode, 16, 50, seed=1, bos=63))
    assert not np.array_equal(a, token_chunks(encode, 16, 50, seed=2, bos=63))
    with pytest.raises(InterpError, match="ask for fewer tokens"):
        token_chunks(lambda text: [1, 2, 3], 16, 10)  # three tokens a file: no file fills a sequence


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_read_back_equals_a_direct_capture(toy, tmp_path, dtype):
    store = cache_activations(toy, HOOK, 3000, tmp_path / "s", dtype=dtype, **ARGS)
    m = store.manifest
    assert (m["model"], m["hook"], m["d_in"], m["dtype"], m["n_tokens"], m["ctx_len"], m["complete"]) == \
        ("toy:2l", HOOK, 64, dtype, 3000, 32, True)
    assert [e["n_tokens"] for e in m["shards"]] == [496] * 6 + [24] and all(len(e["sha256"]) == 64 for e in m["shards"])
    assert sorted(_files(store.dir)) == ["manifest.json", *(f"shard_{i:05d}.bin" for i in range(7)), "tokens.npy"]
    tokens = torch.from_numpy(store.tokens()).long()  # [97, 32], BOS at position 0
    assert tokens.shape == (97, 32) and (tokens[:, 0] == toy.sink_token_id).all()
    direct = capture(toy, tokens, [HOOK])[HOOK][:, 1:].reshape(-1, 64)[:3000]  # position 0 dropped
    eps = torch.finfo(DTYPES[dtype]).eps
    torch.testing.assert_close(store.read(), direct, rtol=eps, atol=eps)
    torch.testing.assert_close(store.read(490, 510), direct[490:510], rtol=eps, atol=eps)  # across a shard boundary
    torch.testing.assert_close(store.mean(1000), direct[:1000].mean(0), rtol=eps, atol=eps)
    assert np.array_equal(store.row_tokens(), tokens[:, 1:].reshape(-1)[:3000].numpy())


def test_interrupted_cache_resumes_to_identical_shards(toy, toy_store, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s"
    real = StoreWriter.write_shard

    def stop_after_two(self, index, acts):
        if len(self.shards) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the third shard is being written
        return real(self, index, acts)

    monkeypatch.setattr(StoreWriter, "write_shard", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        cache_activations(toy, HOOK, 3000, out, **ARGS)
    assert sorted(_files(out)) == ["manifest.json", "shard_00000.bin", "shard_00001.bin", "tokens.npy"]
    with pytest.raises(InterpError, match="unfinished.*same `interp cache` command"):
        open_store(out)
    monkeypatch.undo()
    cache_activations(toy, HOOK, 3000, out, **ARGS)
    assert "2 of 7 shards are already written" in capsys.readouterr().err
    assert _shards(out) == _shards(toy_store.dir) and _files(out)["tokens.npy"] == _files(toy_store.dir)["tokens.npy"]

    # Re-run on the complete store: checksums checked, no model loaded, nothing written.
    import interp.models

    monkeypatch.setattr(interp.models, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    before = _files(out)
    cache_activations("toy:2l", HOOK, 3000, out, **ARGS)
    assert "nothing to do" in capsys.readouterr().err and _files(out) == before


def test_a_corrupted_shard_is_named_on_read_and_rewritten_on_resume(toy, toy_store, tmp_path, capsys):
    out = tmp_path / "s"
    shutil.copytree(toy_store.dir, out)
    shard = out / "shard_00003.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(InterpError, match="shard_00003.bin .*checksum"):
        list(open_store(out).batches(64, buffer_tokens=256))
    with pytest.raises(InterpError, match="shard_00003.bin"):
        open_store(out).read()
    cache_activations(toy, HOOK, 3000, out, **ARGS)
    assert "shard_00003.bin" in capsys.readouterr().err
    assert _shards(out) == _shards(toy_store.dir)
    open_store(out).verify()

    shard.write_bytes(data[:1000])  # truncated: caught when the store is opened
    with pytest.raises(InterpError, match="shard_00003.bin .*wrong size"):
        open_store(out)


@pytest.mark.parametrize("model, hook, change", [
    ("toy:2l", "blocks.0.hook_resid_post", {}),
    ("toy:attn-only-2l", HOOK, {}),
    ("toy:2l", HOOK, {"dtype": "bfloat16"}),
    ("toy:2l", HOOK, {"ctx_len": 16}),
])
def test_other_settings_on_an_existing_store_change_nothing(toy_store, tmp_path, model, hook, change):
    out = tmp_path / "s"
    shutil.copytree(toy_store.dir, out)
    before = _files(out)
    with pytest.raises(InterpError, match="other settings.*Nothing was changed") as e:
        cache_activations(model, hook, 3000, out, **{**ARGS, **change})
    assert (list(change) or ["model" if model != "toy:2l" else "hook"])[0] in str(e.value)
    assert _files(out) == before

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InterpError, match="holds no activation store"):
        cache_activations(model, hook, 3000, tmp_path / "other", **ARGS)
    assert _files(tmp_path / "other") == {"notes.txt": b"mine"}


def test_batches_are_shuffled_and_cover_every_row_once_per_epoch(tmp_path):
    store = _id_store(tmp_path / "ids")
    batches = list(store.batches(256, buffer_tokens=1024, seed=0, epochs=2))
    assert [len(b) for b in batches] == ([256] * 19 + [136]) * 2 and batches[0].dtype == torch.float32
    ids = torch.cat([_ids(b) for b in batches])
    for epoch in ids[:5000], ids[5000:]:
        assert torch.equal(epoch.sort().values, torch.arange(5000))
        assert abs(np.corrcoef(epoch.numpy(), np.arange(5000))[0, 1]) < 0.5  # far from store order
    assert not torch.equal(ids[:5000], ids[5000:])  # each epoch reshuffled
    assert [len(b) for b in store.batches(256, buffer_tokens=1024, drop_last=True)] == [256] * 19
    held_in = torch.cat([_ids(b) for b in store.batches(256, buffer_tokens=1024, rows=(0, 4000))])
    assert torch.equal(held_in.sort().values, torch.arange(4000))  # rows 4000.. held out


def test_batches_are_deterministic_and_ranks_split_the_global_batch(tmp_path):
    store = _id_store(tmp_path / "ids")
    kw = dict(buffer_tokens=1024, seed=3)
    full = list(store.batches(256, **kw))
    assert all(torch.equal(a, b) for a, b in zip(full, store.batches(256, **kw)))
    assert not torch.equal(full[0], next(store.batches(256, buffer_tokens=1024, seed=4)))
    ranks = [list(store.batches(256, rank=r, world_size=2, **kw)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(full)
    for f, a, b in zip(full, *ranks):
        assert len(a) == len(b) == len(f) // 2 and torch.equal(torch.cat([a, b]), f)
    with pytest.raises(InterpError, match="multiple of world_size"):
        store.batches(255, world_size=2)
    assert store.mean(1000).tolist()[:3] == [0.0, 499.5, 0.0]


def test_streaming_a_store_keeps_memory_bounded(tmp_path):
    """A 200 MB store streamed through a 20 MB buffer: peak resident memory grows by far less than the store.

    The child process fixes glibc's mmap threshold: by default glibc raises it after a large block
    is freed and then keeps freed batch memory in its heap, which adds a bounded but noisy 10-60 MB
    to the peak (independent of the store's size) and would hide what the reader itself holds."""
    d, rows = 512, 20480  # one shard: 20 MB of float16
    w = StoreWriter(tmp_path / "big", dict(model="synthetic", hook="random", d_in=d, dtype="float16", n_tokens=10 * rows))
    gen = torch.Generator().manual_seed(0)
    for i in range(10):
        w.write_shard(i, torch.randn(rows, d, generator=gen))
    w.finish()
    store_bytes = 10 * rows * d * 2
    script = textwrap.dedent("""
        import sys
        from interp.store import open_store

        def hwm():  # peak resident set size, bytes
            return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))

        store = open_store(sys.argv[1])
        before, n = hwm(), 0
        for batch in store.batches(1024, buffer_tokens=20480, seed=0):
            n += len(batch)
        print(n, hwm() - before)
    """)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    cmd = [sys.executable, "-c", script, str(tmp_path / "big")]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    n, growth = map(int, out.split())
    assert n == 10 * rows
    assert growth < store_bytes / 4, f"peak RSS grew by {growth / 2**20:.0f} MiB streaming a {store_bytes / 2**20:.0f} MiB store"


def test_cache_command(tmp_path, capsys):
    argv = ["cache", "--model", "toy:2l", "--hook", HOOK, "--tokens", "600", "--out", str(tmp_path / "s"),
            "--ctx", "32", "--shard-tokens", "256", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("600 tokens of toy:2l at blocks.1.hook_resid_post (d_in 64, float16) in 3 shards")
    assert out[-1] == str(tmp_path / "s")
    assert main(argv) == 0 and "nothing to do" in capsys.readouterr().err

    bad = ["cache", "--model", "toy:2l", "--hook", "blocks.1.hook_resid_pots", "--tokens", "600", "--out", str(tmp_path / "t")]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown hook name") and "blocks.1.hook_resid_post" in err and "Traceback" not in err
    assert not (tmp_path / "t").exists()


def test_smollm2_cache_matches_a_full_forward(smollm2, tmp_path):
    hook = "blocks.15.hook_resid_post"
    store = cache_activations(smollm2, hook, 1000, tmp_path / "s", ctx_len=64, shard_tokens=512, quiet=True)
    assert (store.d_in, store.n_tokens, len(store.shards)) == (576, 1000, 2)
    tokens = torch.from_numpy(store.tokens()[:4]).long()  # [4, 64]
    assert smollm2.token_strs(tokens[:, 0]) == ["<|endoftext|>"] * 4
    direct = capture(smollm2, tokens, [hook])[hook][:, 1:].reshape(-1, 576)  # full forward, position 0 dropped
    torch.testing.assert_close(store.read(0, len(direct)), direct, rtol=2e-3, atol=2e-3)
    text = smollm2.tokenizer.decode(store.row_tokens()[:200].tolist())
    assert any(word in text for word in ("def ", "import ", "self", "the "))


def test_a_second_writer_waits_for_the_first(toy, tmp_path):
    """Two processes caching into one store (two experiments sharing it) must not write the same shards
    at once: the second waits for the first's lock, then finds the store complete."""
    import threading

    from interp.fsutil import exclusive

    out, done = tmp_path / "shared", {}
    with exclusive(out):  # another writer holds the store
        t = threading.Thread(target=lambda: done.setdefault("store", cache_activations(toy, HOOK, 3000, out, **ARGS)))
        t.start()
        t.join(1.5)
        assert t.is_alive() and not (out / "manifest.json").exists()  # waiting, nothing written
    t.join(60)
    assert not t.is_alive() and done["store"].n_tokens == 3000
    done["store"].verify()
