"""What each SAE feature does, for browsing: top-activating contexts, density, activation histogram,
the tokens a feature writes towards through the unembedding, and its nearest features.

    summary = feature_summary(sae_dir, store)      # computed once, then read from sae_dir
    tokens, acts, at = context(sae, store, row, feature)

The summary runs the SAE (inference mode) over the first `n_tokens` rows of the store it was
trained on and is cached beside the SAE as `feature_summary.safetensors`, keyed by the SAE's weights
file and the store, so the dashboard reads it instead of recomputing. Outlier rows (norm above the
SAE's max_norm, see SAETrainConfig.outlier_norm) get no features, as in training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor

from interp import InterpError
from interp.sae.io import load_sae
from interp.sae.models import SAE
from interp.store import Store

SUMMARY_FILE = "feature_summary.safetensors"
HIST_EDGES = torch.logspace(-2, 3, 26)  # activation histogram bins: 0.01 .. 1000, log-spaced


SUMMARY_VERSION = 2  # 2: a uniform sample of firing positions per feature (examples across quantiles)


def _key(sae_dir: Path, store: Store, n_tokens: int, top: int, sample: int) -> str:
    weights = (sae_dir / "sae_weights.safetensors").stat()
    return json.dumps({"version": SUMMARY_VERSION, "weights": [weights.st_size, weights.st_mtime_ns],
                       "store": str(store.dir.resolve()), "store_tokens": store.n_tokens, "n_tokens": n_tokens,
                       "top": top, "sample": sample})


def feature_summary(sae_dir: str | Path, store: Store, n_tokens: int = 65536, top: int = 16, sample: int = 48,
                    batch_size: int = 4096) -> dict[str, Tensor]:
    """Per-feature statistics over the store's first `n_tokens` rows (cached in `sae_dir`):

        top_values, top_rows  [d_sae, top]  largest activations and the store rows they are at (-1: none)
        density               [d_sae]       share of the tokens the feature fires on
        mean_active           [d_sae]       mean activation where it fires
        histogram             [d_sae, 25]   counts of activations per HIST_EDGES bin
        sample_values, sample_rows [d_sae, sample]  a uniform random sample (seeded) of the positions
                                            where the feature fires, for examples across quantiles
        tokens                []            how many rows were read
    """
    sae_dir = Path(sae_dir)
    n = min(n_tokens, store.n_tokens)
    key = _key(sae_dir, store, n, top, sample)
    path = sae_dir / SUMMARY_FILE
    if path.exists():
        cached = load_file(str(path))
        if bytes(cached.pop("key").tolist()).decode() == key:
            return cached
    sae = load_sae(sae_dir)
    if store.d_in != sae.cfg.d_in:
        raise InterpError(f"The store {store.dir} holds vectors of width {store.d_in}, but the SAE in {sae_dir} reads "
                          f"d_in = {sae.cfg.d_in}: pick the store it was trained on.")
    out = _summarize(sae, store, n, top, sample, batch_size)
    tmp = path.with_suffix(".tmp")
    save_file({**out, "key": torch.tensor(list(key.encode()), dtype=torch.uint8)}, str(tmp))
    tmp.replace(path)
    return out


@torch.no_grad()
def _summarize(sae: SAE, store: Store, n: int, top: int, sample: int, batch_size: int) -> dict[str, Tensor]:
    d_sae = sae.cfg.d_sae
    gen = torch.Generator().manual_seed(0)
    empty = lambda k: (torch.full((d_sae, k), -1.0), torch.zeros(d_sae, k), torch.full((d_sae, k), -1, dtype=torch.long))  # noqa: E731
    best, sampled = empty(top), empty(sample)  # (score, activation, row) per feature
    fired, total = torch.zeros(d_sae), torch.zeros(d_sae, dtype=torch.float64)
    histogram = torch.zeros(d_sae, len(HIST_EDGES) - 1)
    sae.eval()
    for start in range(0, n, batch_size):
        x = store.read(start, min(start + batch_size, n))  # [b, d_in]
        skip = x.norm(dim=1) > sae.cfg.max_norm if sae.cfg.max_norm else None
        codes = sae.encode(x, skip=skip)
        on = codes.values > 0
        rows, cols, vals = codes.rows[on], codes.cols[on], codes.values[on].float()
        fired += torch.bincount(cols, minlength=d_sae).float()
        total.index_add_(0, cols, vals.double())
        bins = (torch.bucketize(vals, HIST_EDGES) - 1).clamp(0, histogram.shape[1] - 1)
        histogram.view(-1).index_add_(0, cols * histogram.shape[1] + bins, torch.ones_like(vals))
        dense = torch.zeros(x.shape[0], d_sae).index_put_((rows, cols), vals)  # [b, d_sae]
        scored = lambda score: torch.full_like(dense, -1.0).index_put_((rows, cols), score)  # noqa: E731  -1 where silent
        best = _keep_best(best, scored(vals), dense, start)  # the largest activations
        sampled = _keep_best(sampled, scored(torch.rand(len(vals), generator=gen)), dense, start)  # a uniform sample
    (_, top_values, top_rows), (_, sample_values, sample_rows) = best, sampled
    return {"top_values": top_values, "top_rows": top_rows, "sample_values": sample_values, "sample_rows": sample_rows,
            "density": fired / n,
            "mean_active": (total / fired.clamp(min=1)).float(), "histogram": histogram, "tokens": torch.tensor(n)}


def _keep_best(kept: tuple[Tensor, Tensor, Tensor], score: Float[Tensor, "b d_sae"], dense: Float[Tensor, "b d_sae"],
               start: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per feature, the k highest-scoring (score, activation, store row) so far, kept ([d_sae, k] each)
    merged with this batch's, whose rows begin at store row `start`. A score below 0 is never kept."""
    k = kept[0].shape[1]
    s, i = score.topk(min(k, score.shape[0]), dim=0)  # [k', d_sae]
    merged = (torch.cat([kept[0], s.T], 1), torch.cat([kept[1], dense.gather(0, i).T], 1),
              torch.cat([kept[2], torch.where(s.T >= 0, i.T + start, -1)], 1))
    order = merged[0].topk(k, dim=1).indices
    return tuple(m.gather(1, order) for m in merged)


