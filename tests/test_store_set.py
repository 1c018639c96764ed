"""Store sets (several hooks from one pass) and paired batches: rows equal a direct capture, resume,
checksums, settings mismatches, aligned pairs, refusals, the `interp cache` command with several hooks."""

import json
import shutil

import numpy as np
import pytest
import torch

from interp import InterpError
from interp.cli import main
from interp.hooks import capture
from interp.models import load_model
from interp.store import StoreWriter, cache_activations, open_store
from interp.store_set import StoreSet, expand_hooks, hook_list, open_store_set, paired_batches, parse_layers, with_layers

ARGS = dict(ctx_len=32, shard_tokens=512, batch_size=8, quiet=True)  # 1500 tokens: 49 sequences, 4 shards of 16


@pytest.fixture(scope="module")
def toy():
    return load_model("toy:2l")


@pytest.fixture(scope="module")
def singles(toy, tmp_path_factory):
    """Plain stores of one hook each, same settings: pairable."""
    root = tmp_path_factory.mktemp("singles")
    return {(hook, dtype): cache_activations(toy, hook, 1500, root / f"{hook}-{dtype}", dtype=dtype, **ARGS)
            for hook, dtype in [("hook_embed", "float16"), ("blocks.0.hook_resid_pre", "float16"),
                                ("blocks.0.hook_resid_pre", "bfloat16")]}


def _id_store(folder, d: int, dtype: str, n: int = 3000, shard: int = 700, tokens=None):
    """A synthetic store whose row r holds r as (r // 100, r % 100) in columns 0 and 1 (exact in bfloat16)."""
    w = StoreWriter(folder, dict(model="synthetic", hook="ids", d_in=d, dtype=dtype, n_tokens=n, ctx_len=31, seed=0))
    if tokens is not None:
        w.write_tokens(tokens)
    for i, lo in enumerate(range(0, n, shard)):
        r = torch.arange(lo, min(lo + shard, n))
        rows = torch.zeros(len(r), d)
        rows[:, 0], rows[:, 1] = r // 100, r % 100
        w.write_shard(i, rows)
    return w.finish()


def _ids(batch: torch.Tensor) -> torch.Tensor:
    return (batch[:, 0].float() * 100 + batch[:, 1].float()).long()


def test_paired_batches_yield_the_same_rows_of_both_stores(tmp_path):
    tokens = np.arange(100 * 31, dtype=np.int32).reshape(100, 31)
    x = _id_store(tmp_path / "x", 8, "float16", tokens=tokens)
    y = _id_store(tmp_path / "y", 3, "bfloat16", tokens=tokens)
    kw = dict(buffer_tokens=512, seed=5, epochs=2)
    pairs = list(paired_batches(x, y, 128, **kw))
    assert [tuple(b.shape) for b in pairs[0]] == [(128, 8), (128, 3)] and pairs[0][0].dtype == torch.float32
    ids = torch.cat([_ids(a) for a, _ in pairs])
    assert all(torch.equal(_ids(a), _ids(b)) for a, b in pairs)  # every pair: the same rows
    assert torch.equal(ids[:3000].sort().values, torch.arange(3000)) and not torch.equal(ids[:3000], torch.arange(3000))
    alone = torch.cat([_ids(a) for a in x.batches(128, **kw)])
    assert torch.equal(ids, alone)  # x comes out as x.batches gives it
    part = dict(kw, drop_last=True, rows=(0, 2000))
    full = list(paired_batches(x, y, 128, **part))
    ranks = [list(paired_batches(x, y, 128, rank=r, world_size=2, dtype=None, **part)) for r in range(2)]
    assert ranks[0][0][1].dtype == torch.bfloat16 and len(ranks[0]) == len(ranks[1]) == len(full)
    for (fx, fy), (ax, ay), (bx, by) in zip(full, *ranks):
        assert len(ax) == len(bx) == 64 and torch.equal(torch.cat([_ids(ax), _ids(bx)]), _ids(fx))
        assert torch.equal(torch.cat([_ids(ay), _ids(by)]), _ids(fy))
    assert _ids(torch.cat([a for a, _ in full])).max() < 2000


