"""The Explorer in a real browser: JupyterLab, Jupyter Notebook 7 and Voila (two Explorers in one
notebook), headless Debian Chromium via Playwright.

One page load per front-end does every check (the machine is slow, server starts are costly):
the picture is drawn; a click draws the receptive field and the readout follows; the cell grid
is visible (whole rows of changed pixels); a computation shows the busy indicator, which goes
when it is done; switching through every method of the table changes the canvas and the status
names the method; Save PNG arrives as a browser download of the view; feature visualisation
runs, reports its steps and stops, with the progress text and the status agreeing.
``NBVIZ_UPDATE_DOCS=1`` also saves docs/explorer.png (the README's screenshot) from JupyterLab.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from nbviz.methods import table
from tests.browser.conftest import (
    REPO, _need, jupyterlab, notebook7, poll, run_all_cells, shot, snapshot_on_error, voila,
    write_notebook,
)

pytestmark = [pytest.mark.browser]

Image = _need("PIL.Image")

ONE = ["from nbviz import Explorer\ne = Explorer()  # the bundled demo model and image\ne"]
TWO = ONE + ["from nbviz import demo\nmine = Explorer(image=demo.image(3))  # a second one\nmine"]



def interior(a: np.ndarray, margin=4) -> np.ndarray:
    """Leave out the edges (the focus ring a click leaves on the canvas)."""
    return a[margin:-margin, margin:-margin]


def exercise_explorer(page, explorer, artifacts: Path, name: str) -> dict:
    """Every check on one Explorer (see the module docstring); returns what it saw."""
    found = {}
    canvas = explorer.locator("canvas").first
    readout = explorer.locator(".nbviz-readout")
    status = explorer.locator(".nbviz-status")
    busy = explorer.locator(".nbviz-busy")
    method = explorer.locator(".widget-dropdown", has_text="method").locator("select")

    def centre():
        canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")

    centre()
    before = poll(page, lambda: (lambda a: a if interior(a).std() > 8 else None)(shot(canvas)),
                  what="the image on the canvas")
    h, w = before.shape[:2]
    assert abs(h - w) <= 2 and h >= 400, before.shape  # shown enlarged, aspect kept

    # ---- click: the receptive field appears around the point, the readout follows
    cy, cx = int(h * 0.6), int(w * 0.6)
    canvas.click(position={"x": cx, "y": cy})
    poll(page, lambda: "pointer (y=" in readout.text_content() and "RF size" in readout.text_content(),
         what="the readout")
    r = max(12, h // 20)

    def overlay_changed():
        a = shot(canvas)
        near = np.abs(a[cy - r:cy + r, cx - r:cx + r] - before[cy - r:cy + r, cx - r:cx + r]).mean()
        return a if near > 12 and status.text_content().startswith("receptive field (click):") else None

    after_click = poll(page, overlay_changed, what="the receptive field around the click")
    found["readout"] = readout.text_content().strip()

    # ---- the cell grid: whole rows of pixels change (lines, not dots)
    grid = explorer.locator(".widget-checkbox", has_text="cell grid").locator("input")
    grid.check()
    centre()

    def grid_rows():
        a = shot(canvas)
        changed = np.abs(a - after_click).max(axis=-1) > 40
        rows = int((changed[:, 8:-8].mean(axis=1) > 0.8).sum())
        return (a, rows) if rows >= 4 else None

    with_grid, rows = poll(page, grid_rows, what="visible grid lines")
    Image.fromarray(with_grid.astype(np.uint8)).save(artifacts / f"{name}_grid.png")
    found["grid_rows"] = rows
    grid.uncheck()

    # ---- busy indicator: a computation that is not cached (more SmoothGrad samples) shows it
    method.select_option(label="SmoothGrad")
    poll(page, lambda: status.text_content().startswith("SmoothGrad"), what="SmoothGrad")
    samples = explorer.locator(".widget-slider:visible", has_text="samples").locator(".widget-readout")
    samples.fill("63")
    samples.press("Enter")
    seen_busy = poll(page, lambda: (lambda t: t if "computing SmoothGrad" in t else None)(busy.text_content()),
                     what="the busy indicator")
    poll(page, lambda: busy.text_content().strip() == "" and "refining" not in status.text_content(),
         what="the busy indicator to go")
    found["busy"] = seen_busy.strip()

    # ---- every method of the table: the canvas changes, the status names the method
    centre()
    previous = shot(canvas)
    for row in table.METHODS:
        if row.key == "smoothgrad":
            continue  # shown just now
        method.select_option(label=row.label)
        centre()

        def shown():
            text = status.text_content()
            if "error" in text[:8]:
                raise AssertionError(f"{row.label}: {text}")
            return text.lower().startswith(row.label.lower()) and busy.text_content().strip() == ""

        poll(page, shown, what=f"{row.label} in the status")
        # its map is painted over the picture; a method run on demand waits for Run (feature
        # visualisation is run further down) and first clears the overlay
        reference = previous if row.key == "featvis" else before
        if row.on_demand and row.key != "featvis":
            explorer.get_by_role("button", name="Run").click()
            poll(page, shown, what=f"{row.label} computed")

        def painted():
            a = shot(canvas)
            return a if (np.abs(interior(a) - interior(reference)).max(axis=-1) > 30).sum() > 2000 else None

        previous = poll(page, painted, what=f"{row.label} on the canvas")
        Image.fromarray(previous.astype(np.uint8)).save(artifacts / f"{name}_{row.key}.png")
    found["methods"] = len(table.METHODS)

    # ---- Save PNG: a browser download of the view
    link = explorer.locator("a.nbviz-save")
    last = table.METHODS[-1].key  # the method shown now
    poll(page, lambda: link.count() > 0 and f"nbviz-{last}-" in (link.get_attribute("download") or ""),
         what="the save link")
    with page.expect_download() as info:
        link.click()
    saved = info.value.path()
    png = Image.open(saved)
    assert png.size == (w, h) or abs(png.size[0] - w) <= 2, png.size
    found["download"] = info.value.suggested_filename

    # ---- feature visualisation: run, see steps, stop; progress text and status agree
    steps = explorer.locator(".widget-slider:visible", has_text="steps").locator(".widget-readout")
    steps.fill("400")
    steps.press("Enter")
    run = explorer.get_by_role("button", name="Run")
    run.scroll_into_view_if_needed()
    run.click()
    progress = explorer.locator(".widget-label", has_text=re.compile(r"step \d+ of \d+"))
    poll(page, lambda: progress.count() > 0 and re.search(r"step \d+ of 400", progress.first.text_content()),
         what="feature visualisation progress")
    explorer.get_by_role("button", name="Stop").click()
    poll(page, lambda: "stopped at step" in status.text_content(), what="the run to stop")
    text = re.search(r"stopped at step \d+ of 400", status.text_content()).group(0)
    poll(page, lambda: progress.first.text_content() == text, what="the progress text to agree")
    found["featvis"] = text
    return found


def test_explorer_in_jupyterlab(page, tmp_path):
    t0 = time.monotonic()
    nbdir = tmp_path / "nb"
    write_notebook(nbdir / "explorer.ipynb", ONE)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    with jupyterlab(nbdir, tmp_path) as (base, token), snapshot_on_error(page, artifacts / "failure.png"):
        page.goto(f"{base}/lab/tree/explorer.ipynb?token={token}")
        run_all_cells(page, lab=True)
        page.wait_for_selector(".nbviz-explorer canvas", timeout=120_000)
        print(f"\nJupyterLab: notebook ran after {time.monotonic() - t0:.1f} s")
        # the static snapshot output is in the notebook but hidden while the widget is live
        snapshot = page.locator(".jp-OutputArea-output img")
        assert snapshot.count() == 1 and not snapshot.first.is_visible()
        src0 = snapshot.first.get_attribute("src")
        found = exercise_explorer(page, page.locator(".nbviz-explorer").first, artifacts, "lab")
        # the kernel updated the saved snapshot after the results (what a saved notebook shows)
        poll(page, lambda: snapshot.first.get_attribute("src") != src0, what="the snapshot update")
        if os.environ.get("NBVIZ_UPDATE_DOCS") == "1":
            save_docs_screenshot(page, REPO / "docs" / "explorer.png")
        assert not page.js_errors, page.js_errors
    print(f"\nJupyterLab: {found} in {time.monotonic() - t0:.0f} s (artifacts: {artifacts})")


def test_explorer_in_notebook7(page, tmp_path):
    t0 = time.monotonic()
    nbdir = tmp_path / "nb"
    write_notebook(nbdir / "explorer.ipynb", ONE)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    with notebook7(nbdir, tmp_path) as (base, token), snapshot_on_error(page, artifacts / "failure.png"):
        page.goto(f"{base}/notebooks/explorer.ipynb?token={token}")
        run_all_cells(page, lab=False)
        page.wait_for_selector(".nbviz-explorer canvas", timeout=120_000)
        found = exercise_explorer(page, page.locator(".nbviz-explorer").first, artifacts, "nb7")
        # Notebook 7.6's own settings loader throws this while the page loads, also for a notebook
        # holding only "1+1" (in notebook_core's SettingRegistry.load): not the Explorer's
        real = [e for e in page.js_errors if e != "Cannot read properties of undefined (reading 'schema')"]
        assert not real, real
    print(f"\nNotebook 7: {found} in {time.monotonic() - t0:.0f} s (artifacts: {artifacts})")


def test_two_explorers_in_voila(page, tmp_path):
    t0 = time.monotonic()
    nb = tmp_path / "nb" / "explorer.ipynb"
    write_notebook(nb, TWO)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    with voila(nb, tmp_path) as base, snapshot_on_error(page, artifacts / "failure.png"):
        page.goto(f"{base}/")  # Voila runs the notebook for this request
        page.wait_for_selector(".nbviz-explorer canvas", timeout=180_000)
        poll(page, lambda: page.locator(".nbviz-explorer canvas").count() >= 2, what="both Explorers")
        second = page.locator(".nbviz-explorer").nth(1)
        found = exercise_explorer(page, second, artifacts, "voila")
        # the first one is alive too: a click there draws its receptive field
        first = page.locator(".nbviz-explorer").first
        canvas = first.locator("canvas").first
        canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
        canvas.click(position={"x": 200, "y": 200})
        poll(page, lambda: first.locator(".nbviz-status").text_content().startswith("receptive field (click):"),
             what="the first Explorer's result")
        real = [e for e in page.js_errors if "font-awesome" not in e]
        assert not real, real
        log = (tmp_path / "voila.log").read_text()
        assert "IndexError" not in log and "Traceback" not in log, log[-3000:]
    print(f"\nVoila: {found} in {time.monotonic() - t0:.0f} s (artifacts: {artifacts})")


def save_docs_screenshot(page, path: Path):
    """Grad-CAM on the demo image, with the receptive field of the clicked cell on the object."""
    explorer = page.locator(".nbviz-explorer").first
    canvas = explorer.locator("canvas").first
    status = explorer.locator(".nbviz-status")
    explorer.locator(".widget-dropdown", has_text="method").locator("select").select_option(label="Grad-CAM")
    canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] * 41 / 64, "y": box["height"] * 41 / 64})  # on the shape
    poll(page, lambda: status.text_content().startswith("Grad-CAM at"), what="Grad-CAM")
    page.wait_for_timeout(500)
    path.parent.mkdir(exist_ok=True)
    explorer.screenshot(path=str(path))
