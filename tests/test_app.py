"""The dashboard: every page renders with stored runs and with none, without an exception or an
error message, and shows what a researcher needs to trust it (streamlit's AppTest, no browser):
verdicts as words, signed scales centred on 0, one colour per run, any run with its facts, views
restored from the URL, links that carry the state, escaped tokens with visible whitespace."""

import html
import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")
PAGES = ["home", "sinks", "circuits", "graphs", "lenses", "features", "steering", "dynamics", "function_tokens"]


def open_page(name: str, root: Path, monkeypatch, query: dict | None = None) -> AppTest:
    monkeypatch.setenv("INTERP_RUNS", str(root))
    at = AppTest.from_file(MAIN, default_timeout=120)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    if name != "home":
        at.switch_page(f"views/{name}.py")
        at.run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def tables(at: AppTest) -> dict[str, list[dict]]:
    """The page's HTML tables (app.common.table) by id, as rows of cell texts."""
    out = {}
    for h in at.get("html"):
        body = h.proto.body
        m = re.search(r'<table class="interp-table" id="([^"]+)"', body)
        if m:
            heads = [html.unescape(x) for x in re.findall(r"<th>(.*?)</th>", body)]
            rows = [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
                    for tr in re.findall(r"<tr>(<td.*?)</tr>", body)]
            out[m.group(1)] = [dict(zip(heads, r)) for r in rows]
    return out


def links(at: AppTest, table: str) -> list[str]:
    body = next(h.proto.body for h in at.get("html") if f'id="{table}"' in h.proto.body)
    return [html.unescape(h) for h in re.findall(r'<a href="([^"]+)"', body)]


def charts(at: AppTest) -> dict[str, dict]:
    """Every plotly figure on the page by its element key."""
    return {c.proto.id.split("-", 2)[-1]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}  # id: $$ID-<hash>-<key>


def text_of(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "subheader", "warning", "info", "success") for e in at.get(kind)]
    return "\n".join(str(p) for p in parts) + "\n".join(h.proto.body for h in at.get("html"))


@pytest.mark.parametrize("name", PAGES)
def test_pages_render_without_runs(name, tmp_path, monkeypatch):
    at = open_page(name, tmp_path / "empty", monkeypatch)
    assert_clean(at)
    assert at.title[0].value


@pytest.mark.parametrize("name", PAGES)
def test_pages_render_with_stored_runs_and_every_figure_downloads(name, stored_runs, monkeypatch):
    at = open_page(name, stored_runs, monkeypatch)
    assert_clean(at)
    assert at.title[0].value
    buttons = {b.key for b in at.get("download_button")}
    assert {f"download_{k}" for k in charts(at)} <= buttons  # every figure has its data button beside it
    assert not re.search("[✅❌]", text_of(at))  # verdicts are words, never emoji


# ------------------------------------------------------------------------------ experiments page


def test_home_shows_verdicts_as_words_and_counts_failures(stored_runs, monkeypatch):
    at = open_page("home", stored_runs, monkeypatch)
    assert_clean(at)
    experiments = {r["experiment"]: r for r in tables(at)["experiments"]}
    assert "sinks" in experiments and "bigram_backcopy" in experiments
    assert int(experiments["sinks"]["failed claims"]) > 0  # the newest sinks run is the random Llama's
    assert experiments["bigram_backcopy"]["claims passed"] == "no complete run"
    at.selectbox(key="experiment").select("sinks").run()
    claims = tables(at)["claims"]
    assert [c["claim"] for c in claims] == [f"{c}[{cond}]" for cond in ("raw", "endoftext")
                                            for c in ("sink_rate_pos0", "alpha0_late_layers", "residual_peak", "value_drain")]
    assert {c["verdict"] for c in claims} <= {"PASS", "FAIL"} and "FAIL" in {c["verdict"] for c in claims}
    assert all(c["value"] not in ("", "None") for c in claims) and claims[0]["threshold"].startswith(">=")
    body = next(h.proto.body for h in at.get("html") if 'id="claims"' in h.proto.body)
    assert 'class="fail" style="color: #cf222e' in body  # FAIL in red


