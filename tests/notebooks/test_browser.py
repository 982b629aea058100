"""A real browser: JupyterLab runs lesson 1 (Run All) and the widget panel end to end.

The lesson must run to its last cell with no error output (warnings on stderr are part of some lessons); nbval
executes every lesson, so one lesson here is enough to check the browser's path. Lesson 1 and the panel leave a
screenshot (in docs/ with UPDATE_SCREENSHOTS=1).

Needs Debian's `chromium` and `pip install playwright` (never `playwright install`). Without them the tests skip
on a laptop, and fail when the CI environment variable is set. MGPU_LAB_CHROMIUM names another browser binary
(tests/notebooks/test_no_extras.py points it at a missing path to run this file as a machine without a browser).
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

from mgpu_lab.launcher.launch import free_port
from mgpu_lab.tools.lessons_runner import lesson_notebooks

ROOT = Path(__file__).resolve().parents[2]
# Screenshots refresh the README's pictures only on request, so a test run leaves the work tree clean.
ASSETS = ROOT / "docs" if os.environ.get("UPDATE_SCREENSHOTS") else Path(tempfile.gettempdir())
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
PANEL_PROMPTS = ["It was a bright cold day in April,", "The King is dead.", "Call me", "Once upon a time"]
SECONDS = 30
LESSON_SECONDS = 600  # a whole lesson, on a busy 2-core machine
QUIET_SECONDS = 30  # Run All runs cells one after another and stops at an error: this long idle means it stopped
RUN_STATE = r"""() => {
    const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
        .map(prompt => prompt.textContent.trim());
    const state = document.querySelector('.jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator');
    return {cells: prompts.length, ran: prompts.filter(prompt => /^\[\d+\]:$/.test(prompt)).length,
            busy: prompts.includes('[*]:') || !state || state.dataset.status !== 'idle'};
}"""


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
    tracker = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)  # every cell in the page, below the fold too
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
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
    import matplotlib  # keep its font cache: a fresh one is built with a note on stderr

    return {**os.environ, **{name: str(home / folder) for name, folder in folders.items()},
            "MPLCONFIGDIR": matplotlib.get_configdir(), "TOKENIZERS_PARALLELISM": "false"}


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
    """Save `notebook` under a fresh name (so a fresh kernel), open it, and wait until its kernel is idle.

    The page's `saved_path` is that file: what JupyterLab writes when the notebook is saved."""
    url, root = lab
    name = f"{stem}-{uuid.uuid4().hex[:8]}.ipynb"
    (root / name).write_text(json.dumps(notebook))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.saved_path = root / name
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
    source = ("from mgpu_lab.course.panel import panel\n\n"
              f"panel(prompts={PANEL_PROMPTS!r}, max_new_tokens=8, batch_size=2)")
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
    return {"cells": [cell], "metadata": {"kernelspec": KERNELSPEC}, "nbformat": 4, "nbformat_minor": 5}


def without_outputs(notebook: dict) -> dict:
    """The notebook as a learner gets it fresh: no outputs, no execution counts (its saved text is what we wait for)."""
    for cell in notebook["cells"]:
        cell.update({"outputs": [], "execution_count": None} if cell["cell_type"] == "code" else {})
    return notebook


def wait_until_finished(page) -> None:
    """Wait until every code cell ran, or nothing ran for QUIET_SECONDS (Run All stopped at an error)."""
    deadline, quiet_since = time.monotonic() + LESSON_SECONDS, None
    while time.monotonic() < deadline:
        state = page.evaluate(RUN_STATE)
        if state["ran"] == state["cells"]:
            return
        quiet_since = None if state["busy"] else quiet_since or time.monotonic()
        if quiet_since and time.monotonic() - quiet_since > QUIET_SECONDS:
            return
        time.sleep(0.5)
    pytest.fail(f"the notebook was still running after {LESSON_SECONDS} s")


def saved_notebook(page) -> dict:
    """Save the notebook from the browser (Ctrl+S) and read back what JupyterLab wrote, once every cell ran."""
    page.locator(".jp-Notebook").first.click()
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        notebook = json.loads(page.saved_path.read_text())
        if any(cell.get("execution_count") for cell in notebook["cells"]):
            return notebook
        time.sleep(0.25)
    pytest.fail(f"JupyterLab did not save {page.saved_path.name} within {SECONDS} s")


def problems(notebook: dict) -> list[str]:
    """Code cells that did not run or raised."""
    found = []
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("execution_count") is None:
            found.append(f"cell {number} did not run")
        found += [f"cell {number} raised {output['ename']}: {output['evalue']}"
                  for output in cell["outputs"] if output["output_type"] == "error"]
    return found


@pytest.mark.browser
def test_lesson_1_runs_all_in_jupyterlab(browser, lab):
    path = lesson_notebooks()[0]
    page = open_notebook(browser, lab, without_outputs(json.loads(path.read_text())), path.stem[:12])
    run_all_cells(page)
    wait_until_finished(page)
    hello = page.locator(".jp-OutputArea-output", has_text="Hello from process 1 of 2").first
    hello.scroll_into_view_if_needed()
    page.screenshot(path=ASSETS / "screenshot_lesson1.png")
    found = problems(saved_notebook(page))
    page.close()
    assert not found, f"{path.name} in JupyterLab:\n" + "\n".join(found)


@pytest.mark.browser
def test_panel_runs_in_jupyterlab(browser, lab):
    page = open_notebook(browser, lab, panel_notebook(), "panel")
    run_all_cells(page)
    page.get_by_role("button", name="Run", exact=True).click()
    page.locator(".widget-output", has_text="tokens/s").wait_for()
    page.locator(".widget-output img").wait_for()  # the tokens/s chart
    assert "processes: 2 x cpu" in page.locator(".widget-output").inner_text()
    page.screenshot(path=ASSETS / "screenshot_panel.png")
    page.close()


def test_problems_are_found_in_a_saved_notebook():
    """The check the lesson tests end with: it fails on an error and on a cell that never ran, not on a warning."""
    cell = {"cell_type": "code", "metadata": {}}
    notebook = {"cells": [
        {**cell, "source": "1/0", "execution_count": 1,
         "outputs": [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero"}]},
        {**cell, "source": "warn()", "execution_count": 2, "outputs": [{"output_type": "stream", "name": "stderr",
                                                                       "text": "a warning"}]},
        {**cell, "source": "# NBVAL_IGNORE_OUTPUT\nraw()", "execution_count": 3,
         "outputs": [{"output_type": "stream", "name": "stderr", "text": "varies"}]},
        {**cell, "source": "later()", "execution_count": None, "outputs": []},
    ]}
    assert problems(notebook) == ["cell 0 raised ZeroDivisionError: division by zero", "cell 3 did not run"]
