"""Open the quickstart notebook in JupyterLab: ``python -m nbviz.demo.launch [--port P] [--no-browser]``.

This is what ``make demo`` runs. It copies ``notebooks/`` into a fresh temporary folder (so running
and saving the demo never modifies the checkout; the copy is removed when the launcher stops),
starts JupyterLab on 127.0.0.1 at the given port with a fresh random token, rooted at that copy,
waits until the server answers, prints the full URL of ``notebooks/quickstart.ipynb`` (token
included) and opens it in a browser unless ``--no-browser``. Kernels get
``TF_CPP_MIN_LOG_LEVEL=3`` (no TensorFlow/CUDA start-up log in the first cell, unless set
otherwise) and the checkout on ``PYTHONPATH``. It runs until interrupted (Ctrl-C) or terminated,
and stops JupyterLab when it stops.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path

__all__ = ["main", "notebook_url", "find_notebooks", "working_copy", "server_env"]

NOTEBOOKS = ("quickstart", "receptive_fields", "attribution", "feature_visualization")


def find_notebooks(start: Path | None = None) -> Path:
    """The ``notebooks/`` folder of the nbviz checkout (next to the package, or under the cwd)."""
    candidates = [Path(__file__).resolve().parents[2] / "notebooks", Path.cwd() / "notebooks"]
    if start is not None:
        candidates.insert(0, Path(start) / "notebooks")
    for folder in candidates:
        if (folder / "quickstart.ipynb").is_file():
            return folder
    raise FileNotFoundError(
        "notebooks/quickstart.ipynb not found next to the nbviz package or in the current folder "
        f"(looked in {', '.join(str(c) for c in candidates)}); run this from a clone of the repository"
    )


def notebook_url(port: int, token: str, notebook: str = "quickstart", host: str = "127.0.0.1") -> str:
    """The JupyterLab URL that opens ``notebooks/<notebook>.ipynb``, with the token."""
    return f"http://{host}:{port}/lab/tree/notebooks/{notebook}.ipynb?token={token}"


def working_copy(notebooks: Path) -> Path:
    """A temporary folder holding a copy of ``notebooks`` as ``notebooks/`` (its root)."""
    root = Path(tempfile.mkdtemp(prefix="nbviz-demo-"))
    shutil.copytree(notebooks, root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return root


def server_env(checkout: Path, base: dict | None = None) -> dict:
    """The environment for JupyterLab and its kernels: quiet TensorFlow, the checkout importable."""
    env = dict(os.environ if base is None else base)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(checkout), env.get("PYTHONPATH", "")) if p)
    return env


def _wait_until_up(proc: subprocess.Popen, port: int, token: str, timeout: float) -> None:
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode} before serving port {port}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"JupyterLab did not answer on port {port} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbviz.demo.launch", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1 (default 8888)")
    parser.add_argument("--no-browser", action="store_true", help="only print the URL")
    parser.add_argument("--notebook", default="quickstart", choices=NOTEBOOKS, help="which notebook to open")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for JupyterLab")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be in 1..65535, got {args.port}")

    notebooks = find_notebooks()
    root = working_copy(notebooks)
    print(f"nbviz demo: working on a copy of {notebooks} in {root} (removed on exit)", flush=True)
    token = secrets.token_hex(24)
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={args.port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and fresh VMs often run as root
        command.append("--allow-root")
    proc = subprocess.Popen(command, cwd=root, env=server_env(notebooks.parent))

    def stop(signum, frame):  # SIGTERM: stop JupyterLab too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        _wait_until_up(proc, args.port, token, args.timeout)
        url = notebook_url(args.port, token, args.notebook)
        print(f"\nnbviz demo: open {url}\n(Ctrl-C stops the server)\n", flush=True)
        if not args.no_browser:
            webbrowser.open(url)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:  # JupyterLab did not come up: its own log above says why
        print(f"nbviz demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