def test_home_picks_any_run_with_its_facts_compares_and_marks_partial(stored_runs, monkeypatch):
    at = open_page("home", stored_runs, monkeypatch, {"experiment": "sinks"})
    from interp.runs import list_runs

    picker = at.selectbox(key="run")
    assert len(picker.options) == 2  # both sinks runs, not only the latest
    smol = next(r.dir.name for r in list_runs(stored_runs) if r.experiment == "sinks" and r.config["model"] == "smollm2-135m")
    picker.select(smol).run()
    assert_clean(at)
    facts = tables(at)["run_facts"][0]
    assert facts["model"] == "smollm2-135m" and facts["quick"] == "yes" and facts["status"] == "complete"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", facts["date"]) and float(facts["seconds"]) >= 0 and facts["seed"] == "0"
    other = at.multiselect(key="compare")
    other.set_value(other.options[:1]).run()
    side = tables(at)["compare_claims"]
    verdict_cols = [c for c in side[0] if c != "claim" and not c.endswith("value")]
    assert len(verdict_cols) == 2 and any("tiny-llama" in c for c in verdict_cols) and any("smollm2" in c for c in verdict_cols)
    assert all(row[c] in ("PASS", "FAIL") for row in side for c in verdict_cols)

    at.selectbox(key="experiment").select("bigram_backcopy").run()
    assert_clean(at)
    assert "PARTIAL run" in at.warning[0].value
    assert tables(at)["run_facts"][0]["status"].startswith("partial")


def test_home_button_streams_a_quick_run_and_shows_it_without_a_reload(tmp_path, monkeypatch):
    at = open_page("home", tmp_path / "runs", monkeypatch)
    at.selectbox(key="experiment").select("scan_snap").run()
    at.button(key="run_scan_snap").click().run()
    assert_clean(at)
    assert at.success[0].value == "interp run scan_snap --quick: exit 0 (all claims passed)"
    assert len(at.code[0].value.splitlines()) > 3  # the output, line by line, not only the last line
    claims = tables(at)["claims"]  # the new run is shown at once: no extra rerun
    assert len(claims) >= 3 and {c["verdict"] for c in claims} == {"PASS"}
    assert tables(at)["run_facts"][0]["quick"] == "yes"


# --------------------------------------------------------------------------------- sinks page


def test_sinks_page_probes_smollm2_and_toy(stored_runs, monkeypatch):
    at = open_page("sinks", stored_runs, monkeypatch)
    assert_clean(at)
    assert at.number_input(key="layer").value == 15 and at.select_slider(key="gamma").value == 2.0
    assert "position 0 holds" in at.caption[0].value
    at.checkbox(key="prepend").check().run()
    assert_clean(at)
    assert "<|endoftext|>" in " ".join(c.value for c in at.caption)
    toy = next(o for o in at.selectbox(key="model").options if o.startswith("toy"))
    at.selectbox(key="model").select(toy).run()
    assert_clean(at)
    assert "position 0 holds `<bos>`" in at.caption[0].value  # a toy model's default prompt starts with its BOS


def test_sinks_attention_view_reads_like_circuitsvis(stored_runs, monkeypatch):
    at = open_page("sinks", stored_runs, monkeypatch, {"layer": "3", "head": "2"})
    assert_clean(at)
    n = int(re.match(r"(\d+) tokens", at.caption[0].value).group(1))
    figs = charts(at)
    pattern = next(f for k, f in figs.items() if k == "pattern")
    assert pattern["layout"]["yaxis"]["autorange"] == "reversed"  # query 0 at the top
    assert len(pattern["layout"]["yaxis"]["tickvals"]) == n  # every token labelled
    tip = pattern["data"][0]["hovertemplate"]
    assert all(w in tip for w in ("layer 3", "head 2", "query", "key", "attention"))
    layer = next(f for k, f in figs.items() if k == "pattern_layer")
    assert len([t for t in layer["data"] if t["type"] == "heatmap"]) == 9  # every head of the layer side by side
    hover = next(h.proto.body for h in at.get("html") if "atok" in h.proto.body)
    assert hover.count('class="atok"') == n and "what attends to it" in hover

    at.text_area(key="text").input("A much longer prompt " * 6).run()
    taller = next(f for k, f in charts(at).items() if k == "pattern")
    assert taller["layout"]["height"] > pattern["layout"]["height"]  # the height grows with the prompt
    at.checkbox(key="hide0").check().run()
    hidden = next(f for k, f in charts(at).items() if k == "pattern")["data"][0]
    assert len(hidden["x"]) == len(taller["data"][0]["x"]) - 1 and not hidden["x"][0].startswith("0:")
    assert all(abs(sum(row) - 1) < 1e-3 for row in hidden["z"])  # renormalised without position 0


