"""Attribution patching validated against activation patching, on prompt pairs generated here.

Papers: Nanda 2023 ("Attribution patching"), Kramár et al. 2024 ("AtP*"). Two tasks, each a list of clean /
corrupted prompt pairs of equal length with a correct and a wrong answer token:
- IOI: "When Mary and John went to the store, John gave a drink to" → " Mary"; the corrupted prompt names the
  other person second ("..., Mary gave a drink to" → " John"). Five templates, 14 names, places and objects.
- induction: 7 random tokens, then the first 6 again → the 7th; the corrupted prompt changes the 7th's first
  occurrence, so induction predicts the changed token.
Per pair and family (heads = hook_z per layer × head; q, k per layer × head / KV head; MLP outputs and the
residual stream per layer × position) the exact denoising scores of every cell (`interp.patching`) against
AtP and AtP* (`interp.attribution`): Spearman over all cells and the overlap of the top 10 by |score|.
Medians over pairs, per task. GradDrop (unsigned) is compared by |score|. The residual stream is exact on
`resid_pairs` pairs only (it is the family plain AtP is known to fail on, and the dashboard patches it exactly).
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass

import torch
from scipy.stats import spearmanr

from interp import InterpError, figures
from interp.attribution import attribute, feature_acts, feature_cells, sae_hook
from interp.config import AtLeast, NonNegInt, OneOf, PosInt
from interp.hooks import BACKENDS
from interp.hooks import run as run_hooks
from interp.models import MODEL_DTYPES, Model, load_model
from interp.patching import Pair, activation_patching, metric, patch_cells
from interp.runs import Run, claim

PAPER = "Attribution patching (Nanda 2023); AtP* (Kramár et al. 2024)"
CLAIMS = [
    "the model does both tasks: median clean logit difference > 0 and corrupted < 0, per task",
    "AtP on attention heads (layer × head): median Spearman ≥ 0.9 against activation patching, per task",
    "AtP on attention heads: median top-10 overlap ≥ 8 of 10, per task",
    "AtP* on attention heads: median Spearman ≥ 0.9 and top-10 overlap ≥ 8, per task",
    "AtP*'s QK fix on queries and keys: median Spearman at least AtP's, per task and family",
]
NAMES = [" Mary", " John", " Tom", " James", " Anna", " Sarah", " David", " Paul", " Kate", " Mark", " Lisa", " Peter",
         " Emma", " Jack"]
PLACES = ["store", "park", "school", "office", "beach"]
OBJECTS = ["drink", "book", "ring", "ball", "gift"]
TEMPLATES = [
    "When{A} and{B} went to the {place},{S} gave a {obj} to",
    "After{A} and{B} went to the {place},{S} gave a {obj} to",
    "While{A} and{B} were working at the {place},{S} gave a {obj} to",
    "Then,{A} and{B} had a long argument at the {place}. Afterwards{S} said to",
    "{A0} and{B} were at the {place}.{S} handed a {obj} to",
]
FAMILIES = ("heads", "q", "k", "mlp")


@dataclass
class Config:
    model: str = "smollm2-135m"
    """Model spec (see `interp models`)."""
    ioi_pairs: AtLeast(1) = 20
    """IOI prompt pairs (templates × names × places × objects, sampled without repeats)."""
    induction_pairs: AtLeast(1) = 12
    """Induction pairs on repeated random tokens."""
    induction_len: AtLeast(3) = 7
    """Random tokens before the repeat (the pair is 2 × this − 1 tokens long)."""
    resid_pairs: NonNegInt = 5
    """Pairs per task whose residual stream (layer × position) is also patched exactly."""
    families: str = ",".join(FAMILIES)
    """Component families compared on every pair (comma-separated: heads, q, k, mlp, head_positions, neurons)."""
    sae: str = ""
    """An SAE folder (SAELens format) on a hook of this model: its features are compared too, on `sae_pairs` pairs per task."""
    sae_pairs: NonNegInt = 5
    """Pairs per task whose SAE features are patched exactly (every feature whose activation differs between the runs)."""
    grad_drop: bool = True
    """Also score heads with AtP* + GradDrop (L extra backward passes per pair), compared by |score|."""
    top: PosInt = 10
    """Top-n overlap: the n cells with the largest |score| in both maps."""
    min_spearman: float = 0.9
    """Heads: the median Spearman must reach this."""
    min_overlap: NonNegInt = 8
    """Heads: the median top-n overlap must reach this."""
    batch_size: PosInt = 64
    """Patched runs per forward pass in activation patching."""
    backend: OneOf(*BACKENDS) = "transformer_lens"
    """Hook backend."""
    dtype: OneOf(*MODEL_DTYPES) = "float32"
    """Compute dtype of the model: float32 keeps small cells' exact scores above rounding noise."""
    seed: int = 0
    """Seed of the pair sampling."""


