"""SAE files in SAELens's format: a folder with `cfg.json` and `sae_weights.safetensors`.

    W_enc [d_in, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_in]   b_dec [d_in]   (+ threshold [d_sae])

Architectures: topk → "topk" (with k), relu → "standard", mutual_choice / feature_choice → "jumprelu"
with their learned per-feature thresholds (a feature never selected in training has threshold +inf:
it never fires). `sae_lens.SAE.load_from_disk(folder)` (sae-lens 6.54) loads every one of them and
encodes / decodes as we do. Our own fields (kind, k, training numbers) sit under the "interp" key,
which SAELens ignores; `load_sae` also reads SAELens files written by other tools. The running firing
density per feature goes to `sparsity.safetensors` as SAELens writes it ("sparsity": log10(density +
1e-10)); Feature Choice with Zipf capacities needs it to allocate as in training.

Transcoders (sae-lens 6.54's `Transcoder` family, `sae_lens/saes/transcoder.py`): cfg.json adds d_out,
has apply_b_dec_to_input false (SAELens refuses true for transcoders) and metadata.hook_name_out;

    W_enc [d_in, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_out]   b_dec [d_out]   (+ W_skip [d_out, d_in], + threshold)

SAELens centres no transcoder input, so b_in is folded into b_enc (b_enc − W_enc b_in); the unfolded b_enc
and b_in go to `interp.safetensors`, which SAELens ignores, so interp reads its own files back exactly.
Architectures: relu → "transcoder" / "skip_transcoder", the batch rules → "jumprelu_transcoder" /
"jumprelu_skip_transcoder". SAELens 6.54 has no TopK transcoder: a topk transcoder is written as
"topk_transcoder" / "topk_skip_transcoder", which interp reads and SAELens refuses (unknown architecture);
circuit-tracer's format (`interp.sae.transcoders`) does hold TopK transcoders.
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
TRANSCODER_PREFIX = {"topk": "topk_", "relu": "", "mutual_choice": "jumprelu_", "feature_choice": "jumprelu_"}
TRANSCODER_KIND = {f"{p}{s}transcoder": KIND_OF.get(p.rstrip("_"), "relu") for p in ("topk_", "", "jumprelu_") for s in ("", "skip_")}


def folded(sae: SAE) -> dict[str, torch.Tensor]:
    """The weights as formats without input centring hold them (our orientation, W_enc [d_sae, d_in], float32 CPU):
    a transcoder's b_in folded into b_enc (b_enc − W_enc b_in), W_skip with a skip path, threshold for the batch rules."""
    with torch.no_grad():
        b_enc = sae.b_enc - sae.W_enc @ sae.b_in if sae.cfg.transcoder else sae.b_enc
        out = {"W_enc": sae.W_enc, "b_enc": b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
        if sae.W_skip is not None:
            out["W_skip"] = sae.W_skip
        if sae.cfg.kind in BATCH_KINDS:
            out["threshold"] = sae.threshold
        return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}


def exact_extras(sae: SAE) -> dict[str, torch.Tensor]:
    """What a folded file loses, for an exact round trip: a transcoder's b_in and unfolded b_enc, and the density."""
    out = {"density": sae.density}
    if sae.cfg.transcoder:
        out |= {"b_in": sae.b_in, "b_enc": sae.b_enc}
    return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}


def from_tensors(cfg: SAEConfig, tensors: dict, extras: dict | None = None, where: str = "") -> SAE:
    """An SAE (eval mode) from `folded`-style tensors (W_enc [d_sae, d_in]) and, when present, `exact_extras`.
    Shapes are checked against `cfg`; `where` names the file for the message."""
    d_in, d_sae, d_out = cfg.d_in, cfg.d_sae, cfg.width_out
    shapes = {"W_enc": (d_sae, d_in), "b_enc": (d_sae,), "W_dec": (d_sae, d_out), "b_dec": (d_out,), "threshold": (d_sae,),
              "W_skip": (d_out, d_in)}
    need = ["W_enc", "b_enc", "W_dec", "b_dec"] + (["threshold"] if cfg.kind in BATCH_KINDS else []) + (["W_skip"] if cfg.skip else [])
    absent = [k for k in need if k not in tensors]
    if absent:
        raise InterpError(f"{where} lacks the tensor(s) {', '.join(absent)} that a {cfg.kind} {'transcoder' if cfg.transcoder else 'SAE'} needs.")
    for k in need:
        if tuple(tensors[k].shape) != shapes[k]:
            raise InterpError(f"{where}: {k} has shape {tuple(tensors[k].shape)}, but the config's d_in = {d_in}, d_sae = {d_sae}, "
                              f"d_out = {d_out} want {shapes[k]}. The config and weights come from different SAEs.")
    sae = SAE(cfg)
    extras = extras or {}
    with torch.no_grad():
        for k in need:
            getattr(sae, k).copy_(tensors[k])
        if cfg.transcoder and "b_in" in extras:  # interp's own file: unfold exactly
            sae.b_in.copy_(extras["b_in"])
            sae.b_enc.copy_(extras["b_enc"])
        if extras.get("density") is not None and extras["density"].shape == (d_sae,):
            sae.density.copy_(extras["density"])
    return sae.eval()