def test_every_signed_heatmap_is_centred_on_zero():
    from plotly.graph_objects import Figure, Heatmap

    from interp import figures

    fig = figures.heatmap([[-1.0, 0.2], [0.1, 0.05]], "ablation", "head", "layer")
    assert fig.data[0].zmid == 0 and fig.data[0].colorscale[0][1] == "rgb(103,0,31)"  # diverging, white at 0
    ranged = figures.heatmap([[-0.2, 0.9]], "restored", "pos", "layer", zmin=-1, zmax=2)
    assert (ranged.data[0].zmin, ranged.data[0].zmax) == (-2, 2)
    assert figures.heatmap([[0.1, 0.9]], "α", "h", "l").data[0].zmid is None  # one-signed data keeps its scale
    old = Figure(Heatmap(z=[[-3.0, 0.5], [0.2, 0.1]], colorscale="RdBu"))  # as stored by older runs: white near −1.25
    fixed = figures.centre_signed(old).data[0]
    assert fixed.zmid == 0 and fixed.zauto


def test_figure_data_downloads_a_heatmap_as_csv_and_lines_as_json():
    from app.common import figure_data
    from interp import figures

    grid = figures.clickable(figures.heatmap([[0.1, -0.2], [0.3, 0.4]], "t", "head", "layer", x=["h0", "h1"], y=["L0", "L1"]))
    text, ext, _ = figure_data(grid)
    assert ext == "csv" and text.splitlines() == ["layer,h0,h1", "L0,0.1,-0.2", "L1,0.3,0.4"]
    text, ext, _ = figure_data(figures.lines({"a": [1, 2], "b": [3, 4]}, "t", "step", "loss"))
    traces = json.loads(text)["traces"]
    assert ext == "json" and [t["name"] for t in traces] == ["a", "b"] and traces[1]["y"] == [3, 4]


# ------------------------------------------------------------------------------- circuits page


def test_circuits_page_checks_prompts_and_shows_toy_circuits(stored_runs, monkeypatch):
    at = open_page("circuits", stored_runs, monkeypatch)
    assert_clean(at)
    at.text_input(key="corrupt").input("When Mary went to the store, Mary gave a drink to").run()
    assert "same length" in at.error[0].value  # bad input is a message, not a traceback
    toy = next(o for o in at.selectbox(key="model").options if o.startswith("toy"))
    at.selectbox(key="model").select(toy).run()
    assert_clean(at)
    assert "attn to t−1 from triggers" in at.dataframe[0].value.columns
    icl = next(o for o in at.selectbox(key="model").options if o.startswith("icl"))
    at.selectbox(key="model").select(icl).run()
    assert_clean(at)
    measures = at.dataframe[0].value
    assert "induction_L2" in measures["measure"].tolist() and len(at.get("plotly_chart")) == 2


def test_model_picker_offers_named_models_and_a_local_folder(stored_runs, monkeypatch, tiny_llama_dir):
    from interp.models import REAL_MODELS

    at = open_page("sinks", stored_runs, monkeypatch)
    options = at.selectbox(key="model").options
    assert set(REAL_MODELS) <= set(options) and "local folder" in options
    at.selectbox(key="model").select("local folder").run()
    assert_clean(at)
    at.text_input(key="model_folder").input(str(tiny_llama_dir)).run()
    assert_clean(at)
    assert at.number_input(key="layer").max == 1  # the 2-layer Llama's own shape
    at.text_input(key="model_folder").input(str(tiny_llama_dir / "nope")).run()
    assert "is not a folder" in at.error[0].value


