"""The Gallery in a real browser (JupyterLab, headless Debian Chromium via Playwright): sort the
tiles from the page, open one, and see the Explorer appear with its canvas showing the stored map.

The results store is built before the server starts (12 demo scenes, Grad-CAM, the demo model's
file recorded in the store, so the notebook opens it with ``Gallery(out)`` alone). One page load.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.browser.conftest import (
    _need, jupyterlab, poll, run_all_cells, shot, snapshot_on_error, write_notebook,
)

pytestmark = [pytest.mark.browser]

Image = _need("PIL.Image")


@pytest.fixture
def store(tmp_path):
    import nbviz
    from nbviz import demo
    from nbviz.demo import shapes

    s = shapes.scenes(12, seed=77)
    out = tmp_path / "nb" / "store"
    nbviz.explain_dataset(str(demo.MODEL_PATH), s.images, labels=s.labels, methods=("gradcam",), out=out,
                          batch_size=12, class_names=demo.LABELS, progress=False)
    return out


def test_gallery_sorts_and_opens_an_image_in_jupyterlab(page, tmp_path, store):
    t0 = time.monotonic()
    nbdir = tmp_path / "nb"
    write_notebook(nbdir / "gallery.ipynb", [f"from nbviz import Gallery\ng = Gallery({str(store)!r}, page_size=6)\ng"])
    expected = pq.read_table(store / "results.parquet").sort_by([("score", "descending"), ("index", "ascending")])
    first = expected.slice(0, 1).to_pylist()[0]
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    with jupyterlab(nbdir, tmp_path) as (base, token), snapshot_on_error(page, artifacts / "failure.png"):
        page.goto(f"{base}/lab/tree/gallery.ipynb?token={token}")
        run_all_cells(page, lab=True)
        gallery = page.locator(".nbviz-gallery").first
        tiles = gallery.locator(".nbviz-gallery-tile")
        poll(page, lambda: tiles.count() == 6, what="six tiles")
        assert gallery.locator(".nbviz-gallery-tile img").count() == 6  # the thumbnails
        # sort by score, descending, from the page's controls
        gallery.locator(".widget-dropdown", has_text="sort by").locator("select").select_option("score")
        gallery.locator(".widget-checkbox", has_text="descending").locator("input").check()
        poll(page, lambda: tiles.first.text_content().strip().startswith(f"{first['id']} ·")
             and f"score {first['score']:.3g}" in tiles.first.text_content(), what="the tiles sorted by score")
        texts = [tiles.nth(i).text_content() for i in range(6)]
        for row, text in zip(expected.slice(0, 6).to_pylist(), texts):
            assert text.strip().startswith(f"{row['id']} ·"), (row["id"], text)
        # open the first tile: the Explorer appears with the stored Grad-CAM on its canvas
        tiles.first.locator(".nbviz-gallery-open").click()
        explorer = gallery.locator(".nbviz-explorer")
        poll(page, lambda: explorer.count() == 1 and explorer.locator("canvas").count() > 0, what="the Explorer")
        status = explorer.locator(".nbviz-status")
        poll(page, lambda: "(stored)" in status.text_content(), what="the stored map")
        canvas = explorer.locator("canvas").first
        canvas.evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")
        picture = poll(page, lambda: (lambda a: a if a[4:-4, 4:-4].std() > 8 else None)(shot(canvas)),
                       what="a picture on the canvas")
        Image.fromarray(picture.astype(np.uint8)).save(artifacts / "explorer.png")
        page.screenshot(path=str(artifacts / "page.png"), full_page=True)
        assert not page.js_errors, page.js_errors
    print(f"\nGallery in JupyterLab: {time.monotonic() - t0:.1f} s (artifacts: {artifacts})")