def test_paired_batches_of_a_real_model_pair_the_same_tokens(toy, singles):
    """hook_embed rows are W_E[token] and blocks.0.hook_resid_pre rows W_E[token] + W_pos[position]: each pair
    must decode to one (token, position), and over an epoch to exactly the stores' own (token, position) rows."""
    embed, resid = singles["hook_embed", "float16"], singles["blocks.0.hook_resid_pre", "bfloat16"]
    W_E, W_pos = toy.tl.W_E.detach(), toy.tl.W_pos.detach()
    got = []
    for x, y in paired_batches(embed, resid, 100, buffer_tokens=400, seed=1):
        tok = torch.cdist(x, W_E).argmin(1)
        torch.testing.assert_close(x, W_E[tok], rtol=1e-3, atol=1e-3)
        pos = torch.cdist(y - W_E[tok], W_pos).argmin(1)
        torch.testing.assert_close(y, W_E[tok] + W_pos[pos], rtol=1e-2, atol=1e-2)  # bfloat16 storage
        got += zip(tok.tolist(), pos.tolist())
    want = zip(embed.row_tokens().tolist(), (1 + np.arange(1500) % 31).tolist())
    assert sorted(got) == sorted(want)


def test_unpairable_stores_are_refused_saying_what_differs(toy, singles, tmp_path):
    x = singles["hook_embed", "float16"]
    other_seed = cache_activations(toy, "hook_embed", 1500, tmp_path / "seed", **{**ARGS, "seed": 1})
    with pytest.raises(InterpError, match="cannot be paired.*seed: 0 vs 1.*tokens.npy sha256"):
        paired_batches(x, other_seed, 64)
    shorter = cache_activations(toy, "hook_embed", 1400, tmp_path / "short", **ARGS)
    with pytest.raises(InterpError, match="n_tokens: 1500 vs 1400"):
        paired_batches(x, shorter, 64)
    resharded = cache_activations(toy, "hook_embed", 1500, tmp_path / "shards", **{**ARGS, "shard_tokens": 256})
    with pytest.raises(InterpError, match="shard layout"):
        paired_batches(x, resharded, 64)
    synthetic = _id_store(tmp_path / "ids", 8, "float16", n=1500)
    with pytest.raises(InterpError, match="model: 'toy:2l' vs 'synthetic'"):
        paired_batches(x, synthetic, 64)
    import json, shutil  # the same tokens from a bfloat16 forward: other numbers, so no pair
    shutil.copytree(x.dir, tmp_path / "bf16")
    manifest = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    (tmp_path / "bf16" / "manifest.json").write_text(json.dumps({**manifest, "model_dtype": "bfloat16"}))
    with pytest.raises(InterpError, match="model_dtype: 'float32' vs 'bfloat16'"):
        paired_batches(x, open_store(tmp_path / "bf16"), 64)


# ------------------------------------------------------------------------------------------- sets

