"""Fixtures for the dataset tests: the demo model and generated demo scenes (64×64, exact labels)."""

import numpy as np
import pytest

from nbviz import demo
from nbviz.demo import shapes


@pytest.fixture(scope="session")
def demo_model():
    return demo.load_model()


@pytest.fixture(scope="session")
def scenes():
    """96 generated scenes (never the shipped ones), labels balanced over the five classes."""
    return shapes.scenes(96, seed=4242)


def write_pngs(folder, images, labels=None, *, nested=True):
    """Write images as PNG files (every third into a subfolder) and a labels.csv; returns names."""
    from PIL import Image

    names = []
    for i, image in enumerate(images):
        name = f"sub/img{i:03d}.png" if nested and i % 3 == 0 else f"img{i:03d}.png"
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(image)).save(path)
        names.append(name)
    if labels is not None:
        lines = ["path,label"] + [f"{n},{int(l)}" for n, l in zip(names, labels)]
        (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return names
