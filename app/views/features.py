"""Features: browse what an SAE's features respond to, search them by token, and see which fire on
your own text."""

import json
from pathlib import Path
from urllib.parse import urlencode

import streamlit as st
import torch

from app.common import URL, Link, chart, label, missing, model, model_params, page, sae_and_store, table
from app.common import sae_summary as summary
from app.probes import token_labels, token_texts
from app.tokens import context_html, visible
from interp import InterpError, figures
from interp.hooks import capture
from interp.models import REAL_MODELS
from interp.runs import runs_root
from interp.sae import features as F
from interp.sae.suite import default_out, evaluation_tables, headline


def body() -> None:
    st.title("Features")
    dirs = F.sae_dirs(runs_root())
    if not dirs:
        missing("SAE", "interp sae train --store STORE")
        return
    labels = {label(d): d for d in dirs}
    name = st.selectbox("SAE", list(labels), key="sae", bind=URL)
    folder = str(labels[name])
    sae, store = sae_and_store(folder)
    s = summary(folder)
    spec = sae.cfg.model_name
    m = model(spec) if spec in REAL_MODELS or Path(spec).is_dir() else None
    c = sae.cfg
    st.caption(f"{c.kind} SAE, d_in {c.d_in}, d_sae {c.d_sae}, k {c.k} — hook `{c.hook_name}` of `{spec}`; "
               f"statistics over {int(s['tokens']):,} stored tokens; {int((s['density'] == 0).sum())} features never fire there.")

    evaluation_view(folder, store)
    chart(figures.density_histogram(s["density"]), "density_all")
    live = s["density"].nonzero()[0]
    default = int(live[0]) if len(live) else 0
    f = int(st.number_input("Feature", 0, c.d_sae - 1, default, key="feature", bind=URL))
    feature_view(sae, store, s, m, f, name)
    token_search(sae, store, m, name)
    prompt_view(sae, m, name)


def evaluation_view(folder: str, store) -> None:
    """The SAE's evaluation (`interp sae eval`, written to SAE_DIR/eval.json), or the command that makes it."""
    path = default_out(folder)
    command = f"interp sae eval {folder} --store {store.dir} --suite core,probing,absorption"
    with st.expander("Evaluation (SAEBench core metrics, sparse probing, absorption)", expanded=path.exists()):
        if not path.exists():
            st.caption(f"Not evaluated yet: `{command}` writes {path}, shown here.")
            return
        result = json.loads(path.read_text())
        st.caption(f"From {path} (suites: {', '.join(result.get('suites', []))}; {result.get('core', {}).get('tokens', 0):,} "
                   f"held-out activations). Rerun `{command}` to refresh it.")
        table([{"metric": k, "value": _num(v)} for k, v in headline(result).items()], "eval_headline")
        for i, (title, rows) in enumerate(evaluation_tables(result).items()):
            st.markdown(f"**{title}**")
            table(rows, f"eval_table_{i}")


