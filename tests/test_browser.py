"""The learner's view, in a real browser: JupyterLab from the project's environment, driven by
Playwright in headless Chromium (Debian's /usr/bin/chromium; Playwright downloads nothing).

1. Lesson 02 runs all its cells; the gate explorer renders as a live widget (sliders, not its
   text fallback); moving a slider redraws its figure.
2. Exercise 02: one task is filled in through the editor with its solution; its check cell
   reports the pass.

JupyterLab runs on a copy of the notebooks in a temporary folder (the repository's files are
never touched), on a free localhost port with a one-off token, and is shut down (its whole
process group) even when the test fails. Screenshots go to tests/screenshots/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "tests" / "screenshots"
LESSON = "02_lstm_gates_and_cell_state.ipynb"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except OSError:
        return 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a temporary copy of lesson 02 and exercise 02."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is needed for the browser test: apt-get install chromium (.ci/run does this)")
    root = tmp_path_factory.mktemp("course")
    for folder in ("notebooks", "exercises", "solutions"):
        (root / folder).mkdir()
        shutil.copy(ROOT / folder / LESSON, root / folder / LESSON)
    home = tmp_path_factory.mktemp("jupyter-home")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "ws"), "TQDM_DISABLE": "1"}
    # No announcements pop-up over the notebook; every cell in the page (no windowing), so
    # that the test can see the prompts of cells scrolled out of view.
    quiet = {"fetchNews": "false", "checkForUpdates": False}
    for ext, name, value in [("apputils-extension", "notification", quiet),
                             ("notebook-extension", "tracker", {"windowingMode": "none"})]:
        folder = home / "settings" / "@jupyterlab" / ext
        folder.mkdir(parents=True)
        (folder / f"{name}.jupyterlab-settings").write_text(json.dumps(value))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(home / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while _get(f"{base}/api/status?token={token}") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{(home / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, token, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and every kernel it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        time.sleep(1)
        left = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert not left, f"processes left behind after shutting JupyterLab down: {left}"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


def _open(browser, base: str, token: str, path: str):
    """A new page with only ``path`` open (``reset``: no tabs restored from an earlier page)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(f"{base}/lab/tree/{path}?reset&token={token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="visible")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    return page


_ALL_RUN = """() => {
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.innerText);
  return prompts.length > 0 && prompts.every(t => /\\[\\d+\\]/.test(t));
}"""


def _run_all(page, timeout_s: float) -> None:
    """Clear every output, Run All Cells, and wait until every code cell has its number.

    The kernel goes idle for a moment between queued cells, so its status is no signal; the
    prompts are: cleared cells show [ ], queued ones [*], finished ones [n].
    """
    for menu, item in (("Edit", "Clear Outputs of All Cells"), ("Run", "Run All Cells")):
        page.click(f".lm-MenuBar-itemLabel:text-is('{menu}')")
        page.click(f".lm-Menu-itemLabel:text-is('{item}')")
    page.wait_for_function(_ALL_RUN, timeout=timeout_s * 1000, polling=500)


def test_lesson_02_gate_explorer_is_live_and_redraws(lab, browser):
    base, token, _ = lab
    page = _open(browser, base, token, f"notebooks/{LESSON}")
    try:
        _run_all(page, timeout_s=300)
        slider = page.locator(".jupyter-widgets .widget-slider").first
        slider.scroll_into_view_if_needed()
        assert slider.is_visible(), "the gate explorer shows no live slider"
        assert page.locator(".jupyter-widgets:has-text('Error displaying widget')").count() == 0
        output = page.locator(".jp-OutputArea-output:has(.widget-slider)").first
        figure = output.locator("img").first
        before = figure.get_attribute("src")
        page.screenshot(path=str(SHOTS / "lesson02_explorer_before.png"))
        handle = output.locator(".widget-slider .noUi-handle").first
        handle.focus()
        for _ in range(5):
            handle.press("ArrowLeft")
        deadline = time.monotonic() + 60  # the figure is replaced, not edited: re-query it
        while output.locator("img").first.get_attribute("src") == before:
            assert time.monotonic() < deadline, "moving the slider did not redraw the figure"
            page.wait_for_timeout(250)
        page.screenshot(path=str(SHOTS / "lesson02_explorer_after.png"))
    finally:
        page.close()


def _cell_with(page, text: str):
    """The first code cell whose source contains ``text``."""
    return page.locator(".jp-CodeCell").filter(has=page.locator(".jp-InputArea-editor", has_text=text)).first


def _solution_of(task: str) -> str:
    """The body of the solution cell that defines ``task``, without the answer markers."""
    nb = json.loads((ROOT / "solutions" / LESSON).read_text())
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and f"def {task}(" in src:
            return "\n".join(ln for ln in src.splitlines() if "### " not in ln)
    raise LookupError(task)


def test_exercise_02_filled_in_through_the_editor_passes_its_check(lab, browser):
    base, token, root = lab
    (root / "solutions" / LESSON).unlink()  # the learner's folder has no answers in it
    page = _open(browser, base, token, f"exercises/{LESSON}")
    try:
        editor = _cell_with(page, "def sigmoid(").locator(".cm-content").first
        editor.click()  # edit mode in that cell: Ctrl+A now selects its text, not all cells
        page.keyboard.press("Control+A")
        page.keyboard.insert_text(_solution_of("sigmoid"))  # typed as one edit: no auto-indent
        page.keyboard.press("Escape")
        assert "np.where" in editor.inner_text() and "NotImplementedError" not in editor.inner_text()
        _run_all(page, timeout_s=180)
        check_cell = _cell_with(page, 'check("sigmoid"')
        check_cell.scroll_into_view_if_needed()
        result = check_cell.locator(".jp-OutputArea").inner_text()
        page.screenshot(path=str(SHOTS / "exercise02_check_passed.png"))
        assert "all 3 checks passed" in result and "[1/1 point]" in result, result
        next_check = _cell_with(page, 'check("lstm_step_forward"')
        assert "not attempted yet" in next_check.locator(".jp-OutputArea").inner_text()
    finally:
        page.close()