def test_attribution_is_the_default_and_activation_patching_verifies_it(stored_runs, monkeypatch, tiny_llama_dir):
    at = open_page("circuits", stored_runs, monkeypatch, {"model": "local folder", "model_folder": str(tiny_llama_dir)})
    assert_clean(at)
    said = " ".join(m.value for m in at.markdown)
    assert re.search(r"clean \*\*-?\d+\.\d+\*\*, corrupted \*\*-?\d+\.\d+\*\*", said) and "atp*" in said
    assert "Not validated on this model" in " ".join(c.value for c in at.caption)  # no validation run for this folder
    figs = charts(at)
    assert {"heads", "mlp", "head_clean", "head_corrupted"} <= set(figs) and "resid" not in figs  # exact views wait for a click
    for f in figs.values():  # every signed heatmap centres its scale at 0
        for t in f["data"]:
            if t["type"] == "heatmap" and min(map(min, t["z"])) < 0 < max(map(max, t["z"])):
                assert t["zmid"] == 0 and t.get("zmin") in (None, -t.get("zmax", 0))
    at.number_input(key="verify_n").set_value(3).run()
    at.button(key="verify").click().run()
    assert_clean(at)
    rows = at.get("html")  # the verification table: attribution beside the patched score, per cell
    text = " ".join(h.proto.body for h in rows)
    assert text.count("<tr>") >= 1 + 6 and "activation patching" in text
    at.button(key="resid_go").click().run()
    at.button(key="ablate_go").click().run()
    assert_clean(at)
    assert {"resid", "ablate"} <= set(charts(at))
    heads = charts(at)["heads"]["data"][0]["z"]
    at.radio(key="method").set_value(at.radio(key="method").options[1]).run()
    assert_clean(at)
    assert "by **atp**" in " ".join(m.value for m in at.markdown)
    at.radio(key="direction").set_value(at.radio(key="direction").options[1]).run()
    assert_clean(at)
    noised = charts(at)["heads"]["data"][0]["z"]
    assert noised != heads and "Noising" in " ".join(m.value for m in at.markdown)


# ------------------------------------------------------------------------------- lenses page


def test_lens_page_maps_top_tokens_and_trains_the_tuned_lens_on_a_button(stored_runs, monkeypatch, tiny_llama_dir, tmp_path):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))  # no tuned lens cached for the tiny model
    at = open_page("lenses", stored_runs, monkeypatch, {"model": "local folder", "model_folder": str(tiny_llama_dir),
                                                        "text": "Mary gave John a", "token": " book"})
    assert_clean(at)
    figs = charts(at)
    assert set(figs) == {"lens_top", "lens_kl", "lens_token"}
    top = figs["lens_top"]["data"][0]
    assert len(top["z"]) == 3 and len(top["text"]) == 3 and len(top["x"]) == len(top["text"][0])  # embed + 2 blocks
    assert max(figs["lens_kl"]["data"][0]["z"][-1]) < 1e-4  # the last layer is the model's output
    at.radio(key="lens").set_value("tuned lens").run()
    assert_clean(at)
    assert "No tuned lens is cached" in at.info[0].value and not at.get("plotly_chart")
    at.button(key="train").click().run()
    assert_clean(at)
    assert "tuned lens" in charts(at)["lens_top"]["layout"]["title"]["text"]
    at.text_input(key="token").input(" Mary Ann").run()
    assert "not one" in at.error[0].value


# ------------------------------------------------------------------------------- steering page


def test_steering_compares_continuations_with_a_caa_vector_and_an_sae_feature(stored_runs, monkeypatch, tiny_llama_dir):
    at = open_page("steering", stored_runs, monkeypatch, {"model": "local folder", "model_folder": str(tiny_llama_dir),
                                                          "layer": "1", "tokens": "4", "alpha": "50"})
    assert_clean(at)
    assert at.text_area(key="positives").value.count("\n") == 31  # the repository's reviews, 32 a side
    assert "Mean difference of `blocks.1.hook_resid_post`" in " ".join(c.value for c in at.caption)
    at.button(key="generate").click().run()
    assert_clean(at)
    rows = tables(at)["continuations"]
    assert [r["decoding"] for r in rows] == ["greedy", "sampled"] and all(r["steered"] != r["unsteered"] for r in rows[:1])
    at.radio(key="source").set_value("SAE feature").run()
    assert "not tiny" not in text_of(at) and "reads smollm2-135m" in at.error[0].value  # the stored SAE is SmolLM2's
    at = open_page("steering", stored_runs, monkeypatch, {"source": "SAE feature", "feature": "3", "tokens": "3",
                                                          "alpha": "20"})
    at.button(key="generate").click().run()
    assert_clean(at)
    assert "W_dec[feature] is added" in text_of(at) and len(tables(at)["continuations"]) == 2
    at.toggle(key="clamp").set_value(True).run()
    assert "set to α" in text_of(at)


