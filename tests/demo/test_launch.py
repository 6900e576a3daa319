"""`make demo`'s launcher starts JupyterLab, prints the quickstart URL with a token, and serves it."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nbviz.demo import launch

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_notebook_url_and_folder():
    assert launch.notebook_url(8899, "abc") == "http://127.0.0.1:8899/lab/tree/notebooks/quickstart.ipynb?token=abc"
    assert launch.find_notebooks() == ROOT / "notebooks"


def test_the_demo_runs_on_a_copy_with_quiet_tensorflow(tmp_path):
    root = launch.working_copy(ROOT / "notebooks")
    try:
        assert root != ROOT and sorted(p.name for p in (root / "notebooks").glob("*.ipynb")) == sorted(
            p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
        (root / "notebooks" / "quickstart.ipynb").write_text("{}")  # a user's save goes to the copy
        assert (ROOT / "notebooks" / "quickstart.ipynb").read_text() != "{}"
    finally:
        import shutil

        shutil.rmtree(root)
    env = launch.server_env(ROOT, {"PATH": "/bin", "PYTHONPATH": "/x"})
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "3" and env["PYTHONPATH"] == f"{ROOT}{os.pathsep}/x"
    assert launch.server_env(ROOT, {"TF_CPP_MIN_LOG_LEVEL": "0"})["TF_CPP_MIN_LOG_LEVEL"] == "0"  # the user's wins


def test_bad_port_is_refused(capsys):
    with pytest.raises(SystemExit):
        launch.main(["--port", "70000", "--no-browser"])
    assert "--port must be in 1..65535, got 70000" in capsys.readouterr().err


def test_launch_serves_the_quickstart_notebook(tmp_path):
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"), BROWSER="false")  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbviz.demo.launch", "--port", str(port), "--no-browser"],
        cwd=tmp_path,  # the launcher finds the notebooks next to the package, not in the cwd
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        url = None
        seen = ""
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            seen += line
            m = re.search(r"(http://127\.0\.0\.1:\d+/lab/tree/notebooks/quickstart\.ipynb\?token=\w+)", line)
            url = m and m.group(1)
        assert url, f"no URL printed (exit code {proc.poll()})"
        assert "working on a copy of" in seen
        assert f":{port}/" in url
        with urllib.request.urlopen(url, timeout=20) as response:  # the JupyterLab page
            assert response.status == 200
            assert "JupyterLab" in response.read().decode()
        token = url.rsplit("=", 1)[1]
        api = f"http://127.0.0.1:{port}/api/contents/notebooks/quickstart.ipynb?token={token}"
        with urllib.request.urlopen(api, timeout=20) as response:  # the notebook is served
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as info:  # and the token is needed
            urllib.request.urlopen(api.split("?")[0], timeout=20)
        assert info.value.code == 403
        proc.send_signal(signal.SIGTERM)  # the launcher stops JupyterLab when it stops
        assert proc.wait(timeout=30) == 0
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(api, timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
