"""The SAE evaluation suite behind `interp sae eval SAE_DIR --store S --suite core,probing,absorption`.

- core        SAEBench's core metrics on the store's last activations, and the SAE spliced into its
              model on the store's last sequences (`interp.sae.evals.core_metrics`);
- probing     sparse probing on local labelled texts (`interp.sae.probing`);
- absorption  first-letter feature absorption, after measuring whether the model spells
              (`interp.sae.absorption`).

`evaluate` returns one JSON-able dict per SAE; `summary` prints its headline numbers as a table.
Several SAEs of one hook share the model's forwards (`evaluate_many`), as `sae_variants` uses it.
Transcoders are evaluated (core only) against their target: the store of their output hook, given as
`target` or found beside `store` in its store set; they are spliced in at that output hook.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from interp import InterpError
from interp.sae.evals import core_metrics, splice_metrics
from interp.sae.models import SAE

SUITES = ("core", "probing", "absorption")


def parse_suites(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SUITES]
    if unknown or not names:
        raise InterpError(f"--suite {text!r}: choose a comma-separated subset of {', '.join(SUITES)} (e.g. core,probing).")
    return list(dict.fromkeys(names))


def _needs_model(store, suites: list[str], sequences: int) -> bool:
    real = not store.manifest["model"].startswith("synthetic")
    model_suites = [s for s in suites if s != "core"]
    if model_suites and not real:
        raise InterpError(f"The store in {store.dir} holds synthetic activations, so the {', '.join(model_suites)} "
                          "suite(s) have no model to run texts through. Evaluate a store of a real model, or use --suite core.")
    return real and (bool(model_suites) or (sequences > 0 and store.tokens() is not None))


def target_store(saes: dict[str, SAE], store, target=None):
    """The store a transcoder reconstructs (None for SAEs): `target`, or its output hook's store in `store`'s set."""
    outs = {sae.cfg.hook_name_out for sae in saes.values() if sae.cfg.transcoder}
    if not outs:
        return None
    if len(outs) > 1 or not all(sae.cfg.transcoder for sae in saes.values()):
        raise InterpError(f"Evaluate SAEs and transcoders of one output hook at a time (got {', '.join(sorted(outs))} "
                          f"among {len(saes)}).")
    if target is None:
        from interp.store_set import open_store_set, read_set
        hook = outs.pop()
        if read_set(store.dir.parent) is None:
            raise InterpError(f"The store in {store.dir} is not part of a store set, so the store of the transcoder's output "
                              f"hook {hook!r} cannot be found beside it: evaluate on a store set that holds both hooks "
                              "(`interp cache --hook X,Y ...`).")
        target = open_store_set(store.dir.parent).store(hook)
    from interp.store_set import check_pairable
    check_pairable(store, target)
    return target


def evaluate_many(saes: dict[str, SAE], store, suites=("core",), tokens: int = 65536, sequences: int = 16,
                  model=None, probing: dict | None = None, absorption: dict | None = None, quiet: bool = True,
                  target=None) -> dict[str, dict]:
    """Evaluate SAEs of one hook on `store`: {name: result}. The model (loaded from the store's manifest
    unless given) runs each text once for all the SAEs. Transcoders: `target`, the paired store of their
    output hook (default: found in `store`'s set)."""
    suites = list(suites)
    if any(sae.cfg.transcoder for sae in saes.values()) and "absorption" in suites:  # probing reads the latents, which exist for transcoders too
        raise InterpError("Absorption compares each latent's decoder direction with a first-letter probe in the space the "
                          "latent reads; a transcoder's decoder writes another hook's space, so it has no absorption score: "
                          "use --suite core,probing.")
    target = target_store(saes, store, target)
    for name, sae in saes.items():
        if store.d_in != sae.cfg.d_in:
            raise InterpError(f"The store in {store.dir} holds activations of width {store.d_in}, but the SAE {name!r} "
                              f"reads d_in = {sae.cfg.d_in}. Evaluate it on a store of its own hook "
                              f"({sae.cfg.hook_name or 'see its cfg.json'}).")
        if target is not None and target.d_in != sae.cfg.width_out:
            raise InterpError(f"The target store in {target.dir} holds width {target.d_in}, but the transcoder {name!r} "
                              f"writes d_out = {sae.cfg.width_out}. Evaluate it on the store of {sae.cfg.hook_name_out}.")
    hook = (target or store).manifest["hook"]  # where the reconstruction goes
    if model is None and _needs_model(store, suites, sequences):
        from interp.models import load_model
        model = load_model(store.manifest["model"], quiet=True)  # float32, whatever the store was cached in
    out = {name: {"hook": hook, "store": str(store.dir), **({"target_store": str(target.dir)} if target else {}), "model": store.manifest["model"], "suites": suites, "seconds": {}}
           for name in saes}
    if "core" in suites:
        t0 = time.perf_counter()
        n = min(tokens, store.n_tokens)
        x = store.read(store.n_tokens - n, store.n_tokens)
        y = target.read(target.n_tokens - n, target.n_tokens) if target is not None else None
        seqs = store.tokens()
        splice = {}
        if model is not None and sequences and seqs is not None:
            seqs = torch.from_numpy(seqs[-sequences:]).long()
            splice = splice_metrics(saes, model, seqs, hook, skip_first=not store.manifest["keep_first"])
        shared = (time.perf_counter() - t0) / len(saes)  # the spliced forwards, shared out over the SAEs
        for name, sae in saes.items():
            t1 = time.perf_counter()
            out[name]["core"] = core_metrics(sae, x, splice.get(name), y=y)
            out[name]["seconds"]["core"] = shared + time.perf_counter() - t1
    if "probing" in suites:
        from interp.sae.probing import probe_sae, probing_tasks, task_activations
        t0 = time.perf_counter()
        opts = dict(probing or {})
        ks = opts.pop("ks", None)
        max_len = opts.pop("max_len", 128)
        acts = task_activations(model, store.manifest["hook"], probing_tasks(**opts), max_len=max_len, quiet=quiet)  # latents' input
        shared = time.perf_counter() - t0
        for name, sae in saes.items():
            t1 = time.perf_counter()
            out[name]["probing"] = probe_sae(sae, acts, **({"ks": ks} if ks else {}))
            out[name]["seconds"]["probing"] = shared + time.perf_counter() - t1
    if "absorption" in suites:
        from interp.sae.absorption import absorption_many
        for name, result in absorption_many(saes, model, hook, **(absorption or {}), quiet=quiet).items():
            out[name]["absorption"] = result
            out[name]["seconds"]["absorption"] = result["absorption"]["seconds"]["total"]
    return out


def evaluate(sae: SAE, store, suites=("core",), **kwargs) -> dict:
    return evaluate_many({"sae": sae}, store, suites, **kwargs)["sae"]


def headline(result: dict) -> dict[str, float]:
    """The suite's headline numbers of one result, flat: what the summary table and the dashboard show."""
    row = {}
    core = result.get("core")
    if core:
        row |= {"explained variance": core["reconstruction_quality"]["explained_variance"],
                "cosine": core["reconstruction_quality"]["cossim"], "L2 ratio": core["shrinkage"]["l2_ratio"],
                "rel. bias": core["shrinkage"]["relative_reconstruction_bias"], "L0": core["sparsity"]["l0"],
                "alive": core["misc_metrics"]["frac_alive"], "> 1%": core["misc_metrics"]["freq_over_1_percent"],
                "max dec cos": core["misc_metrics"]["average_max_decoder_cosine_sim"]}
        if "model_performance_preservation" in core:
            row |= {"CE score": core["model_performance_preservation"]["ce_loss_score"],
                    "KL score": core["model_behavior_preservation"]["kl_div_score"]}
    probing = result.get("probing")
    if probing:
        mean = probing["mean"]
        row["probe residual"] = mean["residual"]["one_vs_rest"]
        for k in probing["ks"]:
            row[f"probe k={k}"] = mean["sae"]["one_vs_rest"][k]
    for key, value in result.get("absorption", {}).get("headline", {}).items():
        row[f"absorption {key}"] = value
    return row


def summary(results: dict[str, dict]) -> str:
    """A plain-text table: one column per SAE, one row per headline number."""
    heads = {name: headline(r) for name, r in results.items()}
    keys = list(dict.fromkeys(k for h in heads.values() for k in h))
    width = max([len(k) for k in keys] + [6])
    cols = list(heads)
    lines = [" " * width + "".join(f"  {c:>16}" for c in cols)]
    for k in keys:
        cells = "".join(f"  {_fmt(heads[c].get(k)):>16}" for c in cols)
        lines.append(f"{k:<{width}}{cells}")
    return "\n".join(lines)


def evaluation_tables(result: dict) -> dict[str, list[dict]]:
    """Per-task probing accuracy and per-letter absorption, as table rows (for the dashboard)."""
    out = {}
    probing = result.get("probing")
    if probing:
        out["Sparse probing: test accuracy, one class against the rest (SAEBench's score)"] = [
            {"task": task, "classes": len(t["classes"]), "residual": round(t["residual"]["one_vs_rest"], 3),
             **{f"k={k}": round(t["sae"]["one_vs_rest"][k], 3) for k in probing["ks"]}}
            for task, t in probing["tasks"].items()]
    absorption = result.get("absorption", {}).get("absorption")
    if absorption and absorption.get("letters"):
        out[f"Absorption per letter at {absorption['hook']} (first-letter task)"] = [
            {"letter": letter, "probe F1": _round(r.get("probe_f1")), "main latents": r.get("main_latents"),
             "split": r.get("num_split_features"), "absorption": _round(r.get("mean_absorption_fraction")),
             "full absorption": _round(r.get("full_absorption_rate"))}
            for letter, r in absorption["letters"].items()]
    return out


def _round(v, digits: int = 3):
    return round(v, digits) if isinstance(v, float) else v


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def default_out(sae_dir: str | Path) -> Path:
    return Path(sae_dir) / "eval.json"
