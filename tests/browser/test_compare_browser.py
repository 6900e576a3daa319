"""The compare view in a real browser (Voila, headless Debian Chromium via Playwright), one page load.

The notebook shows a compare view of four methods on a demo scene, waits for it, and writes the
kernel's pane frames and score lines to files. The test checks in the page that the four canvases
show four different overlays, each the kernel's frame of its own pane, that the text under each
pane is the kernel's scores, and that a click on one pane moves the crosshair in all four.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.browser.conftest import _need, poll, shot, snapshot_on_error, voila, write_notebook

pytestmark = [pytest.mark.browser]

Image = _need("PIL.Image")

CELLS = [
    "import os, json, numpy as np\n"
    "from nbviz import CompareView, demo\n"
    "v = CompareView(demo.load_model(), demo.image(3), methods=['gradcam', 'saliency', "
    "'integrated_gradients', 'occlusion'], steps=5)\n"
    "v",
    "v.wait()\n"
    "out = os.environ['COMPARE_OUT']\n"
    "np.savez(out + '/frames.npz', *[p.frame for p in v.panes])\n"
    "json.dump([v.score_line(i) for i in range(len(v.panes))], open(out + '/scores.json', 'w'))",
]


def fit(a: np.ndarray, shape) -> np.ndarray:
    """A screenshot at the frame's size (screenshots can be a pixel larger)."""
    img = Image.fromarray(a.astype(np.uint8)).resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(img).astype(int)


def test_compare_view_in_voila(page, tmp_path, monkeypatch):
    out = tmp_path / "kernel"
    out.mkdir()
    monkeypatch.setenv("COMPARE_OUT", str(out))
    path = tmp_path / "nb" / "compare.ipynb"
    write_notebook(path, CELLS)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    with voila(path, tmp_path) as base, snapshot_on_error(page, artifacts / "failure.png"):
        page.goto(f"{base}/")  # Voila runs the notebook (the second cell waits for the panes)
        page.wait_for_selector(".nbviz-compare .nbviz-compare-pane canvas", timeout=120_000)
        panes = page.locator(".nbviz-compare .nbviz-compare-pane")
        assert panes.count() == 4
        frames = np.load(out / "frames.npz")
        kernel = [frames[f"arr_{i}"][..., :3].astype(int) for i in range(4)]
        scores = json.loads((out / "scores.json").read_text())
        assert all(re.search(r"deletion \d\.\d{3} ↓ · insertion \d\.\d{3} ↑ · pointing (hit|miss)", s)
                   for s in scores), scores
        canvases = [panes.nth(i).locator("canvas") for i in range(4)]
        canvases[0].evaluate("c => c.scrollIntoView({block: 'center', inline: 'center'})")

        def painted():
            shots = [fit(shot(c), kernel[0].shape) for c in canvases]
            # each canvas shows its own pane's frame: nearest to it among the four
            for i, s in enumerate(shots):
                d = [np.abs(s - k).mean() for k in kernel]
                if not (d[i] < 6 and d[i] == min(d)):
                    return None
            return shots

        shots = poll(page, painted, what="the four panes' frames")
        for i in range(4):
            for j in range(i + 1, 4):
                # four different overlays: more than 2 % of the pixels differ clearly
                assert (np.abs(shots[i] - shots[j]).max(-1) > 30).mean() > 0.02, (i, j)
        for i in range(4):  # the scores in the page are the kernel's
            text = panes.nth(i).locator(".nbviz-compare-scores").text_content().strip()
            assert text == scores[i], (text, scores[i])
        for i, s in enumerate(shots):
            Image.fromarray(s.astype(np.uint8)).save(artifacts / f"pane{i}.png")

        # a click on the third pane puts the crosshair in all four
        h, w = kernel[0].shape[:2]
        box = canvases[2].bounding_box()
        cy, cx = int(h * 0.3), int(w * 0.6)
        canvases[2].click(position={"x": cx * box["width"] / w, "y": cy * box["height"] / h})
        page.locator(".nbviz-compare-readout", has_text="point (y=").wait_for()
        r = 14

        def moved():
            after = [fit(shot(c), kernel[0].shape) for c in canvases]
            ok = all(np.abs(a[cy - r:cy + r, cx - r:cx + r] - s[cy - r:cy + r, cx - r:cx + r]).mean() > 8
                     for a, s in zip(after, shots))
            return after if ok else None

        poll(page, moved, what="the crosshair in every pane")
        page.screenshot(path=str(artifacts / "page.png"), full_page=True)
        real = [e for e in page.js_errors if "font-awesome" not in e]
        assert not real, real
    print(f"\ncompare view in Voila: {scores} (artifacts: {artifacts})")