QUICK = {"ioi_pairs": 2, "induction_pairs": 2, "resid_pairs": 0, "families": "heads,k", "grad_drop": False}


def ioi_pairs(model: Model, n: int, rng: random.Random) -> list[dict]:
    """n IOI pairs whose names are single tokens and whose two prompts have the same length."""
    names = [x for x in NAMES if len(model.encode(x)) == 1]
    if len(names) < 2:
        raise InterpError(f"{model.spec}'s tokenizer splits the IOI names: fewer than two single-token names.")
    seen, out = set(), []
    for _ in range(50 * n):
        if len(out) == n:
            break
        t, (a, b), place, obj = rng.randrange(len(TEMPLATES)), rng.sample(names, 2), rng.choice(PLACES), rng.choice(OBJECTS)
        if (t, a, b, place, obj) in seen:
            continue
        seen.add((t, a, b, place, obj))
        fill = dict(A=a, A0=a.strip(), B=b, place=place, obj=obj)
        clean, corrupt = TEMPLATES[t].format(S=b, **fill), TEMPLATES[t].format(S=a, **fill)
        c, k = model.prompt(clean), model.prompt(corrupt)
        if len(c) == len(k):
            out.append(dict(task="ioi", clean=c, corrupt=k, good=model.encode(a)[0], bad=model.encode(b)[0], text=clean))
    if len(out) < n:
        raise InterpError(f"Only {len(out)} IOI pairs of equal length could be made for {model.spec}; ask for fewer.")
    return out


def induction_pairs(model: Model, n: int, length: int, rng: random.Random) -> list[dict]:
    """n pairs: R (length tokens) then R[:-1]; the corrupted R has its last token changed."""
    lo, hi = 1000, min(model.info.d_vocab, 20000)
    bos = [model.sink_token_id] if model.needs_bos else []
    out = []
    for _ in range(n):
        r = rng.sample(range(lo, hi), length + 1)
        seq, other = r[:length], r[length]
        clean, corrupt = seq + seq[:-1], seq[:-1] + [other] + seq[:-1]
        out.append(dict(task="induction", clean=bos + clean, corrupt=bos + corrupt, good=seq[-1], bad=other,
                        text=" ".join(model.token_strs(clean))))
    return out


def compare(est: torch.Tensor, exact: torch.Tensor, top: int, magnitude: bool = False) -> dict:
    """Spearman over all cells, and how many of the top-n cells by |score| the two maps share."""
    a, b = est.flatten().float(), exact.flatten().float()
    if magnitude:
        a, b = a.abs(), b.abs()
    n = min(top, a.numel())
    overlap = len(set(a.abs().argsort(descending=True)[:n].tolist()) & set(b.abs().argsort(descending=True)[:n].tolist()))
    return {"spearman": float(spearmanr(a.numpy(), b.numpy()).statistic), "overlap": overlap}


