"""Attribution graphs traced through transcoders this run trains (or a set given), checked five ways.

Papers: Ameisen et al. 2025 ("Circuit tracing", circuit-tracer); Paulo et al. 2025 (skip transcoders).
Without `transcoders`, the run caches every layer's MLP input and output (a store set, shared through
$INTERP_CACHE) and trains one TopK skip transcoder per layer on it (`interp.sae.transcoders`); the last
`holdout` tokens of the set are never trained on and give the held-out text of check 2. Then, per prompt
(IOI, capitals, induction, code; each with the answer token as the graph's target), the graph
(`interp.circuits.attribute_graph`, saved under graphs/ as circuit-tracer's JSON plus the full graph) and:

1. exactness: the replacement model with error nodes against the real logits (max |Δ|);
2. replacement quality on held-out text, without error nodes: the first n layers' MLPs replaced by their
   transcoders (attention live), top-1 agreement with the real model and KL(real ‖ replaced) per n; and
   the part of each target logit that error nodes carry (`interp.circuits_verify.source_shares`);
3. circuit-tracer's replacement and completeness scores per graph;
4. faithfulness: the `faithfulness_top` feature nodes with the largest predicted effect on the target
   (zero-ablation, through the graph's linear model) against the effect measured in the spliced model
   (every transcoder in, its error added back, the activation rule live, norms live), with the attention
   patterns frozen at the prompt's (asserted: median Spearman over prompts) and live (reported), and with
   the norm scales frozen too (reported: what then separates prediction from measurement is the activation
   rule alone, features switching on or off);
5. steering: per prompt, the feature the graph says supports the target most, clamped in the real model
   (`interp.steering.feature_steering`: only its layer's transcoder reads and writes) to 0 and to twice
   its activation: does the target logit move the way the graph predicts, both times?

Quick mode trains on 16k tokens for one pass: exactness holds for any transcoders and is asserted; the
other checks need trained transcoders and are reported, not asserted.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

import torch
from scipy.stats import spearmanr

from interp import InterpError, figures
from interp.circuits import (attribute_graph, completeness_score, record, replacement_forward, replacement_score,
                             save_graph)
from interp.circuits_verify import (attention_patterns, demeaned, predicted_ablation, source_shares,
                                    spliced_logits)
from interp.config import NonNegInt, PosInt, nested
from interp.models import Model, load_model
from interp.runs import Run, claim, unasserted
from interp.sae.train import SAETrainConfig
from interp.sae.transcoders import load_transcoder_set, train_transcoders
from interp.steering import feature_steering
from interp.store import cache_activations, store_path
from interp.store_set import TRANSCODER_HOOKS, open_store_set

PAPER = "Ameisen et al. 2025 (circuit tracing); Paulo et al. 2025 (skip transcoders)"
CLAIMS = [
    "exactness: with error nodes the replacement model reproduces the real logits (max |Δ| < 1e-3)",
    "faithfulness: predicted vs measured zero-ablation effects of the top feature nodes, attention frozen: "
    "median Spearman ≥ 0.8",
    "steering: clamping the feature that supports the target most moves the target logit as the graph predicts "
    "(to 0 and to 2×) on ≥ 5 prompts and ≥ 80% of them",
]
PROMPTS = [  # (category, prompt, answer)
    ("ioi", "When Mary and John went to the store, John gave a drink to", " Mary"),
    ("ioi", "When Tom and James went to the park, James gave a ball to", " Tom"),
    ("ioi", "After Anna and Sarah went to the school, Sarah gave a book to", " Anna"),
    ("capitals", "The capital of France is the city of", " Paris"),
    ("capitals", "The capital of Germany is the city of", " Berlin"),
    ("capitals", "The capital of Italy is the city of", " Rome"),
    ("capitals", "The capital of Japan is the city of", " Tokyo"),
    ("induction", "The code word is purple lantern seven. The code word is purple lantern", " seven"),
    ("induction", "Her cat is named Ziggy Pepper. Every day, Ziggy", " Pepper"),
    ("code", "def add(a, b):\n    return a +", " b"),
    ("code", "for i in range(10):\n    print(", "i"),
    ("code", "import numpy as np\nx = np.", "array"),
]


@dataclass
class Config:
    model: str = "smollm2-135m"
    """Model spec (see `interp models`): HF Llama or Gemma-3 (what `interp.circuits` supports)."""
    transcoders: str = ""
    """A transcoder set folder (`interp transcoder train` writes OUT/transcoders); empty: cache and train one here."""
    store_set: str = ""
    """With `transcoders`: the store set they were trained on, whose last `holdout` tokens are check 2's held-out
    text (empty: fresh corpus sequences, whose overlap with the training text is not controlled)."""
    tokens: PosInt = 262_144
    """Tokens of the store set this run trains on, the held-out ones included."""
    ctx: PosInt = 128
    """Tokens per cached sequence, BOS included (check 2's held-out sequences have this length too)."""
    holdout: PosInt = 16384
    """Tokens at the end of the set kept out of training: check 2's held-out text."""
    epochs: PosInt = 4
    """Passes over the training tokens, per layer."""
    train: SAETrainConfig = nested(SAETrainConfig, kind="topk", expansion=8, k=32, batch_size=2048, lr=1e-3,
                                   fixed=("store", "target_store", "tokens", "holdout"))
    """Every layer's transcoder training (`interp transcoder train`'s options)."""
    prompts: PosInt = len(PROMPTS)
    """How many of the built-in prompts (IOI, capitals, induction, code) to trace, in round-robin over categories."""
    max_feature_nodes: PosInt = 7500
    """circuit-tracer's cap on feature nodes per graph."""
    faithfulness_top: PosInt = 20
    """Feature nodes per prompt whose ablation effect is predicted and measured (check 4)."""
    heldout_seqs: PosInt = 32
    """Held-out sequences (of `ctx` tokens) for check 2."""
    layer_counts: str = "1,2,4,8,16"
    """Check 2: replace the first n layers' MLPs for each n here (and all layers)."""
    check_quality: bool = True
    """Assert checks 4 and 5; they need trained transcoders, so the quick mode only reports them."""
    seed: NonNegInt = 0
    """Seed of the transcoders and the data order (the set's corpus order is fixed)."""

    def check(self) -> None:
        if self.holdout >= self.tokens:
            raise InterpError(f"holdout = {self.holdout} leaves nothing of the {self.tokens}-token set to train on.")
        if self.store_set and not self.transcoders:
            raise InterpError("store_set names the set given transcoders were trained on: give transcoders too.")
        counts(self.layer_counts, 1)


QUICK = {"tokens": 16384, "holdout": 4096, "epochs": 1, "train.batch_size": 1024, "prompts": 4,
         "max_feature_nodes": 400, "faithfulness_top": 10, "heldout_seqs": 4, "layer_counts": "1", "check_quality": False}


def counts(text: str, n_layers: int) -> list[int]:
    try:
        ns = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise InterpError(f"layer_counts {text!r}: write layer counts as integers, e.g. 1,2,4,8.") from None
    if any(n < 1 for n in ns):
        raise InterpError(f"layer_counts {text!r}: each count replaces the first n ≥ 1 layers.")
    return sorted({min(n, n_layers) for n in ns} | {n_layers})


def prompts(model: Model, n: int) -> list[dict]:
    """The first n prompts in round-robin over categories, each with its answer as one token."""
    cats = list(dict.fromkeys(c for c, _, _ in PROMPTS))
    order = [p for i in range(len(PROMPTS)) for c in cats for p in [q for q in PROMPTS if q[0] == c][i:i + 1]]
    out = []
    for cat, text, answer in order[:n]:
        ids = model.encode(answer)
        if len(ids) != 1:
            raise InterpError(f"{model.spec} splits the answer {answer!r} into {len(ids)} tokens; the graph's target "
                              f"must be one token.")
        out.append(dict(category=cat, prompt=text, answer=answer, target=ids[0]))
    return out


def transcoder_set(cfg: Config, model: Model, run_dir: Run, quiet: bool):
    """{layer: transcoder}, the held-out token sequences and the store set ("" when none was given)."""
    if cfg.transcoders:
        tcs = load_transcoder_set(cfg.transcoders)
        set_dir = cfg.store_set
    else:
        set_dir = store_path(cfg.model, f"transcoder-ctx{cfg.ctx}", cfg.tokens, "bfloat16")
        cache_activations(cfg.model, TRANSCODER_HOOKS, cfg.tokens, set_dir, dtype="bfloat16", model_dtype="bfloat16",
                          ctx_len=cfg.ctx, quiet=quiet)
        stores = open_store_set(set_dir)
        rows = next(iter(stores.stores.values())).n_tokens
        train = replace(cfg.train, tokens=(rows - cfg.holdout) * cfg.epochs, holdout=cfg.holdout, seed=cfg.seed)
        path = train_transcoders(set_dir, range(model.info.n_layers), train, run_dir.dir, quiet=quiet)
        tcs = load_transcoder_set(path)
    for tc in tcs.values():
        tc.eval()
    return tcs, heldout(model, set_dir, cfg), str(set_dir)


def heldout(model: Model, set_dir, cfg: Config) -> torch.Tensor:
    """Sequences whose every stored row lies in the set's last `holdout` tokens (or fresh corpus sequences)."""
    if set_dir:
        store = next(iter(open_store_set(set_dir).stores.values()))
        tokens = store.tokens()
        per_seq = store.n_tokens // len(tokens)
        n = min(cfg.heldout_seqs, cfg.holdout // per_seq)
        if n < 1:
            raise InterpError(f"holdout = {cfg.holdout} holds no whole sequence of {per_seq} stored tokens.")
        return torch.as_tensor(tokens[-n:]).long()
    from interp.corpus import token_chunks

    bos = model.sink_token_id if model.needs_bos else None
    return torch.as_tensor(token_chunks(model.encode, cfg.ctx, cfg.heldout_seqs, seed=cfg.seed + 1, bos=bos)).long()


def replacement_quality(model: Model, tcs: dict, seqs: torch.Tensor, ns: list[int]) -> list[dict]:
    """Check 2: the first n MLPs replaced (no error terms), against the real model on held-out text."""
    with torch.no_grad():
        real = spliced_logits(model, seqs, {})[:, 1:].log_softmax(-1)
    out = []
    for n in ns:
        rep = spliced_logits(model, seqs, {l: tcs[l] for l in range(n) if l in tcs})[:, 1:].log_softmax(-1)
        kl = (real.exp() * (real - rep)).sum(-1)
        out.append({"layers": n, "top1_agreement": float((rep.argmax(-1) == real.argmax(-1)).float().mean()),
                    "kl": float(kl.mean())})
    return out


def one_prompt(model: Model, tcs: dict, p: dict, cfg: Config, run_dir: Run, slug: str) -> dict:
    tokens = torch.tensor(model.prompt(p["prompt"]))
    graph = attribute_graph(model, tokens, tcs, target=p["target"], max_feature_nodes=cfg.max_feature_nodes,
                            scan=f"{model.spec}-transcoders")
    save_graph(graph, run_dir.dir / "graphs" / f"{slug}.json")
    rec = record(model, tokens, tcs)
    exact = float((replacement_forward(model, rec, tcs).logits[0] - rec.logits).abs().max())
    t = p["target"]
    base = float(demeaned(rec.logits[-1], t))
    pred = predicted_ablation(graph)
    top = pred.abs().argsort(descending=True)[:cfg.faithfulness_top]
    feats = [tuple(graph.active_features[int(graph.selected_features[i])].tolist()) for i in top]  # (layer, pos, f)
    edits = [None] + [(l, pos, f, 0.0) for l, pos, f in feats]
    batch = tokens[None].repeat(len(edits), 1)
    measured = {}
    for name, patterns in (("frozen", attention_patterns(rec)), ("live", None), ("norms_frozen", rec.frozen)):
        out = demeaned(spliced_logits(model, batch, tcs, rec.errors, edits, patterns)[:, -1], t)
        measured[name] = (out[1:] - out[0]).tolist()
    predicted = pred[top].tolist()
    rho = {k: float(spearmanr(predicted, v).statistic) if len(v) > 1 else float("nan") for k, v in measured.items()}
    # check 5: the feature the graph says supports the target most, clamped in the real model
    best = int(pred.argmin())
    layer, pos, feat = graph.active_features[int(graph.selected_features[best])].tolist()
    act = float(graph.values[best])
    steer = {}
    for name, value in (("zero", 0.0), ("double", 2 * act)):
        from interp.hooks import run

        with torch.no_grad():
            logits, _ = run(model, tokens[None], patch=feature_steering(model, tcs[layer], feat, value=value, position=pos))
        steer[name] = {"predicted": float(pred[best]) * (1 if value == 0 else -1),
                       "measured": float(demeaned(logits[0, -1].float(), t)) - base,
                       "top1": model.tokenizer.decode([int(logits[0, -1].argmax())])}
    agrees = all((s["predicted"] > 0) == (s["measured"] > 0) for s in steer.values())
    return {**{k: p[k] for k in ("category", "prompt", "answer")}, "graph": f"graphs/{slug}.json",
            "seconds": graph.seconds, "n_active": len(graph.active_features), "n_features": graph.n_features,
            "exact_max_abs": exact, "target_logit": base, "top1_real": model.tokenizer.decode([int(rec.logits[-1].argmax())]),
            "replacement_score": replacement_score(graph), "completeness_score": completeness_score(graph),
            "sources": source_shares(graph), "faithfulness": {"spearman": rho, "predicted": predicted, **measured,
                                                              "features": feats},
            "steering": {"feature": [layer, pos, feat], "activation": act, **steer, "agrees": agrees}}


def run(cfg: Config, run_dir: Run, quiet: bool = False) -> dict:
    model = load_model(cfg.model, quiet=quiet)
    items = prompts(model, cfg.prompts)  # before training: a bad prompt must not cost the hour the set takes
    tcs, seqs, set_dir = transcoder_set(cfg, model, run_dir, quiet)
    state = run_dir.resume() or {"done": [], "quality": None}
    done = list(state["done"])
    for i, p in enumerate(items):
        if i < len(done):
            continue
        done.append(one_prompt(model, tcs, p, cfg, run_dir, f"{i:02d}_{p['category']}"))
        run_dir.save_checkpoint(i + 1, {"done": done, "quality": None})
        if not quiet:
            d = done[-1]
            print(f"{p['category']:9s} {p['prompt'][:40]!r}: {d['seconds']:.0f} s, exact {d['exact_max_abs']:.1e}, "
                  f"replacement {d['replacement_score']:.2f}, ρ frozen {d['faithfulness']['spearman']['frozen']:.2f}")
    quality = replacement_quality(model, tcs, seqs, counts(cfg.layer_counts, model.info.n_layers))
    save_figures(run_dir, done, quality)
    claims = judge(done)
    held = [] if cfg.check_quality else claims[1:]
    notes = [unasserted(c, "check_quality = false (the quick mode's transcoders see 16k tokens once)") for c in held]
    return {"claims": [c for c in claims if c not in held], "unasserted_claims": held,
            "observations": notes + observe(done, quality), "prompts": done, "replacement_quality": quality,
            "heldout_tokens": int(seqs.numel()), "store_set": set_dir}


MEASURES = {"frozen": "attention frozen (asserted)", "norms_frozen": "attention and norms frozen", "live": "attention live"}


def save_figures(run_dir: Run, done: list[dict], quality: list[dict]) -> None:
    """Check 4 as a scatter (every prompt's top features: predicted vs measured ablation effect, per
    measurement) and check 2 as lines over the number of layers replaced."""
    groups = {}
    for key, name in MEASURES.items():
        xs, ys, labels = [], [], []
        for d in done:
            f = d["faithfulness"]
            xs += f["predicted"]
            ys += f[key]
            labels += [f"{d['category']}: L{l} feature {j} @ pos {p}" for l, p, j in f["features"]]
        groups[name] = (xs, ys, labels)
    run_dir.save_figure("faithfulness", figures.scatter(
        groups, "Zero-ablating the top feature nodes: the graph's prediction against the spliced model",
        "predicted change of the target logit", "measured change"))
    run_dir.save_figure("replacement_quality", figures.lines(
        {"top-1 agreement": [q["top1_agreement"] for q in quality], "KL(real ‖ replaced)": [q["kl"] for q in quality]},
        "Held-out text with the first n MLPs replaced (no error terms)", "layers replaced", "value",
        x=[q["layers"] for q in quality]))


def judge(done: list[dict]) -> list[dict]:
    exact = max(d["exact_max_abs"] for d in done)
    rho = statistics.median(d["faithfulness"]["spearman"]["frozen"] for d in done)
    agree = sum(d["steering"]["agrees"] for d in done)
    return [
        claim("exactness", PAPER, CLAIMS[0], exact, "< 1e-3", exact < 1e-3, prompts=len(done)),
        claim("faithfulness (attention frozen)", PAPER, CLAIMS[1], rho, "≥ 0.8", rho >= 0.8, prompts=len(done),
              per_prompt=[round(d["faithfulness"]["spearman"]["frozen"], 3) for d in done]),
        claim("steering through the graph", PAPER, CLAIMS[2], f"{agree}/{len(done)}", "≥ 5 and ≥ 80%",
              agree >= 5 and agree >= 0.8 * len(done), prompts=len(done)),
    ]


def observe(done: list[dict], quality: list[dict]) -> list[dict]:
    med = lambda key: statistics.median(d[key] for d in done)  # noqa: E731
    out = [
        {"name": "replacement score", "value": round(med("replacement_score"), 4),
         "statement": f"circuit-tracer's, median over {len(done)} graphs (per prompt in results.json)"},
        {"name": "completeness score", "value": round(med("completeness_score"), 4),
         "statement": f"circuit-tracer's, median over {len(done)} graphs"},
        {"name": "error nodes' share of the target logit", "value": round(statistics.median(
            d["sources"]["error_share_abs"] for d in done), 4),
         "statement": "|carried by errors| / (|errors| + |tokens| + |constants|), median over graphs"},
        {"name": "faithfulness (attention live)", "value": round(statistics.median(
            d["faithfulness"]["spearman"]["live"] for d in done), 4),
         "statement": "median Spearman, predicted vs measured ablation effects, attention patterns recomputed"},
        {"name": "faithfulness (attention and norms frozen)", "value": round(statistics.median(
            d["faithfulness"]["spearman"]["norms_frozen"] for d in done), 4),
         "statement": "median Spearman, as the asserted check with the norm scales frozen too: what remains of the gap "
                      "is the activation rule (features switching on or off downstream)"},
    ]
    for q in quality:
        out.append({"name": f"replaced MLPs: first {q['layers']}", "value": f"top-1 {q['top1_agreement']:.3f}, KL {q['kl']:.3f}",
                    "statement": "no error terms, attention live, held-out text: top-1 agreement and KL(real ‖ replaced)"})
    return out
