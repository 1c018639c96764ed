"""Forwards in bfloat16: what they change and what they buy. SmolLM2-135M, float32 against bfloat16 on the same inputs.

    .venv/bin/python benchmarks/forward_dtype.py [--threads 1] [--speed-threads 1,2] [--reps 8] [--ce-sequences 32]

About 6 minutes on 2 cores (one thread). Both models are loaded side by side (`load_model(...,
dtype=...)`); every metric computes in float32 from what each forward produced. Drift, each with
its goal (issue 19):
  alpha0        α₀ per layer (mean over heads and texts) on the sinks experiment's quick setting (16 texts
                × 64 tokens, raw and <|endoftext|>): max |Δ| over layers and both conditions; goal ≤ 0.01
  sinks claims  the sinks experiment's claims computed from those numbers: every verdict unchanged
  ce_recovered  CE loss recovered of a TopK SAE (expansion 4, k 32, trained here for one pass over the
                98,304-token store of blocks.15.hook_resid_post, float32 activations, last 16,384 held out),
                spliced into each model on the store's last 32 sequences: |Δ| goal ≤ 0.005
  streaming PPL the streaming experiment's quick setting (512 tokens, W = 64; dense, window, 1/2/4 sinks,
                newline sinks, recomputation), both conditions: max relative |Δ PPL|; goal ≤ 1%. Its
                other claims (the KV-cache equality at 1e-3, memory) are recomputed in both dtypes too
Also reported: clean CE and the Δloss of zero-ablating 4 heads (what extreme_tokens' verdicts read),
and the bfloat16 activations' error against float32's at the cached hook, as a share of their variance.
Speed: the caching loop of `interp cache` (stop at blocks.15.hook_resid_post, cast to the float16
store dtype) on batches of 16 store sequences × 128 tokens, the two dtypes interleaved (ABBA) `--reps`
times per thread count; median tokens/s, and the ratio as the median over reps of each back-to-back
pair's ratio (robust to other jobs' load changing between pairs). Goal ≥ 2.5×. The torch profiler's
top ops of one step per dtype are printed and stored. Results: a markdown table and
benchmarks/results/forward_dtype.json.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import report  # noqa: E402

DTYPES = ("float32", "bfloat16")
STORE = "smollm2-135m-blocks.15.hook_resid_post-98304"
HOOK = "blocks.15.hook_resid_post"


def sinks_drift(models: dict) -> dict:
    from experiments import sinks
    from interp.config import build
    from interp.corpus import mixed_texts

    cfg = build(sinks.Config, None, base=dict(sinks.QUICK))
    texts = mixed_texts(cfg.n_texts, seed=cfg.seed, min_chars=8 * cfg.seq_len)
    out = {}
    for dt, model in models.items():
        s = sinks.summaries(model, texts, cfg)
        claims, _ = sinks._claims(s, cfg, model.info.n_layers)
        out[dt] = {"alpha0_by_layer": {c: v["alpha0_by_layer"] for c, v in s.items()},
                   "alpha0": {c: v["alpha0"] for c, v in s.items()},
                   "claims": {c["name"]: (c["passed"], c["value"]) for c in claims}}
    a, b = out["float32"], out["bfloat16"]
    layer_diff = max((a["alpha0_by_layer"][c] - b["alpha0_by_layer"][c]).abs().max().item() for c in a["alpha0_by_layer"])
    head_diff = max((a["alpha0"][c] - b["alpha0"][c]).abs().max().item() for c in a["alpha0"])
    changed = [n for n in a["claims"] if a["claims"][n][0] != b["claims"][n][0]]
    return {"alpha0_layer_max_abs_diff": layer_diff, "alpha0_head_max_abs_diff": head_diff,
            "alpha0_late_mean": {dt: {c: o["alpha0_by_layer"][c][cfg.first_late_layer:].mean().item() for c in o["alpha0_by_layer"]}
                                 for dt, o in out.items()},
            "claims": {dt: {n: {"passed": p, "value": v} for n, (p, v) in o["claims"].items()} for dt, o in out.items()},
            "claims_changed": changed, "n_claims": len(a["claims"])}


def train_sae(store_dir: Path, quiet: bool):
    from interp.sae.train import SAETrainConfig, train_sae

    cfg = SAETrainConfig(store=str(store_dir), kind="topk", expansion=4, k=32, holdout=16384, seed=0, checkpoint_every=0)
    sae, last = train_sae(cfg, None, quiet=quiet)
    return sae, last


def ce_drift(models: dict, sae, store, n_seqs: int) -> dict:
    from interp.interventions import head_ablation_deltas
    from interp.sae.evals import splice_metrics

    seqs = torch.from_numpy(store.tokens()[-n_seqs:]).long()
    heads = [(3, 0), (10, 4), (15, 2), (25, 7)]
    out = {}
    for dt, model in models.items():
        r = splice_metrics({"sae": sae}, model, seqs, HOOK, skip_first=not store.manifest["keep_first"])["sae"]
        delta = head_ablation_deltas(model, seqs[:16], heads, batch_size=8)
        out[dt] = {**{k: r[k] for k in ("ce_clean", "ce_zero", "ce_sae", "ce_recovered", "kl_sae")},
                   "ablation_delta_loss": [delta[l, h].item() for l, h in heads]}
    a, b = out["float32"], out["bfloat16"]
    return {**out, "heads": heads, "sequences": n_seqs,
            "ce_recovered_abs_diff": abs(a["ce_recovered"] - b["ce_recovered"]),
            "ce_clean_abs_diff": abs(a["ce_clean"] - b["ce_clean"]),
            "ablation_delta_loss_max_abs_diff": max(abs(x - y) for x, y in zip(a["ablation_delta_loss"], b["ablation_delta_loss"]))}


def streaming_drift(models: dict, quiet: bool) -> dict:
    from experiments import streaming as st
    from interp.config import build
    from interp.hooks import hook_shapes

    cfg = build(st.Config, None, base=dict(st.QUICK))
    out = {}
    for dt, model in models.items():
        hook_shapes(model)
        newline_id = st._newline_id(model)
        body, _ = st.long_tokens(model, cfg.seq_len, cfg.seed)
        seqs = {c: torch.tensor(([model.sink_token_id] if p else []) + body) for c, p in st.CONDITIONS.items()}
        memory: list[float] = []
        res = {c: st.measure(model, seqs[c][: cfg.seq_len], cfg, newline_id, p, memory, quiet) for c, p in st.CONDITIONS.items()}
        check = st.kv_cache_check(model, torch.stack([t[: cfg.check_len] for t in seqs.values()]), cfg)
        claims = st._claims(res, check, st._memory_report(model, cfg.seq_len, *memory), cfg)
        ppl = {f"{c}/{w}/{k}": v for c, r in res.items() for w, p in r["ppl"].items() for k, v in p.items()}
        ppl.update({f"{c}/{w}/recompute": p["recompute"] for c, r in res.items() for w, p in r["ppl_recompute_positions"].items()})
        out[dt] = {"ppl": ppl, "kv_cache_max_abs_diff": {c: v["max_abs_diff"] for c, v in check.items()},
                   "claims": {c["name"]: {"passed": c["passed"], "value": c["value"]} for c in claims}}
    a, b = out["float32"], out["bfloat16"]
    rel = {k: abs(b["ppl"][k] / a["ppl"][k] - 1) for k in a["ppl"]}
    worst = max(rel, key=rel.get)
    changed = [n for n in a["claims"] if a["claims"][n]["passed"] != b["claims"][n]["passed"]]
    return {**out, "ppl_max_rel_diff": rel[worst], "ppl_worst": worst, "claims_changed": changed, "n_claims": len(a["claims"])}


def caching_speed(models: dict, store, threads: list[int], reps: int, batch: int = 16) -> dict:
    """tokens/s of the caching loop per dtype and thread count, interleaved ABBA; also the bf16 error."""
    from interp.hooks import capture

    seqs = torch.from_numpy(store.tokens()[:batch]).long()  # [batch, 128]
    first = 0 if store.manifest["keep_first"] else 1
    rows = batch * (seqs.shape[1] - first)
    acts = {}

    def step(dt):
        t0 = time.perf_counter()
        act = capture(models[dt], seqs, [HOOK], stop_early=True)[HOOK]
        acts[dt] = act[:, first:].reshape(-1, act.shape[-1]).to(torch.float16)
        return time.perf_counter() - t0

    out = {}
    for n in threads:
        torch.set_num_threads(n)
        for dt in DTYPES:
            step(dt)  # warm-up at this thread count
        times = {dt: [] for dt in DTYPES}
        for r in range(reps):
            for dt in (DTYPES if r % 2 == 0 else DTYPES[::-1]):
                times[dt].append(step(dt))
        tps = {dt: rows / statistics.median(ts) for dt, ts in times.items()}
        pairs = [a / b for a, b in zip(times["float32"], times["bfloat16"])]  # each rep's two steps ran back to back
        out[n] = {"tokens_per_s": tps, "ratio": statistics.median(pairs), "ratio_of_medians": tps["bfloat16"] / tps["float32"],
                  "pair_ratios": pairs, "seconds": times}
    x, y = acts["float32"].float(), acts["bfloat16"].float()
    err = {"fvu_of_bf16_vs_fp32": ((y - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item(),
           "median_rel_norm_error": ((y - x).norm(dim=1) / x.norm(dim=1)).median().item(), "rows": rows}
    return {"by_threads": out, "activation_error": err}


def profile_top(models: dict, store, k: int = 6) -> dict:
    """The ops with the most self CPU time in one caching step, per dtype (torch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    from interp.hooks import capture

    seqs = torch.from_numpy(store.tokens()[:16]).long()
    out = {}
    for dt, model in models.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            capture(model, seqs, [HOOK], stop_early=True)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        out[dt] = {"total_ms": total / 1e3, "top": {e.key: round(e.self_cpu_time_total / 1e3, 1) for e in events[:k]}}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads for the drift measurements (default 1)")
    p.add_argument("--speed-threads", default="1,2", help="thread counts for the speed comparison (default 1,2)")
    p.add_argument("--reps", type=int, default=8, help="timed caching steps per dtype and thread count (default 8)")
    p.add_argument("--ce-sequences", type=int, default=32, help="store sequences for CE loss recovered (default 32)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from interp.models import cache_root, load_model
    from interp.store import open_store

    t_start = time.perf_counter()
    models = {dt: load_model("smollm2-135m", quiet=True, dtype=dt) for dt in DTYPES}
    store = open_store(cache_root() / "stores" / STORE)
    timings = {}

    def lap(name):
        timings[name] = round(time.perf_counter() - t_start - sum(timings.values()), 1)

    sink = sinks_drift(models)
    lap("sinks")
    sae, sae_last = train_sae(store.dir, args.quiet)
    lap("sae_train")
    ce = ce_drift(models, sae, store, args.ce_sequences)
    lap("ce_recovered")
    stream = streaming_drift(models, args.quiet)
    lap("streaming")
    torch.set_num_threads(args.threads)
    prof = profile_top(models, store)
    speed = caching_speed(models, store, [int(t) for t in args.speed_threads.split(",")], args.reps)
    lap("speed")
    torch.set_num_threads(args.threads)

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    f32, b16 = "float32", "bfloat16"
    rows = {
        "α₀ per layer, max abs diff": dict(
            float32=f"late mean {sink['alpha0_late_mean'][f32]['raw']:.4f}", bfloat16=f"late mean {sink['alpha0_late_mean'][b16]['raw']:.4f}",
            drift=f"{sink['alpha0_layer_max_abs_diff']:.4f} (per head {sink['alpha0_head_max_abs_diff']:.4f})", goal="≤ 0.01",
            met=verdict(sink["alpha0_layer_max_abs_diff"] <= 0.01), value=sink["alpha0_layer_max_abs_diff"]),
        "sinks claims unchanged": dict(
            float32=f"{sum(c['passed'] for c in sink['claims'][f32].values())}/{sink['n_claims']} pass",
            bfloat16=f"{sum(c['passed'] for c in sink['claims'][b16].values())}/{sink['n_claims']} pass",
            drift=f"{len(sink['claims_changed'])} changed", goal="0 changed", met=verdict(not sink["claims_changed"]),
            value=len(sink["claims_changed"])),
        "CE loss recovered (spliced SAE)": dict(
            float32=f"{ce[f32]['ce_recovered']:.4f}", bfloat16=f"{ce[b16]['ce_recovered']:.4f}",
            drift=f"{ce['ce_recovered_abs_diff']:.4f}", goal="≤ 0.005 abs", met=verdict(ce["ce_recovered_abs_diff"] <= 0.005),
            value=ce["ce_recovered_abs_diff"]),
        "clean CE (nats)": dict(
            float32=f"{ce[f32]['ce_clean']:.4f}", bfloat16=f"{ce[b16]['ce_clean']:.4f}", drift=f"{ce['ce_clean_abs_diff']:.4f}",
            goal="(reported)", met="-", value=ce["ce_clean_abs_diff"]),
        "Δloss of ablating 4 heads, max abs diff": dict(
            float32=" ".join(f"{x:+.4f}" for x in ce[f32]["ablation_delta_loss"]),
            bfloat16=" ".join(f"{x:+.4f}" for x in ce[b16]["ablation_delta_loss"]),
            drift=f"{ce['ablation_delta_loss_max_abs_diff']:.4f}", goal="(reported)", met="-",
            value=ce["ablation_delta_loss_max_abs_diff"]),
        "streaming PPL, max rel diff": dict(
            float32=f"{stream['ppl_worst']}: {stream[f32]['ppl'][stream['ppl_worst']]:.3f}",
            bfloat16=f"{stream[b16]['ppl'][stream['ppl_worst']]:.3f}", drift=f"{100 * stream['ppl_max_rel_diff']:.2f}%",
            goal="≤ 1% rel", met=verdict(stream["ppl_max_rel_diff"] <= 0.01), value=stream["ppl_max_rel_diff"]),
        "streaming claims unchanged": dict(
            float32=f"{sum(c['passed'] for c in stream[f32]['claims'].values())}/{stream['n_claims']} pass",
            bfloat16=f"{sum(c['passed'] for c in stream[b16]['claims'].values())}/{stream['n_claims']} pass",
            drift=f"{len(stream['claims_changed'])} changed: {', '.join(stream['claims_changed']) or '-'}", goal="(reported)",
            met="-", value=len(stream["claims_changed"])),
        "streaming KV-cache check, max abs Δlogit": dict(
            float32=f"{max(stream[f32]['kv_cache_max_abs_diff'].values()):.2e}",
            bfloat16=f"{max(stream[b16]['kv_cache_max_abs_diff'].values()):.2e}", drift="-", goal="claim: ≤ 1e-3", met="-",
            value=max(stream[b16]["kv_cache_max_abs_diff"].values())),
        "cached activations: bf16 error / variance": dict(
            float32="-", bfloat16=f"{speed['activation_error']['fvu_of_bf16_vs_fp32']:.2e}",
            drift=f"median ‖Δ‖/‖x‖ {speed['activation_error']['median_rel_norm_error']:.4f}", goal="(reported)", met="-",
            value=speed["activation_error"]["fvu_of_bf16_vs_fp32"]),
    }
    for n, s in speed["by_threads"].items():
        rows[f"caching tokens/s, {n} thread(s)"] = dict(
            float32=f"{s['tokens_per_s'][f32]:.0f}", bfloat16=f"{s['tokens_per_s'][b16]:.0f}", drift=f"{s['ratio']:.2f}x",
            goal="≥ 2.5x", met=verdict(s["ratio"] >= 2.5), value=s["ratio"])
    facts = {"model": "SmolLM2-135M-Instruct, float32 vs bfloat16 weights and compute (eager attention)",
             "seconds": f"{time.perf_counter() - t_start:.0f} s in all ({', '.join(f'{k} {v} s' for k, v in timings.items())})"}
    report("forward_dtype", args.threads, facts,
           {"float32": "float32:s", "bfloat16": "bfloat16:s", "drift": "drift / ratio:s", "goal": "goal:s", "met": "met:s"}, rows)
    import json

    path = Path(__file__).parent / "results" / "forward_dtype.json"
    result = json.loads(path.read_text())
    result["details"] = {"sinks": sink, "ce": ce, "sae": {"train": sae_last}, "streaming": stream, "speed": speed, "profile": prof}
    path.write_text(json.dumps(result, indent=2, default=_plain) + "\n")
    print("profile (self CPU ms, one caching step of 16 x 128 tokens):")
    for dt, pr in prof.items():
        print(f"  {dt}: {pr['total_ms']:.0f} ms; " + ", ".join(f"{k} {v}" for k, v in pr["top"].items()))


def _plain(v):
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return str(v)


if __name__ == "__main__":
    main()