def one_pair(model: Model, p: dict, families: list[str], cfg: Config, resid: bool, sae=None) -> dict:
    """Every family's exact map and both estimates of it, compared; heads + MLP timed both ways."""
    pair, score = Pair.of(model, p["clean"], p["corrupt"]), metric("logit_diff", p["good"], p["bad"])
    kw = dict(backend=cfg.backend, metric_name="logit_diff")
    timed = [f for f in families if f in ("heads", "mlp")]
    rest = [f for f in families if f not in timed] + (["resid"] if resid else [])
    exact = activation_patching(model, pair, score, timed or rest, batch_size=cfg.batch_size, **kw)
    t_exact = exact.seconds if timed else 0.0
    if timed and rest:
        exact.scores.update(activation_patching(model, pair, score, rest, batch_size=cfg.batch_size, **kw).scores)
    t0 = time.perf_counter()
    atp = {m: attribute(model, pair, score, list(exact.scores), method=m, **kw) for m in ("atp", "atp*")}
    t_atp = attribute(model, pair, score, timed, **kw).seconds if timed else 0.0
    out = {"clean": exact.clean, "corrupt": exact.corrupt, "seconds_exact": t_exact, "seconds_atp": t_atp,
           "seconds_both_estimates": time.perf_counter() - t0}
    for m, est in atp.items():
        out[m] = {f: compare(est.scores[f], exact.scores[f], cfg.top) for f in exact.scores}
    if sae is not None:
        out["atp"]["features"] = out["atp*"]["features"] = compare_features(model, pair, score, sae, cfg)
    if cfg.grad_drop and "heads" in families:
        gd = attribute(model, pair, score, ["heads"], method="atp*", grad_drop=True, **kw)
        out["atp* + GradDrop"] = {"heads": compare(gd.scores["heads"], exact.scores["heads"], cfg.top, magnitude=True)}
    out["maps"] = {"exact_heads": exact.scores.get("heads"), "atp_heads": atp["atp"].scores.get("heads")}
    return out


def compare_features(model: Model, pair: Pair, score, sae, cfg: Config) -> dict:
    """AtP of the SAE's features against patching each one (its error term kept), over every feature whose
    activation differs between the two runs anywhere (the others score 0 both ways)."""
    hook = sae.cfg.hook_name
    est = attribute(model, pair, score, ["features"], sae=sae, backend=cfg.backend)
    src, base = (run_hooks(model, t, capture=[hook], backend=cfg.backend)[1][hook][0] for t in (pair.clean, pair.corrupt))
    differs = (feature_acts(sae, src) - feature_acts(sae, base)).abs().amax(0) > 0  # [d_sae]
    ids = differs.nonzero().squeeze(1).tolist()
    values = patch_cells(model, pair.corrupt, {}, feature_cells(sae, hook, src, base, ids), score, cfg.backend, cfg.batch_size)
    exact = est.normalise(values)
    return {**compare(est.scores["features"][ids], exact, cfg.top), "features": len(ids)}


def run(cfg: Config, run_dir: Run, quiet: bool = False) -> dict:
    families = [f.strip() for f in cfg.families.split(",") if f.strip()]
    model = load_model(cfg.model, seed=cfg.seed, quiet=quiet, dtype=cfg.dtype)
    rng = random.Random(cfg.seed)
    pairs = ioi_pairs(model, cfg.ioi_pairs, rng) + induction_pairs(model, cfg.induction_pairs, cfg.induction_len, rng)
    sae = None
    if cfg.sae:
        from interp.sae.io import load_sae

        sae = load_sae(cfg.sae).eval()
        sae_hook(model, sae)  # reads a hook of this model, at its width
    state = run_dir.resume() or {"step": 0, "done": []}
    done = list(state["done"])
    for i, p in enumerate(pairs):
        if i < len(done):
            continue
        n_task = sum(q["task"] == p["task"] for q in pairs[:i])
        r = one_pair(model, p, families, cfg, resid=n_task < cfg.resid_pairs, sae=sae if n_task < cfg.sae_pairs else None)
        if i == 0 or (p["task"] == "induction" and n_task == 0):
            save_maps(run_dir, model, p, r)
        r.pop("maps")
        done.append({"task": p["task"], "text": p["text"], **r})
        run_dir.save_checkpoint(i + 1, {"done": done})
        if not quiet:
            print(f"pair {i + 1}/{len(pairs)} ({p['task']}): heads AtP ρ {r['atp'].get('heads', {}).get('spearman', float('nan')):.3f}")
    summary = summarise(done)
    claims = judge(summary, cfg)
    return {"claims": claims, "observations": observe(summary, done), "summary": summary, "pairs": done}


