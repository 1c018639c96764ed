"""Extreme-token phenomena and active-dormant heads in SmolLM2-135M-Instruct.

Paper: "Active-Dormant Attention Heads: Mechanistically Demystifying Extreme-Token Phenomena in LLMs"
(Guo et al. 2024), its LLM part. Two domains from the local corpus, `n_snippets` × `seq_len` tokens
each: code (top-level functions and classes of the standard library, by default with docstrings and
full-line comments removed so that no documentation text is left in it) and prose (the standard
library's docstrings). Every snippet runs raw (position 0 is its first token) and with
`<|endoftext|>` prepended. Per layer and head, per domain: α_0, ‖W_O v_0‖ against the median over
later positions, ‖resid_post[l, 0]‖ against the largest later position, row and column entropy of
the attention pattern, and secondary sinks (later tokens whose residual norm entering a layer reaches
`secondary_norm` × position 0's: the attention each head gives them, their ‖W_O v‖). In one condition (`intervention_condition`) the most domain-selective heads
(largest |α_0(code) − α_0(prose)|) are zero-ablated and forced onto position 0, one at a time, and
the loss change is measured per domain and per snippet (so every Δloss has a standard error).
GQA: SmolLM2 has 9 query heads sharing 3 KV heads; ‖W_O v‖ is per query head h, reading KV head h // 3.

Compute dtype (`dtype`): float32 by default. The verdicts here rest on the loss change of ablating one
head at a time, tested against cost ratios and standard errors; in bfloat16 (BENCHMARKS.md, "Forwards in bfloat16": benchmarks/forward_dtype.py, SmolLM2 float32 against bfloat16 on the same inputs) such Δloss values
move by up to 0.003 nats where single heads' effects are 0.001-0.017 nats, and per-head α_0 (the
selectivity of a head) by up to 0.028. Too close to the thresholds to trade for speed.
"""

from __future__ import annotations

import ast
import math
import time
from collections import Counter
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp import InterpError, attention, figures
from interp.config import AtLeast, NonNegFloat, NonNegInt, OneOf, PosFloat, PosInt, Share
from interp.corpus import Text, corpus_info, load_texts
from interp.hooks import BACKENDS
from interp.hooks import run as run_hooks
from interp.interventions import HEAD_INTERVENTIONS, head_intervention_deltas, logit_sequence_losses
from interp.models import MODEL_DTYPES, load_model
from interp.runs import Run, claim

PAPER = "Active-Dormant Attention Heads (Guo et al. 2024), LLM part"
CLAIMS = [
    "residual-state peak: ‖resid_post‖ at position 0 ≥ 3× the largest later position's in at least half of layers 3–26",
    "value-state drain: over the heads of layers ≥ 2, the median of ‖W_O v_0‖ / median_i ‖W_O v_i‖ ≤ 0.5",
    "a domain-selective head (|α_0(code) − α_0(prose)| ≥ 0.3) whose zero-ablation costs ≥ 2× more loss on the "
    "domain where it is active (lower α_0), the gap at least 3 standard errors above 0",
    "entropy detector (row entropy ≤ 0.3, column entropy ≥ 0.7) flags heads whose mean α_0 is higher than the rest's",
]
CONDITIONS = {"raw": False, "endoftext": True}  # condition -> prepend <|endoftext|>
DOMAINS = ("code", "prose")


