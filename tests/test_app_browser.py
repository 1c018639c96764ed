"""The dashboard in a real browser: `interp app` on a free local port, pages opened in headless Debian
chromium (Playwright drives it), waited on until Streamlit's websocket has delivered the page and its
plotly figures are drawn, screenshotted into the test's folder, and checked for what a researcher
sees: no error, FAIL in red words, the firing token of a feature, signed scales centred on 0, views
restored from their URL, and clicks that drill down. Also: the app starts with no terminal at all."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
# page url path -> does it draw a plotly figure with the fixture runs?
PAGES = {"": True, "sinks": True, "circuits": True, "graphs": True, "lenses": True, "features": True, "steering": False, "dynamics": True,
         "function_tokens": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 60) -> bool:
    end = time.time() + seconds
    while time.time() < end and proc.poll() is None:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                return True
        except OSError:
            time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def server(stored_runs):
    port = free_port()
    env = {**os.environ, "INTERP_RUNS": str(stored_runs)}
    proc = subprocess.Popen([sys.executable, "-m", "interp.cli", "app", "--port", str(port), "--no-browser"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    if not wait_healthy(url, proc):
        proc.kill()
        pytest.fail("the dashboard server did not answer its health check within a minute")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is not installed: `make test` installs it (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


DONE = """() => { const app = document.querySelector('[data-test-script-state]');
    return app && app.dataset.testScriptState === 'notRunning' && !document.querySelector('[data-testid="stSkeleton"]'); }"""


def settle(page, plots: bool = False) -> None:
    """Wait until the page script has finished (Streamlit's script state, no placeholder left) and, if
    asked, a figure is drawn."""
    page.wait_for_selector("h1", timeout=120_000)
    page.wait_for_timeout(300)  # an interaction's rerun starts after its message reaches the server
    page.wait_for_function(DONE, timeout=120_000)
    if plots:
        page.wait_for_selector(".js-plotly-plot .main-svg >> visible=true", timeout=120_000)


def no_errors(page, where: str) -> None:
    text = page.inner_text("body")
    assert page.locator('[data-testid="stException"]').count() == 0, f"{where}: {text[:2000]}"
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0, f"{where}: {text[:2000]}"
    assert "Traceback" not in text, f"{where}: {text[:2000]}"


def open_url(browser, url: str, shot: Path, plots: bool = False, height: int = 1000):
    page = browser.new_page(viewport={"width": 1400, "height": height})
    t0 = time.perf_counter()
    page.goto(url)
    try:
        settle(page, plots)
    finally:
        page.screenshot(path=str(shot), full_page=True)
    return page, time.perf_counter() - t0


def inputs(page, kind: str = "stNumberInput") -> list[str]:
    return page.locator(f'[data-testid="{kind}"] input').evaluate_all("els => els.map(e => e.value)")


def click_cell(page, key: str, col: float, row: float, cols: int, rows: int) -> None:
    """Click the centre of heatmap cell (row, col) of the chart keyed `key` (row 0 at the bottom)."""
    plot = page.locator(f".st-key-{key} .js-plotly-plot").first
    plot.scroll_into_view_if_needed()
    box = plot.locator(".nsewdrag").first.bounding_box()
    x, y = box["x"] + box["width"] * (col + 0.5) / cols, box["y"] + box["height"] * (1 - (row + 0.5) / rows)
    page.mouse.move(x - 4, y)
    page.mouse.move(x, y)
    page.wait_for_timeout(200)
    page.mouse.click(x, y)
    page.wait_for_timeout(800)
    settle(page)


def test_every_page_draws_in_chromium(server, browser, tmp_path):
    seconds: dict[str, list[float]] = {}
    for path, plots in PAGES.items():  # a fresh tab per page: loads the page's models and summaries once
        page, t = open_url(browser, f"{server}/{path}", tmp_path / f"{path or 'home'}.png", plots)
        seconds[path or "home"] = [round(t, 2)]
        no_errors(page, f"/{path}")
        page.close()
    page, _ = open_url(browser, server, tmp_path / "nav.png")
    for path, plots in PAGES.items():  # then as a researcher moves between pages: the sidebar, one tab
        t0 = time.perf_counter()
        page.locator(f'[data-testid="stSidebarNav"] a[href$="/{path}"]').first.click()
        settle(page, plots)
        seconds[path or "home"].append(round(time.perf_counter() - t0, 2))
        no_errors(page, f"/{path} from the sidebar")
    page.close()
    print("seconds to a drawn page, in a new tab and from the sidebar:", seconds)  # reported: the cores are shared
    assert len(list(tmp_path.glob("*.png"))) == len(PAGES) + 1


def test_failed_claims_read_as_red_words(server, browser, tmp_path):
    page, _ = open_url(browser, f"{server}/?experiment=sinks", tmp_path / "verdicts.png")
    fail = page.locator("#claims td.fail").first
    fail.wait_for(state="visible", timeout=60_000)
    assert fail.inner_text() == "FAIL"
    assert fail.evaluate("e => getComputedStyle(e).color") == "rgb(207, 34, 46)"
    heads = page.locator("#experiments th").all_inner_texts()
    row = page.locator("#experiments tr").filter(has=page.locator("td", has_text="sinks").first).first
    cells = dict(zip(heads, row.locator("td").all_inner_texts()))
    assert cells["experiment"] == "sinks" and int(cells["failed claims"]) > 0  # the table counts failed claims
    no_errors(page, "verdicts")


def test_feature_context_shows_its_firing_token(server, browser, tmp_path):
    page, _ = open_url(browser, f"{server}/features", tmp_path / "features.png", plots=True, height=2400)
    fire = page.locator(".context .tok.fire").first
    fire.wait_for(state="visible", timeout=60_000)
    assert fire.inner_text().strip()  # a space or `_` still shows (␣, no italics)
    assert page.locator(".context em, .context i").count() == 0
    box, line = fire.bounding_box(), page.locator(".context").first.bounding_box()
    assert abs((box["x"] + box["width"] / 2) - (line["x"] + line["width"] / 2)) < 0.1 * line["width"]  # centred


def test_urls_restore_views_and_clicks_drill_down(server, browser, tmp_path, tiny_llama_dir):
    # sinks: the URL sets layer and head; a click on an α₀ cell opens that head and goes into the URL
    page, _ = open_url(browser, f"{server}/sinks?layer=4&head=1", tmp_path / "sinks_url.png", plots=True)
    assert inputs(page)[:2] == ["4", "1"]
    click_cell(page, "alpha0", col=7, row=25, cols=9, rows=30)
    assert inputs(page)[:2] == ["25", "7"] and "layer=25" in page.url and "head=7" in page.url
    tok = page.locator(".atok").nth(3)
    tok.hover()
    page.wait_for_timeout(200)
    assert page.locator(".atok").nth(1).evaluate("e => e.style.background").startswith("rgba(255, 140, 0")
    page.screenshot(path=str(tmp_path / "sinks_click.png"))
    page.close()

    # circuits on a local folder from the URL: attribution centres its signed scales; a head cell opens the head
    q = urllib.parse.urlencode({"model": "local folder", "model_folder": str(tiny_llama_dir), "clean": "When Mary and John went out, John gave it to",
                                "corrupt": "When Mary and John went out, Mary gave it to"})
    page, _ = open_url(browser, f"{server}/circuits?{q}", tmp_path / "circuits_url.png")
    folder, clean, good, corrupt, bad = inputs(page, "stTextInput")  # the two columns: clean + answer, corrupted + answer
    assert (folder, clean, corrupt) == (str(tiny_llama_dir), "When Mary and John went out, John gave it to",
                                        "When Mary and John went out, Mary gave it to")
    page.wait_for_selector(".st-key-heads .js-plotly-plot .main-svg", timeout=120_000)  # attribution: no button
    settle(page)
    for key in ("heads", "mlp"):
        assert page.locator(f".st-key-{key} .js-plotly-plot").evaluate("e => e.data[0].zmid") == 0
    click_cell(page, "heads", col=2, row=1, cols=4, rows=2)
    assert inputs(page)[-2:] == ["1", "2"] and "pl=1" in page.url and "ph=2" in page.url
    page.screenshot(path=str(tmp_path / "circuits_click.png"), full_page=True)
    page.close()

    # features: the URL opens a feature; a feature id is a link to its page, in this tab
    page, _ = open_url(browser, f"{server}/features?feature=3", tmp_path / "features_url.png", plots=True)
    assert inputs(page)[0] == "3" and page.locator("h3", has_text="Feature 3").count() == 1
    link = page.locator("#nearest a").first
    target = link.inner_text()
    link.click()
    page.wait_for_url(f"**feature={target}**")
    settle(page, plots=True)
    assert inputs(page)[0] == target and page.locator("h3", has_text=f"Feature {target}").count() == 1
    page.screenshot(path=str(tmp_path / "features_link.png"))
    page.close()

    # attribution graph: a click on a feature node selects it (into the URL) and opens its clamp
    page, _ = open_url(browser, f"{server}/graphs?node_t=1.0", tmp_path / "graph_url.png", plots=True)
    point = page.locator(".st-key-graph_plot .js-plotly-plot").evaluate("""e => {
        const i = e.data.findIndex(t => t.name === 'transcoder feature');
        const trace = [...e.querySelectorAll('.scatterlayer .trace')].find(g => g.__data__[0].trace.index === i);
        const r = trace.querySelector('path.point').getBoundingClientRect();
        return {x: r.x + r.width / 2, y: r.y + r.height / 2, ids: e.data[i].customdata.map(c => c[0])}; }""")
    page.mouse.move(point["x"] - 4, point["y"])
    page.mouse.move(point["x"], point["y"])
    page.wait_for_timeout(200)
    page.mouse.click(point["x"], point["y"])
    page.wait_for_timeout(800)
    settle(page)
    picked = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)["node"][0]
    assert picked in point["ids"]  # a feature node (markers of one cell overlap: the topmost one under the pointer)
    layer, feature, pos = picked.split("_")
    assert page.locator("h3", has_text=f"L{layer} feature {feature} @ pos {pos}").count() == 1
    assert "measured change" in page.inner_text("body")
    no_errors(page, "/graphs after a click")
    page.screenshot(path=str(tmp_path / "graph_click.png"), full_page=True)
    page.close()

    # the experiments page and the dynamics page restore their choices too
    page, _ = open_url(browser, f"{server}/?experiment=bigram_backcopy", tmp_path / "home_url.png")
    assert "PARTIAL run" in page.inner_text("body")
    page.close()
    page, _ = open_url(browser, f"{server}/dynamics?log_y=true", tmp_path / "dynamics_url.png", plots=True)
    assert page.locator('[data-testid="stCheckbox"] input').first.is_checked()
    page.close()


def test_the_demo_starts_the_dashboard_without_asking_anything(tmp_path):
    """`make demo` / `make app` end in `interp app` (no --no-browser). With no terminal and a fresh home
    (no streamlit credentials), it must serve at once: a first-run e-mail prompt would end it."""
    from interp.models import cache_root

    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path), "INTERP_CACHE": str(cache_root()), "INTERP_RUNS": str(tmp_path / "runs")}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    proc = subprocess.Popen(["make", "--no-print-directory", "app", f"APP_ARGS=--port {port}"], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        up = wait_healthy(f"http://127.0.0.1:{port}", proc, 90)
        alive = proc.poll() is None
    finally:
        os.killpg(proc.pid, 15)
        out = proc.communicate(timeout=20)[0].decode(errors="replace")
    assert up and alive, out[-3000:]
    assert f"dashboard on http://127.0.0.1:{port}" in out and "Email" not in out
