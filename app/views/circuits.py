"""Circuits: attribution patching between a clean and a corrupted prompt (which head and MLP output carry the
answer, in one backward pass), its top cells verified by activation patching, the residual stream patched
exactly, head ablations, and the circuit a toy model learned."""

from pathlib import Path

import streamlit as st
import torch

from app.common import (URL, chart, experiment_runs, label, model, model_params, open_cell, page, pick_model, run_facts,
                        run_results, table)
from app.probes import token_labels
from interp import InterpError, figures
from interp.attribution import attribute
from interp.hooks import run
from interp.interventions import ablate_heads, patch_residual
from interp.patching import Pair, metric, top_cells, verify
from interp.runs import runs_root
from toy_tasks import rebuild_task

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
DENOISE, NOISE = "denoising (clean activation into the corrupted run)", "noising (corrupted activation into the clean run)"


def body() -> None:
    st.title("Circuits")
    spec = pick_model(extra={f"icl: {label(p)}": p for p in icl_checkpoints()})
    if isinstance(spec, Path):
        icl_circuit(spec)
    elif model(spec).kind == "toy":
        toy_circuit(spec)
    else:
        patching(spec)


def icl_checkpoints() -> list[Path]:
    """Trained in-context-classification networks: folders that `toy_tasks.icl_classification.save_net` wrote."""
    from toy_tasks.icl_classification import NET_META

    return sorted(p.parent for p in runs_root().glob(f"**/{NET_META}"))


@st.cache_resource(show_spinner="Loading the network…", max_entries=4)
def icl_model(folder: str):
    """The ICLNet of a checkpoint folder and its task, rebuilt from what the checkpoint saved."""
    from toy_tasks import icl_classification as ic

    net, task, saved = ic.load_net(folder)
    return net, task, Path(folder).parent.name


def icl_circuit(folder: Path) -> None:
    from toy_tasks import icl_classification as ic

    net, task, name = icl_model(str(folder))
    st.caption(f"Job `{name}`: K = {task.spec.K} classes, N = {task.spec.N} item–label pairs, then the query. The induction "
               "circuit: layer 1 copies each item into the label after it (previous-token attention), layer 2 sends the "
               "query to the label whose item matches its class.")
    seed = st.number_input("Sample seed", 0, 10_000, 0, key="icl_seed", bind=URL)
    batch = ic.sample(task, 256, torch.Generator().manual_seed(int(seed)), p_B=1.0, p_C=1.0)  # novel classes: only IC works
    with torch.no_grad():
        logits, cache = net.run_with_cache(batch.inputs, names_filter=lambda n: n.endswith("hook_pattern"))
    N = task.spec.N
    labels = [f"{i // 2}:{'item' if i % 2 == 0 else 'label'}{'★' if i % 2 and batch.item_match[0, i // 2] else ''}"
              for i in range(2 * N)] + ["query"]
    c1, c2 = st.columns(2)
    for col, layer in zip((c1, c2), (0, 1)):
        with col:
            chart(figures.attention_heads(cache[f"blocks.{layer}.attn.hook_pattern"][0, :1], labels, layer, [0],
                                          f"Layer {layer + 1} attention (one sequence)"), f"icl_{layer}")
    measures = ic.progress(net, batch)
    acc = (logits.argmax(-1) == batch.target).float().mean().item()
    st.dataframe([{"measure": k, "value": round(v, 3)} for k, v in {**measures, "accuracy on novel classes (IC)": acc}.items()],
                 hide_index=True)
    st.caption("★ marks labels whose item has the query's class. prev_token_L1: layer-1 attention from each label to its item; "
               "induction_L2: query attention to matching labels minus the rest.")


def single_token(spec: str, text: str, what: str) -> int:
    ids = model(spec).encode(text)
    if len(ids) != 1:
        raise InterpError(f"The {what} {text!r} is {len(ids)} tokens ({model(spec).token_strs(ids)}): pick a single-token answer, "
                          "usually a word with its leading space.")
    return ids[0]


