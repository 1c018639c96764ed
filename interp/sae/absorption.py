"""Feature absorption on the first-letter task (Chanin et al. 2024, "A is for Absorption"), as SAEBench's
`evals/absorption` defines it, offline on the model's own vocabulary.

    report = absorption(sae, model)             # spelling check + absorption at the SAE's hook
    report = spelling(model, layers=[3, 6, 9])  # only the check: can the model spell here?

Words are single tokens of the tokenizer: alphabetic, a leading space, at least two letters (SAEBench
keeps every alphabetic token), at most `words_per_letter` per first letter, drawn by `seed`; 80% of each
letter's words train, 20% test. Each word is read at its own token in the few-shot prompt
`{word} has the first letter: X`, one line per word after `icl_examples` solved example lines.

- Spelling: the model's own answer (its top next token after the colon is " X" or "X"), and a linear
  probe per layer (26 one-vs-rest logistic regressions on the residual at the word token, trained as
  SAEBench trains them): test accuracy, F1 per letter (probe logit > 0). The model spells at a hook
  when at least `min_letters` (20) letters have probe F1 above `min_probe_f1` (0.6); only those
  letters count in absorption's means, and with fewer of them absorption is not evaluated.
- Main latents and feature splitting (k-sparse probing): one L1-penalised probe on the SAE latents
  ranks them per letter; for k = 1..max_k a logistic regression on the top-k latents is scored by
  test F1. k grows while F1 rises by more than `f1_jump_threshold` (0.03); the latents at the last
  such k are the letter's main latents and their number its feature-splitting count.
- Absorption, over each letter's probe true positives (test words of the letter the probe calls
  right), with d the probe's unit direction, p(x) = x·d, and a latent's projection act × cos(W_dec, d):
  absorption fraction: 0 if the main latents' projection m covers p, or if the top 3 other latents
  with cos ≥ 0.1 and positive projection add up to less than 0.4 p; 1 if m ≤ 0; else
  a / (a + m) with a = min(their sum, p − m). Full absorption: no main latent fires, the top
  projecting latent has cos ≥ 0.025 and carries at least 0.4 p. Per letter: sum of fractions and
  count of full absorptions, each over the number of true positives; means over letters.

Deviations from SAEBench: words are packed, `targets_per_prompt` lines per sequence after the example
lines (causal attention makes each line's reading that of a prompt ending there, with 10 or more
examples before it); words are capped per letter (SAEBench: the whole vocabulary) and must have ≥ 2
letters; the absorption pass reuses the test activations instead of drawing fresh prompts; the L1
probe starts at zero (SAEBench: random, which over few steps ranks untrained latents by their init)
with batch 256 (SAEBench: 4096 over ~10x more words), so it takes a comparable number of steps.
Cost: a full forward over ~13 tokens a word (the model's answer needs the last layer). SmolLM2-135M,
default budget (2,488 words, 157 sequences of 210 tokens): ~3-5 min on one CPU thread.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import InterpError
from interp.sae.models import SAE

LETTERS = "abcdefghijklmnopqrstuvwxyz"
TEMPLATE = " has the first letter:"  # SAEBench's "{word} has the first letter:", the word with its space
FULL_COS, FRACTION_COS, PROJ_SHARE, MAX_ABSORBERS = 0.025, 0.1, 0.4, 3  # SAEBench's thresholds


@dataclass
class AbsorptionConfig:
    words_per_letter: int = 100
    """Words drawn per first letter (fewer where the vocabulary has fewer)."""
    train_share: float = 0.8
    icl_examples: int = 10
    """Solved example lines before the first read line of a sequence (SAEBench: 10 examples)."""
    targets_per_prompt: int = 16
    batch_size: int = 8
    """Sequences per forward pass."""
    min_probe_f1: float = 0.6
    min_letters: int = 20
    max_k: int = 10
    f1_jump_threshold: float = 0.03
    probe_epochs: int = 50
    probe_batch: int = 64
    probe_lr: float = 1e-2
    probe_weight_decay: float = 1e-4
    sparse_l1: float = 0.01
    sparse_epochs: int = 50
    sparse_batch: int = 256


# ------------------------------------------------------------------------------------------ the pure part


def train_probe(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], epochs: int = 50, batch: int = 64, lr: float = 1e-2,
                weight_decay: float = 1e-4, l1: float = 0.0, seed: int = 0) -> tuple[Tensor, Tensor]:
    """26 one-vs-rest logistic regressions (SAEBench's multi-probe): BCE with positive weight n_neg / n_pos,
    Adam, learning rate decaying exponentially to 1e-5 over the epochs, + `l1` · mean over letters of |W|₁.
    Returns W [26, d], b [26]."""
    g = torch.Generator().manual_seed(seed)
    x = x.float()
    target = torch.nn.functional.one_hot(y, len(LETTERS)).float()
    pos = target.sum(0).clamp_min(1)
    bound = x.shape[1] ** -0.5
    scale = 0.0 if l1 else bound  # the sparse probe starts at 0: untrained latents must not rank by their init
    W = ((torch.rand(len(LETTERS), x.shape[1], generator=g) * 2 - 1) * scale).requires_grad_()
    b = ((torch.rand(len(LETTERS), generator=g) * 2 - 1) * bound).requires_grad_()
    opt = torch.optim.Adam([W, b], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=(1e-5 / lr) ** (1 / epochs))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=(len(y) - pos) / pos)
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(len(y), generator=g).split(batch):
                opt.zero_grad()
                loss = loss_fn(x[idx] @ W.T + b, target[idx])
                if l1:
                    loss = loss + l1 * W.abs().sum(1).mean()
                loss.backward()
                opt.step()
            sched.step()
    return W.detach(), b.detach()


def _f1(truth: np.ndarray, pred: np.ndarray) -> float:
    tp = float((truth & pred).sum())
    return 2 * tp / max(float(truth.sum() + pred.sum()), 1.0)


def probe_quality(W: Tensor, b: Tensor, x: Float[Tensor, "n d"], y: Int[Tensor, " n"]) -> dict:
    """Test accuracy (argmax over letters) and F1 per letter (logit > 0) of a probe."""
    logits = x.float() @ W.T + b
    y_np, pred = y.numpy(), (logits > 0).numpy()
    f1 = {c: _f1(y_np == i, pred[:, i]) for i, c in enumerate(LETTERS)}
    return {"accuracy": (logits.argmax(1) == y).float().mean().item(), "mean_f1": statistics.mean(f1.values()),
            "f1": f1, "n_test": len(y)}


def k_sparse(z_train: Tensor, y_train: Tensor, z_test: Tensor, y_test: Tensor, cfg: AbsorptionConfig,
             seed: int = 0) -> dict[str, dict]:
    """Per letter: the top-k latents of an L1 probe on the latents `z` and the test F1 of a logistic
    regression on them for k = 1..max_k; `main` are the latents at the last k whose F1 rose by more than
    the jump threshold."""
    from sklearn.linear_model import LogisticRegression

    W, _ = train_probe(z_train, y_train, cfg.sparse_epochs, cfg.sparse_batch, 0.01, 1e-6, cfg.sparse_l1, seed)
    out = {}
    for i, c in enumerate(LETTERS):
        order = W[i].topk(min(cfg.max_k, W.shape[1])).indices.tolist()
        f1s, main, best = [], [], -100.0
        for k in range(1, len(order) + 1):
            feats = order[:k]
            lr = LogisticRegression(max_iter=500, class_weight="balanced")
            lr.fit(z_train[:, feats].numpy(), (y_train == i).numpy())
            f1s.append(_f1((y_test == i).numpy(), lr.decision_function(z_test[:, feats].numpy()) > 0))
            if len(main) == k - 1 and f1s[-1] > best + cfg.f1_jump_threshold:
                best, main = f1s[-1], feats
        out[c] = {"main_latents": main, "num_split_features": len(main), "f1_by_k": f1s}
    return out


@torch.no_grad()
def word_absorption(x: Float[Tensor, "n d"], z: Float[Tensor, "n d_sae"], direction: Float[Tensor, " d"],
                    W_dec: Float[Tensor, "d_sae d"], main: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """SAEBench's absorption fraction and full-absorption flag for each row, and the top projecting latent."""
    d = direction / direction.norm()
    cos = torch.nn.functional.cosine_similarity(W_dec.float(), d[None], dim=1)  # [d_sae]
    proj = z.float() * cos  # [n, d_sae]
    p = x.float() @ d  # [n]
    m = proj[:, main].sum(1)
    others = proj.clone()
    others[:, main] = 0
    others[:, cos < FRACTION_COS] = 0
    absorbed = others.clamp_min(0).topk(min(MAX_ABSORBERS, others.shape[1]), dim=1).values.sum(1)
    a = torch.minimum(absorbed, p - m)
    fraction = torch.where(m <= 0, torch.ones_like(p), (a / (a + m)).clamp(0, 1))
    fraction = torch.where((p <= 0) | (m >= p) | (absorbed < PROJ_SHARE * p), torch.zeros_like(p), fraction)
    top_proj, top = proj.max(1)
    full = (z[:, main] < 1e-8).all(1) & (cos[top] >= FULL_COS) & (p > 0) & (top_proj >= PROJ_SHARE * p)
    return fraction, full, top


def score(sae: SAE, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, cfg: AbsorptionConfig | None = None,
          probe: tuple[Tensor, Tensor] | None = None, seed: int = 0) -> dict:
    """Absorption and feature splitting from activations at the SAE's hook and their words' first letters
    (0..25): trains the letter probe (or takes `probe` = (W [26, d], b [26])), probes the latents, scores."""
    cfg = cfg or AbsorptionConfig()
    check_letters(y_train, y_test)
    sae.check_input(x_test)
    W, b = probe if probe is not None else train_probe(x_train, y_train, cfg.probe_epochs, cfg.probe_batch, cfg.probe_lr,
                                                      cfg.probe_weight_decay, seed=seed)
    quality = probe_quality(W, b, x_test, y_test)
    z_train, z_test = sae.dense_encode(x_train.float()), sae.dense_encode(x_test.float())  # inference mode
    sparse = k_sparse(z_train, y_train, z_test, y_test, cfg, seed)
    scores = x_test.float() @ W.T + b
    letters, kept = {}, []
    for i, c in enumerate(LETTERS):
        rows = ((y_test == i) & (scores[:, i] > 0)).nonzero().squeeze(1)
        main = sparse[c]["main_latents"]
        fraction, full, top = word_absorption(x_test[rows], z_test[rows], W[i], sae.W_dec.detach(), main)
        n = len(rows)
        letters[c] = {"probe_f1": quality["f1"][c], "num_probe_true_positives": n, **sparse[c],
                      "mean_absorption_fraction": fraction.sum().item() / n if n else None,
                      "full_absorption_rate": full.sum().item() / n if n else None, "num_full_absorption": int(full.sum()),
                      "full_absorption_rows": rows[full].tolist(), "absorbing_latents": top[full].tolist()}
        if quality["f1"][c] > cfg.min_probe_f1 and n:
            kept.append(letters[c])
    out = {"probe": {k: quality[k] for k in ("accuracy", "mean_f1", "n_test")}, "letters": letters,
           "letters_evaluated": len(kept), "evaluated": len(kept) >= cfg.min_letters}
    if not out["evaluated"]:
        out["reason"] = (f"only {len(kept)} letters have a probe F1 above {cfg.min_probe_f1} at this hook (SAEBench needs "
                         f"{cfg.min_letters}): the model does not represent first letters linearly here, so absorption "
                         "cannot be told from a missing feature. Use an SAE at a layer where `spelling` finds them.")
        return out
    for key, name in (("mean_absorption_fraction", "mean_absorption_fraction_score"),
                      ("full_absorption_rate", "mean_full_absorption_score"), ("num_split_features", "mean_num_split_features")):
        values = [r[key] for r in kept]
        out[name] = statistics.mean(values)
        out[name.replace("mean_", "std_dev_", 1)] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def check_letters(*ys: Tensor) -> None:
    for y in ys:
        missing = [LETTERS[i] for i in range(len(LETTERS)) if not (y == i).any()]
        if missing:
            raise InterpError(f"No words start with {', '.join(missing)} in one of the splits: every letter needs words to "
                              "train and test on. Raise words_per_letter, or use a tokenizer with whole-word tokens.")


# ------------------------------------------------------------------------------------------ the model part


def vocabulary(model, cfg: AbsorptionConfig, seed: int = 0) -> tuple[list[str], list[int], Tensor, Tensor]:
    """Words (single tokens: a space and ≥ 2 ASCII letters) drawn per first letter: the words, their token
    ids, their letters (0..25) and True for the training words."""
    pools: list[list[tuple[int, str]]] = [[] for _ in LETTERS]
    for i in range(model.info.d_vocab):
        s = model.tokenizer.decode([i])
        if s[:1] == " " and len(s) > 2 and s[1:].isascii() and s[1:].isalpha() and model.encode(s) == [i]:
            pools[LETTERS.index(s[1].lower())].append((i, s))
    rng, rows = random.Random(seed), []
    for c, pool in enumerate(pools):
        pick = rng.sample(pool, min(cfg.words_per_letter, len(pool)))
        n_train = min(round(cfg.train_share * len(pick)), len(pick) - 1) if len(pick) > 1 else len(pick)
        rows += [(s, i, c, j < n_train) for j, (i, s) in enumerate(pick)]
    words, ids, labels, train = (list(t) for t in zip(*rows)) if rows else ([], [], [], [])
    labels, train = torch.tensor(labels, dtype=torch.long), torch.tensor(train, dtype=torch.bool)
    check_letters(labels[train], labels[~train])
    return words, ids, labels, train


def prompts(model, ids: list[int], labels: Tensor, train: Tensor, cfg: AbsorptionConfig,
            seed: int = 0) -> list[tuple[list[int], list[tuple[int, int, int]]]]:
    """Packed few-shot sequences, each of one split: (token ids, [(word, its position, its colon's position)])."""
    nl, template = model.encode("\n"), model.encode(TEMPLATE)
    answers = [model.encode(" " + c.upper()) for c in LETTERS]
    letter = labels.tolist()
    text = "\n" + model.tokenizer.decode([ids[0]]) + TEMPLATE + " " + LETTERS[letter[0]].upper() + "\n"
    if model.encode(text) != [*nl, ids[0], *template, *answers[letter[0]], *nl]:
        raise InterpError("The tokenizer merges the prompt's pieces differently in context, so the word's position in "
                          f"{text!r} cannot be read off; this task needs a tokenizer that splits at spaces.")
    rng, seqs = random.Random(seed + 1), []
    for split in (True, False):
        order = (train == split).nonzero().squeeze(1).tolist()
        rng.shuffle(order)
        for s in range(0, len(order), cfg.targets_per_prompt):
            chunk = order[s : s + cfg.targets_per_prompt]
            taken = set(chunk)
            warm = rng.sample([j for j in order if j not in taken], min(cfg.icl_examples, len(order) - len(chunk)))
            toks, reads = ([model.sink_token_id] if model.sink_token_id is not None else []) + nl, []
            for n, j in enumerate(warm + chunk):
                if n >= len(warm):
                    reads.append((j, len(toks), len(toks) + len(template)))
                toks = toks + [ids[j], *template, *answers[letter[j]], *nl]
            seqs.append((toks, reads))
    return seqs


@torch.no_grad()
def collect(model, seqs, labels: Tensor, hooks: list[str], cfg: AbsorptionConfig,
            quiet: bool = True) -> tuple[dict[str, Tensor], Tensor]:
    """Activations at each hook at every word's token ([n, d] in word order), and whether the model's top
    next token after the word's colon is its first letter (" X" or "X")."""
    from interp.hooks import run as run_hooks
    from interp.lens import unembed

    want = torch.tensor([[model.encode(" " + c.upper())[0], model.encode(c.upper())[0]] for c in LETTERS])[labels]
    acts = {h: torch.zeros(len(labels), model.info.d_model) for h in hooks}
    correct = torch.zeros(len(labels), dtype=torch.bool)
    final, head, t0 = f"blocks.{model.info.n_layers - 1}.hook_resid_post", unembed(model), time.time()
    for s in range(0, len(seqs), cfg.batch_size):
        batch = seqs[s : s + cfg.batch_size]
        width = max(len(t) for t, _ in batch)
        tokens = torch.tensor([t + t[-1:] * (width - len(t)) for t, _ in batch])  # padded at the end: causal, unread
        _, cache = run_hooks(model, tokens, capture=list(dict.fromkeys([*hooks, final])), stop_early=True)
        rows, words, at, colon = torch.tensor([(b, *r) for b, (_, reads) in enumerate(batch) for r in reads]).T
        for h in hooks:
            acts[h][words] = cache[h][rows, at].float().cpu()
        top = head(cache[final][rows, colon]).argmax(-1).cpu()
        correct[words] = (top[:, None] == want[words]).any(1)
        if not quiet:
            print(f"absorption: {s + len(batch)}/{len(seqs)} sequences, {time.time() - t0:.0f}s", flush=True)
    return acts, correct


def _layer_of(model, hook: str) -> int:
    parts = hook.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit() or not 0 <= int(parts[1]) < model.info.n_layers:
        raise InterpError(f"{hook!r} is not a hook of one of {model.spec}'s layers 0..{model.info.n_layers - 1}: give "
                          "a name like blocks.6.hook_resid_post.")
    return int(parts[1])


def _measure(model, layers, extra_hooks, cfg, seed, quiet) -> tuple[dict, dict]:
    hooks = [f"blocks.{L}.hook_resid_post" for L in (range(0, model.info.n_layers, 3) if layers is None else layers)]
    if not hooks:
        raise InterpError("No layers to probe: give at least one layer for the spelling check.")
    for h in [*hooks, *extra_hooks]:
        _layer_of(model, h)
    t0 = time.time()
    words, ids, labels, train = vocabulary(model, cfg, seed)
    acts, correct = collect(model, prompts(model, ids, labels, train, cfg, seed), labels,
                            list(dict.fromkeys([*hooks, *extra_hooks])), cfg, quiet)
    t1, probes = time.time(), {}
    for h in hooks:
        W, b = train_probe(acts[h][train], labels[train], cfg.probe_epochs, cfg.probe_batch, cfg.probe_lr,
                           cfg.probe_weight_decay, seed=seed)
        q = probes[h] = probe_quality(W, b, acts[h][~train], labels[~train])
        q["letters_above"] = sum(f > cfg.min_probe_f1 for f in q["f1"].values())
        q["spells"] = q["letters_above"] >= cfg.min_letters
    best = max(probes, key=lambda h: probes[h]["mean_f1"])
    at = [h for h, q in probes.items() if q["spells"]]
    answers = f"its own answers are right on {correct.float().mean().item():.0%} of {len(words)} words"
    verdict = (f"{model.spec} spells at {', '.join(at)} (≥ {cfg.min_letters} letters with probe F1 > {cfg.min_probe_f1}); "
               f"best {best}, mean F1 {probes[best]['mean_f1']:.2f}; {answers}." if at else
               f"{model.spec} does not spell at any probed layer: at best ({best}) {probes[best]['letters_above']} letters "
               f"have probe F1 > {cfg.min_probe_f1}, fewer than {cfg.min_letters}; {answers}. Absorption cannot be measured.")
    by_letter = {c: correct[labels == i].float().mean().item() for i, c in enumerate(LETTERS)}
    report = {"model_answers": {"accuracy": correct.float().mean().item(), "by_letter": by_letter, "n": len(words)},
              "probes": probes, "best_hook": best, "spells_at": at, "verdict": verdict, "words": len(words),
              "config": asdict(cfg), "seconds": {"forward": t1 - t0, "probes": time.time() - t1,
                                                 "threads": torch.get_num_threads()}}
    return report, {"acts": acts, "labels": labels, "train": train, "words": words}


def _config(cfg: AbsorptionConfig | None, overrides: dict) -> AbsorptionConfig:
    known = {f.name for f in fields(AbsorptionConfig)}
    if set(overrides) - known:
        raise InterpError(f"Unknown absorption setting(s) {', '.join(sorted(set(overrides) - known))}: choose from "
                          f"{', '.join(sorted(known))}.")
    return replace(cfg or AbsorptionConfig(), **overrides)


def spelling(model, layers: list[int] | None = None, cfg: AbsorptionConfig | None = None, seed: int = 0,
             quiet: bool = True, **overrides) -> dict:
    """Does the model spell? Its own answers on the prompt (accuracy, by letter), and a first-letter probe
    at blocks.{L}.hook_resid_post for each of `layers` (default: every third): accuracy, F1 by letter,
    letters above the F1 bar, whether it `spells` there; `best_hook`, `spells_at` and a `verdict`."""
    return _measure(model, layers, (), _config(cfg, overrides), seed, quiet)[0]


def absorption(sae: SAE, model, hook: str | None = None, layers: list[int] | None = None,
               cfg: AbsorptionConfig | None = None, seed: int = 0, quiet: bool = True, **overrides) -> dict:
    """SAEBench's absorption eval of `sae` at `hook` (default: the hook it was trained on), with the
    spelling check (`spelling`, over `layers`) run on the same forward passes:
    {"headline": the numbers a summary shows, "spelling": spelling's report, "absorption": `score`'s report
    + hook, full-absorption examples per letter ([word, absorbing latent]), seconds}. `overrides`: any
    AbsorptionConfig field, e.g. words_per_letter=50."""
    return absorption_many({"sae": sae}, model, hook, layers, cfg, seed, quiet, **overrides)["sae"]


def absorption_many(saes: dict[str, SAE], model, hook: str | None = None, layers: list[int] | None = None,
                    cfg: AbsorptionConfig | None = None, seed: int = 0, quiet: bool = True, **overrides) -> dict[str, dict]:
    """`absorption` for several SAEs of one hook: the prompts, forwards and spelling probes run once."""
    cfg = _config(cfg, overrides)
    hooks = {hook or sae.cfg.hook_name for sae in saes.values()}
    if not all(hooks) or len(hooks) != 1:
        raise InterpError("An SAE does not name its hook, or the SAEs name different hooks (cfg.json metadata.hook_name): pass the one hook they read.")
    hook = hooks.pop()
    _layer_of(model, hook)
    for sae in saes.values():
        if sae.cfg.d_in != model.info.d_model:
            raise InterpError(f"The SAE reads width {sae.cfg.d_in} but {model.spec}'s residual stream is "
                              f"{model.info.d_model} wide: evaluate it with the model it was trained on.")
    t0 = time.time()
    report, data = _measure(model, layers, (hook,), cfg, seed, quiet)
    x, y, train, words = data["acts"][hook], data["labels"], data["train"], data["words"]
    shared = time.time() - t0
    test_words = [w for w, t in zip(words, train.tolist()) if not t]
    out = {}
    for name, sae in saes.items():
        t1 = time.time()
        result = score(sae, x[train], y[train], x[~train], y[~train], cfg, seed=seed)
        if not result["evaluated"]:
            result["reason"] += f" Here the probe is best at {report['best_hook']}."
        for r in result["letters"].values():
            r["examples"] = [[test_words[j], lat] for j, lat in zip(r.pop("full_absorption_rows"), r.pop("absorbing_latents"))][:10]
        result.update(hook=hook, seconds={"forward_and_spelling": shared, "scoring": time.time() - t1,
                                          "total": shared + time.time() - t1})
        headline = {"fraction": result.get("mean_absorption_fraction_score"), "full": result.get("mean_full_absorption_score"),
                    "split features": result.get("mean_num_split_features"), "letters": result["letters_evaluated"],
                    "probe F1": result["probe"]["mean_f1"], "model answers": report["model_answers"]["accuracy"]}
        out[name] = {"headline": headline, "spelling": report, "absorption": result}
    return out
