"""SAE evaluations: `interp sae eval SAE_DIR --store PATH`.

- On stored activations: FVU (squared error over the data's total variance), MSE, mean L0 and its
  distribution over tokens, dead features (never active on the evaluated tokens) and dense features
  (active on more than 10% of them). Inference mode: batch rules use their learned thresholds.
- Spliced into the model at the SAE's hook, on the store's own token sequences: CE loss with the
  reconstruction, with the clean activations, with zeros (zero-ablation), and
  CE recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean); KL(clean ‖ spliced) per token.
  Positions the store left out (position 0 unless it kept it) stay clean in both interventions, and
  so do outlier activations (norm above the SAE's max_norm), which the SAE was not trained on.
- Transcoders: the same metrics on the target y (the output hook's activations, a paired store) against
  ŷ predicted from the input x (skip path included): FVU, cosine, L2 ratio, ... are y vs ŷ; in the model,
  ŷ replaces the output hook (the MLP's output), computed from the input hook in the same forward, and
  zero-ablation zeroes the output hook. Outliers are left out by the input's and the target's norms.
- `core_metrics` arranges both, plus the weights' own statistics (`weight_metrics`), under SAEBench's
  metric names and groups (sae_bench/evals/core/main.py), so a researcher can read them side by side
  with SAEBench's tables. Definitions, with x the activation, x̂ its reconstruction, means over tokens:
    explained_variance   1 − Σ|x − x̂|² / Σ|x − x̄|²  (= 1 − FVU)
    explained_variance_legacy  mean over tokens of 1 − |x − x̂|² / |x − x̄|²  (SAEBench's older, per-token form)
    mse                  mean over tokens of |x − x̂|² (SAEBench divides each token's error by its batch's
                         token count, which makes its number depend on the batch size; ours does not)
    cossim               mean cos(x, x̂);  l2_ratio  mean |x̂| / |x|;  l2_norm_in / l2_norm_out  mean |x|, |x̂|
    relative_reconstruction_bias  mean |x̂|² / mean ⟨x, x̂⟩  (Eq. 10 of Wright & Sharkey 2024; 1 = unbiased)
    l0, l1               mean active features per token, mean Σ_f z_f
    ce_loss_score        (CE_zero − CE_sae) / (CE_zero − CE_clean)   (= ce_recovered)
    kl_div_score         (KL_zero − KL_sae) / KL_zero
    feature_density      share of tokens a feature fires on; freq_over_1_percent / 10 the share of
                         features above 1% / 10%, normalized_* their share of all firings, frac_alive > 0
    max cosine           per feature, the largest cosine of its decoder (encoder) row with any other row;
                         encoder_decoder_cosine_sim per feature cos(W_enc[f], W_dec[f])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from interp import InterpError
from interp.hooks import run as run_hooks
from interp.interventions import next_token_loss
from interp.sae.losses import outliers
from interp.sae.models import SAE


@torch.no_grad()
def activation_metrics(sae: SAE, x: Float[Tensor, "n d_in"], batch_size: int = 4096, dense_share: float = 0.1,
                       as_trained: bool = False, features: bool = False, y: Float[Tensor, "n d_out"] | None = None) -> dict:
    """Metrics on activations `x` (and a transcoder's targets `y`, the same tokens' rows; an SAE's target is x);
    `as_trained` applies the batch rules over batches of `batch_size` as in training instead of the per-feature
    thresholds. `features` adds each feature's firing density (a list of d_sae floats) under "feature_density"."""
    if sae.cfg.transcoder and (y is None or y.shape[0] != x.shape[0]):
        raise InterpError("A transcoder is evaluated against its target: pass y, the output hook's activations of the same tokens.")
    was = sae.training
    sae.train(as_trained)
    n_all = x.shape[0]
    keep = ~outliers(sae, x, y)  # the outliers the SAE was trained without (see SAETrainConfig.outlier_norm)
    x = x[keep]
    y = x if y is None else y[keep]
    n = x.shape[0]
    if n == 0:
        raise InterpError(f"No activations to evaluate: all {n_all} exceed the SAE's max_norm {sae.cfg.max_norm:.1f}, "
                          "or none were given. Evaluate on activations of the SAE's own hook.")
    mean = y.double().mean(0)
    variance = (y.double() - mean).pow(2).sum(-1).mean().item()
    sums = dict.fromkeys(("sq", "ev_legacy", "cossim", "l2_in", "l2_out", "l2_ratio", "rec_sq", "dot", "l1"), 0.0)
    fired, l0s = torch.zeros(sae.cfg.d_sae, dtype=torch.float64), []
    for s in range(0, n, batch_size):
        xb, yb = x[s : s + batch_size].float(), y[s : s + batch_size].float()
        codes = sae.encode(xb)
        rec = sae.decode(codes).float() + sae.skip_out(xb)  # [batch, d_out]
        err = (yb - rec).pow(2).sum(-1)  # [batch]
        n_in, n_out = yb.norm(dim=-1), rec.norm(dim=-1)
        sums["sq"] += err.sum().item()
        sums["ev_legacy"] += (1 - err / (yb - mean.float()).pow(2).sum(-1).clamp(min=1e-12)).sum().item()
        sums["cossim"] += F.cosine_similarity(yb, rec, dim=-1, eps=1e-8).sum().item()
        sums["l2_in"] += n_in.sum().item()
        sums["l2_out"] += n_out.sum().item()
        sums["l2_ratio"] += (n_out / torch.where(n_in < 1e-4, 1.0, n_in)).sum().item()
        sums["rec_sq"] += n_out.pow(2).sum().item()
        sums["dot"] += (yb * rec).sum().item()
        active = codes.values > 0
        sums["l1"] += codes.values[active].float().sum().item()
        fired += torch.bincount(codes.cols[active], minlength=sae.cfg.d_sae).double().cpu()
        l0s.append(codes.l0().cpu())
    sae.train(was)
    l0 = torch.cat(l0s)
    density = fired / n
    out = {"fvu": sums["sq"] / n / variance, "mse": sums["sq"] / n, "l0": l0.mean().item(),
           "l0_quantiles": {q: l0.quantile(q).item() for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
           "l0_histogram": torch.bincount(l0.long()).tolist(),
           "dead_share": (fired == 0).float().mean().item(), "dense_share": (density > dense_share).float().mean().item(),
           "tokens": n, "outliers_excluded": n_all - n,
           "explained_variance_legacy": sums["ev_legacy"] / n, "cossim": sums["cossim"] / n,
           "l2_norm_in": sums["l2_in"] / n, "l2_norm_out": sums["l2_out"] / n, "l2_ratio": sums["l2_ratio"] / n,
           "relative_reconstruction_bias": sums["rec_sq"] / sums["dot"] if sums["dot"] else float("nan"),
           "l1": sums["l1"] / n, **_density_stats(density)}
    if features:
        out["feature_density"] = density.tolist()
    return out


def _density_stats(density: Tensor) -> dict:
    total = density.sum().item()
    return {"frac_alive": (density > 0).float().mean().item(),
            "freq_over_1_percent": (density > 0.01).float().mean().item(),
            "freq_over_10_percent": (density > 0.1).float().mean().item(),
            "normalized_freq_over_1_percent": density[density > 0.01].sum().item() / total if total else 0.0,
            "normalized_freq_over_10_percent": density[density > 0.1].sum().item() / total if total else 0.0}


@torch.no_grad()
def max_cosine(rows: Float[Tensor, "n d"], chunk: int = 1024) -> Float[Tensor, " n"]:
    """Per row, the largest cosine similarity with any other row (chunked: no n × n matrix is kept)."""
    unit = F.normalize(rows.float(), dim=-1)
    out = torch.empty(unit.shape[0])
    for s in range(0, unit.shape[0], chunk):
        sims = unit[s : s + chunk] @ unit.T  # [chunk, n]
        sims[torch.arange(sims.shape[0]), torch.arange(s, s + sims.shape[0])] = -float("inf")
        out[s : s + chunk] = sims.max(-1).values
    return out


@torch.no_grad()
def weight_metrics(sae: SAE) -> dict:
    """The weights' own statistics, per feature (lists of d_sae floats) and their means. A transcoder has no
    encoder-decoder cosine (NaN): its encoder reads the input's space, its decoder writes the output's."""
    enc_dec = (torch.full((sae.cfg.d_sae,), float("nan")) if sae.cfg.transcoder
               else F.cosine_similarity(sae.W_enc.float(), sae.W_dec.float(), dim=-1))
    max_dec, max_enc = max_cosine(sae.W_dec), max_cosine(sae.W_enc)
    return {"average_max_decoder_cosine_sim": max_dec.mean().item(), "average_max_encoder_cosine_sim": max_enc.mean().item(),
            "average_encoder_decoder_cosine_sim": enc_dec.mean().item(),
            "features": {"encoder_decoder_cosine_sim": enc_dec.tolist(), "max_decoder_cosine_sim": max_dec.tolist(),
                         "max_encoder_cosine_sim": max_enc.tolist(), "encoder_norm": sae.W_enc.norm(dim=-1).tolist(),
                         "encoder_bias": sae.b_enc.tolist()}}


@torch.no_grad()
def splice_metrics(saes: dict[str, SAE], model, tokens: Tensor, hook: str, skip_first: bool = True, batch_size: int = 8) -> dict[str, dict]:
    """CE loss recovered and KL for each SAE whose reconstruction replaces the activation at `hook` (a
    transcoder's: its prediction from its input hook, captured in the same forward, replaces `hook`, its
    output hook). The clean and zero-ablated passes run once per batch, shared by all the SAEs."""
    start = 1 if skip_first else 0

    def splice(sae: SAE) -> dict:
        seen = {}

        def grab(act: Tensor) -> Tensor:  # a transcoder's input hook [batch, pos, d_in], left as it is
            seen["x"] = act
            return act

        def patch(act: Tensor) -> Tensor:  # [batch, pos, d_out]
            out = act.clone()
            flat = act[:, start:].reshape(-1, act.shape[-1]).float()  # [batch * pos, d_out]
            src = seen.pop("x") if sae.cfg.transcoder else act
            x = src[:, start:].reshape(-1, src.shape[-1]).float()  # [batch * pos, d_in]
            rec = sae.decode(sae.encode(x)) + sae.skip_out(x)
            far = outliers(sae, x, flat if sae.cfg.transcoder else None)  # pass through, as the store's left-out positions do
            rec = torch.where(far[:, None], flat, rec)
            out[:, start:] = rec.reshape(act[:, start:].shape).to(act.dtype)
            return out
        if not sae.cfg.transcoder:
            return {hook: patch}
        if not sae.cfg.hook_name or sae.cfg.hook_name == hook:
            raise InterpError(f"The transcoder spliced at {hook} names no input hook of its own (hook_name "
                              f"{sae.cfg.hook_name!r}): its cfg.json's metadata.hook_name must name the hook it reads.")
        return {sae.cfg.hook_name: grab, hook: patch}

    def zero(act: Tensor) -> Tensor:
        out = act.clone()
        out[:, start:] = 0
        return out

    for sae in saes.values():
        sae.eval()
    base = {"ce_clean": 0.0, "ce_zero": 0.0, "kl_zero": 0.0}
    each = {name: {"ce_sae": 0.0, "kl_sae": 0.0} for name in saes}
    n = 0
    for s in range(0, tokens.shape[0], batch_size):
        tb = tokens[s : s + batch_size]
        w = tb.shape[0]
        clean = run_hooks(model, tb)[0]
        zeroed = run_hooks(model, tb, patch={hook: zero})[0]
        base["ce_clean"] += next_token_loss(clean, tb).item() * w
        base["ce_zero"] += next_token_loss(zeroed, tb).item() * w
        base["kl_zero"] += _kl(clean, zeroed).item() * w
        for name, sae in saes.items():
            spliced = run_hooks(model, tb, patch=splice(sae))[0]
            each[name]["ce_sae"] += next_token_loss(spliced, tb).item() * w
            each[name]["kl_sae"] += _kl(clean, spliced).item() * w
        n += w
    base = {k: v / n for k, v in base.items()}
    gap = base["ce_zero"] - base["ce_clean"]
    if gap <= 0:
        raise InterpError(f"Zero-ablating {hook} does not raise the CE loss ({base['ce_zero']:.3f} vs {base['ce_clean']:.3f}), "
                          "so CE loss recovered is undefined there. Evaluate a hook the model depends on.")
    out = {}
    for name, sums in each.items():
        r = {**base, **{k: v / n for k, v in sums.items()}, "sequences": n}
        r["ce_recovered"] = (r["ce_zero"] - r["ce_sae"]) / gap
        r["kl_div_score"] = (r["kl_zero"] - r["kl_sae"]) / r["kl_zero"] if r["kl_zero"] > 0 else float("nan")
        out[name] = r
    return out


def core_metrics(sae: SAE, x: Float[Tensor, "n d_in"], splice: dict | None = None, batch_size: int = 4096,
                 y: Float[Tensor, "n d_out"] | None = None) -> dict:
    """SAEBench's core evaluation on activations `x` (a transcoder's against its targets `y`; and `splice`, one
    SAE's `splice_metrics` entry, if the SAE was spliced into its model), grouped and named as SAEBench names
    them. Per-feature lists (density, cosines, encoder norms and biases) go under "features"."""
    a = activation_metrics(sae, x, batch_size=batch_size, features=True, y=y)
    w = weight_metrics(sae)
    out = {
        "reconstruction_quality": {"explained_variance": 1 - a["fvu"], "explained_variance_legacy": a["explained_variance_legacy"],
                                   "mse": a["mse"], "cossim": a["cossim"], "fvu": a["fvu"]},
        "shrinkage": {k: a[k] for k in ("l2_norm_in", "l2_norm_out", "l2_ratio", "relative_reconstruction_bias")},
        "sparsity": {"l0": a["l0"], "l1": a["l1"], "l0_quantiles": a["l0_quantiles"]},
        "misc_metrics": {**{k: a[k] for k in ("frac_alive", "freq_over_1_percent", "freq_over_10_percent",
                                              "normalized_freq_over_1_percent", "normalized_freq_over_10_percent")},
                         **{k: v for k, v in w.items() if k != "features"}},
        "features": {"feature_density": a["feature_density"], **w["features"]},
        "tokens": a["tokens"], "outliers_excluded": a["outliers_excluded"],
    }
    if splice is not None:
        out["model_behavior_preservation"] = {"kl_div_score": splice["kl_div_score"], "kl_div_with_ablation": splice["kl_zero"],
                                              "kl_div_with_sae": splice["kl_sae"]}
        out["model_performance_preservation"] = {"ce_loss_score": splice["ce_recovered"], "ce_loss_with_ablation": splice["ce_zero"],
                                                 "ce_loss_with_sae": splice["ce_sae"], "ce_loss_without_sae": splice["ce_clean"]}
        out["sequences"] = splice["sequences"]
    return out


def _kl(clean: Tensor, other: Tensor) -> Tensor:
    """KL(clean ‖ other) of the next-token distributions, mean over tokens."""
    p = F.log_softmax(clean.float(), -1)
    q = F.log_softmax(other.float(), -1)
    return (p.exp() * (p - q)).sum(-1).mean()