METHODS = {"AtP* (attribution, QK fix)": "atp*", "AtP (attribution)": "atp"}


def pair_of(spec: str, clean: str, corrupt: str):
    return Pair.of(model(spec), torch.tensor([model(spec).prompt(clean)]), torch.tensor([model(spec).prompt(corrupt)]))


@st.cache_data(show_spinner="Attributing: two forwards and one backward…", max_entries=16)
def attribution_maps(spec: str, clean: str, corrupt: str, good: int, bad: int, noising: bool, method: str) -> dict:
    pair = pair_of(spec, clean, corrupt)
    r = attribute(model(spec), pair, metric("logit_diff", good, bad), ["heads", "mlp"], method, noising,
                  metric_name="logit_diff")
    return {"heads": r.scores["heads"].numpy(), "mlp": r.scores["mlp"].numpy(), "clean": r.clean, "corrupted": r.corrupt,
            "seconds": r.seconds, "method": r.method, "tokens": pair.clean[0].numpy()}


@st.cache_data(show_spinner="Activation patching the top cells, one forward each…", max_entries=16)
def verified(spec: str, clean: str, corrupt: str, good: int, bad: int, noising: bool, family: str, cells: tuple) -> list[float]:
    return verify(model(spec), pair_of(spec, clean, corrupt), metric("logit_diff", good, bad), family, list(cells),
                  noising).tolist()


@st.cache_data(show_spinner="Patching the residual stream exactly, one batched forward per layer…", max_entries=8)
def residual_exact(spec: str, clean: str, corrupt: str, good: int, bad: int, noising: bool):
    pair = pair_of(spec, clean, corrupt)
    return patch_residual(model(spec), pair.clean, pair.corrupt, good, bad, noising=noising).numpy()


@st.cache_data(show_spinner="Ablating every head on the clean prompt…", max_entries=8)
def ablation_map(spec: str, clean: str, good: int, bad: int):
    return ablate_heads(model(spec), torch.tensor([model(spec).prompt(clean)]), good, bad).numpy()


def validation_note(spec: str, method: str) -> str:
    """How well `method` agreed with activation patching in the attribution_patching run on this model that
    compared the most pairs (the newest among equals)."""
    best, best_n = None, 0
    for r in experiment_runs("attribution_patching"):
        res = run_results(r)
        if res and run_facts(r)["model"] == spec and len(res.get("pairs", [])) > best_n:
            best, best_n = (r, res), len(res["pairs"])
    if best is not None:
        r, res = best
        parts = [f"{task} {fam}: Spearman {v['spearman']:.2f}, top-10 overlap {v['overlap']:g}/10 ({v['pairs']} pairs)"
                 for task, t in res.get("summary", {}).items() for fam in ("heads", "mlp")
                 if (v := t.get(method, {}).get(fam))]
        if parts:
            return f"Validated in run `{r.dir.name}` (medians against activation patching): " + "; ".join(parts) + "."
    return ("Not validated on this model here yet: `interp run attribution_patching --model " + spec + "` measures how well "
            "it agrees with activation patching (docs/experiments/attribution_patching.md holds the numbers measured for "
            "SmolLM2 on the machine the docs were written on).")