def observe(summary: dict, done: list[dict]) -> list[dict]:
    """What is reported, not asserted: the families without a threshold, GradDrop, and the time saved."""
    out = []
    for task, t in summary.items():
        for method in ("atp", "atp*", "atp* + GradDrop"):
            for fam, v in t.get(method, {}).items():
                if method == "atp* + GradDrop" or fam in ("mlp", "resid", "neurons", "head_positions", "features"):
                    out.append({"name": f"{task} {method} {fam}", "value": f"Spearman {v['spearman']:.3f}, top-10 {v['overlap']:g}",
                                "statement": f"median over {v['pairs']} pairs against activation patching"
                                             + (" (|score|: GradDrop is unsigned)" if "GradDrop" in method else "")})
    timed = [d["seconds_atp"] / d["seconds_exact"] for d in done if d["seconds_exact"]]
    if timed:
        out.append({"name": "attribution time / activation patching time", "value": round(statistics.median(timed), 4),
                    "statement": "heads + MLP outputs, median over pairs (benchmarks/attribution.py times it interleaved)"})
    return out


def summarise(done: list[dict]) -> dict:
    """Per task, method and family: the medians of Spearman and top-n overlap over pairs."""
    out: dict = {}
    for d in done:
        t = out.setdefault(d["task"], {"clean": [], "corrupt": []})
        t["clean"].append(d["clean"])
        t["corrupt"].append(d["corrupt"])
        for method in ("atp", "atp*", "atp* + GradDrop"):
            for fam, v in d.get(method, {}).items():
                cell = t.setdefault(method, {}).setdefault(fam, {"spearman": [], "overlap": []})
                cell["spearman"].append(v["spearman"])
                cell["overlap"].append(v["overlap"])
    for t in out.values():
        t["clean"], t["corrupt"] = statistics.median(t["clean"]), statistics.median(t["corrupt"])
        for method in ("atp", "atp*", "atp* + GradDrop"):
            for fam, v in t.get(method, {}).items():
                t[method][fam] = {"spearman": statistics.median(v["spearman"]), "overlap": statistics.median(v["overlap"]),
                                  "pairs": len(v["spearman"]), "spearman_min": min(v["spearman"])}
    return out


def judge(summary: dict, cfg: Config) -> list[dict]:
    tasks = sorted(summary)
    rho = {m: {t: summary[t][m]["heads"]["spearman"] for t in tasks if "heads" in summary[t].get(m, {})} for m in ("atp", "atp*")}
    ov = {m: {t: summary[t][m]["heads"]["overlap"] for t in tasks if "heads" in summary[t].get(m, {})} for m in ("atp", "atp*")}
    solved = {t: [summary[t]["clean"], summary[t]["corrupt"]] for t in tasks}
    qk = {f"{t} {f}": [summary[t]["atp"][f]["spearman"], summary[t]["atp*"][f]["spearman"]]
          for t in tasks for f in ("q", "k") if f in summary[t]["atp"]}
    out = [claim("tasks_solved", PAPER, CLAIMS[0], solved, "clean > 0 > corrupted",
                 all(c > 0 > k for c, k in solved.values()))]
    if rho["atp"]:
        out += [claim("atp_heads_spearman", PAPER, CLAIMS[1], rho["atp"], f"≥ {cfg.min_spearman}",
                      all(v >= cfg.min_spearman for v in rho["atp"].values())),
                claim("atp_heads_top", PAPER, CLAIMS[2], ov["atp"], f"≥ {cfg.min_overlap} of {cfg.top}",
                      all(v >= cfg.min_overlap for v in ov["atp"].values())),
                claim("atpstar_heads", PAPER, CLAIMS[3], {t: [rho["atp*"][t], ov["atp*"][t]] for t in tasks},
                      f"ρ ≥ {cfg.min_spearman}, overlap ≥ {cfg.min_overlap}",
                      all(rho["atp*"][t] >= cfg.min_spearman and ov["atp*"][t] >= cfg.min_overlap for t in tasks))]
    if qk:
        out.append(claim("qk_fix_helps", PAPER, CLAIMS[4] + " ([AtP, AtP*])", qk, "AtP* ≥ AtP",
                         all(s >= a for a, s in qk.values())))
    return out


def save_maps(run_dir: Run, model: Model, p: dict, r: dict) -> None:
    for what in ("exact_heads", "atp_heads"):
        if r["maps"].get(what) is not None:
            run_dir.save_figure(f"{p['task']}_{what}", figures.heatmap(
                r["maps"][what], f"{p['task']}: heads by {'activation patching' if what == 'exact_heads' else 'AtP'} ({p['text'][:60]})",
                "head", "layer", signed=True, zlabel="score (1 = clean)"))