# ------------------------------------------------------------------------------- features page


def test_features_page_browses_an_sae(stored_runs, monkeypatch):
    at = open_page("features", stored_runs, monkeypatch)
    assert_clean(at)
    feature = at.number_input(key="feature").value
    assert f"Feature {feature}" in [h.value for h in at.subheader]  # the first feature that fires is shown
    assert "never fired" not in " ".join(i.value for i in at.info)
    found = tables(at)
    assert len(found["nearest"]) == 10 and found["search_results"] and found["prompt_feature_links"]
    # the SAE's evaluation (SAE_DIR/eval.json) beside the browser, with SAEBench's headline numbers
    headline = {r["metric"]: r["value"] for r in found["eval_headline"]}
    assert 0 < float(headline["explained variance"]) < 1 and float(headline["L0"]) == 8 and "CE score" in headline
    assert len(at.dataframe) >= 3  # ± logits, prompt view
    at.text_input(key="search").input("def").run()
    assert_clean(at)


def test_feature_contexts_show_the_firing_token(stored_runs, monkeypatch):
    at = open_page("features", stored_runs, monkeypatch)
    contexts = [h.proto.body for h in at.get("html") if 'class="context"' in h.proto.body]
    lines = [ln for body in contexts for ln in body.split('<div class="context"')[1:]]
    assert len(lines) >= 3
    for ln in lines:
        assert ln.count('class="tok fire"') == 1  # one firing token per line, in the middle column
        assert re.search(r'<div style="flex:none"><span class="tok fire"', ln)
    windows = [re.sub(r"<sup.*?</sup>|<[^>]+>", "", ln) for ln in lines]
    assert len(windows) == len(set(windows))  # duplicates removed
    assert "Random firings, quantile 75–100%" in text_of(at) and "quantile 0–25%" in text_of(at)
    logits = [t for d in at.dataframe if "promoted token" in d.value.columns for t in d.value["promoted token"]]
    assert logits and not any(t != t.strip() for t in logits)  # whitespace tokens visible, not blank
    figs = charts(at)
    heat = next(f for k, f in figs.items() if k == "prompt_features")["data"][0]
    assert len(heat["x"]) > 5 and len(heat["y"]) >= 1  # token × feature heatmap of the user's text


def test_feature_ids_link_to_their_feature_page_and_the_url_restores_it(stored_runs, monkeypatch):
    at = open_page("features", stored_runs, monkeypatch)
    sae = at.selectbox(key="sae").value
    for table in ("nearest", "search_results", "prompt_feature_links"):  # a feature id anywhere is a link
        ids, urls = [r["feature"] for r in tables(at)[table]], links(at, table)
        assert len(urls) == len(ids) and all(u == f"features?sae={sae.replace('/', '%2F')}&feature={i}" for u, i in zip(urls, ids))
    target = int(tables(at)["nearest"][0]["feature"])
    shared = open_page("features", stored_runs, monkeypatch, {"sae": sae, "feature": str(target)})
    assert_clean(shared)
    assert f"Feature {target}" in [h.value for h in shared.subheader]


def test_token_rendering_escapes_and_shows_whitespace():
    from app.tokens import context_html, visible

    assert visible(" is_file\n\t") == "␣is_file⏎⇥" and visible("") == "∅"
    line = context_html(["def", " is", "_", "<b>", " "], [0.0, 0.5, 2.0, 0.0, 1.0], centre=2, peak=2.0)
    assert "<b>" not in line and "&lt;b&gt;" in line  # escaped, never Markdown or raw HTML
    assert '<span class="tok fire"' in line and ">_<sup" in line and "2.00</sup>" in line  # the value on the token
    assert "␣is" in line and ">␣<sup" in line  # a space token shows as ␣ with its activation


