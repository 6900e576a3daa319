"""What is measured: groups of comparable rows, each group's floor, options and speed target.

The nbviz method rows come from nbviz's method table (``nbviz.methods.table.METHODS``): every
method there with a plain function (no widget runner) is a row, so a new method is benchmarked
as soon as it has its table row. What the table cannot know lives here: the floor a method is
compared with (default ``fwd_bwd@1``), the options it is benchmarked with, its speed target.

Plain data and no TensorFlow import at module level: the driver, the report and the peers'
process read it.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Group", "groups", "PEER_METHODS", "PEERS", "FEATVIS_LAYER", "GRADCAM_LAYER",
           "occlusion_window", "occlusion_copies"]


def occlusion_window(size: int) -> int:
    """Occlusion window (= stride) that cuts the image into 7×7 patches: 32 at 224."""
    return max(1, size // 7)


def occlusion_copies(size: int) -> int:
    """How many occluded copies one occlusion map needs: 49."""
    return (size // occlusion_window(size)) ** 2


@dataclasses.dataclass(frozen=True)
class Group:
    """Rows doing comparable work: the floor, nbviz's row, and the peers' rows of the method.

    ``floor``: "forward@N" / "fwd_bwd@N" (None: no floor, an absolute target); ``floor_times``:
    the floor is this many of those calls (feature visualisation: one per step); ``spec``: the
    nbviz row's spec (kind, name, options, batch); ``max_ratio`` / ``max_seconds``: the target;
    ``clock``: what ``max_ratio`` compares, the wall time or an extra both rows report (the Ray
    rows: ``after_startup``, the steady state once the actors are up); ``variants``: more nbviz
    rows, ``(name, options)`` changed from ``spec``'s, each reported over the floor and as
    nbviz's row over it (one floor serves them all, interleaved in the same rounds);
    ``min_samples``: warm samples taken even past the time budget (rows whose ratio is noisy).
    """

    key: str
    label: str
    spec: dict
    floor: str | None = "fwd_bwd@1"
    floor_times: int = 1
    max_ratio: float | None = None
    max_seconds: float | None = None
    peers: tuple[str, ...] = ()
    clock: str = "wall"
    variants: tuple[tuple[str, dict], ...] = ()
    min_samples: int = 3

    def target_text(self) -> str:
        parts = []
        if self.max_ratio is not None:
            parts.append(f"≤ {self.max_ratio:g}× floor" + ("" if self.clock == "wall" else f" ({self.clock})"))
        if self.max_seconds is not None:
            ms = self.max_seconds * 1000
            parts.append(f"≤ {ms:g} ms" if ms < 1000 else f"≤ {self.max_seconds:g} s")
        return " and ".join(parts)


# per method key: (floor or None, options, max_ratio[, floor_times]) where they differ from the
# default
_BENCH = {
    "gradcam": ("fwd_bwd@1", {}, 0.55),
    "gradcam_pp": ("fwd_bwd@1", {}, 0.6),
    "saliency": ("fwd_bwd@1", {}, 1.05),
    "guided_backprop": ("fwd_bwd@1", {}, 1.1),
    "smoothgrad": ("fwd_bwd@20", {"n": 20}, 1.1),
    "vargrad": ("fwd_bwd@20", {"n": 20}, 1.1),
    "integrated_gradients": ("fwd_bwd@32", {"steps": 32, "batch_size": 32}, 1.1),
    "blur_ig": ("fwd_bwd@32", {"steps": 32}, 1.2),
    "guided_ig": ("fwd_bwd@1", {"steps": 32}, 1.2, 32),  # sequential: one gradient per step
    "xrai": ("fwd_bwd@32", {"steps": 32}, None, 2),  # two IG runs (black and white baselines)
    "occlusion": ("forward@{occ}:64", {"window": "{win}", "stride": "{win}", "batch_size": 64}, 1.05),
    "scorecam": ("forward@{channels}:64", {"layer": "{mask_layer}"}, 1.1),
    "ablationcam": ("forward@{channels}:64", {"layer": "{mask_layer}"}, 1.1),
    "layercam": ("fwd_bwd@1", {}, 0.6),
    "eigencam": ("fwd_bwd@1", {}, 0.6),
    "rise": ("forward@4000:256", {"n": 4000}, 1.1),
    "lrp": ("fwd_bwd@1", {}, 1.5),
}

# methods measured per peer (those the library offers)
PEER_METHODS: dict[str, tuple[str, ...]] = {
    "tf-keras-vis": ("saliency", "gradcam", "gradcam@8", "smoothgrad", "featvis"),
    "tf-explain": ("saliency", "gradcam", "gradcam@8", "smoothgrad", "integrated_gradients",
                   "occlusion"),
    "xplique": ("saliency", "guided_backprop", "gradcam", "gradcam@8", "smoothgrad",
                "integrated_gradients", "occlusion", "featvis"),
}
PEERS = tuple(PEER_METHODS)

# feature visualisation objective: one channel of a late layer (most of the network runs)
FEATVIS_LAYER = {"mobilenetv2": "out_relu", "resnet50": "conv5_block3_out", "tiny": "relu2"}
# the layer Grad-CAM explains by default (the last spatial layer); tf-explain is given it
GRADCAM_LAYER = {"mobilenetv2": "out_relu", "resnet50": "conv5_block3_out", "tiny": "conv3"}
# the semantic dictionary's and neuron groups' layer (MobileNetV2: 14×14×576)
DICTIONARY_LAYER = {"mobilenetv2": "block_13_expand_relu", "resnet50": "conv4_block6_out",
                    "tiny": "relu2"}
# feature-visualisation steps of the icon rows (the issue states 128; 16 keeps `make bench` within
# its 20 minutes on 2 cores, and the row is a ratio to the same work)
ICON_STEPS = 16
# the layer (and its channels) of the CAMs that run one masked or ablated copy per channel:
# MobileNetV2's last block (320 channels at 7×7), as 1280 copies of Score-CAM and Ablation-CAM at
# out_relu took 15 s a call and a tenth of the run; the rows are ratios to the same bare passes
MASK_LAYER = {"mobilenetv2": ("block_16_project_BN", 320), "resnet50": ("conv5_block3_out", 2048),
              "tiny": ("conv3", 16)}


def _fill(value, size: int, model: str):
    if isinstance(value, str):
        value = value.replace("{occ}", str(occlusion_copies(size))).replace(
            "{win}", str(occlusion_window(size))).replace("{channels}", str(MASK_LAYER[model][1])).replace(
            "{mask_layer}", MASK_LAYER[model][0])
        return int(value) if value.isdigit() else value
    return value


#: groups a ``--quick`` run leaves out: each takes tens of seconds (thousands of forward passes,
#: a Ray pool, a 4-pane comparison), so the quick run keeps the rows that take seconds
QUICK_SKIP = ("rise", "scorecam", "ablationcam", "xrai", "guided_ig", "blur_ig", "compare4",
              "recorder", "dataset_local", "first_partial_featvis")


def groups(model: str, size: int, *, featvis_steps: int = 100, rise_masks: int | None = None,
           quick: bool = False) -> list[Group]:
    """Every group measured on ``model`` at ``size``², in order (``quick``: without
    :data:`QUICK_SKIP`, icons, Ray and feature visualisation)."""
    from nbviz.methods import table

    out = []
    for m in table.METHODS:
        if m.runner is not None:
            continue
        floor, options, max_ratio, *times = _BENCH.get(m.key, ("fwd_bwd@1", {}, None))
        options = {k: _fill(v, size, model) for k, v in options.items()}
        floor = _fill(floor, size, model)
        if m.key == "rise" and rise_masks:
            options["n"], floor = rise_masks, f"forward@{rise_masks}:256"
        out.append(Group(m.key, m.label, {"kind": "method", "name": m.key, "options": options},
                         floor, floor_times=times[0] if times else 1, max_ratio=max_ratio,
                         peers=tuple(p for p, ms in PEER_METHODS.items() if m.key in ms)))
    out.append(Group("gradcam@8", "Grad-CAM, batch 8",
                     {"kind": "method", "name": "gradcam", "batch": 8, "options": {}}, "fwd_bwd@8",
                     peers=tuple(p for p, ms in PEER_METHODS.items() if "gradcam@8" in ms)))
    out += [
        Group("receptive_field", "analytic receptive field (cached)", {"kind": "receptive_field"},
              None, max_seconds=0.005),
        Group("gradient_rf", "gradient RF of one cell (theoretical)", {"kind": "gradient_rf"},
              max_ratio=1.1),
        Group("gradient_rf_effective", "gradient RF of one cell (effective)",
              {"kind": "gradient_rf", "options": {"mode": "effective"}}, max_ratio=1.1),
        Group("curves", "deletion + insertion, 20 steps each", {"kind": "curves"}, "forward@42",
              max_ratio=1.2),
        Group("randomisation", "model randomisation, Grad-CAM, every layer (demo model)",
              {"kind": "randomisation", "options": {"method": "gradcam"}}, None, max_seconds=10.0),
        Group("dictionary", "semantic dictionary at a click (k=8, by attribution)",
              {"kind": "dictionary", "options": {"layer": DICTIONARY_LAYER[model]}}, max_seconds=0.1),
        Group("neuron_groups", "neuron groups (NMF, n=6) incl. forward/backward",
              {"kind": "neuron_groups", "options": {"layer": DICTIONARY_LAYER[model]}}, None,
              max_seconds=0.3),
        Group("icons_cached", "8 icons read from the disk cache",
              {"kind": "icons", "options": {"layer": FEATVIS_LAYER[model], "size": 128,
                                            "steps": ICON_STEPS, "cached": True}}, None,
              max_seconds=0.02),
        Group("dataset_local", "explain_dataset, local engine, 256 images, Grad-CAM (variants "
              "nopixels: the pixels not stored; nowrite: no array written)",
              {"kind": "dataset", "options": {"engine": "local"}}, "gradcam@256:32", max_ratio=1.11,
              variants=(("nopixels", {"store_images": False}), ("nowrite", {"write_arrays": False})),
              min_samples=6),
        Group("session_switch", "method switch → result (6 cheap methods, per switch)",
              {"kind": "session_switch"}, None, max_seconds=0.3),
        Group("recorder", "training epoch with a Recorder (demo CNN)",
              {"kind": "recorder"}, "fit_epoch@64"),
        *[Group(f"first_partial_{m}", f"{label}: first overlay (session, warm)",
                {"kind": "session_first_partial", "options": {"method": m, "controls": c}}, None,
                max_seconds=1.0)
          for m, label, c in (("smoothgrad", "SmoothGrad (20 samples)", {"samples": 20}),
                              ("integrated_gradients", "integrated gradients (32 steps)",
                               {"ig_steps": 32}),
                              ("occlusion", "occlusion (32×32 windows, stride 32)",
                               {"window": min(64, occlusion_window(size)),
                                "stride": min(32, occlusion_window(size))}),
                              ("featvis", "feature visualisation", {"steps": 32}))],
        Group("compare4", "compare view, 4 panes with deletion/insertion AUC", {"kind": "compare4"},
              None),
        Group("explorer_click", "Explorer click → frame", {"kind": "explorer_click"}, None,
              max_seconds=0.15),
        Group("frame_512", "512×512 RGBA frame build + send", {"kind": "frame_512"}, None,
              max_seconds=0.03),
    ]
    if not quick:
        ascent = {"layer": FEATVIS_LAYER[model], "size": 128, "steps": ICON_STEPS}
        out.append(Group("icons", f"8 icons, 128², {ICON_STEPS} steps, one batch",
                         {"kind": "icons", "options": ascent}, None, max_ratio=1.2))
        out[-1] = dataclasses.replace(out[-1], floor="ascent@8")
    if not quick:
        out.append(Group("dataset_ray", "explain_dataset, Ray engine, 1 actor (variant actors2: 2 "
                         "actors), 256 images, over the local engine",
                         {"kind": "dataset", "options": {"engine": "ray", "actors": 1}},
                         "dataset_local@32", max_ratio=1.15, clock="after_startup",
                         variants=(("actors2", {"actors": 2}),)))
    if model in FEATVIS_LAYER and not quick:
        out.append(Group("featvis", f"feature visualisation, {featvis_steps} steps",
                         {"kind": "featvis", "options": {"layer": FEATVIS_LAYER[model],
                                                         "steps": featvis_steps}},
                         "fwd_bwd@1", floor_times=featvis_steps, max_ratio=1.3,
                         peers=tuple(p for p, ms in PEER_METHODS.items() if "featvis" in ms)))
    if quick:
        out = [g for g in out if g.key not in QUICK_SKIP]
    return out


def floor_spec(key: str, options: dict | None = None) -> dict:
    """``"fwd_bwd@8"`` -> ``{"kind": "floor", "name": "fwd_bwd", "batch": 8}``; ``"forward@1280:64"``:
    1280 images run as forward passes of 64 at a time (``"chunk": 64``), as the method batches
    them; a table method's key (``"gradcam@256:32"``) is that method called bare, here on 256
    images in calls of 32 (``options``: the ascent floor's layer, size and steps)."""
    name, _, batch = key.partition("@")
    batch, _, chunk = batch.partition(":")
    spec = {"kind": "floor", "name": name, "batch": int(batch), "options": dict(options or {})}
    if chunk:
        spec["chunk"] = int(chunk)
    return spec
