"""The Explorer in a real browser: JupyterLab and Voila, headless Debian Chromium via Playwright.

Each test writes a notebook that shows an Explorer, serves it, clicks the canvas and checks from
screenshots that the overlay changed around the click and the readout followed; moves the opacity
slider; runs and stops a feature visualisation and sees the picture change while it runs.
The JupyterLab test also saves docs/explorer.png (the README's screenshot) when the demo model
is there.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest

from tests.browser.conftest import REPO, _need, jupyterlab, snapshot_on_error, voila

pytestmark = [pytest.mark.browser]

nbformat = _need("nbformat")
Image = _need("PIL.Image")

DEMO = any((REPO / "nbviz" / "demo").glob("*.keras"))
SETUP = (
    "from nbviz import Explorer\ne = Explorer()  # the bundled demo model and image" if DEMO else
    "import numpy as np\nfrom nbviz import Explorer\nfrom tests.models import small_cnn\n"
    "image = (np.random.default_rng(1).random((32, 32, 3)) * 80).astype(np.uint8)\n"
    "image[8:20, 12:26] += 150\n"
    "e = Explorer(small_cnn(size=32, classes=4), image)"
)
CELLS = [SETUP + "\ne.state.steps = 400  # long enough to be stopped\ne"]

KERNEL_IDLE_JS = """() => Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'))
                      .some(e => /\\(ipykernel\\) \\| Idle/.test(e.textContent))"""
ALL_PROMPTS_RUN_JS = """() => { const p = Array.from(document.querySelectorAll('.jp-Notebook .jp-InputPrompt'));
                         return p.length > 0 && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }"""


def write_notebook(path: Path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def shot(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)


def poll(page, predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(150)


def interior(a: np.ndarray, margin=4) -> np.ndarray:
    """Leave out the edges (the focus ring a click leaves on the canvas)."""
    return a[margin:-margin, margin:-margin]


def save_docs_screenshot(page, path: Path):
    """Grad-CAM on the demo image, with the receptive field of the clicked cell on the object."""
    explorer = page.locator(".nbviz-explorer").first
    canvas = explorer.locator("canvas").first
    status = explorer.locator(".nbviz-status")
    explorer.locator(".widget-dropdown", has_text="method").locator("select").select_option(label="Grad-CAM")
    explorer.locator(".widget-slider", has_text="opacity").locator(".widget-readout").fill("0.55")
    explorer.locator(".widget-slider", has_text="opacity").locator(".widget-readout").press("Enter")
    canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] * 41 / 64, "y": box["height"] * 41 / 64})  # on the shape
    poll(page, lambda: "gradcam at" in status.text_content(), what="Grad-CAM")
    page.wait_for_timeout(500)
    path.parent.mkdir(exist_ok=True)
    explorer.screenshot(path=str(path))


def exercise_explorer(page, artifacts: Path) -> dict:
    """Click, slider, feature visualisation: the checks shared by JupyterLab and Voila."""
    found = {}
    explorer = page.locator(".nbviz-explorer").first
    canvas = explorer.locator("canvas").first
    readout = explorer.locator(".nbviz-readout")
    status = explorer.locator(".nbviz-status")
    canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
    # the picture is drawn (a canvas that is not one flat colour)
    before = poll(page, lambda: (lambda a: a if interior(a).std() > 8 else None)(shot(canvas)),
                  what="the image on the canvas")
    h, w = before.shape[:2]
    assert abs(h - w) <= 2 and h >= 400, before.shape  # shown enlarged, aspect kept

    # ---- click: the overlay appears around the point, the readout follows
    cy, cx = int(h * 0.4), int(w * 0.6)
    canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
    canvas.click(position={"x": cx, "y": cy})
    text = poll(page, lambda: (lambda t: t if "pointer (y=" in t else None)(readout.text_content()),
                what="the readout")
    m = re.search(r"pointer \(y=(\d+), x=(\d+)\)", text)
    assert m, text
    r = max(12, h // 20)

    def overlay_changed():
        a = shot(canvas)
        near = np.abs(a[cy - r:cy + r, cx - r:cx + r] - before[cy - r:cy + r, cx - r:cx + r]).mean()
        return a if near > 12 and "RF size" in readout.text_content() else None

    after_click = poll(page, overlay_changed, what="the overlay around the click")
    found["readout"] = readout.text_content().strip()
    Image.fromarray(after_click.astype(np.uint8)).save(artifacts / "after_click.png")

    # ---- the opacity slider: dragging it repaints the overlay
    handle = explorer.locator(".widget-slider", has_text="opacity").locator(".noUi-handle").first
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 90, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
    poll(page, lambda: np.abs(interior(shot(canvas)) - interior(after_click)).mean() > 3,
         what="the overlay to follow the opacity slider")

    # ---- feature visualisation: run, see the picture change while it runs, stop
    explorer.locator(".widget-dropdown", has_text="method").locator("select").select_option(
        label="feature visualisation")
    run = explorer.get_by_role("button", name="Run")
    run.scroll_into_view_if_needed()
    run.click()
    progress = explorer.locator(".widget-label", has_text="objective")
    poll(page, lambda: progress.count() > 0 and "step" in progress.first.text_content(), what="featvis progress")
    canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
    first = shot(canvas)
    step1 = progress.first.text_content()
    second = poll(page, lambda: (lambda a: a if np.abs(interior(a) - interior(first)).mean() > 2 else None)(
        shot(canvas)), what="the feature visualisation to repaint")
    step2 = progress.first.text_content()
    Image.fromarray(first.astype(np.uint8)).save(artifacts / "featvis_1.png")
    Image.fromarray(second.astype(np.uint8)).save(artifacts / "featvis_2.png")
    explorer.get_by_role("button", name="Stop").click()
    poll(page, lambda: "(stopped)" in status.text_content(), what="the run to stop")
    found["featvis_steps"] = (step1, step2)
    found["status"] = status.text_content().strip()
    return found


def test_explorer_in_jupyterlab(page, tmp_path):
    t0 = time.monotonic()
    nbdir = tmp_path / "nb"
    write_notebook(nbdir / "explorer.ipynb")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    with jupyterlab(nbdir, tmp_path) as (base, token), snapshot_on_error(page, artifacts / "failure.png"):
        page.goto(f"{base}/lab/tree/explorer.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell")
        page.wait_for_function(KERNEL_IDLE_JS)  # not the execution indicator: it is "idle" too early
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        page.wait_for_function(ALL_PROMPTS_RUN_JS, timeout=120_000)
        page.wait_for_selector(".nbviz-explorer canvas", timeout=120_000)
        print(f"\nJupyterLab: notebook ran after {time.monotonic() - t0:.1f} s")
        # the static snapshot output is in the notebook but hidden while the widget is live
        snapshot = page.locator(".jp-OutputArea-output img")
        assert snapshot.count() == 1 and not snapshot.first.is_visible()
        src0 = snapshot.first.get_attribute("src")
        found = exercise_explorer(page, artifacts)
        # the kernel updated the saved snapshot after the results (what a saved notebook shows)
        poll(page, lambda: snapshot.first.get_attribute("src") != src0, what="the snapshot update")
        if DEMO:  # the README's screenshot: Grad-CAM with the RF box of a click on the object
            save_docs_screenshot(page, REPO / "docs" / "explorer.png")
        page.screenshot(path=str(artifacts / "page.png"), full_page=True)
        assert not page.js_errors, page.js_errors
    print(f"\nJupyterLab: {found} (artifacts: {artifacts})")


def test_explorer_in_voila(page, tmp_path):
    nb = tmp_path / "nb" / "explorer.ipynb"
    write_notebook(nb)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    with voila(nb, tmp_path) as base, snapshot_on_error(page, artifacts / "failure.png"):
        page.goto(f"{base}/")  # Voila runs the notebook for this request
        page.wait_for_selector(".nbviz-explorer canvas", timeout=120_000)
        found = exercise_explorer(page, artifacts)
        page.screenshot(path=str(artifacts / "page.png"), full_page=True)
        real = [e for e in page.js_errors if "font-awesome" not in e]
        assert not real, real
    print(f"\nVoila: {found} (artifacts: {artifacts})")
