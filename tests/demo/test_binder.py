"""The Binder config installs what the package and the notebooks import."""

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _names(lines):
    return {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.lstrip().startswith("#")}


def test_binder_requirements_cover_the_package_and_notebooks():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = _names(project["dependencies"]) | _names(project["optional-dependencies"]["notebooks"])
    needed = {"tensorflow-cpu" if n == "tensorflow" else n for n in needed} - {"ipykernel"}  # Binder has a kernel
    have = _names((ROOT / "binder" / "requirements.txt").read_text().splitlines())
    assert needed <= have, f"missing from binder/requirements.txt: {sorted(needed - have)}"
    imported = set()
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                imported |= set(re.findall(r"^\s*(?:import|from) (\w+)", "".join(cell["source"]), re.M))
    assert {"nbviz", "keras", "skimage", "matplotlib"} <= imported
    modules = {"skimage": "scikit-image", "PIL": "pillow", "matplotlib": "matplotlib", "keras": "keras",
               "numpy": "numpy", "IPython": "jupyterlab", "nbviz": None, "os": None, "pathlib": None,
               "tempfile": None, "pyarrow": "pyarrow", "pandas": "pandas",
               "tensorboard": "tensorboard"}  # fmt: skip
    assert imported <= set(modules), f"notebooks import {sorted(imported - set(modules))}: add them here and to Binder"
    assert {modules[m] for m in imported if modules[m]} <= have


def test_binder_installs_nbviz_and_pins_python():
    post = ROOT / "binder" / "postBuild"
    assert post.stat().st_mode & 0o111, "postBuild must be executable"
    assert re.search(r"pip install .*-e \.", post.read_text())
    assert re.fullmatch(r"python-3\.1[0-2]\s*", (ROOT / "binder" / "runtime.txt").read_text())
