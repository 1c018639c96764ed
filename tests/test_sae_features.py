"""Feature statistics for the dashboard: top contexts, density, histogram, cache, token search."""

import torch

from interp.sae.features import context, feature_summary, features_for_token, nearest_features, quantile_examples
from interp.sae.io import save_sae
from interp.sae.models import SAE, SAEConfig
from interp.store import StoreWriter, open_store


def build(tmp_path):
    """A store whose row r is e_(r mod 8) scaled by (1 + r / 100), with token id r mod 8, and a ReLU
    SAE whose feature f reads coordinate f: feature f fires exactly on rows ≡ f (mod 8)."""
    d, n = 8, 256
    rows = torch.arange(n)
    x = torch.zeros(n, d)
    x[rows, rows % d] = 1 + rows / 100
    w = StoreWriter(tmp_path / "store", {"model": "synthetic", "hook": "blocks.0.hook_resid_post", "d_in": d,
                                         "dtype": "float16", "n_tokens": n, "ctx_len": 33, "keep_first": False})
    w.write_shard(0, x)
    w.write_tokens((torch.arange(8 * 33) % 8).reshape(8, 33).numpy())  # 8 sequences of 33; position 0 is not stored
    store = w.finish()
    sae = SAE(SAEConfig(d_in=d, d_sae=d, kind="relu", k=1))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    save_sae(sae, tmp_path / "sae")
    return sae, open_store(store.dir)


def test_summary_finds_each_features_top_rows_and_is_cached(tmp_path):
    _, store = build(tmp_path)
    s = feature_summary(tmp_path / "sae", store, top=4, batch_size=100)  # batches cross the top-k merge
    assert torch.allclose(s["density"], torch.full((8,), 1 / 8))
    for f in range(8):
        want = torch.arange(256)[torch.arange(256) % 8 == f].flip(0)[:4]  # largest scale = latest rows
        assert s["top_rows"][f].tolist() == want.tolist()
        assert torch.allclose(s["top_values"][f], 1 + want / 100, atol=1e-2)
    assert s["histogram"].sum().item() == 256
    mtime = (tmp_path / "sae" / "feature_summary.safetensors").stat().st_mtime_ns
    again = feature_summary(tmp_path / "sae", store, top=4, batch_size=100)
    assert (tmp_path / "sae" / "feature_summary.safetensors").stat().st_mtime_ns == mtime
    assert torch.equal(again["top_rows"], s["top_rows"])


def test_context_stays_in_its_sequence_and_token_search(tmp_path):
    sae, store = build(tmp_path)
    ids, acts, at = context(sae, store, row=33, feature=1, before=5, after=2)  # row 33 is sequence 1's second row
    assert len(ids) == len(acts) == 4  # rows 32..35: it does not reach back into sequence 0
    assert at == 1 and acts[at] > 0 and acts[0] == 0
    token = int(store.row_tokens()[10])
    _, feats, n = features_for_token(sae, store, token)
    assert n == int((store.row_tokens() == token).sum()) and len(feats) >= 1
    v, i = nearest_features(sae, 0, k=3)
    assert 0 not in i.tolist() and torch.allclose(v, torch.zeros(3))


def test_summary_samples_firings_uniformly_for_quantile_examples(tmp_path):
    _, store = build(tmp_path)
    s = feature_summary(tmp_path / "sae", store, top=4, sample=10, batch_size=100)
    for f in range(8):
        rows = s["sample_rows"][f]
        assert (rows >= 0).all() and len(set(rows.tolist())) == 10  # 32 firings, 10 distinct ones sampled
        assert (rows % 8 == f).all()  # only where the feature fires
        assert torch.allclose(s["sample_values"][f], 1 + rows / 100, atol=1e-2)  # the activation at that row
    assert s["sample_rows"][0].float().mean() < 200 and s["sample_rows"][0].min() < 128  # not just the top rows
    groups = quantile_examples(s["sample_values"][3], s["sample_rows"][3], groups=4, per_group=2)
    assert len(groups) == 4 and all(len(r) == 2 for _, r in groups)
    tops = [s["sample_values"][3][s["sample_rows"][3] == r[0]].item() for _, r in groups]
    assert tops == sorted(tops, reverse=True) and groups[0][0].startswith("quantile 75–100%")
    assert quantile_examples(torch.zeros(3), torch.full((3,), -1)) == []
