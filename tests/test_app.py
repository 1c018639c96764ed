"""The dashboard: every page renders with stored runs and with none, without an exception or an
error message, and shows its expected widgets (streamlit's AppTest, no browser)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")
PAGES = ["home", "sinks", "circuits", "features", "dynamics", "function_tokens"]


def open_page(name: str, root: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("INTERP_RUNS", str(root))
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    if name != "home":
        at.switch_page(f"views/{name}.py")
        at.run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("name", PAGES)
def test_pages_render_without_runs(name, tmp_path, monkeypatch):
    at = open_page(name, tmp_path / "empty", monkeypatch)
    assert_clean(at)
    assert at.title[0].value


@pytest.mark.parametrize("name", PAGES)
def test_pages_render_with_stored_runs(name, stored_runs, monkeypatch):
    at = open_page(name, stored_runs, monkeypatch)
    assert_clean(at)
    assert at.title[0].value


def test_home_lists_experiments_and_claims(stored_runs, monkeypatch):
    at = open_page("home", stored_runs, monkeypatch)
    assert_clean(at)
    names = at.dataframe[0].value["experiment"].tolist()
    assert "sinks" in names and "bigram_backcopy" in names
    at.selectbox(key="experiment").select("sinks").run()
    assert_clean(at)
    claims = at.dataframe[1].value
    names = claims["claim"].tolist()
    assert names == [f"{c}[{cond}]" for cond in ("raw", "endoftext")
                     for c in ("sink_rate_pos0", "alpha0_late_layers", "residual_peak", "value_drain")]
    assert all(v not in ("", "None") for v in claims["value"]) and set(claims[""]) <= {"✅", "❌"}
    assert at.button(key="run_sinks")
    assert at.selectbox(key="figure_sinks").options


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


def test_features_page_browses_an_sae(stored_runs, monkeypatch):
    at = open_page("features", stored_runs, monkeypatch)
    assert_clean(at)
    feature = at.number_input(key="feature").value
    assert f"Feature {feature}" in [h.value for h in at.subheader]  # the first feature that fires is shown
    assert "never fired" not in " ".join(i.value for i in at.info)
    assert len(at.dataframe) >= 4  # nearest features, ± logits, token search, prompt view
    at.text_input(key="search").input("def").run()
    assert_clean(at)


def test_dynamics_page_overlays_runs(stored_runs, monkeypatch):
    at = open_page("dynamics", stored_runs, monkeypatch)
    assert_clean(at)
    runs = at.multiselect(key="runs")
    at.multiselect(key="runs").set_value(runs.options[:2]).run()
    assert_clean(at)
    assert at.multiselect(key="metrics").value


def test_circuits_page_patches_smollm2(stored_runs, monkeypatch):
    at = open_page("circuits", stored_runs, monkeypatch)
    at.text_input(key="clean").input("Mary gave John a")
    at.text_input(key="corrupt").input("John gave Mary a")
    at.text_input(key="good").input(" book")
    at.text_input(key="bad").input(" gift")
    at.toggle(key="patch").set_value(True).run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 3  # residual by layer x position, heads, head ablation


def test_home_button_runs_a_quick_mode_in_a_subprocess(tmp_path, monkeypatch):
    at = open_page("home", tmp_path / "runs", monkeypatch)
    at.selectbox(key="experiment").select("scan_snap").run()
    at.button(key="run_scan_snap").click().run()
    assert_clean(at)
    assert at.status[0].label == "interp run scan_snap --quick: exit 0 (all claims passed)"
    at.run()  # the new run is now the latest: its claims show
    assert len(at.dataframe[1].value) >= 3 and set(at.dataframe[1].value[""]) == {"✅"}
