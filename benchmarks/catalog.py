"""What is measured: each method, the floor it is compared with, and its speed target.

Plain data, no TensorFlow: shared by the nbviz rows, the peers' process and the report.
"""

from __future__ import annotations

import dataclasses



def occlusion_window(size: int) -> int:
    """Occlusion window (= stride) that cuts the image into 7×7 patches: 32 at 224."""
    return max(1, size // 7)


def occlusion_copies(size: int) -> int:
    """How many occluded copies one occlusion map needs: 49."""
    return (size // occlusion_window(size)) ** 2


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    label: str
    floor: str | None  # floor key, "{occ}" stands for the occlusion copy count
    floor_times: int = 1  # the floor is this many calls of the floor key (featvis: its steps)
    max_ratio: float | None = None  # target: warm time / floor
    max_seconds: float | None = None  # target: warm time
    target_models: tuple[str, ...] | None = None  # where the target applies (None: every model)
    batch: int = 1

    def floor_key(self, size: int) -> str | None:
        if self.floor is None:
            return None
        return self.floor.replace("{occ}", str(occlusion_copies(size)))

    def target_text(self) -> str:
        parts = []
        if self.max_ratio is not None:
            parts.append(f"≤ {self.max_ratio:g}× floor")
        if self.max_seconds is not None:
            ms = self.max_seconds * 1000
            parts.append(f"≤ {ms:g} ms" if ms < 1000 else f"≤ {self.max_seconds:g} s")
        return " and ".join(parts)

    def has_target(self, model: str) -> bool:
        if self.max_ratio is None and self.max_seconds is None:
            return False
        return self.target_models is None or model in self.target_models


MOBILE = ("mobilenetv2",)

METHODS: dict[str, Method] = {m.name: m for m in [
    Method("saliency", "saliency", "fwd_bwd@1", max_ratio=1.05),
    Method("guided_backprop", "guided backprop", "fwd_bwd@1", max_ratio=1.1),
    Method("gradcam", "Grad-CAM", "fwd_bwd@1", max_ratio=0.55, target_models=MOBILE),
    Method("gradcam@8", "Grad-CAM, batch 8", "fwd_bwd@8", batch=8),
    Method("guided_gradcam", "guided Grad-CAM", "fwd_bwd@1"),
    Method("smoothgrad", "SmoothGrad (20 samples)", "fwd_bwd@20", max_ratio=1.1),
    Method("integrated_gradients", "integrated gradients (32 steps)", "fwd_bwd@32",
           max_ratio=1.1),
    Method("occlusion", "occlusion (32×32 windows, stride 32)", "forward@{occ}",
           max_ratio=1.05),
    Method("receptive_field", "analytic receptive field (cached)", None, max_seconds=0.005),
    Method("gradient_rf", "gradient RF of one cell (theoretical)", "fwd_bwd@1", max_ratio=1.1),
    Method("gradient_rf_effective", "gradient RF of one cell (effective)", "fwd_bwd@1",
           max_ratio=1.1),
    Method("featvis", "feature visualisation, 100 steps", "fwd_bwd@1", floor_times=100,
           max_ratio=1.3, max_seconds=3.2, target_models=MOBILE),
    Method("explorer_click", "Explorer click → frame", None, max_seconds=0.15,
           target_models=MOBILE),
    Method("frame_512", "512×512 RGBA frame build + send", None, max_seconds=0.03),
]}



def _table():
    """nbviz's method table (nbviz/methods/table.py imports nothing of nbviz: loaded alone, so
    the report does not import TensorFlow)."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "nbviz_method_table"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).resolve().parents[1] / "nbviz" / "methods" / "table.py")
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


#: the table's methods called through the generic path (no runner): a row each, with the
#: function's own defaults unless listed above; new table rows appear here by themselves
TABLE = _table()
GENERIC = tuple(m.key for m in TABLE.METHODS if m.runner is None)
for _row in TABLE.METHODS:
    if _row.runner is None and _row.key not in METHODS:
        METHODS[_row.key] = Method(_row.key, _row.label, None)

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
# models whose featvis row runs (100 steps of ResNet50 × several calls would not fit the budget)
FEATVIS_MODELS = ("mobilenetv2", "tiny")

__all__ = ["METHODS", "GENERIC", "TABLE", "Method", "PEERS", "PEER_METHODS", "FEATVIS_LAYER", "FEATVIS_MODELS", "GRADCAM_LAYER",
           "occlusion_window", "occlusion_copies"]
