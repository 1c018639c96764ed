"""Per-layer transcoders: train one per layer from a store set, and circuit-tracer's transcoder-set files.

    train_transcoders("acts/tc", range(30), SAETrainConfig(kind="topk", k=32), "runs/transcoders/smollm2")

Each layer is an ordinary trainer run (`interp.sae.train`: the layer's MLP input store as `store`, its
output store as `target_store`) in its own resumable folder `out_dir/layer_{i}/`; a complete layer is
not retrained, a killed one resumes from its checkpoint. Under `torchrun --nproc_per_node=N` the layers
are split over the ranks in contiguous groups (rank r trains the r-th group on its own, as sparsify's
`--distribute_modules`); rank 0 writes the set when every rank is done.

The set (`out_dir/transcoders/`) is circuit-tracer's `transcoder_set` (decoderesearch/circuit-tracer,
`circuit_tracer/utils/hf_utils.py::load_transcoders`, `transcoder/single_layer_transcoder.py::load_transcoder`):

    config.yaml             model_kind: transcoder_set, scan, feature_input_hook, feature_output_hook (its names,
                            relative to blocks.{i}), activation (topk / relu / jumprelu), k (topk), transcoders
                            (the layer files, absolute paths; only when the layers are 0..n-1, as it requires),
                            and under `interp` ours: model, layers, hook templates, kind, k, widths, outlier norms
    layer_{i}.safetensors   float32, exactly the keys its loader's strict load_state_dict takes:
                            W_enc [d_sae, d_model]   b_enc [d_sae] (b_in folded in: b_enc − W_enc b_in)
                            W_dec [d_sae, d_model]   b_dec [d_model]   W_skip [d_model, d_model] (skip transcoders)
                            activation_function.threshold [d_sae] (the batch rules, as JumpReLU)
    interp.safetensors      layer_{i}.b_in, layer_{i}.b_enc (unfolded), layer_{i}.density: the exact round trip

Its TL models name the MLP input `mlp.hook_in` (its ReplacementMLP's hook; HF post_attention_layernorm
output) and output `hook_mlp_out`; ours are `blocks.{i}.ln2.hook_out` and `blocks.{i}.hook_mlp_out`.
Differences it cannot hold: the outlier cuts (max_norm, max_norm_out; under `interp`), and its TopK keeps
the k largest pre-activations without a ReLU, where ours keeps ReLU(pre) (equal unless one of the k is
negative). It writes `k` into its TopK files but its own strict loader refuses that key, so `k` is in
config.yaml only.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from safetensors.torch import load_file, save_file

from interp import InterpError
from interp.config import to_dict
from interp.fsutil import atomic_dir
from interp.runs import Run, create_run, open_run
from interp.sae.io import exact_extras, folded, from_tensors, load_sae
from interp.sae.models import BATCH_KINDS, SAE, SAEConfig
from interp.sae.train import Dist, SAETrainConfig, train_sae
from interp.store_set import check_pairable, open_store_set

INPUT_HOOK, OUTPUT_HOOK = "blocks.{i}.ln2.hook_out", "blocks.{i}.hook_mlp_out"
CT_HOOK = {"ln2.hook_out": "mlp.hook_in"}  # our hook (within blocks.{i}) -> circuit-tracer's TL name, where they differ
OUR_HOOK = {v: k for k, v in CT_HOOK.items()}
ACTIVATION = {"topk": "topk", "relu": "relu", "mutual_choice": "jumprelu", "feature_choice": "jumprelu"}
SET = "transcoders"


def layer_configs(set_dir: str | Path, layers, cfg: SAETrainConfig, input_hook: str = INPUT_HOOK,
                  output_hook: str = OUTPUT_HOOK) -> dict[int, SAETrainConfig]:
    """Each layer's trainer config (its two stores filled in), every store checked to exist and pair."""
    if not layers:
        raise InterpError("No layers given: name the layers to train, e.g. --layers 0-29.")
    for t in (input_hook, output_hook):
        if "{i}" not in t:
            raise InterpError(f"Hook template {t!r} has no {{i}} for the layer: write it like {INPUT_HOOK}.")
    stores = open_store_set(set_dir)
    out = {}
    for i in layers:
        x, y = (stores.store(t.format(i=i)) for t in (input_hook, output_hook))
        check_pairable(x, y)  # the same tokens' rows (the trainer verifies the shards' checksums)
        out[i] = replace(cfg, store=str(x.dir), target_store=str(y.dir))
    return out


def my_layers(layers: list[int], rank: int, world: int) -> list[int]:
    """Rank `rank`'s contiguous group of `layers` (the first groups one longer when they do not divide)."""
    n, extra = divmod(len(layers), world)
    start = rank * n + min(rank, extra)
    return layers[start : start + n + (rank < extra)]


