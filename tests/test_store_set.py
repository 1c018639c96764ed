"""Store sets (several hooks from one pass) and paired batches: rows equal a direct capture, resume,
checksums, settings mismatches, aligned pairs, refusals, the `interp cache` command with several hooks."""

import numpy as np
import pytest
import torch

from interp import InterpError
from interp.models import load_model
from interp.store import StoreWriter, cache_activations
from interp.store_set import paired_batches

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
