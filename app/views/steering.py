"""Steering: add a contrastive (CAA) vector or an SAE feature's direction to the residual stream and read
the unsteered and steered continuations side by side, greedy and sampled."""

import json

import streamlit as st

from app.common import URL, label, model, page, pick_model, table
from interp import InterpError
from interp.runs import runs_root
from interp.sae import features as F
from interp.sae.io import load_sae
from interp.steering import caa_vector, compare, feature_steering, steer

CAA, FEATURE = "CAA vector (two prompt lists)", "SAE feature"


@st.cache_data(show_spinner=False, max_entries=4)
def repo_contrast(n: int) -> tuple[str, str]:
    """Positive and negative reviews from the repository's sentiment data (through the registry: the app
    never imports an experiment), one per line."""
    from interp.registry import experiment

    pos, neg = experiment("steering").contrast_sets(n)
    return "\n".join(pos), "\n".join(neg)


@st.cache_resource(show_spinner="Building the CAA vector: a forward over each prompt list…", max_entries=8)
def vector(spec: str, positives: str, negatives: str, layer: int):
    lines = lambda text: [x.strip() for x in text.splitlines() if x.strip()]  # noqa: E731
    return caa_vector(model(spec), lines(positives), lines(negatives), layer)


@st.cache_resource(show_spinner="Loading the SAE…", max_entries=4)
def sae_of(folder: str):
    return load_sae(folder).eval()


@st.cache_data(show_spinner="Generating: one forward per new token, four continuations…", max_entries=16)
def continuations(spec: str, prompt: str, source: tuple, alpha: float, tokens: int, seed: int) -> dict:
    m = model(spec)
    if source[0] == CAA:
        _, positives, negatives, layer = source
        patch = steer(m, vector(spec, positives, negatives, layer), alpha)
    else:
        _, folder, feature, clamp = source
        sae = sae_of(folder)
        patch = feature_steering(m, sae, feature, value=alpha) if clamp else feature_steering(m, sae, feature, alpha=alpha)
    out = compare(m, prompt, patch, tokens, seed)
    return {mode: {k: c.asdict() for k, c in pair.items()} for mode, pair in out.items()}


def body() -> None:
    st.title("Steering")
    spec = pick_model()
    m = model(spec)
    prompt = st.text_input("Prompt", "I watched the film last night and I thought it was", key="prompt", bind=URL)
    how = st.radio("Steer with", [CAA, FEATURE], horizontal=True, key="source", bind=URL)
    if how == CAA:
        layer = int(st.number_input("Layer (blocks.L.hook_resid_post)", 0, m.info.n_layers - 1, min(12, m.info.n_layers - 1),
                                    key="layer", bind=URL))
        pos_default, neg_default = repo_contrast(32)
        c1, c2 = st.columns(2)
        positives = c1.text_area("Positive prompts, one per line (default: the repository's positive reviews)", pos_default,
                                 key="positives", height=160)
        negatives = c2.text_area("Negative prompts, one per line", neg_default, key="negatives", height=160)
        v = vector(spec, positives, negatives, layer)
        st.caption(f"Mean difference of `{v.hook}` at each prompt's last token over {v.info['n_positive']} positive and "
                   f"{v.info['n_negative']} negative prompts: ‖v‖ = {float(v.vector.norm()):.2f}, against a mean "
                   f"‖activation‖ of {v.info['resid_norm']:.1f} there. α = 1 adds the average gap once.")
        source = (CAA, positives, negatives, layer)
    else:
        dirs = [d for d in F.sae_dirs(runs_root())]
        if not dirs:
            st.info("No SAE yet: `interp sae train --store STORE` trains one; the Features page browses it.")
            return
        labels = {label(d): d for d in dirs}
        name = st.selectbox("SAE", list(labels), key="sae", bind=URL)
        sae = sae_of(str(labels[name]))
        if sae.cfg.model_name and sae.cfg.model_name != spec:
            raise InterpError(f"This SAE reads {sae.cfg.model_name}, not {spec}: pick that model above.")
        feature = int(st.number_input("Feature", 0, sae.cfg.d_sae - 1, 0, key="feature", bind=URL))
        clamp = st.toggle("Clamp the feature to α (instead of adding α × its decoder row)", key="clamp", bind=URL)
        st.caption(f"`{sae.cfg.hook_name}`: " + ("the feature is set to α at every position, the SAE's error term kept"
                                                 if clamp else "α × W_dec[feature] is added at every position"))
        source = (FEATURE, str(labels[name]), feature, clamp)
    c1, c2, c3 = st.columns(3)
    alpha = float(c1.number_input("α", -100.0, 100.0, 1.0, step=0.5, key="alpha", bind=URL))
    tokens = int(c2.number_input("New tokens", 1, 64, 20, key="tokens", bind=URL))
    seed = int(c3.number_input("Sampling seed", 0, 10_000, 0, key="seed", bind=URL))
    if st.button("Generate both continuations", key="generate", type="primary"):
        st.session_state["steered"] = (spec, prompt, source, alpha, tokens, seed)
    if st.session_state.get("steered") != (spec, prompt, source, alpha, tokens, seed):
        st.info("Press “Generate both continuations” to continue the prompt with and without steering.")
        return
    out = continuations(spec, prompt, source, alpha, tokens, seed)
    table([{"decoding": mode, "unsteered": pair["unsteered"]["text"], "steered": pair["steered"]["text"]}
           for mode, pair in out.items()], "continuations")
    st.caption(f"Sampled at temperature 1 from seed {seed} (both columns from the same seed). A continuation stops at "
               "the model's end-of-text token or after the tokens asked for.")
    st.download_button("Download the continuations", json.dumps({"model": spec, "prompt": prompt, "alpha": alpha,
                                                                 "source": [str(x) for x in source], **out}, indent=1),
                       file_name="steering.json", mime="application/json", key="download_steering", on_click="ignore",
                       type="tertiary", icon=":material/download:")


page(body)
