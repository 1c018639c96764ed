"""SAE losses and the feature statistics they need.

- Reconstruction: squared error summed over the target's width, averaged over tokens, divided by the
  target's variance (sum of the per-dimension variances, measured once from the store), so the loss is
  the fraction of variance unexplained (FVU) and the same number on any number of data-parallel ranks.
  The target is the input for an SAE and the output hook for a transcoder, whose reconstruction
  includes its skip path.
- `aux_k_loss` (Gao et al. 2024): the k_aux largest pre-activations among dead features (no firing in
  the last `dead_tokens` tokens) reconstruct the main reconstruction's error (detached), scored as
  MSE / the error's own variance; coefficient 1/32 in the paper.
- `aux_zipf_loss` (Ayonrinde 2024): the paper describes it as generalising aux_k from dead features
  to under-used ones, with feature densities expected to follow a Zipf law. Our reading, since the
  paper's formula is not public: rank features by their running density; feature of rank r gets the
  target density t_r ∝ 1/r, scaled so Σ t_r = k (the mean L0), capped at 1 with the excess re-spread
  (`interp.sae.models.zipf_targets`, which Feature Choice's Zipf capacities use too). Features whose density
  is below `underuse` × their target are "under-used" and play the role of aux_k's dead features.
  With underuse → 0 it is aux_k.
- L1 (ReLU SAEs): Σ_f z_f ‖W_dec[f]‖, averaged over tokens.
- `outliers`: the rows left out of every loss (and of the evaluations): the input's norm above the SAE's
  max_norm or, for a transcoder, the target's above its max_norm_out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.sae.models import SAE, Codes
from interp.sae.rules import select_topk


def outliers(sae: SAE, x: Tensor, y: Tensor | None = None, none_if_none: bool = False) -> Tensor | None:
    """bool [batch]: rows left out of training and evaluation, the input's norm above max_norm or (transcoders)
    the target's above max_norm_out. With `none_if_none`, None when the SAE has no cut (no work, no sync)."""
    cuts = [(v, c) for v, c in ((x, sae.cfg.max_norm), (y, sae.cfg.max_norm_out)) if v is not None and c]
    if not cuts:
        return None if none_if_none else torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    out = None
    for v, c in cuts:
        far = torch.linalg.vector_norm(v, dim=1, dtype=torch.float32) > c
        out = far if out is None else out | far
    return out


def l1_penalty(sae: SAE, codes: Codes) -> Tensor:
    norms = sae.W_dec.norm(dim=1)
    return (codes.values * norms[codes.cols]).sum() / codes.n_tokens


def aux_reconstruction_loss(sae: SAE, x: Tensor, x_hat: Tensor, pre: Tensor, pool: Tensor, k_aux: int,
                            reduce_sum=None, keep: Tensor | None = None, n_pool: int | None = None,
                            y: Tensor | None = None) -> Tensor:
    """The k_aux largest pre-activations among features in `pool` (bool [d_sae]) reconstruct the error
    y - x̂ (detached; `y` is a transcoder's target, x for an SAE, and x̂ the target's whole reconstruction);
    MSE over the error's variance, both over the rows in `keep` (bool [batch]; all when None).
    Zero when the pool is empty. `n_pool`, the pool's size when the caller knows it, saves a device
    sync; a pool that has shrunk below k_aux since is fine (the extra picks are -inf and weigh 0)."""
    n_pool = int(pool.sum().item()) if n_pool is None else n_pool
    if n_pool == 0 or k_aux <= 0:
        return x.new_zeros((), dtype=torch.float32)
    with torch.no_grad():
        rows, cols = select_topk(pre.masked_fill(~pool, float("-inf")), min(k_aux, n_pool))
    err = ((x if y is None else y) - x_hat).detach()  # [batch, d_out], float32
    n_rows = x.new_tensor(float(x.shape[0]), dtype=torch.float32)
    if keep is not None:
        err = err * keep[:, None]
        n_rows = keep.sum().float()
    err_hat = sae.decode(sae.codes_at(x, pre, rows, cols, keep=keep), bias=False)
    num = (err - err_hat).pow(2).sum()
    # The error's variance over the global batch (all ranks under data parallelism); a constant here.
    sums = torch.cat([err.pow(2).sum()[None], n_rows[None], err.sum(0)])
    if reduce_sum is not None:
        sums = reduce_sum(sums)
    sq, n, s = sums[0], sums[1], sums[2:]
    var = sq / n - s.pow(2).sum() / n**2
    return num / n_rows.clamp_min(1.0) / var.clamp_min(1e-12)