def _num(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def feature_link(sae: str, f: int) -> Link:
    """Feature `f` as a link to its page (relative to this page): opening it restores the SAE and the feature."""
    return Link(str(int(f)), f"features?{urlencode({'sae': sae, 'feature': int(f)})}")


def contexts(sae, store, m, f: int, rows: list[int], peak: float, seen: set) -> int:
    """Draw the contexts of store rows (duplicates of an already shown window skipped); return how many were drawn."""
    lines = []
    for r in rows:
        ids, acts, at = F.context(sae, store, int(r), f)
        window = tuple(ids.tolist())
        if window in seen:
            continue
        seen.add(window)
        toks = token_texts(m, ids) if m is not None else [str(int(i)) for i in ids]
        lines.append(context_html(toks, acts, at, peak))
    if lines:
        st.html("".join(lines))
    return len(lines)


def feature_view(sae, store, s, m, f: int, sae_name: str) -> None:
    st.subheader(f"Feature {f}")
    st.markdown(f"Density **{s['density'][f]:.4%}** · mean activation when firing **{s['mean_active'][f]:.3f}**")
    if m is not None:
        st.page_link("views/steering.py", label=f"Steer with feature {f}", icon=":material/tune:",
                     query_params={**model_params(m.spec), "source": "SAE feature", "sae": sae_name, "feature": f})
    left, right = st.columns([3, 2])
    with left:
        rows = [int(r) for r in s["top_rows"][f] if r >= 0]
        if not rows:
            st.info("This feature never fired on the summarised tokens.")
        peak = float(s["top_values"][f].max())
        seen: set = set()
        st.markdown("**Top activations** (the firing token is outlined and centred; ␣ is a space, ⏎ a newline)")
        contexts(sae, store, m, f, rows[:10], peak, seen)
        for title, group in F.quantile_examples(s["sample_values"][f], s["sample_rows"][f]):
            st.markdown(f"**Random firings, {title}**")
            if not contexts(sae, store, m, f, group, peak, seen):
                st.caption("(all already shown above)")
    with right:
        edges = F.HIST_EDGES.numpy()
        chart(figures.bars({"tokens": ([f"{a:.2g}–{b:.2g}" for a, b in zip(edges[:-1], edges[1:])], s["histogram"][f], None)},
                           "Activation histogram", "activation", "tokens"), "hist")
        near_v, near_i = F.nearest_features(sae, f)
        st.markdown("**Nearest features** (decoder cosine)")
        table([{"feature": feature_link(sae_name, i), "decoder cosine": f"{v:.3f}"} for v, i in zip(near_v.tolist(), near_i.tolist())],
              "nearest")
    if m is not None:
        (up_v, up_i), (down_v, down_i) = F.logit_effects(sae, m.W_U, f)
        c1, c2 = st.columns(2)
        c1.dataframe({"promoted token": [visible(t) for t in token_texts(m, up_i)], "logit": up_v.numpy().round(3)}, hide_index=True)
        c2.dataframe({"suppressed token": [visible(t) for t in token_texts(m, down_i)], "logit": (-down_v).numpy().round(3)},
                     hide_index=True)


def token_search(sae, store, m, sae_name: str) -> None:
    st.subheader("Search features by token")
    word = st.text_input("Token (as it appears in text, e.g. ' the' or 'def')", " the", key="search", bind=URL)
    if m is None or not word:
        return
    ids = m.encode(word)
    if len(ids) != 1:
        st.warning(f"{word!r} is {len(ids)} tokens ({m.token_strs(ids)}): search one token at a time.")
        return
    vals, feats, n = F.features_for_token(sae, store, ids[0])
    if n == 0:
        st.info(f"{word!r} does not occur in the summarised tokens.")
        return
    st.caption(f"Mean activation over {n} occurrences.")
    table([{"feature": feature_link(sae_name, i), "mean activation": f"{v:.3f}"} for v, i in zip(vals.tolist(), feats.tolist())],
          "search_results")


def prompt_view(sae, m, sae_name: str) -> None:
    st.subheader("Features on your text")
    if m is None:
        st.info(f"The SAE's model {sae.cfg.model_name!r} cannot be loaded here, so prompts cannot be encoded.")
        return
    text = st.text_area("Text", "def mean(xs):\n    return sum(xs) / len(xs)", key="prompt", bind=URL)
    ids = m.encode(text)
    if not ids:
        return
    tokens = torch.tensor([[m.sink_token_id, *ids]]) if m.sink_token_id is not None else torch.tensor([ids])
    acts = capture(m, tokens, [sae.cfg.hook_name], stop_early=True)[sae.cfg.hook_name][0]  # [pos, d_in]
    skip = acts.norm(dim=1) > sae.cfg.max_norm if sae.cfg.max_norm else None
    sae.eval()
    start = 1 if m.sink_token_id is not None else 0
    with torch.no_grad():
        codes = sae.encode(acts, skip=skip).dense()[start:]  # [pos, d_sae]
    toks = token_labels(sae.cfg.model_name, tokens[0][start:])
    top = codes.max(0).values.topk(min(12, codes.shape[1]))
    feats = [int(j) for v, j in zip(top.values.tolist(), top.indices) if v > 0]
    if feats:
        chart(figures.heatmap(codes[:, feats].T.numpy(), "Strongest features on this text", "token", "feature", x=toks,
                              y=[str(j) for j in feats], colorscale="Oranges", zlabel="activation"), "prompt_features")
    rows = []
    for i, tok in enumerate(toks):
        best = codes[i].topk(5)
        rows.append({"token": tok, "active features": int((codes[i] > 0).sum()),
                     "top features": ", ".join(f"{int(j)} ({v:.2f})" for v, j in zip(best.values.tolist(), best.indices) if v > 0)})
    st.dataframe(rows, hide_index=True)
    if feats:
        table([{"feature": feature_link(sae_name, j), "max activation on this text": f"{v:.3f}"}
               for j, v in zip(feats, top.values.tolist())], "prompt_feature_links")


page(body)