@dataclass
class Config:
    model: str = "smollm2-135m"
    """Model spec to probe (see `interp models`)."""
    n_snippets: AtLeast(2) = 32
    """Snippets per domain (code and prose); each runs in both position-0 conditions (≥ 2: standard errors)."""
    seq_len: AtLeast(3) = 128
    """Tokens per snippet (position 0 included)."""
    strip_docstrings: bool = True
    """Remove docstrings and full-line comments from code snippets, so the code domain holds no documentation text."""
    selectivity: Share = 0.3
    """A head is domain-selective when its mean α_0 differs by at least this much between the domains."""
    max_candidates: NonNegInt = 24
    """Heads that get both interventions: the domain-selective ones with the largest |Δα_0| first (the top ones if none is selective)."""
    intervention_condition: OneOf(*CONDITIONS) = "endoftext"
    """Position-0 condition in which heads are selected and intervened on: raw or endoftext."""
    cost_ratio: PosFloat = 2.0
    """The ablation must cost at least this many times more loss on the active domain than on the dormant one."""
    z_min: NonNegFloat = 3.0
    """... and the gap Δ_active − cost_ratio·Δ_dormant must be at least this many standard errors above 0 (3: about 20 heads are tested)."""
    row_entropy_max: Share = 0.3
    """Entropy detector: a head is flagged dormant when its normalised row entropy is at most this ..."""
    col_entropy_min: Share = 0.7
    """... and its normalised column entropy at least this."""
    secondary_norm: PosFloat = 0.5
    """A later position is a secondary sink for layer l when its residual norm entering l is at least this fraction of position 0's."""
    batch_size: PosInt = 8
    """Snippets per forward pass."""
    backend: OneOf(*BACKENDS) = "transformer_lens"
    """Backend that runs the model: transformer_lens or nnsight."""
    seed: NonNegInt = 0
    """Seed that picks the snippets."""
    dtype: OneOf(*MODEL_DTYPES) = "float32"
    """Compute dtype of the model's forward passes: float32, bfloat16 or float16 (float32 by default: see the module docstring)."""


QUICK = {"n_snippets": 8, "max_candidates": 2}


# ------------------------------------------------------------------------------------------ corpus