def quantile_examples(values: Tensor, rows: Tensor, groups: int = 4, per_group: int = 3) -> list[tuple[str, list[int]]]:
    """Rows of a feature's sampled firings split into `groups` activation quantiles, strongest first:
    [("quantile 75–100% (activation 1.2–3.4)", rows), ...], up to `per_group` rows each (largest in the group first)."""
    values, rows = torch.as_tensor(values), torch.as_tensor(rows)
    keep = rows >= 0
    v, r = values[keep], rows[keep]
    if len(v) == 0:
        return []
    order = v.argsort(descending=True)
    v, r = v[order], r[order]
    out = []
    for g in range(groups):
        lo, hi = len(v) * g // groups, len(v) * (g + 1) // groups
        if hi > lo:
            q0, q1 = 100 - 100 * (g + 1) // groups, 100 - 100 * g // groups
            out.append((f"quantile {q0}–{q1}% (activation {v[hi - 1]:.3g}–{v[lo]:.3g})", r[lo:hi][:per_group].tolist()))
    return out


@torch.no_grad()
def context(sae: SAE, store: Store, row: int, feature: int, before: int = 8, after: int = 8
            ) -> tuple[Int[Tensor, " pos"], Float[Tensor, " pos"], int]:
    """Token ids around store row `row` (within its sequence), `feature`'s activation at each, and
    the index of `row` among them."""
    ids = store.row_tokens()
    if ids is None:
        raise InterpError(f"The store {store.dir} has no tokens.npy, so contexts cannot be shown: rebuild it with `interp cache`.")
    per_seq = store.manifest["ctx_len"] - (0 if store.manifest.get("keep_first", True) else 1)
    seq_start = row - row % per_seq
    lo, hi = max(seq_start, row - before), min(seq_start + per_seq, row + after + 1, store.n_tokens)
    x = store.read(lo, hi)
    skip = x.norm(dim=1) > sae.cfg.max_norm if sae.cfg.max_norm else None
    sae.eval()
    acts = sae.encode(x, skip=skip).dense()[:, feature]
    return torch.from_numpy(ids[lo:hi].astype("int64")), acts, row - lo


def logit_effects(sae: SAE, W_U: Float[Tensor, "d_model d_vocab"], feature: int | Tensor, k: int = 10,
                  dtype: torch.dtype | None = None) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The tokens whose logits the feature's decoder direction raises and lowers most (direct path
    through the unembedding, final norm ignored): ((values, ids) top, (values, ids) bottom); for a
    tensor of features, one row each. `dtype`: the matmul's (bfloat16 ranks the same tokens, ~3× faster
    where the CPU has bf16 units)."""
    dtype = dtype or W_U.dtype
    effect = (sae.W_dec[feature].detach().to(dtype) @ W_U.to(dtype)).float()  # [d_vocab] or [n, d_vocab]
    return effect.topk(k), (-effect).topk(k)


def nearest_features(sae: SAE, feature: int, k: int = 10) -> tuple[Tensor, Tensor]:
    """Features with the most similar decoder direction (cosine), excluding `feature` itself."""
    W = sae.W_dec.detach()
    cos = (W @ W[feature]) / (W.norm(dim=1) * W[feature].norm()).clamp(min=1e-12)
    cos[feature] = -2.0
    return cos.topk(min(k, W.shape[0] - 1))


@torch.no_grad()
def features_for_token(sae: SAE, store: Store, token_id: int, n_tokens: int = 65536, max_rows: int = 512, k: int = 10
                       ) -> tuple[Tensor, Tensor, int]:
    """Features with the highest mean activation over the token's occurrences among the first
    `n_tokens` store rows: (mean activations, feature ids, occurrences used)."""
    ids = store.row_tokens()
    if ids is None:
        raise InterpError(f"The store {store.dir} has no tokens.npy: rebuild it with `interp cache`.")
    rows = (torch.from_numpy(ids[: min(n_tokens, store.n_tokens)].astype("int64")) == token_id).nonzero().flatten()[:max_rows]
    if len(rows) == 0:
        return torch.empty(0), torch.empty(0, dtype=torch.long), 0
    x = torch.cat([store.read(int(r), int(r) + 1) for r in rows])
    sae.eval()
    mean = sae.encode(x).dense().mean(0)
    top = mean.topk(min(k, len(mean)))
    keep = top.values > 0
    return top.values[keep], top.indices[keep], len(rows)


def sae_dirs(root: Path) -> list[Path]:
    """Every SAE folder under a runs root (`interp sae train` runs and experiments' SAEs), newest first."""
    found = [p.parent for p in root.glob("**/cfg.json") if (p.parent / "sae_weights.safetensors").exists()]
    return sorted(found, key=lambda p: (p / "sae_weights.safetensors").stat().st_mtime, reverse=True)

