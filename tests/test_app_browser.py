"""The dashboard in a real browser: `interp app` on a free local port, each page opened in headless
Debian chromium (Playwright drives it), waited on until Streamlit's websocket has delivered the page
and its plotly figures are drawn, screenshotted into the test's folder, and checked for any visible
error or exception."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# page url path -> does it draw a plotly figure with the fixture runs?
PAGES = {"": True, "sinks": True, "circuits": False, "features": True, "dynamics": True, "function_tokens": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(stored_runs):
    port = free_port()
    env = {**os.environ, "INTERP_RUNS": str(stored_runs)}
    proc = subprocess.Popen([sys.executable, "-m", "interp.cli", "app", "--port", str(port), "--no-browser"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the dashboard server did not answer its health check within a minute")
    yield url
    proc.terminate()
    proc.wait(10)


def test_every_page_draws_in_chromium(server, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is not installed: `make test` installs it (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for path, plots in PAGES.items():
            shot = tmp_path / f"{path or 'home'}.png"
            page.goto(f"{server}/{path}")
            try:
                page.wait_for_selector("h1", timeout=120_000)  # the websocket is up and the page script has run
                if plots:
                    page.wait_for_selector(".js-plotly-plot .main-svg >> visible=true", timeout=120_000)
                page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)
            finally:
                page.wait_for_timeout(500)
                page.screenshot(path=str(shot), full_page=True)
            text = page.inner_text("body")
            assert page.locator('[data-testid="stException"]').count() == 0, f"/{path}: {text[:2000]}"
            assert page.locator('[data-testid="stAlertContentError"]').count() == 0, f"/{path}: {text[:2000]}"
            assert "Traceback" not in text, f"/{path}: {text[:2000]}"
        browser.close()
    assert len(list(tmp_path.glob("*.png"))) == len(PAGES)