def strip_docs(source: str) -> str | None:
    """`source` without its docstrings and full-line comments (None if it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    drop: set[int] = set()  # 0-based line numbers
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                drop.update(range(first.lineno - 1, first.end_lineno))
    lines = source.splitlines()
    return "\n".join(line for i, line in enumerate(lines) if i not in drop and not line.lstrip().startswith("#"))


def snippets(model, domain: str, cfg: Config) -> list[Text]:
    """`n_snippets` texts of one domain with at least `seq_len` tokens each (code stripped if asked)."""
    pool = load_texts(domain, 3 * cfg.n_snippets, seed=cfg.seed, min_chars=6 * cfg.seq_len)
    out = []
    for t in pool:
        text = strip_docs(t.text) if domain == "code" and cfg.strip_docstrings else t.text
        if text and len(model.encode(text)) >= cfg.seq_len:
            out.append(Text(text, t.domain, t.source))
        if len(out) == cfg.n_snippets:
            return out
    raise InterpError(
        f"Only {len(out)} of {len(pool)} {domain} texts have {cfg.seq_len} tokens or more; ask for fewer snippets "
        f"(--n-snippets) or shorter ones (--seq-len)."
    )


# ------------------------------------------------------------------------------------- measurement


def measure(model, tokens: Int[Tensor, "batch pos"], cfg: Config, quiet: bool = True) -> dict[str, Tensor]:
    """Per-snippet statistics in one pass: `attention.sink_stats_batch` (α, ‖v‖, ‖W_O v‖, ‖resid‖, Δlogit),
    the attention entropies of every head, the clean loss of each snippet, and secondary sinks: later
    positions whose residual norm entering layer l is ≥ `secondary_norm` × position 0's ("secondary",
    each head's mean attention to them; "secondary_value", their mean ‖W_O v‖ / median later ‖W_O v‖;
    "secondary_pos", positions that are one in some layer)."""
    L = model.info.n_layers
    names = attention.sink_hook_names(L)
    keys = ("row_entropy", "col_entropy", "mass_entropy", "secondary", "secondary_value")
    parts: dict[str, list] = {"loss": [], "secondary_pos": []}
    for chunk in tqdm(tokens.split(cfg.batch_size), desc="forward passes", disable=quiet, leave=False):
        logits, acts = run_hooks(model, chunk, capture=names, backend=cfg.backend)
        parts["loss"].append(logit_sequence_losses(logits, chunk).cpu())
        stats = attention.sink_stats_batch(model, acts)  # each [batch, layer, ...]
        per_layer = {k: [] for k in keys}
        anywhere = torch.zeros(chunk.shape, dtype=torch.bool)  # [batch, pos]
        for l in range(L):
            pattern = acts[f"blocks.{l}.attn.hook_pattern"]  # [batch, head, q, k]
            for name, e in attention.attention_entropies(pattern).items():
                per_layer[f"{name}_entropy"].append(e)  # [batch, head]
            big = torch.zeros(chunk.shape, dtype=torch.bool, device=pattern.device)  # [batch, pos]
            if l:  # keys of layer l are read from the residual stream after layer l − 1
                entering = stats["resid_norm"][:, l - 1]
                big[:, 1:] = entering[:, 1:] >= cfg.secondary_norm * entering[:, :1]
            anywhere |= big.cpu()
            per_layer["secondary"].append((pattern * big[:, None, None, :]).sum(-1).mean(-1))  # [batch, head]
            wov = stats["wov_norm"][:, l]  # [batch, head, pos]
            rel = wov / wov[..., 1:].median(-1).values.unsqueeze(-1)  # ‖W_O v_p‖ / median over later positions
            per_layer["secondary_value"].append((rel * big[:, None]).sum(-1) / big.sum(-1, keepdim=True))  # NaN if none
        parts["secondary_pos"].append(anywhere)
        for k, v in stats.items():
            parts.setdefault(k, []).append(v)
        for k, xs in per_layer.items():
            parts.setdefault(k, []).append(torch.stack(xs, dim=1).cpu())  # layer becomes dim 1
    return {k: torch.cat(v) for k, v in parts.items()}  # each [snippet, layer, ...]


def summarise(m: dict[str, Tensor]) -> dict:
    """`attention.summarise_sinks` (α_0, residual peak, value drain per layer/head) plus entropies and loss."""
    s = attention.summarise_sinks(m)
    keep = ("alpha0", "alpha0_by_layer", "resid_pos0_vs_max_by_layer", "resid_pos0_vs_mean_by_layer",
            "wov_pos0_vs_median", "wov_pos0_vs_median_by_layer", "v_pos0_vs_median", "delta_logit")
    out = {k: s[k] for k in keep}
    for name in ("row", "col", "mass"):
        out[f"{name}_entropy"] = m[f"{name}_entropy"].mean(0)  # [layer, head]
    out["secondary"] = m["secondary"].mean(0)  # [layer, head]
    out["secondary_by_layer"] = m["secondary"].mean((0, 2))  # [layer]
    out["secondary_value"] = m["secondary_value"].nanmean(0)  # [layer, head], NaN where no snippet has one
    out["loss"] = m["loss"].mean().item()
    return out


def candidates(d_alpha: Float[Tensor, "layer head"], cfg: Config) -> list[tuple[int, int]]:
    """Heads to intervene on: the domain-selective ones by decreasing |Δα_0|, at most `max_candidates`
    (the largest |Δα_0| whatever their size when no head is selective)."""
    order = d_alpha.abs().flatten().argsort(descending=True).tolist()
    n_heads = d_alpha.shape[1]
    selective = [i for i in order if abs(d_alpha.flatten()[i]) >= cfg.selectivity]
    chosen = (selective or order)[: cfg.max_candidates]
    return [divmod(i, n_heads) for i in chosen]


def intervene(model, tokens: dict[str, Tensor], clean: dict[str, Tensor], heads: list[tuple[int, int]],
              cfg: Config, quiet: bool) -> dict[str, dict[str, Tensor]]:
    """{kind: {domain: [head, snippet] loss change}} for zero-ablation and forcing onto position 0."""
    return {kind: {d: head_intervention_deltas(model, tokens[d], heads, kind, cfg.backend, cfg.batch_size,
                                               clean=clean[d], quiet=quiet)
                   for d in DOMAINS}
            for kind in HEAD_INTERVENTIONS}


def head_table(heads, alpha0: dict[str, Tensor], deltas: dict, cfg: Config, group: int = 3,
               secondary: dict[str, Tensor] | None = None) -> list[dict]:
    """One row per intervened head: α_0 per domain, active domain, Δloss ± SE per kind and domain, verdict.
    `group` query heads share a KV head; `secondary` adds each head's attention to secondary sinks."""
    rows = []
    for i, (l, h) in enumerate(heads):
        a = {d: alpha0[d][l, h].item() for d in DOMAINS}
        active = min(DOMAINS, key=a.get)
        dormant = next(d for d in DOMAINS if d != active)
        row = {"head": f"L{l}H{h}", "layer": l, "index": h, "kv_head": h // group, "alpha0": a,
               "delta_alpha0": a["code"] - a["prose"], "selective": abs(a["code"] - a["prose"]) >= cfg.selectivity,
               "active_domain": active}
        if secondary is not None:
            row["secondary"] = {d: secondary[d][l, h].item() for d in DOMAINS}
        for kind, by_domain in deltas.items():
            row[kind] = {d: {"mean": x[i].mean().item(), "se": _se(x[i])} for d, x in by_domain.items()}
        za, zd = row["zero"][active], row["zero"][dormant]
        gap = za["mean"] - cfg.cost_ratio * max(zd["mean"], 0.0)
        se_gap = math.hypot(za["se"], cfg.cost_ratio * zd["se"] if zd["mean"] > 0 else 0.0)
        row["zero_cost_ratio"] = za["mean"] / zd["mean"] if zd["mean"] > 0 else None
        row["gap_z"] = gap / se_gap if se_gap > 0 else None
        row["passes"] = bool(row["selective"] and za["mean"] > 0 and gap >= cfg.z_min * se_gap)
        rows.append(row)
    return rows