def save_sae(sae: SAE, folder: str | Path, extra: dict | None = None) -> Path:
    """Write the SAE (atomically: a reader sees the old folder or the whole new one)."""
    c = sae.cfg
    arch = f"{TRANSCODER_PREFIX[c.kind]}{'skip_' if c.skip else ''}transcoder" if c.transcoder else ARCHITECTURE[c.kind]
    cfg = {
        "architecture": arch, "d_in": c.d_in, "d_sae": c.d_sae, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": not c.transcoder, "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {"model_name": c.model_name, "hook_name": c.hook_name, "sae_lens_version": SAE_LENS_VERSION},
        "interp": {"kind": c.kind, "k": c.k, "threshold_lr": c.threshold_lr, "fc_capacity": c.fc_capacity, "max_norm": c.max_norm, **(extra or {})},
    }
    if c.kind == "topk":
        cfg.update(k=c.k, rescale_acts_by_decoder_norm=False)
    if c.transcoder:
        cfg["d_out"] = c.width_out
        cfg["metadata"]["hook_name_out"] = c.hook_name_out
        cfg["interp"] |= {"transcoder": True, "skip": c.skip, "max_norm_out": c.max_norm_out}
    tensors = folded(sae)
    tensors["W_enc"] = tensors["W_enc"].T.contiguous()  # SAELens: [d_in, d_sae]
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(tmp / "sae_weights.safetensors"))
        save_file({"sparsity": torch.log10(sae.density.detach().float().cpu() + 1e-10)}, str(tmp / "sparsity.safetensors"))
        if c.transcoder:
            save_file(exact_extras(sae), str(tmp / "interp.safetensors"))
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
    transcoder = arch in TRANSCODER_KIND
    if arch not in KIND_OF and not transcoder:
        raise InterpError(f"{cfg_path} has architecture {arch!r}; interp reads topk, standard and jumprelu SAEs and "
                          f"the transcoders {', '.join(TRANSCODER_KIND)}.")
    if transcoder and "d_out" not in cfg:
        raise InterpError(f"{cfg_path} is a {arch} without d_out: add the output hook's width as \"d_out\".")
    ours = cfg.get("interp", {})
    kind = ours.get("kind", TRANSCODER_KIND[arch] if transcoder else KIND_OF[arch])
    if kind == "topk" and "k" not in cfg and "k" not in ours:
        raise InterpError(f"{cfg_path} is a topk SAE without k: add the number of active features per token as \"k\".")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    k = int(cfg.get("k", ours.get("k", min(32, d_sae))))
    meta = cfg.get("metadata", {})
    sae_cfg = SAEConfig(d_in=d_in, d_sae=d_sae, kind=kind, k=k, threshold_lr=ours.get("threshold_lr", 0.01),
                        fc_capacity=ours.get("fc_capacity", "uniform"), max_norm=ours.get("max_norm", 0.0),
                        model_name=meta.get("model_name", "") or "", hook_name=meta.get("hook_name", "") or "",
                        transcoder=transcoder, d_out=int(cfg["d_out"]) if transcoder else 0, skip="skip_" in arch,
                        hook_name_out=(meta.get("hook_name_out", "") or "") if transcoder else "",
                        max_norm_out=ours.get("max_norm_out", 0.0) if transcoder else 0.0)
    if "W_enc" in tensors:
        tensors["W_enc"] = tensors["W_enc"].T  # SAELens: [d_in, d_sae]
    extras = {}
    sparsity = folder / "sparsity.safetensors"
    if sparsity.exists():
        log_density = load_file(str(sparsity)).get("sparsity")
        if log_density is not None:
            extras["density"] = (10 ** log_density.double() - 1e-10).clamp(min=0).float()
    if transcoder and (folder / "interp.safetensors").exists():
        extras |= load_file(str(folder / "interp.safetensors"))  # exact: b_in, the unfolded b_enc, the density
    sae = from_tensors(sae_cfg, tensors, extras, where=str(w_path))
    return sae.to(device).eval()