def train_transcoders(set_dir: str | Path, layers, cfg: SAETrainConfig, out_dir: str | Path, input_hook: str = INPUT_HOOK,
                      output_hook: str = OUTPUT_HOOK, quiet: bool = True) -> Path | None:
    """Train (or finish) one transcoder per layer and write the set; returns the set's folder (None on ranks > 0)."""
    layers = sorted(set(layers))
    configs = layer_configs(set_dir, layers, cfg, input_hook, output_hook)  # every check before any folder
    out_dir = Path(out_dir)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():  # only a barrier: a rank may wait hours for the slowest layer
        dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo", timeout=timedelta(days=30))
    try:
        for i in my_layers(layers, rank, world):
            _train_layer(configs[i], out_dir / f"layer_{i}", i, quiet)
        if world > 1:
            dist.barrier()
        if rank:
            return None
        saes = {i: load_sae(out_dir / f"layer_{i}" / "sae") for i in layers}
        return save_transcoder_set(saes, out_dir / SET, input_hook, output_hook)
    finally:
        if world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _train_layer(cfg: SAETrainConfig, folder: Path, layer: int, quiet: bool) -> None:
    from interp.precision import resolve_dtype

    dtype, why = resolve_dtype(cfg.dtype, cfg.device)
    config = {"experiment": "transcoder", "layer": layer, **to_dict(cfg),
              "compute_dtype": str(dtype).removeprefix("torch."), "compute_dtype_reason": why}
    if (folder / "config.json").exists():
        if Run(folder).config != config:
            raise InterpError(f"{folder} holds layer {layer} trained with another config; pick a new output folder "
                              "(nothing was changed), or rerun with the settings it was started with.")
        if Run(folder).complete:
            return  # never retrained
        run = open_run(folder, "transcoder")
    else:
        run = create_run("transcoder", {k: v for k, v in config.items() if k != "experiment"}, folder)
    t0 = time.perf_counter()
    _, last = train_sae(cfg, run, quiet=quiet, d=Dist(cfg.device, solo=True))
    run.finish({"final": last, "sae": str(folder / "sae"), "layer": layer}, time.perf_counter() - t0)


# ------------------------------------------------------------------------------ circuit-tracer's format


def _relative(hook: str, layer: int) -> str:
    prefix = f"blocks.{layer}."
    if not hook.startswith(prefix):
        raise InterpError(f"Hook {hook!r} of layer {layer} is not inside blocks.{layer}: circuit-tracer's transcoder sets "
                          "name hooks relative to each block (e.g. hook_mlp_out).")
    return hook[len(prefix):]


