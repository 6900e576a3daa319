"""Every attribution method of the table × deletion / insertion AUC, pointing game, energy in the
box and model-randomisation rank correlation, on the demo's 32 held-out scenes.

    python benchmarks/trust_table.py [--scenes 32]

Prints the README's table (mean ± standard error over the scenes). The maps explain the trained
model's top class; the randomised copies explain the same class (cascade, seed 0, top layer first).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from nbviz import demo, metrics, sanity
from nbviz.methods import table


def main(scenes: int = 32) -> str:
    model, s = demo.load_model(), demo.load_images()
    tops = [int(np.argmax(model(s.images[i:i + 1]))) for i in range(scenes)]
    rng = np.random.default_rng(0)
    rows = [("random map", lambda m, x, target=None: rng.random((64, 64)), {})]
    for r in table.METHODS:
        if r.display in ("signed", "unsigned", "rgb") and r.runner is None:
            kwargs = r.kwargs({})
            if r.key == "integrated_gradients":
                kwargs["tolerance"] = None
            rows.append((r.label, r.function_object(), kwargs))

    def se(v):
        return np.std(v, ddof=1) / np.sqrt(len(v))

    lines = ["| method | deletion ↓ | insertion ↑ | pointing (box) | energy in box | ρ top layer | ρ all layers |",
             "|---|---|---|---|---|---|---|"]
    for label, fn, kwargs in rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            maps = [np.asarray(fn(model, s.images[i], target=tops[i], **kwargs)) for i in range(scenes)]
            d = [metrics.deletion(model, s.images[i], maps[i], target=tops[i]).auc for i in range(scenes)]
            ins = [metrics.insertion(model, s.images[i], maps[i], target=tops[i]).auc for i in range(scenes)]
            pg = [metrics.pointing_game(maps[i], s.boxes[i]) for i in range(scenes)]
            en = [metrics.energy_in_box(maps[i], s.boxes[i]) for i in range(scenes)]
            rho = []
            if label != "random map":
                for _, copy in sanity._steps(model, "cascade", 0, None):  # one copy, no retrace
                    rho.append([sanity.similarity(maps[i], fn(copy, s.images[i], target=tops[i], **kwargs))
                                ["spearman_abs"] for i in range(scenes)])
        cells = [f"{np.mean(d):.3f} ± {se(d):.3f}", f"{np.mean(ins):.3f} ± {se(ins):.3f}",
                 f"{sum(pg)}/{scenes}", f"{np.mean(en):.2f} ± {se(en):.2f}"]
        cells += [f"{np.mean(rho[k]):.2f} ± {se(rho[k]):.2f}" for k in (0, -1)] if rho else ["", ""]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=32)
    main(parser.parse_args().scenes)