TC = "blocks.*.ln2.hook_normalized,blocks.*.hook_mlp_out"  # the toy model's MLP input and output at every layer
TC_HOOKS = ["blocks.0.ln2.hook_normalized", "blocks.1.ln2.hook_normalized", "blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]


@pytest.fixture(scope="module")
def toy_set(toy, tmp_path_factory):
    """An uninterrupted reference set."""
    return cache_activations(toy, TC, 1500, tmp_path_factory.mktemp("ref") / "set", **ARGS)


def _files(folder) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_set_holds_each_hook_as_a_direct_capture_gives_it(toy, toy_set, singles):
    assert isinstance(toy_set, StoreSet) and toy_set.hooks == TC_HOOKS
    index = json.loads((toy_set.dir / "set.json").read_text())
    assert index["format"] == "interp-store-set/1" and index["request"] == TC.split(",")
    assert index["stores"] == {h: h for h in TC_HOOKS} and index["header"]["shard_tokens"] == 512
    files = _files(toy_set.dir)
    assert len({files[f"{h}/tokens.npy"] for h in TC_HOOKS}) == 1  # the same token sequences, byte for byte
    tokens = torch.from_numpy(toy_set.store(TC_HOOKS[0]).tokens()).long()  # [49, 32]
    direct = capture(toy, tokens, TC_HOOKS)  # a full forward of every sequence at once
    for h in TC_HOOKS:
        store = open_store(toy_set.dir / h)  # each an ordinary store
        assert (store.manifest["hook"], store.n_tokens, len(store.shards)) == (h, 1500, 4)
        want = direct[h][:, 1:].reshape(-1, 64)[:1500]
        torch.testing.assert_close(store.read(), want, rtol=1e-3, atol=1e-3)
    # The same tokens as a single store of the same settings: set members pair with it.
    assert files[f"{TC_HOOKS[0]}/tokens.npy"] == (singles["hook_embed", "float16"].dir / "tokens.npy").read_bytes()
    toy_set.verify()
    with pytest.raises(InterpError, match="no store of 'blocks.0.hook_mlp_in'.*blocks.0.hook_mlp_out"):
        toy_set.store("blocks.0.hook_mlp_in")


def test_paired_set_stores_are_an_mlp_s_input_and_output(toy, toy_set):
    x, y = toy_set.store("blocks.1.ln2.hook_normalized"), toy_set.store("blocks.1.hook_mlp_out")
    n = 0
    for a, b in paired_batches(x, y, 256, buffer_tokens=600, seed=2):
        torch.testing.assert_close(toy.tl.blocks[1].mlp(a).detach(), b, rtol=2e-2, atol=2e-2)
        n += len(a)
    assert n == 1500


def test_an_interrupted_set_resumes_to_identical_files(toy, toy_set, tmp_path, monkeypatch, capsys):
    out, real, calls = tmp_path / "set", StoreWriter.write_shard, []

    def stop(self, index, acts):
        calls.append(index)
        if len(calls) == 6:  # killed between hooks: shard 1 written for one hook of four
            raise KeyboardInterrupt
        return real(self, index, acts)

    monkeypatch.setattr(StoreWriter, "write_shard", stop)
    with pytest.raises(KeyboardInterrupt):
        cache_activations(toy, TC, 1500, out, **ARGS)
    with pytest.raises(InterpError, match="unfinished"):
        open_store_set(out)
    monkeypatch.undo()
    cache_activations(toy, TC, 1500, out, **ARGS)
    assert "1 of 4 shards are already written for every hook" in capsys.readouterr().err
    assert _files(out) == _files(toy_set.dir)

    import interp.models  # complete: no model loaded (the request's `*` is read from set.json), nothing written

    monkeypatch.setattr(interp.models, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    cache_activations("toy:2l", TC, 1500, out, **ARGS)
    assert "all 4 hooks of the set; nothing to do" in capsys.readouterr().err and _files(out) == _files(toy_set.dir)


def test_a_lost_or_corrupted_shard_of_one_hook_is_rewritten_saying_which(toy, toy_set, tmp_path, capsys):
    out = tmp_path / "set"
    shutil.copytree(toy_set.dir, out)
    (out / TC_HOOKS[3] / "shard_00002.bin").unlink()
    shard = out / TC_HOOKS[1] / "shard_00000.bin"
    shard.write_bytes(bytes([shard.read_bytes()[0] ^ 0xFF]) + shard.read_bytes()[1:])
    with pytest.raises(InterpError, match="shard_00002.bin .*missing"):
        open_store_set(out)
    cache_activations(toy, TC, 1500, out, **ARGS)
    err = capsys.readouterr().err
    assert f"shard_00000.bin in {out / TC_HOOKS[1]} fails its sha256" in err
    assert f"shard_00002.bin in {out / TC_HOOKS[3]} is missing" in err
    assert _files(out) == _files(toy_set.dir)
    open_store_set(out).verify()


@pytest.mark.parametrize("hooks, change, what", [
    ("blocks.*.hook_mlp_out", {}, "hooks"),
    (TC, {"dtype": "bfloat16"}, "dtype"),
    (TC, {"seed": 1}, "seed"),
    (TC, {"shard_tokens": 256}, "shard_tokens"),
    ("blocks.0.hook_mlp_out", {}, "holds a store set, not a single store"),
])
def test_other_settings_on_an_existing_set_change_nothing(toy_set, tmp_path, hooks, change, what):
    out = tmp_path / "set"
    shutil.copytree(toy_set.dir, out)
    before = _files(out)
    with pytest.raises(InterpError, match="other settings.*Nothing was changed|not a single store") as e:
        cache_activations("toy:2l", hooks, 1500, out, **{**ARGS, **change})
    assert what in str(e.value) and _files(out) == before


def test_a_set_is_not_written_over_a_plain_store(singles, tmp_path):
    out = tmp_path / "plain"
    shutil.copytree(singles["hook_embed", "float16"].dir, out)
    before = _files(out)
    with pytest.raises(InterpError, match="holds no store set"):
        cache_activations("toy:2l", TC, 1500, out, **ARGS)
    assert _files(out) == before


def test_patterns_expand_in_layer_order_and_unknown_ones_name_the_close_ones(toy, tmp_path):
    assert expand_hooks(["hook_embed", "blocks.*.hook_resid_post"], ["blocks.10.hook_resid_post", "hook_embed",
                        "blocks.2.hook_resid_post", "blocks.2.attn.hook_z"]) == \
        ["hook_embed", "blocks.2.hook_resid_post", "blocks.10.hook_resid_post"]
    assert hook_list(" a, b ,a") == ["a", "b"] and hook_list(["a,b", "c"]) == ["a", "b", "c"]
    assert with_layers(["blocks.*.x", "y"], [3, 5]) == ["blocks.3.x", "blocks.5.x", "y"]
    assert parse_layers("0-3,8") == [0, 1, 2, 3, 8] and parse_layers("3,5,7") == [3, 5, 7]
    with pytest.raises(InterpError, match="Cannot read layers"):
        parse_layers("3-1")
    with pytest.raises(InterpError, match="No hook matches 'blocks.\\*.hook_mlp_outt'.*blocks.\\*.hook_mlp_out"):
        cache_activations(toy, "blocks.*.hook_mlp_outt,hook_embed", 1500, tmp_path / "s", **ARGS)
    assert not (tmp_path / "s").exists()


def test_set_shards_are_sized_to_the_memory_bound_and_the_disk_is_checked(toy, tmp_path, monkeypatch):
    import interp.store_set

    monkeypatch.setattr(interp.store_set, "SET_SHARD_BYTES", 4 * 64 * 2 * 300)  # room for 300 tokens of 4 hooks
    with pytest.raises(InterpError, match="at most 300 tokens keep it within"):
        cache_activations(toy, TC, 1500, tmp_path / "big", **ARGS)
    assert not (tmp_path / "big").exists()
    small = cache_activations(toy, TC, 1500, tmp_path / "auto", **{**ARGS, "shard_tokens": None})
    assert small.manifest["header"]["shard_tokens"] == 300
    assert [e["n_tokens"] for e in small.store(TC_HOOKS[0]).shards] == [279] * 5 + [105]  # 9 sequences of 31 each

    import shutil as sh

    monkeypatch.setattr(sh, "disk_usage", lambda p: sh._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(InterpError, match="needs 0.7 MiB more .* 0.0 MiB free"):  # 1500 tokens x 4 hooks x 64 x 2 bytes
        cache_activations(toy, TC, 1500, tmp_path / "full", **{**ARGS, "shard_tokens": None})
    assert not (tmp_path / "full").exists()


# -------------------------------------------------------------------------------------- the command


def test_cache_command_writes_a_set_of_several_hooks(tmp_path, capsys):
    out = tmp_path / "set"
    argv = ["cache", "--model", "toy:2l", "--hooks", "hook_embed", "--hook", "blocks.*.hook_mlp_out", "--layers", "1",
            "--tokens", "600", "--out", str(out), "--ctx", "32", "--shard-tokens", "256", "--quiet"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("600 tokens of toy:2l at 2 hooks (d_in 128 in all, float16) in 3 shards each")
    assert [line.split()[0] for line in lines[1:3]] == ["hook_embed", "blocks.1.hook_mlp_out"] and lines[-1] == str(out)
    assert open_store_set(out).hooks == ["hook_embed", "blocks.1.hook_mlp_out"]
    assert main(argv) == 0 and "nothing to do" in capsys.readouterr().err
    assert main(["cache", "--model", "toy:2l", "--tokens", "600", "--out", str(tmp_path / "none")]) == 2
    assert "Name the hooks to cache" in capsys.readouterr().err
    assert main([*argv[:5], "--layers", "1", "--tokens", "600", "--out", str(tmp_path / "x")]) == 2  # --layers, no `*`
    assert "no hook name holds a `*`" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_transcoder_sets_pair_each_layer_s_mlp_input_with_its_output(family, tmp_path, capsys):
    from tiny_models import make_tiny

    folder = make_tiny(tmp_path / family, family)
    out = tmp_path / "tc"
    argv = ["cache", "--model", str(folder), "--transcoder", "--tokens", "400", "--ctx", "32", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    stores = open_store_set(out)
    assert stores.hooks == ["blocks.0.ln2.hook_out", "blocks.1.ln2.hook_out", "blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]
    layer = load_model(str(folder), quiet=True).module.model.layers[1]
    after = layer.post_feedforward_layernorm if family == "gemma3" else torch.nn.Identity()  # Gemma's hook_mlp_out: post-norm
    for x, y in paired_batches(stores.store("blocks.1.ln2.hook_out"), stores.store("blocks.1.hook_mlp_out"), 100):
        with torch.no_grad():
            torch.testing.assert_close(after(layer.mlp(x)), y, rtol=2e-2, atol=2e-2)
    assert main([*argv, "--layers", "1", "--out", str(tmp_path / "one")]) == 0
    assert open_store_set(tmp_path / "one").hooks == ["blocks.1.ln2.hook_out", "blocks.1.hook_mlp_out"]