def patching(spec: str) -> None:
    st.subheader("Attribution patching, verified by activation patching")
    c1, c2 = st.columns(2)
    clean = c1.text_input("Clean prompt", CLEAN, key="clean", bind=URL)
    corrupt = c2.text_input("Corrupted prompt (same number of tokens)", CORRUPT, key="corrupt", bind=URL)
    good = single_token(spec, c1.text_input("Correct answer", " Mary", key="good", bind=URL), "correct answer")
    bad = single_token(spec, c2.text_input("Wrong answer", " John", key="bad", bind=URL), "wrong answer")
    n_clean, n_corrupt = len(model(spec).prompt(clean)), len(model(spec).prompt(corrupt))
    if n_clean != n_corrupt:
        raise InterpError(f"The clean prompt has {n_clean} tokens and the corrupted one {n_corrupt}: patching compares "
                          "them position by position, so reword one until both have the same length.")
    d1, d2 = st.columns(2)
    direction = d1.radio("Direction", [DENOISE, NOISE], horizontal=True, key="direction", bind=URL)
    method = METHODS[d2.radio("Method", list(METHODS), horizontal=True, key="method", bind=URL)]
    noising = direction == NOISE
    args = (spec, clean, corrupt, good, bad, noising)
    r = attribution_maps(*args, method)
    st.markdown(f"Logit difference (correct − wrong): clean **{r['clean']:.3f}**, corrupted **{r['corrupted']:.3f}**. "
                f"Maps by **{r['method']}** ({r['seconds']:.1f} s), on the scale 0 = corrupted run, 1 = clean run. " + (
                    "Noising: the clean run with one corrupted activation — a low score means the answer needs it."
                    if noising else "Denoising: the corrupted run with one clean activation — a high score means it "
                    "is enough to restore the answer."))
    st.caption(validation_note(spec, method))
    labels = token_labels(spec, r["tokens"])
    left, right = st.columns(2)
    with left:
        chart(figures.clickable(figures.heatmap(r["heads"], f"Attention heads (hook_z) by {r['method']}", "head", "layer",
                                                signed=True, zlabel="score (1 = clean)")),
              "heads", on_select=open_cell("heads", "pl", "ph"), selection_mode="points")
    with right:
        chart(figures.heatmap(r["mlp"], f"MLP outputs by {r['method']}", "position", "layer", x=labels, signed=True,
                              zlabel="score (1 = clean)"), "mlp")
    verify_top(args, r, labels)
    with st.expander("Residual stream, patched exactly (attribution is unreliable for whole-state swaps)"):
        if st.button("Patch every layer × position", key="resid_go", help="one batched forward pass per layer"):
            st.session_state["resid_args"] = args
        if st.session_state.get("resid_args") == args:
            chart(figures.heatmap(residual_exact(*args), "Residual stream (resid_pre), activation patching", "position",
                                  "layer", x=labels, zmin=-1, zmax=1, signed=True, zlabel="score (1 = clean)"), "resid")
    with st.expander("Head ablation on the clean prompt"):
        if st.button("Ablate every head", key="ablate_go", help="one batched forward pass per layer"):
            st.session_state["ablate_args"] = (spec, clean, good, bad)
        if st.session_state.get("ablate_args") == (spec, clean, good, bad):
            chart(figures.clickable(figures.heatmap(ablation_map(spec, clean, good, bad), "Head ablation on the clean prompt",
                                                    "head", "layer", signed=True, zlabel="Δ logit diff (− : the head helps)")),
                  "ablate", on_select=open_cell("ablate", "pl", "ph"), selection_mode="points")
    head_on_both(spec, clean, corrupt)


def verify_top(args: tuple, r: dict, labels: list[str]) -> None:
    """The button that checks what attribution found: its top cells, each activation-patched."""
    n = int(st.number_input("Cells to verify per family", 1, 50, 10, key="verify_n", bind=URL))
    if st.button(f"Verify the top {n} heads and MLP cells by activation patching", key="verify", type="primary"):
        st.session_state["verified"] = (*args, n)
    if st.session_state.get("verified") != (*args, n):
        return
    rows = []
    for fam, axis in (("heads", "head"), ("mlp", "position")):
        cells = top_cells(torch.as_tensor(r[fam]), n)
        exact = verified(*args, fam, tuple(cells))
        for c, e in zip(cells, exact):
            where = f"L{c[0]}H{c[1]}" if fam == "heads" else f"L{c[0]} {labels[c[1]]}"
            rows.append({"family": fam, "cell": where, "attribution": round(float(r[fam][c]), 3),
                         "activation patching": round(e, 3), "|error|": round(abs(float(r[fam][c]) - e), 3)})
    table(rows, "verified")
    st.caption("Each row is one cell patched alone in its own forward pass: where the columns agree, the map above can be trusted.")


