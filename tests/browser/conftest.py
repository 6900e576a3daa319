"""Real-browser fixtures: Debian's Chromium through Playwright, JupyterLab and Voila servers.

Each server runs on 127.0.0.1 on a free port with isolated Jupyter directories under the test's
tmp dir, and is stopped (by PID, its kernels checked) afterwards. Without Chromium or Playwright
the browser tests are skipped, unless REQUIRE_BROWSER=1 (``make test``, CI): then they fail.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("REQUIRE_BROWSER") == "1"
SERVER_START_TIMEOUT = 60
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
    # nothing but this machine can be reached: every other host name fails at once
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost",
]


def find_chromium() -> str | None:
    for cand in (os.environ.get("CHROMIUM_BIN"),
                 "/usr/lib/chromium/chromium",  # the binary behind Debian's /usr/bin/chromium wrapper
                 shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _need(modname):
    if REQUIRE:
        return __import__(modname, fromlist=["_"])
    return pytest.importorskip(modname)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated_env(work: Path) -> dict:
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(work / "jcfg"), JUPYTER_DATA_DIR=str(work / "jdata"),
        JUPYTER_RUNTIME_DIR=str(work / "jrt"), IPYTHONDIR=str(work / "ipython"),
        PYDEVD_DISABLE_FILE_VALIDATION="1", TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


@contextmanager
def run_server(cmd, env, port, log_path: Path, ready_url=None):
    """Start a server, wait until it answers (checking it is alive), stop it by PID afterwards."""
    psutil = _need("psutil")
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    ok = False
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited rc={proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if ready_url:
                    urllib.request.urlopen(ready_url, timeout=2).read()
                else:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not up after {SERVER_START_TIMEOUT}s:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.1)
        yield proc
        ok = True
    finally:
        try:
            kids = psutil.Process(proc.pid).children(recursive=True)  # the kernels it started
        except psutil.Error:
            kids = []
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        _, alive = psutil.wait_procs(kids, timeout=15)
        for k in alive:
            k.kill()
        log.close()
        if ok:
            assert not alive, f"kernel processes outlived the server: {[k.pid for k in alive]}"


@contextmanager
def jupyterlab(nbdir: Path, work: Path):
    """A JupyterLab server rooted at ``nbdir``; yields its base URL and token."""
    us = work / "lab-user-settings"
    (us / "@jupyterlab" / "apputils-extension").mkdir(parents=True, exist_ok=True)
    # never fetch or ask about Jupyter news (the toast covers the page)
    (us / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
           "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={nbdir}",
           f"--LabApp.user_settings_dir={us}", f"--LabApp.workspaces_dir={work / 'lab-workspaces'}",
           "--LabApp.extension_manager=readonly",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None"]
    base = f"http://127.0.0.1:{port}"
    with run_server(cmd, isolated_env(work), port, work / "lab.log",
                    ready_url=f"{base}/api/status?token={token}"):
        yield base, token


@contextmanager
def notebook7(nbdir: Path, work: Path):
    """A Jupyter Notebook 7 server rooted at ``nbdir``; yields its base URL and token."""
    us = work / "nb7-user-settings"  # empty: Notebook 7 fails on settings of plugins it lacks
    us.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "notebook", "--no-browser", "--allow-root",
           "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={nbdir}",
           f"--JupyterNotebookApp.user_settings_dir={us}",
           f"--JupyterNotebookApp.workspaces_dir={work / 'nb7-workspaces'}"]
    base = f"http://127.0.0.1:{port}"
    with run_server(cmd, isolated_env(work), port, work / "notebook7.log",
                    ready_url=f"{base}/api/status?token={token}"):
        yield base, token


@contextmanager
def voila(notebook: Path, work: Path):
    """A Voila server for ``notebook``; yields its base URL (each GET of / runs the notebook)."""
    port = free_port()
    cmd = [sys.executable, "-m", "voila", str(notebook), "--no-browser", "--Voila.ip=127.0.0.1",
           f"--port={port}", "--Voila.port_retries=0"]
    with run_server(cmd, isolated_env(work), port, work / "voila.log"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def page(tmp_path):
    chromium = find_chromium()
    if chromium is None:
        if REQUIRE:
            pytest.fail("REQUIRE_BROWSER=1 but Chromium is not installed "
                        "(apt-get install -y --no-install-recommends chromium fonts-liberation)")
        pytest.skip("Chromium is not installed")
    sync_api = _need("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1100}, accept_downloads=True)
        pg = ctx.pages[0] if ctx.pages else ctx.new_page()
        pg.set_default_timeout(60_000)
        pg.js_errors = []
        pg.on("pageerror", lambda e: pg.js_errors.append(str(e)))
        try:
            yield pg
        finally:
            ctx.close()


@contextmanager
def snapshot_on_error(page, path: Path):
    """On failure save a page screenshot while the server is still up."""
    try:
        yield
    except BaseException:
        try:
            page.screenshot(path=str(path), full_page=True)
            print(f"\nfailure screenshot: {path}")
        except Exception:
            pass
        raise


# --------------------------------------------------------------------------- test helpers

KERNEL_IDLE_JS = """() => Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'))
                      .some(e => /\\(ipykernel\\) \\| Idle/.test(e.textContent))"""
ALL_PROMPTS_RUN_JS = """() => { const p = Array.from(document.querySelectorAll('.jp-Notebook .jp-InputPrompt'));
                         return p.length > 0 && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }"""


def write_notebook(path: Path, cells) -> Path:
    """A notebook of code ``cells`` (strings) with the python3 kernel, written at ``path``."""
    nbformat = _need("nbformat")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return Path(path)


def shot(locator) -> np.ndarray:
    """A screenshot of ``locator`` as an H×W×3 int array."""
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)


def poll(page, predicate, timeout=120.0, what="condition"):
    """``predicate()``'s first value that is not None or False, polled every 100 ms."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(100)


def run_all_cells(page, *, lab: bool):
    """Run All from the menu (JupyterLab and Notebook 7 share it), again if the first was lost
    while the kernel connected."""
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    if lab:
        page.wait_for_function(KERNEL_IDLE_JS)  # not the execution indicator: it is "idle" too early
    for attempt in range(3):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_function(ALL_PROMPTS_RUN_JS, timeout=60_000 if attempt < 2 else 180_000)
            return
        except Exception:
            if attempt == 2:
                raise
