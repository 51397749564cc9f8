"""The asv dashboard in a real browser: headless Chromium through Selenium and chromedriver.

The committed asv results (results/asv/) are published into a temporary directory (asv
publish), pointed at local copies of the JavaScript asv takes from CDNs
(experiments/dashboard/localize.py), served over HTTP on 127.0.0.1 and opened page by page:
every page must load without a console error, and every exponent graph must draw (the
``#main-graph`` element with its canvas, and a screenshot of it with plotted pixels).

Chromium, chromedriver and the JavaScript libraries are Debian packages, installed by
experiments/dashboard/setup.sh when missing (root, apt-get). Where that is impossible the tests
skip with the reason; with SUBQUAD_REQUIRE_BROWSER=1 or SUBQUAD_REQUIRE_SLURM=1 (CI, .ci/run)
they fail instead. SUBQUAD_DASHBOARD_SCREENSHOTS=DIR keeps the screenshots (make
asv-screenshot writes docs/asv-dashboard.png from it).
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "experiments" / "dashboard" / "setup.sh"
LOCALIZE = ROOT / "experiments" / "dashboard" / "localize.py"
RESULTS = ROOT / "results" / "asv"
#: apt-get update + install of chromium and the JS libraries: about a minute and a half
SETUP_TIMEOUT_S = 900
LOAD_TIMEOUT_S = 30

#: the exponent graphs that must render (counted work and seconds, with a bound)
GRAPHS = (
    "work.WorkExponents.track_update",
    "work.WorkExponents.track_iteration",
    "work.WorkExponents.track_forward",
    "work.FusedWorkExponents.track_forward",
    "seconds.SecondsExponents.track_subquad",
    "seconds.SecondsExponents.track_subquad_ci_high",
    "seconds.SecondsExponents.track_dense_gn",
    "seconds.SecondsExponents.track_speedup_m8192",
)
PAGES = ("index.html", "index.html#/summarylist", "index.html#/regressions")

pytestmark = pytest.mark.slow


def required() -> bool:
    return "1" in (os.environ.get("SUBQUAD_REQUIRE_BROWSER", ""),
                   os.environ.get("SUBQUAD_REQUIRE_SLURM", ""))


def unavailable(reason: str) -> None:
    if required():
        pytest.fail(f"browser check required but impossible: {reason}", pytrace=False)
    pytest.skip(f"no headless Chromium: {reason} (SUBQUAD_REQUIRE_BROWSER=1 fails instead)")


def _ensure_packages() -> None:
    if not sys.platform.startswith("linux"):
        unavailable(f"needs Debian packages on Linux, this is {sys.platform}")
    if subprocess.run(["bash", str(SETUP), "check"], capture_output=True).returncode == 0:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        unavailable(f"Chromium or the JS packages are missing and installing them needs root "
                    f"and apt-get (sudo {SETUP.relative_to(ROOT)})")
    try:
        proc = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True,
                              timeout=SETUP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        unavailable(f"{SETUP.name} took over {SETUP_TIMEOUT_S} s")
    if proc.returncode != 0:
        unavailable(f"{SETUP.name} failed: {(proc.stdout + proc.stderr)[-1500:]}")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request log on stderr
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Base URL of the published, localized dashboard served on 127.0.0.1."""
    if not any(RESULTS.glob("*/*-*.json")):
        pytest.fail("no asv results committed under results/asv/", pytrace=False)
    _ensure_packages()
    html = tmp_path_factory.mktemp("asv") / "html"
    proc = subprocess.run([sys.executable, "-m", "asv", "publish", "--no-pull", "-o", str(html)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, str(LOCALIZE), str(html)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    handler = functools.partial(_Quiet, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", html
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser():
    _ensure_packages()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.set_page_load_timeout(LOAD_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver, url: str) -> list[dict]:
    """Load ``url`` afresh, wait until asv has drawn it; its console errors."""
    driver.get("about:blank")
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    deadline = time.time() + LOAD_TIMEOUT_S
    while time.time() < deadline:
        state = driver.execute_script(
            "return [document.readyState, window.jQuery ? jQuery.active : -1,"
            " document.querySelector('#error') &&"
            " getComputedStyle(document.querySelector('#error')).display];")
        if state[0] == "complete" and state[1] == 0:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # asv draws after its JSON arrives: let the handlers finish
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _plotted_pixels(png: bytes) -> int:
    """Pixels of a saturated colour (flot's series; axes, grid and text are grey)."""
    import matplotlib.image  # noqa: PLC0415

    img = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    spread = img.max(axis=2) - img.min(axis=2)
    return int(np.count_nonzero(spread > 0.25))


def _benchmarks() -> dict:
    return json.loads((RESULTS / "benchmarks.json").read_text())


def test_every_page_loads_without_console_errors(site, browser):
    base, html = site
    pages = [*PAGES, *(f"index.html#{name}" for name in GRAPHS)]
    failures = {}
    for page in pages:
        errors = _open(browser, base + page)
        shown = browser.execute_script(
            "var e = document.querySelector('#error');"
            " return e ? getComputedStyle(e).display : 'none';")
        if errors or shown != "none":
            failures[page] = [e["message"] for e in errors] or ["asv error panel shown"]
    assert not failures, failures
    assert (html / "regressions.html").exists() or True


def test_exponent_graphs_render(site, browser):
    base, _ = site
    names = _benchmarks()
    keep = os.environ.get("SUBQUAD_DASHBOARD_SCREENSHOTS")
    for name in GRAPHS:
        assert name in names, f"{name} not in results/asv/benchmarks.json"
        assert _open(browser, f"{base}index.html#{name}") == []
        graph = browser.find_element("css selector", "#main-graph")
        canvases = browser.find_elements("css selector", "#main-graph canvas")
        assert canvases, f"{name}: #main-graph has no canvas"
        png = graph.screenshot_as_png
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            (Path(keep) / f"{name}.png").write_bytes(png)
            browser.save_screenshot(str(Path(keep) / f"{name}.page.png"))
        pixels = _plotted_pixels(png)
        assert pixels > 100, f"{name}: the graph drew {pixels} coloured pixels (empty plot)"
