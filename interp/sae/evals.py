"""SAE evaluations: `interp sae eval SAE_DIR --store PATH`.

- On stored activations: FVU (squared error over the data's total variance), MSE, mean L0 and its
  distribution over tokens, dead features (never active on the evaluated tokens) and dense features
  (active on more than 10% of them). Inference mode: batch rules use their learned thresholds.
- Spliced into the model at the SAE's hook, on the store's own token sequences: CE loss with the
  reconstruction, with the clean activations, with zeros (zero-ablation), and
  CE recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean); KL(clean ‖ spliced) per token.
  Positions the store left out (position 0 unless it kept it) stay clean in both interventions, and
  so do outlier activations (norm above the SAE's max_norm), which the SAE was not trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from interp import InterpError
from interp.hooks import run as run_hooks
from interp.interventions import next_token_loss
from interp.sae.models import SAE


@torch.no_grad()
def activation_metrics(sae: SAE, x: Float[Tensor, "n d_in"], batch_size: int = 4096, dense_share: float = 0.1,
                       as_trained: bool = False) -> dict:
    """Metrics on activations `x`; `as_trained` applies the batch rules over batches of `batch_size`
    as in training instead of the per-feature thresholds."""
    was = sae.training
    sae.train(as_trained)
    n_all = x.shape[0]
    if sae.cfg.max_norm:  # the outliers the SAE was trained without (see SAETrainConfig.outlier_norm)
        x = x[x.norm(dim=1) <= sae.cfg.max_norm]
    mean = x.double().mean(0)
    variance = (x.double() - mean).pow(2).sum(-1).mean().item()
    sq, fired, l0s = 0.0, torch.zeros(sae.cfg.d_sae), []
    for s in range(0, x.shape[0], batch_size):
        xb = x[s : s + batch_size]
        codes = sae.encode(xb)
        sq += (xb - sae.decode(codes)).pow(2).sum().item()
        active = codes.values > 0
        fired += torch.bincount(codes.cols[active], minlength=sae.cfg.d_sae).float().cpu()
        l0s.append(codes.l0().cpu())
    sae.train(was)
    n = x.shape[0]
    l0 = torch.cat(l0s)
    return {"fvu": sq / n / variance, "mse": sq / n, "l0": l0.mean().item(),
            "l0_quantiles": {q: l0.quantile(q).item() for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
            "l0_histogram": torch.bincount(l0.long()).tolist(),
            "dead_share": (fired == 0).float().mean().item(), "dense_share": (fired / n > dense_share).float().mean().item(),
            "tokens": n, "outliers_excluded": n_all - n}


@torch.no_grad()
def splice_metrics(saes: dict[str, SAE], model, tokens: Tensor, hook: str, skip_first: bool = True, batch_size: int = 8) -> dict[str, dict]:
    """CE loss recovered and KL for each SAE whose reconstruction replaces the activation at `hook`.
    The clean and zero-ablated passes run once per batch, shared by all the SAEs."""
    start = 1 if skip_first else 0

    def splice(sae: SAE):
        def patch(act: Tensor) -> Tensor:  # [batch, pos, d_in]
            out = act.clone()
            flat = act[:, start:].reshape(-1, act.shape[-1]).float()  # [batch * pos, d_in]
            rec = sae.decode(sae.encode(flat))
            if sae.cfg.max_norm:  # outliers pass through, as the store's left-out positions do
                rec = torch.where((flat.norm(dim=1) > sae.cfg.max_norm)[:, None], flat, rec)
            out[:, start:] = rec.reshape(act[:, start:].shape).to(act.dtype)
            return out
        return patch

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
            spliced = run_hooks(model, tb, patch={hook: splice(sae)})[0]
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
        out[name] = r
    return out


def _kl(clean: Tensor, other: Tensor) -> Tensor:
    """KL(clean ‖ other) of the next-token distributions, mean over tokens."""
    p = F.log_softmax(clean.float(), -1)
    q = F.log_softmax(other.float(), -1)
    return (p.exp() * (p - q)).sum(-1).mean()