def save_transcoder_set(saes: dict[int, SAE], folder: str | Path, input_hook: str = INPUT_HOOK,
                        output_hook: str = OUTPUT_HOOK, scan: str = "") -> Path:
    """Write per-layer transcoders as circuit-tracer's transcoder set (atomically). All must share kind, k,
    widths and skip, read blocks.{i}.<one hook> and write blocks.{i}.<one hook>, with d_in = d_out."""
    layers = sorted(saes)
    if not layers:
        raise InterpError("No transcoders to write.")
    first = saes[layers[0]].cfg
    for i in layers:
        c = saes[i].cfg
        if not c.transcoder or c.width_out != c.d_in:
            raise InterpError(f"Layer {i} is {'an SAE' if not c.transcoder else f'a transcoder of d_in {c.d_in} and d_out {c.width_out}'}: "
                              "circuit-tracer's sets hold transcoders from the residual width to itself (d_model both).")
        if (c.kind, c.k, c.d_sae, c.skip, c.d_in) != (first.kind, first.k, first.d_sae, first.skip, first.d_in):
            raise InterpError(f"Layer {i}'s transcoder ({c.kind}, k {c.k}, d_sae {c.d_sae}, skip {c.skip}) differs from layer "
                              f"{layers[0]}'s ({first.kind}, k {first.k}, d_sae {first.d_sae}, skip {first.skip}): one set holds one kind.")
        for hook, template in ((c.hook_name, input_hook), (c.hook_name_out, output_hook)):
            if hook != template.format(i=i):
                raise InterpError(f"Layer {i}'s transcoder reads / writes {hook!r}, not {template.format(i=i)!r}: pass the "
                                  "hook templates it was trained with.")
    folder = Path(folder)
    ins, outs = (_relative(t.format(i=layers[0]), layers[0]) for t in (input_hook, output_hook))
    config = {"model_kind": "transcoder_set", "scan": scan or f"interp/{first.model_name or 'model'}/{folder.name}",
              "feature_input_hook": CT_HOOK.get(ins, ins), "feature_output_hook": CT_HOOK.get(outs, outs),
              "activation": ACTIVATION[first.kind], **({"k": first.k} if first.kind == "topk" else {})}
    if layers == list(range(len(layers))):  # circuit-tracer needs every layer 0..n-1, and maps list index to layer
        config["transcoders"] = [str((folder / f"layer_{i}.safetensors").resolve()) for i in layers]
    config["interp"] = {"model_name": first.model_name, "layers": layers, "input_hook": input_hook, "output_hook": output_hook,
                        "kind": first.kind, "k": first.k, "d_in": first.d_in, "d_sae": first.d_sae, "d_out": first.width_out,
                        "skip": first.skip, "threshold_lr": first.threshold_lr, "fc_capacity": first.fc_capacity,
                        "max_norm": {i: saes[i].cfg.max_norm for i in layers},
                        "max_norm_out": {i: saes[i].cfg.max_norm_out for i in layers}}
    extras = {}
    with atomic_dir(folder) as tmp:
        for i in layers:
            t = folded(saes[i])
            if "threshold" in t:
                t["activation_function.threshold"] = t.pop("threshold")  # its JumpReLU module's parameter
            save_file(t, str(tmp / f"layer_{i}.safetensors"))
            extras |= {f"layer_{i}.{k}": v for k, v in exact_extras(saes[i]).items()}
        save_file(extras, str(tmp / "interp.safetensors"))
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def load_transcoder_set(folder: str | Path, device: str = "cpu") -> dict[int, SAE]:
    """A transcoder set (ours, or circuit-tracer's with its layer files beside config.yaml) as {layer: SAE}."""
    folder = Path(folder)
    path = folder / "config.yaml"
    if not path.exists():
        raise InterpError(f"{folder} is not a transcoder set: it has no config.yaml. `interp transcoder train` writes "
                          f"one under OUT/{SET}/.")
    config = yaml.safe_load(path.read_text()) or {}
    if config.get("model_kind") != "transcoder_set":
        raise InterpError(f"{path} has model_kind {config.get('model_kind')!r}; interp reads circuit-tracer's transcoder_set.")
    ours = config.get("interp", {})
    layers = ours.get("layers") or sorted(int(p.stem.split("_")[1]) for p in folder.glob("layer_*.safetensors"))
    missing = [i for i in layers if not (folder / f"layer_{i}.safetensors").exists()]
    if not layers or missing:
        raise InterpError(f"{folder} lacks the layer file(s) {', '.join(f'layer_{i}.safetensors' for i in missing) or 'layer_*.safetensors'}.")
    activation = config.get("activation") or "relu"
    extras = load_file(str(folder / "interp.safetensors")) if (folder / "interp.safetensors").exists() else {}
    ins, outs = (OUR_HOOK.get(config[k], config[k]) for k in ("feature_input_hook", "feature_output_hook"))
    out = {}
    for i in layers:
        t = load_file(str(folder / f"layer_{i}.safetensors"))
        if "activation_function.threshold" in t:
            t["threshold"] = t.pop("activation_function.threshold")
            activation = "jumprelu" if activation not in ACTIVATION.values() else activation
        if "W_enc" not in t or t["W_enc"].ndim != 2:
            raise InterpError(f"{folder / f'layer_{i}.safetensors'} has no W_enc [d_sae, d_model]: it is not a transcoder's file.")
        d_sae, d_model = t["W_enc"].shape
        kind = ours.get("kind", {"topk": "topk", "jumprelu": "mutual_choice"}.get(activation, "relu"))
        cfg = SAEConfig(d_in=d_model, d_sae=d_sae, kind=kind, k=int(config.get("k", ours.get("k", 32))), transcoder=True,
                        d_out=d_model, skip="W_skip" in t, threshold_lr=ours.get("threshold_lr", 0.01),
                        fc_capacity=ours.get("fc_capacity", "uniform"), model_name=ours.get("model_name", ""),
                        max_norm=ours.get("max_norm", {}).get(i, 0.0), max_norm_out=ours.get("max_norm_out", {}).get(i, 0.0),
                        hook_name=ours.get("input_hook", f"blocks.{{i}}.{ins}").format(i=i),
                        hook_name_out=ours.get("output_hook", f"blocks.{{i}}.{outs}").format(i=i))
        mine = {k.split(".", 1)[1]: v for k, v in extras.items() if k.startswith(f"layer_{i}.")}
        out[i] = from_tensors(cfg, t, mine, where=str(folder / f"layer_{i}.safetensors"))
        out[i].to(device)
    return out
