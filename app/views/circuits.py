"""Circuits: activation patching between a clean and a corrupted prompt (which layer, position and
head carry the answer), head ablations, and the circuit a toy model learned."""

from pathlib import Path

import streamlit as st
import torch

from app.common import URL, chart, label, model, model_params, open_cell, page, pick_model
from app.probes import token_labels
from interp import InterpError, figures
from interp.hooks import run
from interp.interventions import ablate_heads, logit_diff, patch_heads, patch_residual
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


@st.cache_data(show_spinner="Patching every layer, position and head (about a minute on SmolLM2)…", max_entries=8)
def patch_all(spec: str, clean: str, corrupt: str, good: int, bad: int, noising: bool) -> dict:
    m = model(spec)
    c, k = torch.tensor([m.prompt(clean)]), torch.tensor([m.prompt(corrupt)])
    lds = {name: logit_diff(run(m, t)[0], good, bad).item() for name, t in (("clean", c), ("corrupted", k))}
    return {"resid": patch_residual(m, c, k, good, bad, noising=noising).numpy(),
            "heads": patch_heads(m, c, k, good, bad, noising=noising).numpy(),
            "ablate": ablate_heads(m, c, good, bad).numpy(), "tokens": c[0].numpy(), **lds}


def patching(spec: str) -> None:
    st.subheader("Activation patching")
    c1, c2 = st.columns(2)
    clean = c1.text_input("Clean prompt", CLEAN, key="clean", bind=URL)
    corrupt = c2.text_input("Corrupted prompt (same number of tokens)", CORRUPT, key="corrupt", bind=URL)
    good = single_token(spec, c1.text_input("Correct answer", " Mary", key="good", bind=URL), "correct answer")
    bad = single_token(spec, c2.text_input("Wrong answer", " John", key="bad", bind=URL), "wrong answer")
    n_clean, n_corrupt = len(model(spec).prompt(clean)), len(model(spec).prompt(corrupt))
    if n_clean != n_corrupt:
        raise InterpError(f"The clean prompt has {n_clean} tokens and the corrupted one {n_corrupt}: patching compares "
                          "them position by position, so reword one until both have the same length.")
    direction = st.radio("Direction", [DENOISE, NOISE], horizontal=True, key="direction", bind=URL)
    args = (spec, clean, corrupt, good, bad, direction == NOISE)
    if st.button("Run patching", key="patch", type="primary",
                 help="one batched forward pass per layer for the residual stream and per layer for the heads"):
        st.session_state["patched"] = args
    if st.session_state.get("patched") != args:
        st.info("Press “Run patching” to patch every layer × position and layer × head for these prompts.")
        return
    r = patch_all(*args)
    st.markdown(f"Logit difference (correct − wrong): clean **{r['clean']:.3f}**, corrupted **{r['corrupted']:.3f}**. "
                "Scores are on the scale 0 = corrupted run, 1 = clean run. " + (
                    "Noising: the clean run with one corrupted activation — a low score means the answer needs it."
                    if args[-1] else "Denoising: the corrupted run with one clean activation — a high score means it "
                    "is enough to restore the answer."))
    labels = token_labels(spec, r["tokens"])
    chart(figures.heatmap(r["resid"], "Residual stream (resid_pre) by layer and position", "position", "layer", x=labels,
                          zmin=-1, zmax=1, signed=True, zlabel="score (1 = clean)"), "resid")
    left, right = st.columns(2)
    with left:
        chart(figures.clickable(figures.heatmap(r["heads"], "Attention heads (hook_z, every position)", "head", "layer",
                                                zmin=-1, zmax=1, signed=True, zlabel="score (1 = clean)")),
              "heads", on_select=open_cell("heads", "pl", "ph"), selection_mode="points")
    with right:
        chart(figures.clickable(figures.heatmap(r["ablate"], "Head ablation on the clean prompt", "head", "layer", signed=True,
                                                zlabel="Δ logit diff (− : the head helps)")),
              "ablate", on_select=open_cell("ablate", "pl", "ph"), selection_mode="points")
    head_on_both(spec, clean, corrupt)


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
