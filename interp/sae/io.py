"""SAE files in SAELens's format: a folder with `cfg.json` and `sae_weights.safetensors`.

    W_enc [d_in, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_in]   b_dec [d_in]   (+ threshold [d_sae])

Architectures: topk → "topk" (with k), relu → "standard", mutual_choice / feature_choice → "jumprelu"
with their learned per-feature thresholds (a feature never selected in training has threshold +inf:
it never fires). `sae_lens.SAE.load_from_disk(folder)` (sae-lens 6.54) loads every one of them and
encodes / decodes as we do. Our own fields (kind, k, training numbers) sit under the "interp" key,
which SAELens ignores; `load_sae` also reads SAELens files written by other tools. The running firing
density per feature goes to `sparsity.safetensors` as SAELens writes it ("sparsity": log10(density +
1e-10)); Feature Choice with Zipf capacities needs it to allocate as in training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from interp import InterpError
from interp.fsutil import atomic_dir, write_json
from interp.sae.models import BATCH_KINDS, SAE, SAEConfig

SAE_LENS_VERSION = "6.54.12"
ARCHITECTURE = {"topk": "topk", "relu": "standard", "mutual_choice": "jumprelu", "feature_choice": "jumprelu"}
KIND_OF = {"topk": "topk", "standard": "relu", "jumprelu": "mutual_choice"}


def save_sae(sae: SAE, folder: str | Path, extra: dict | None = None) -> Path:
    """Write the SAE (atomically: a reader sees the old folder or the whole new one)."""
    c = sae.cfg
    cfg = {
        "architecture": ARCHITECTURE[c.kind], "d_in": c.d_in, "d_sae": c.d_sae, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {"model_name": c.model_name, "hook_name": c.hook_name, "sae_lens_version": SAE_LENS_VERSION},
        "interp": {"kind": c.kind, "k": c.k, "threshold_lr": c.threshold_lr, "fc_capacity": c.fc_capacity, "max_norm": c.max_norm, **(extra or {})},
    }
    if c.kind == "topk":
        cfg.update(k=c.k, rescale_acts_by_decoder_norm=False)
    tensors = {"W_enc": sae.W_enc.detach().T, "b_enc": sae.b_enc.detach(), "W_dec": sae.W_dec.detach(), "b_dec": sae.b_dec.detach()}
    if c.kind in BATCH_KINDS:
        tensors["threshold"] = sae.threshold.detach()
    tensors = {k: v.float().cpu().contiguous() for k, v in tensors.items()}
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(tmp / "sae_weights.safetensors"))
        save_file({"sparsity": torch.log10(sae.density.detach().float().cpu() + 1e-10)}, str(tmp / "sparsity.safetensors"))
        write_json(tmp / "cfg.json", cfg)
    return Path(folder)


def load_sae(folder: str | Path, device: str = "cpu") -> SAE:
    """Read a SAELens-format folder (ours or another tool's) into an SAE in eval mode."""
    folder = Path(folder)
    cfg_path, w_path = folder / "cfg.json", folder / "sae_weights.safetensors"
    for p in (cfg_path, w_path):
        if not p.exists():
            raise InterpError(f"{folder} is not an SAE folder: {p.name} is missing. An SAE folder holds cfg.json and "
                              f"sae_weights.safetensors (SAELens's format), as `interp sae train` writes them.")
    try:
        cfg = json.loads(cfg_path.read_text())
        tensors = load_file(str(w_path), device=device)
    except Exception as e:
        raise InterpError(f"The SAE in {folder} cannot be read ({type(e).__name__}: {e}). Re-save or re-train it.") from e
    missing = [k for k in ("architecture", "d_in", "d_sae") if k not in cfg]
    if missing:
        raise InterpError(f"{cfg_path} lacks the field(s) {', '.join(missing)}, which every SAELens SAE config has; "
                          f"it was not written by SAELens or interp. Add them (architecture: topk, standard or jumprelu).")
    arch = cfg["architecture"]
    if arch not in KIND_OF:
        raise InterpError(f"{cfg_path} has architecture {arch!r}; interp reads topk, standard and jumprelu SAEs.")
    ours = cfg.get("interp", {})
    kind = ours.get("kind", KIND_OF[arch])
    if arch == "topk" and "k" not in cfg:
        raise InterpError(f"{cfg_path} is a topk SAE without k: add the number of active features per token as \"k\".")
    need = ["W_enc", "b_enc", "W_dec", "b_dec"] + (["threshold"] if arch == "jumprelu" else [])
    absent = [k for k in need if k not in tensors]
    if absent:
        raise InterpError(f"{w_path} lacks the tensor(s) {', '.join(absent)} that a {arch} SAE needs.")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,), "threshold": (d_sae,)}
    for k in need:
        if tuple(tensors[k].shape) != shapes[k]:
            raise InterpError(f"{w_path}: {k} has shape {tuple(tensors[k].shape)}, but cfg.json's d_in = {d_in}, d_sae = {d_sae} "
                              f"want {shapes[k]}. The config and weights come from different SAEs.")
    k = int(cfg.get("k", ours.get("k", min(32, d_sae))))
    meta = cfg.get("metadata", {})
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, kind=kind, k=k, threshold_lr=ours.get("threshold_lr", 0.01),
                        fc_capacity=ours.get("fc_capacity", "uniform"), max_norm=ours.get("max_norm", 0.0),
                        model_name=meta.get("model_name", "") or "", hook_name=meta.get("hook_name", "") or ""))
    with torch.no_grad():
        sae.W_enc.copy_(tensors["W_enc"].T)
        sae.W_dec.copy_(tensors["W_dec"])
        sae.b_enc.copy_(tensors["b_enc"])
        sae.b_dec.copy_(tensors["b_dec"])
        if arch == "jumprelu":
            sae.threshold.copy_(tensors["threshold"])
        sparsity = folder / "sparsity.safetensors"
        if sparsity.exists():
            log_density = load_file(str(sparsity)).get("sparsity")
            if log_density is not None and log_density.shape == (d_sae,):
                sae.density.copy_((10 ** log_density.double() - 1e-10).clamp(min=0).float())
    return sae.to(device).eval()