# ------------------------------------------------------------------------------ dynamics page


def test_dynamics_page_keeps_one_colour_per_run(stored_runs, monkeypatch):
    at = open_page("dynamics", stored_runs, monkeypatch)
    assert_clean(at)
    runs = at.multiselect(key="runs")
    icl = [o for o in runs.options if o.startswith("icl_classification")]
    assert len(icl) == 2
    at.multiselect(key="runs").set_value(icl).run()
    keys = at.multiselect(key="metrics").options
    at.multiselect(key="metrics").set_value(keys[:3]).run()
    assert_clean(at)
    colours: dict[str, set] = {}
    for fig in charts(at).values():
        for t in fig["data"]:
            colours.setdefault(t["name"], set()).add(t["line"]["color"])
    assert set(colours) == set(icl) and all(len(c) == 1 for c in colours.values())  # one colour per run everywhere
    assert len({next(iter(c)) for c in colours.values()}) == 2  # and different runs differ


# ------------------------------------------------------------------------------------ the URL


def test_every_page_restores_its_view_from_the_url(stored_runs, monkeypatch):
    from interp.runs import list_runs

    smol = next(r.dir.name for r in list_runs(stored_runs) if r.experiment == "sinks" and r.config["model"] == "smollm2-135m")
    at = open_page("home", stored_runs, monkeypatch, {"experiment": "sinks", "run": smol})
    assert at.selectbox(key="experiment").value == "sinks" and at.selectbox(key="run").value == smol
    at = open_page("sinks", stored_runs, monkeypatch, {"text": "Paris is the capital of France", "layer": "7", "head": "4", "hide0": "true"})
    assert_clean(at)
    assert (at.number_input(key="layer").value, at.number_input(key="head").value, at.checkbox(key="hide0").value) == (7, 4, True)
    assert at.text_area(key="text").value == "Paris is the capital of France"
    at = open_page("circuits", stored_runs, monkeypatch, {"clean": "Mary gave John a", "corrupt": "John gave Mary a"})
    assert (at.text_input(key="clean").value, at.text_input(key="corrupt").value) == ("Mary gave John a", "John gave Mary a")
    label = next(o for o in open_page("dynamics", stored_runs, monkeypatch).multiselect(key="runs").options if o.startswith("icl"))
    at = open_page("dynamics", stored_runs, monkeypatch, {"runs": label})
    assert at.multiselect(key="runs").value == [label]


def test_circuits_page_patches_smollm2(stored_runs, monkeypatch):
    at = open_page("circuits", stored_runs, monkeypatch)
    at.text_input(key="clean").input("Mary gave John a")
    at.text_input(key="corrupt").input("John gave Mary a")
    at.text_input(key="good").input(" book")
    at.text_input(key="bad").input(" gift").run()
    assert_clean(at)
    assert set(charts(at)) == {"heads", "mlp", "head_clean", "head_corrupted"}  # attribution maps, one head on both prompts


def test_sinks_page_on_a_gemma3_folder_starts_prompts_with_its_bos(stored_runs, monkeypatch, tmp_path):
    """A (tiny, random) Gemma-3 folder: sliding-window and global layers, GQA 4:1, a tokenizer that puts
    its BOS first. The page renders, and prepends that BOS by default, saying why."""
    from tiny_models import make_tiny

    folder = make_tiny(tmp_path / "gemma3", "gemma3", add_bos=True)
    at = open_page("sinks", stored_runs, monkeypatch, {"model": "local folder", "model_folder": str(folder),
                                                       "text": "Sinks soak up attention."})  # bytes: the context is 64
    assert_clean(at)
    assert at.checkbox(key="prepend").value is True and "trained with" in at.checkbox(key="prepend").label
    assert "position 0 holds `<|endoftext|>`" in at.caption[0].value  # the byte tokenizer's BOS
    assert at.number_input(key="layer").max == 1 and "alpha0" in charts(at)
    at.checkbox(key="prepend").uncheck().run()
    assert_clean(at)
    at.switch_page("views/circuits.py").run()
    assert_clean(at)
