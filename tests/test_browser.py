"""The RoPE explorer of notebook 01 in a real browser: JupyterLab on 127.0.0.1 (free port, token),
headless Chromium through selenium runs the notebook's explorer cell, moves the head-dim slider
one step with the keyboard and checks that the image changes and that no error shows.

Runs alone with `pytest -m browser`. Skips, saying why, where selenium, chromium or chromedriver
is missing (`.ci/run` installs the two Debian packages). Set MINILLADA_SCREENSHOT=/path.png to keep
a screenshot of the moved explorer.
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

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_rope_positional_analysis.ipynb"
DEADLINE_S = 90  # the whole test, from starting JupyterLab to the moved image
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
                None)
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)

pytestmark = pytest.mark.browser


def explorer_notebook() -> nbformat.NotebookNode:
    """Notebook 01's parameters, import and explorer cells, verbatim, in a notebook of their own
    (the figure cells in between take a while and are tested by test_notebook_01)."""
    source = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in source.cells if c.cell_type == "code"]
    parameters = next(c for c in code if "parameters" in c.metadata.get("tags", []))
    imports = next(c for c in code if "import rope_explorer" in c.source)
    explorer = next(c for c in code if c.source.startswith("rope_explorer("))
    notebook = nbformat.v4.new_notebook(metadata=source.metadata)
    notebook.cells = [nbformat.v4.new_code_cell(c.source) for c in (parameters, imports, explorer)]
    return notebook


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, deadline: float, what: str, poll_s: float = 0.25):
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def jupyterlab(tmp_path):
    """(base URL, token, notebook name) of a JupyterLab serving a copy of the explorer cells."""
    nbformat.write(explorer_notebook(), tmp_path / "explorer.ipynb")
    (tmp_path / "output").mkdir()
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            if server.poll() is not None:
                log_text = (tmp_path / "jupyter.log").read_text()
                raise AssertionError(f"jupyter lab exited: {log_text}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    return "started" in json.load(r)
            except OSError:
                return False

        wait_for(ready, time.monotonic() + 45, "jupyter lab to start")
        # a session (and kernel) for the notebook before the browser opens it: no kernel dialog
        request = urllib.request.Request(
            f"{base}/api/sessions?token={token}", method="POST",
            data=json.dumps({"path": "explorer.ipynb", "type": "notebook", "name": "",
                             "kernel": {"name": "python3"}}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201
        yield base, token, "explorer.ipynb"
    finally:  # always: the whole process group (server and kernels)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(server.pid, sig)
                server.wait(timeout=10)
                break
            except ProcessLookupError:  # already gone
                server.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium is not installed (pip install selenium)")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium or chromedriver missing: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1600,1300"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_explorer_redraws_in_jupyterlab(jupyterlab, browser, tmp_path):
    try:
        drive_explorer(jupyterlab, browser)
    except BaseException:
        shot = os.environ.get("MINILLADA_SCREENSHOT") or str(tmp_path / "failure.png")
        browser.save_screenshot(shot)
        print(f"screenshot of the failure: {shot}")
        raise


def drive_explorer(jupyterlab, browser) -> None:
    from selenium.common.exceptions import ElementClickInterceptedException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    deadline = time.monotonic() + DEADLINE_S
    base, token, name = jupyterlab
    browser.get(f"{base}/lab/tree/{name}?token={token}&reset")

    def element(xpath: str):
        found = browser.find_elements(By.XPATH, xpath)
        return found[0] if found and found[0].is_displayed() else None

    def kernel_idle():
        return element("//*[contains(@class, 'jp-Notebook-ExecutionIndicator')"
                       " and @data-status='idle']")

    wait_for(lambda: element("//div[contains(@class, 'jp-Notebook')]"), deadline, "the notebook")
    wait_for(kernel_idle, deadline, "an idle kernel")

    def select_kernel() -> bool:
        """JupyterLab may ask which kernel to start (a modal dialog over the page): take the
        notebook's (python3). True when it asked."""
        select = element("//div[contains(@class, 'jp-Dialog')]//button[.//*[text()='Select']"
                         " or text()='Select']")
        if select is None:
            return False
        select.click()
        wait_for(kernel_idle, deadline, "an idle kernel")
        return True

    def open_run_menu() -> bool:
        select_kernel()  # the dialog is modal: open, it takes the menu's click
        menu = element("//div[contains(@class, 'lm-MenuBar-itemLabel') and text()='Run']")
        if menu is None:
            return False
        try:
            menu.click()
        except ElementClickInterceptedException:  # the dialog opened in between: again
            return False
        return True

    def run_all() -> None:
        wait_for(open_run_menu, deadline, "the Run menu")
        wait_for(lambda: element("//div[contains(@class, 'lm-Menu-itemLabel')"
                                 " and text()='Run All Cells']"), deadline, "Run All").click()

    run_all()

    def image_src():
        if select_kernel():  # the kernel started only now: run the cells again
            run_all()
        image = element("//img[contains(@class, 'widget-image')]")
        return image.get_attribute("src") if image is not None else None

    first = wait_for(image_src, deadline, "the explorer's image")
    handles = wait_for(lambda: [h for h in browser.find_elements(By.CLASS_NAME, "noUi-handle")
                                if h.is_displayed()] or None, deadline, "the sliders")
    sliders = browser.find_elements(By.XPATH, "//div[contains(@class, 'widget-slider')]"
                                              "//label")
    labels = [s.text for s in sliders]
    assert labels[:4] == ["base b", "head dim d", "T_train", "target T'"], labels
    readouts = browser.find_elements(By.CLASS_NAME, "widget-readout")
    before = readouts[1].text
    handles[1].click()  # head dim d: focus the handle, then one step right
    handles[1].send_keys(Keys.ARROW_RIGHT)
    moved = wait_for(lambda: (image_src() != first) and image_src(), deadline,
                     "the image to change after the slider move")
    assert readouts[1].text == str(int(before) + 8)
    time.sleep(0.5)  # a second update (a stale or error redraw) would land now
    page = browser.find_element(By.TAG_NAME, "body").text
    for error in ("cannot draw", "Error displaying widget", "Traceback", "stale"):
        assert error not in page, (error, page[-2000:])
    assert not browser.find_elements(By.XPATH, "//*[@data-mime-type="
                                               "'application/vnd.jupyter.stderr']")
    assert image_src() == moved
    if screenshot := os.environ.get("MINILLADA_SCREENSHOT"):
        image = element("//img[contains(@class, 'widget-image')]")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", image)
        browser.save_screenshot(screenshot)