def head_on_both(spec: str, clean: str, corrupt: str) -> None:
    m = model(spec)
    st.subheader("One head on both prompts")
    st.caption("Click a head cell above to open it here.")
    c1, c2 = st.columns(2)
    layer = int(c1.number_input("Layer", 0, m.info.n_layers - 1, 0, key="pl", bind=URL))
    head = int(c2.number_input("Head", 0, m.info.n_heads - 1, 0, key="ph", bind=URL))
    name = f"blocks.{layer}.attn.hook_pattern"
    cols = st.columns(2)
    for col, (what, text) in zip(cols, (("clean", clean), ("corrupted", corrupt))):
        tokens = torch.tensor([m.prompt(text)])
        pattern = run(m, tokens, capture=[name])[1][name][0, head:head + 1]  # [1, q, k]
        with col:
            chart(figures.attention_heads(pattern, token_labels(spec, tokens[0]), layer, [head], f"L{layer}H{head} on the {what} prompt"),
                  f"head_{what}")
    st.page_link("views/sinks.py", label=f"L{layer}H{head} on the Attention sinks page", icon=":material/blur_circular:",
                 query_params={**model_params(spec), "text": clean, "layer": layer, "head": head})


def toy_circuit(spec: str) -> None:
    from toy_tasks import bigram_backcopy as bb

    m = model(spec)
    task = rebuild_task(m.task) if (m.task or {}).get("name") == "bigram_backcopy" else None
    seed = st.number_input("Sample seed", 0, 10_000, 0, key="seed", bind=URL)
    if task is not None:
        T = min(32, m.info.n_ctx)
        tokens = bb.sample(task, 1, T, torch.Generator().manual_seed(int(seed)))
        trig, _ = bb.positions(task, tokens)
        st.caption("A Bigram-Backcopy sample: after a trigger (marked ★) the next token copies the token before it, so "
                   "the trigger query should attend to position t−1; other queries sink onto BOS.")
    else:
        g = torch.Generator().manual_seed(int(seed))
        tokens = torch.randint(1, m.info.d_vocab, (1, min(32, m.info.n_ctx)), generator=g)
        trig = None
    labels = [f"{lab}★" if trig is not None and i < trig.shape[1] and trig[0, i] else lab for i, lab in enumerate(token_labels(spec, tokens[0]))]
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(m.info.n_layers)]
    _, acts = run(m, tokens, capture=names)
    for l, name in enumerate(names):  # one row per layer, its heads side by side
        chart(figures.attention_heads(acts[name][0], labels, l, list(range(m.info.n_heads)), f"Layer {l}"), f"toy_{l}")
    if task is not None:
        eval_tokens = bb.sample(task, 64, min(64, m.info.n_ctx), torch.Generator().manual_seed(1))
        probe = bb.probe(m, task, eval_tokens)
        rows = [{"layer": l, "attn to t−1 from triggers": probe[f"attn_prev_trigger_L{l}"],
                 "attn to BOS from non-triggers": probe[f"attn_bos_nontrigger_L{l}"], "‖W_O v_BOS‖ / others": probe[f"wov_bos_ratio_L{l}"],
                 **{f"Δ{k[6:]} when ablated": v for k, v in bb.ablation(m, task, eval_tokens, l).items() if k.startswith("delta_")}}
                for l in range(m.info.n_layers)]
        st.dataframe(rows, hide_index=True)
        st.caption(f"Backcopy loss {probe['backcopy_loss']:.3f}, bigram excess {probe['bigram_excess']:.3f} on 64 held-out sequences.")


page(body)