def _se(x: Tensor) -> float:
    return (x.std() / math.sqrt(len(x))).item() if len(x) > 1 else float("nan")


# ---------------------------------------------------------------------------------------------- run


def run(cfg: Config, run_dir: Run, quiet: bool = False) -> dict:
    t0 = time.time()
    torch.set_num_threads(1)
    model = load_model(cfg.model, quiet=quiet, dtype=cfg.dtype)
    texts = {d: snippets(model, d, cfg) for d in DOMAINS}
    tokens, per_snippet, summary = {}, {}, {}
    for cond, prepend in CONDITIONS.items():
        for d in DOMAINS:
            tokens[cond, d] = model.to_tokens([t.text for t in texts[d]], cfg.seq_len, prepend_sink=prepend)
            per_snippet[cond, d] = measure(model, tokens[cond, d], cfg, quiet)
            summary[cond, d] = summarise(per_snippet[cond, d])
            first = Counter(model.token_strs(tokens[cond, d][:, 0].tolist())).most_common(5)
            summary[cond, d]["position0_tokens"] = [{"token": t, "count": n} for t, n in first]
            where = per_snippet[cond, d]["secondary_pos"]  # [snippet, pos]
            second = Counter(model.token_strs(tokens[cond, d][where].tolist())).most_common(5)
            summary[cond, d]["secondary_tokens"] = [{"token": t, "count": n} for t, n in second]
            summary[cond, d]["snippets_with_secondary"] = int(where.any(1).sum())
        pooled = {k: torch.cat([per_snippet[cond, d][k] for d in DOMAINS]) for k in per_snippet[cond, DOMAINS[0]]}
        summary[cond, "both"] = summarise(pooled)
        run_dir.log(len(summary), condition=cond, loss={d: summary[cond, d]["loss"] for d in DOMAINS})
    t_measure = time.time() - t0

    cond = cfg.intervention_condition
    alpha0 = {d: summary[cond, d]["alpha0"] for d in DOMAINS}
    heads = candidates(alpha0["code"] - alpha0["prose"], cfg)
    clean = {d: per_snippet[cond, d]["loss"] for d in DOMAINS}
    deltas = intervene(model, {d: tokens[cond, d] for d in DOMAINS}, clean, heads, cfg, quiet)
    secondary = {d: summary[cond, d]["secondary"] for d in DOMAINS}
    table = head_table(heads, alpha0, deltas, cfg, model.info.n_heads // model.info.n_kv_heads, secondary)
    run_dir.log(len(summary) + 1, intervened=[r["head"] for r in table], passing=[r["head"] for r in table if r["passes"]])

    claims, observations = _claims(summary, table, cfg, model.info.n_layers)
    _figures(run_dir, summary, table, cfg)
    return {
        "claims": claims,
        "observations": observations,
        "heads": table,
        "selective_heads": {c: _selective(summary, c, cfg) for c in CONDITIONS},
        "conditions": {f"{c}/{d}": {k: _plain(v) for k, v in s.items()} for (c, d), s in summary.items()},
        "intervention_deltas_per_snippet": {k: {d: x.tolist() for d, x in v.items()} for k, v in deltas.items()},
        "snippets": {d: [{"source": t.source} for t in texts[d]] for d in DOMAINS},
        "corpus": corpus_info(),
        "phase_seconds": {"measure": round(t_measure, 1)},
    }


def _selective(summary: dict, cond: str, cfg: Config) -> list[dict]:
    a, b = summary[cond, "code"]["alpha0"], summary[cond, "prose"]["alpha0"]
    d = a - b
    idx = (d.abs() >= cfg.selectivity).nonzero().tolist()
    rows = [{"head": f"L{l}H{h}", "alpha0_code": a[l, h].item(), "alpha0_prose": b[l, h].item(),
             "delta_alpha0": d[l, h].item()} for l, h in idx]
    return sorted(rows, key=lambda r: -abs(r["delta_alpha0"]))


# ------------------------------------------------------------------------------------------- claims


def _claims(summary: dict, table: list[dict], cfg: Config, n_layers: int) -> tuple[list[dict], list[dict]]:
    paper = "Guo et al. 2024"
    claims, observations = [], []
    mid = list(range(3, n_layers - 3))
    for cond in CONDITIONS:
        s = summary[cond, "both"]
        peak = s["resid_pos0_vs_max_by_layer"]
        share = (peak[mid] >= 3).float().mean().item()
        claims.append(claim(
            f"residual_peak[{cond}]", paper,
            f"‖resid_post‖ at position 0 ≥ 3× the largest later position's (median over snippets of both domains) "
            f"in at least half of layers {mid[0]}–{mid[-1]}",
            share, ">= 0.5 of layers", share >= 0.5, by_layer=peak.tolist(),
            by_domain={d: summary[cond, d]["resid_pos0_vs_max_by_layer"].tolist() for d in DOMAINS},
        ))
        ratio = s["wov_pos0_vs_median"]  # [layer, head]
        drain = ratio[2:].median().item()
        claims.append(claim(
            f"value_drain[{cond}]", paper,
            "median over the heads of layers ≥ 2 of ‖W_O v_0‖ / median_i≥1 ‖W_O v_i‖ (norms averaged over snippets) ≤ 0.5",
            drain, "<= 0.5", drain <= 0.5, by_layer=s["wov_pos0_vs_median_by_layer"].tolist(),
            share_of_layers=(s["wov_pos0_vs_median_by_layer"][2:] <= 0.5).float().mean().item(),
            by_domain={d: summary[cond, d]["wov_pos0_vs_median"][2:].median().item() for d in DOMAINS},
        ))
        claims.append(_detector_claim(summary, cond, cfg))
    claims.append(_selective_claim(table, cfg))
    observations.append(dict(
        name="position0_tokens", statement="the most common tokens at position 0, per condition and domain",
        value={f"{c}/{d}": summary[c, d]["position0_tokens"][:3] for c in CONDITIONS for d in DOMAINS},
    ))
    for cond in CONDITIONS:
        d_alpha = summary[cond, "code"]["alpha0"] - summary[cond, "prose"]["alpha0"]
        observations.append(dict(
            name=f"selective_heads[{cond}]",
            statement=f"heads with |α_0(code) − α_0(prose)| ≥ {cfg.selectivity}: count, how many sink more on code, largest |Δα_0|",
            value={"count": int((d_alpha.abs() >= cfg.selectivity).sum()), "code_higher": int((d_alpha >= cfg.selectivity).sum()),
                   "max_abs": round(d_alpha.abs().max().item(), 3)},
        ))
    cond = cfg.intervention_condition
    d_alpha = summary[cond, "code"]["alpha0"] - summary[cond, "prose"]["alpha0"]
    sel = d_alpha.abs() >= cfg.selectivity  # [layer, head]
    total = {d: summary[cond, d]["alpha0"] + summary[cond, d]["secondary"] for d in DOMAINS}
    observations.append(dict(
        name=f"secondary_sinks[{cond}]",
        statement=f"later positions whose residual norm entering a layer reaches {cfg.secondary_norm}× position 0's: "
                  "their commonest tokens and the snippets that have one, per domain; over the domain-selective heads, "
                  "mean α_0, mean attention to secondary sinks, their ‖W_O v‖ / median later ‖W_O v‖ (value drain), "
                  "and how many heads stay selective when both count as sink",
        value={"tokens": {d: summary[cond, d]["secondary_tokens"][:3] for d in DOMAINS},
               "snippets_with_one": {d: summary[cond, d]["snippets_with_secondary"] for d in DOMAINS},
               "alpha0": {d: round(summary[cond, d]["alpha0"][sel].mean().item(), 3) if sel.any() else None for d in DOMAINS},
               "secondary": {d: round(summary[cond, d]["secondary"][sel].mean().item(), 3) if sel.any() else None for d in DOMAINS},
               "secondary_value_ratio": {d: round(summary[cond, d]["secondary_value"][sel].nanmean().item(), 3)
                                         if sel.any() else None for d in DOMAINS},
               "still_selective": int(((total["code"] - total["prose"]).abs()[sel] >= cfg.selectivity).sum())},
    ))
    forced = [r for r in table if r["selective"]]
    observations.append(dict(
        name="forcing_onto_position_0",
        statement="selective heads whose forcing onto position 0 costs more loss on the active domain than on the dormant one",
        value=f"{sum(r['sink'][r['active_domain']]['mean'] > r['sink'][_other(r['active_domain'])]['mean'] for r in forced)} of {len(forced)}",
    ))
    observations.append(dict(
        name="clean_loss", statement="mean next-token loss per condition and domain (nats)",
        value={f"{c}/{d}": round(summary[c, d]["loss"], 4) for c in CONDITIONS for d in DOMAINS},
    ))
    return claims, observations


def _other(domain: str) -> str:
    return next(d for d in DOMAINS if d != domain)


def _detector_claim(summary: dict, cond: str, cfg: Config) -> dict:
    """Flag (domain, layer, head) triples by entropy; compare their α_0 with the rest's."""
    row = torch.stack([summary[cond, d]["row_entropy"] for d in DOMAINS])  # [domain, layer, head]
    col = torch.stack([summary[cond, d]["col_entropy"] for d in DOMAINS])
    a0 = torch.stack([summary[cond, d]["alpha0"] for d in DOMAINS])
    flagged = attention.dormant_by_entropy(row, col, cfg.row_entropy_max, cfg.col_entropy_min)
    both = bool(flagged.any() and (~flagged).any())
    hi = a0[flagged].mean().item() if flagged.any() else float("nan")
    lo = a0[~flagged].mean().item() if (~flagged).any() else float("nan")
    return claim(
        f"entropy_detector[{cond}]", "Guo et al. 2024 (detector: ours)",
        f"(domain, head) pairs with row entropy ≤ {cfg.row_entropy_max} and column entropy ≥ {cfg.col_entropy_min} "
        "have a higher mean α_0 than the rest",
        hi - lo if both else None, "> 0", both and hi > lo,
        n_flagged=int(flagged.sum()), n_total=flagged.numel(), alpha0_flagged=hi, alpha0_rest=lo,
        flagged_with_alpha0_above_half=int((a0[flagged] > 0.5).sum()),
        heads_with_alpha0_above_half=int((a0 > 0.5).sum()),
        row_entropy_max=cfg.row_entropy_max, col_entropy_min=cfg.col_entropy_min,
        corr_alpha0_mass_entropy=torch.corrcoef(torch.stack([a0.flatten(), torch.stack(
            [summary[cond, d]["mass_entropy"] for d in DOMAINS]).flatten()]))[0, 1].item(),
    )


def _selective_claim(table: list[dict], cfg: Config) -> dict:
    passing = [r for r in table if r["passes"]]
    lenient = [r["head"] for r in table if r["selective"] and r["zero"][r["active_domain"]]["mean"] > 0
               and r["zero"][r["active_domain"]]["mean"] >= cfg.cost_ratio * max(r["zero"][_other(r["active_domain"])]["mean"], 0.0)]
    best = max((r for r in table if r["selective"]), key=lambda r: r["gap_z"] if r["gap_z"] is not None else -1e9, default=None)
    summary = None
    if best is not None:
        summary = {"head": best["head"], "alpha0": best["alpha0"], "active_domain": best["active_domain"],
                   "zero": {d: best["zero"][d] for d in DOMAINS}, "ratio": best["zero_cost_ratio"], "gap_z": best["gap_z"]}
    return claim(
        f"domain_selective_head[{cfg.intervention_condition}]", "Guo et al. 2024",
        f"some head with |α_0(code) − α_0(prose)| ≥ {cfg.selectivity} costs ≥ {cfg.cost_ratio}× more loss when "
        f"zero-ablated on the domain where it is active (lower α_0), the gap ≥ {cfg.z_min} standard errors above 0 "
        f"({len(table)} heads intervened on, the most selective first)",
        len(passing), ">= 1 head", bool(passing),
        passing=[r["head"] for r in passing], n_selective_intervened=sum(r["selective"] for r in table), best=summary,
        passing_without_significance=lenient,
    )


# ------------------------------------------------------------------------------------------ figures


def _figures(run_dir: Run, summary: dict, table: list[dict], cfg: Config) -> None:
    for cond in CONDITIONS:
        for d in DOMAINS:
            run_dir.save_figure(f"alpha0_{cond}_{d}", figures.alpha_grid(summary[cond, d]["alpha0"], f"α₀ per layer and head ({d}, {cond})"))
        diff = summary[cond, "code"]["alpha0"] - summary[cond, "prose"]["alpha0"]
        run_dir.save_figure(f"alpha0_difference_{cond}", figures.heatmap(
            diff, f"α₀(code) − α₀(prose) ({cond}); |Δ| ≥ {cfg.selectivity} is domain-selective", "head", "layer",
            zmin=-1.0, zmax=1.0, signed=True, zlabel="Δα₀ (+ : sinks more on code)"))
        points = [(d, l, h) for d in DOMAINS for l in range(diff.shape[0]) for h in range(diff.shape[1])]
        pick = lambda key: [summary[cond, d][key][l, h].item() for d, l, h in points]  # noqa: E731
        run_dir.save_figure(f"entropy_detector_{cond}", figures.entropy_scatter(
            pick("row_entropy"), pick("col_entropy"), pick("alpha0"), [f"L{l}H{h} {d}" for d, l, h in points],
            cfg.row_entropy_max, cfg.col_entropy_min, f"Attention entropies of each head and domain ({cond})"))
    run_dir.save_figure("extreme_tokens_by_layer", figures.lines(
        {f"‖resid_0‖ / max later ({c})": summary[c, "both"]["resid_pos0_vs_max_by_layer"] for c in CONDITIONS}
        | {f"‖W_O v_0‖ / median later, median over heads ({c})": summary[c, "both"]["wov_pos0_vs_median_by_layer"] for c in CONDITIONS},
        "Residual-state peak and value-state drain by layer", "layer", "ratio", log_y=True))
    cond = cfg.intervention_condition
    run_dir.save_figure("sink_attention_by_layer", figures.lines(
        {f"{name} ({d})": summary[cond, d][key] for name, key in (("α₀", "alpha0_by_layer"), ("secondary sinks", "secondary_by_layer"))
         for d in DOMAINS},
        f"Attention to position 0 and to secondary sinks, mean over heads ({cond})", "layer", "mean attention per query"))
    labels = [r["head"] for r in table]
    run_dir.save_figure("intervention_deltas", figures.bars(
        {f"{kind} / {d}": (labels, [r[kind][d]["mean"] for r in table], [r[kind][d]["se"] for r in table])
         for kind in HEAD_INTERVENTIONS for d in DOMAINS},
        f"Loss change per domain when a head is zeroed or forced onto position 0 ({cfg.intervention_condition}; ± 1 SE)",
        "head (most domain-selective first)", "Δloss (nats)"))


def _plain(v):
    return v.tolist() if isinstance(v, torch.Tensor) else v
