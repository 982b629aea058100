"""A real browser: JupyterLab runs lesson 1 and the widget panel end to end, and each leaves a screenshot in assets/.

Needs Debian's `chromium` and `pip install playwright` (never `playwright install`). Without them the tests skip
on a laptop, and fail when the CI environment variable is set. MGPU_LAB_CHROMIUM names another browser binary
(tests/test_no_extras.py points it at a missing path to run this file as a machine without a browser).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from mgpu_lab.launch import free_port

ROOT = Path(__file__).resolve().parent.parent
# Screenshots refresh the README's pictures only on request, so a test run leaves the work tree clean.
ASSETS = ROOT / "assets" if os.environ.get("UPDATE_SCREENSHOTS") else Path(tempfile.gettempdir())
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
PANEL_PROMPTS = ["It was a bright cold day in April,", "The King is dead.", "Call me", "Once upon a time"]
SECONDS = 30


def chromium() -> str | None:
    """$MGPU_LAB_CHROMIUM if set (a missing path hides the browser), else Debian's chromium binary, or None."""
    chosen = os.environ.get("MGPU_LAB_CHROMIUM")
    if chosen is not None:
        return chosen if Path(chosen).is_file() else None
    real = Path("/usr/lib/chromium/chromium")  # the real binary skips the wrapper script's noise
    return str(real) if real.exists() else shutil.which("chromium")


@pytest.fixture(scope="module")
def browser():
    """Headless chromium through Playwright; skipped when either is missing, unless CI is set."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = "playwright (pip install playwright)" if sync_playwright is None else \
        "chromium (apt-get install -y chromium)" if chromium() is None else ""
    if missing and os.environ.get("CI"):
        pytest.fail(f"CI is set but {missing} is not installed")
    if missing:
        pytest.skip(f"{missing} is not installed")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium())
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free port, rooted in a temp folder, with every Jupyter dir in there too."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "root"
    root.mkdir()
    env = lab_environment(home)
    settings = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port = free_port()
    previous = signal.signal(signal.SIGTERM, interrupt)  # a CI timeout's SIGTERM still runs the teardown
    with open(home / "server.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=", "--allow-root"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_server(f"http://127.0.0.1:{port}", server, home / "server.log")
        yield f"http://127.0.0.1:{port}", root
    finally:
        server.send_signal(signal.SIGTERM)  # the server stops its kernels too
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        signal.signal(signal.SIGTERM, previous)


def interrupt(_signum, _frame) -> None:
    """SIGTERM as KeyboardInterrupt, so fixtures tear down."""
    raise KeyboardInterrupt


def lab_environment(home: Path) -> dict:
    """This environment with HOME and every Jupyter/IPython folder moved into `home`."""
    folders = {"HOME": "home", "JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data",
               "JUPYTER_RUNTIME_DIR": "runtime", "IPYTHONDIR": "ipython",
               "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces"}
    return {**os.environ, **{name: str(home / folder) for name, folder in folders.items()},
            "TOKENIZERS_PARALLELISM": "false"}


def wait_for_server(url: str, server: subprocess.Popen, log: Path) -> None:
    """Poll /api/status until the server answers; fail with its log if it dies or stays silent."""
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=2):
                return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"JupyterLab did not answer within {SECONDS} s:\n{log.read_text()}")


def open_notebook(browser, lab, notebook: dict, stem: str):
    """Save `notebook` under a fresh name (so a fresh kernel), open it, and wait until its kernel is idle."""
    url, root = lab
    name = f"{stem}-{uuid.uuid4().hex[:8]}.ipynb"
    (root / name).write_text(json.dumps(notebook))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(SECONDS * 1000)
    page.goto(f"{url}/lab/tree/{name}?reset")
    page.wait_for_function("""() => {
        const kernel = document.querySelector('.jp-NotebookPanel-toolbar .jp-Toolbar-kernelName');
        const state = document.querySelector('.jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator');
        return kernel && !kernel.textContent.includes('No Kernel') && state && state.dataset.status === 'idle';
    }""")
    return page


def run_all_cells(page) -> None:
    """Run > Run All Cells; exact names, since "Run All Cells" is also part of "Restart Kernel and Run All Cells..."."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def panel_notebook() -> dict:
    """A one-cell notebook that shows the panel, set up for a short run."""
    source = ("from mgpu_lab.widgets import panel\n\n"
              f"panel(prompts={PANEL_PROMPTS!r}, max_new_tokens=8, batch_size=2)")
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
    return {"cells": [cell], "metadata": {"kernelspec": KERNELSPEC}, "nbformat": 4, "nbformat_minor": 5}


def test_lesson1_runs_in_jupyterlab(browser, lab):
    notebook = json.loads((ROOT / "notebooks" / "01_hello_processes.ipynb").read_text())
    for cell in notebook["cells"]:  # the committed outputs hold the text we wait for: start from none
        cell.update({"outputs": [], "execution_count": None} if cell["cell_type"] == "code" else {})
    page = open_notebook(browser, lab, notebook, "lesson1")
    run_all_cells(page)
    hello = page.locator(".jp-OutputArea-output", has_text="Hello from process 1 of 2").first
    hello.wait_for()
    hello.scroll_into_view_if_needed()
    page.screenshot(path=ASSETS / "screenshot_lesson1.png")
    page.close()


def test_panel_runs_in_jupyterlab(browser, lab):
    page = open_notebook(browser, lab, panel_notebook(), "panel")
    run_all_cells(page)
    page.get_by_role("button", name="Run", exact=True).click()
    page.locator(".widget-output", has_text="tokens/s").wait_for()
    page.locator(".widget-output img").wait_for()  # the tokens/s chart
    assert "processes: 2 x cpu" in page.locator(".widget-output").inner_text()
    page.screenshot(path=ASSETS / "screenshot_panel.png")
    page.close()
