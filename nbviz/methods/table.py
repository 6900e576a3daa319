"""The method table: one declarative row per method that nbviz offers.

The Explorer's state traits, controls, links and grouping, the session's request keys, the
tests' method lists and the benchmark rows are all generated from :data:`METHODS`. Adding a
method is: write the function (``fn(model, image, *, target=None, layer=None, preprocess=None,
...) -> numpy``) in its own module under :mod:`nbviz.methods`, add one :class:`Method` row here,
and write its tests. Nothing else names methods one by one.

This module imports no method and no widget: functions are named as ``"module:function"`` and
imported when first called (:meth:`Method.function`).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping

__all__ = ["Control", "Method", "METHODS", "method", "controls", "DISPLAYS", "NEEDS", "VIEW_CONTROLS",
           "DEFAULT_CMAPS"]

#: how a result is shown. "unsigned": a map >= 0 on a sequential colormap; "signed": a map with
#: both signs on a diverging colormap centred on zero; "rgb": an H×W×3 signed picture around
#: mid-grey (guided backprop); "picture": an H×W×3 image in [0, 1] (feature visualisation);
#: "field": a receptive-field map with its boxes.
DISPLAYS = ("unsigned", "signed", "rgb", "picture", "field")
#: what a method reads from the Explorer besides its own controls
NEEDS = ("target", "layer", "channel", "point")
#: how an H×W×C result becomes the H×W map that is painted and read under the pointer
REDUCTIONS = (None, "sum", "abs_max", "mean")


@dataclasses.dataclass(frozen=True)
class Control:
    """One setting of a method: a state trait, a widget, and the keyword argument it feeds.

    ``kind``: "int", "float", "log" (a float on a log slider), "choice" (dropdown), "toggle"
    (toggle buttons) or "bool" (checkbox). ``limits``: (min, max, step) for numbers, the choices
    for "choice"/"toggle". ``arg``: the function's keyword (default: ``name``). Controls with the
    same name in several rows are one setting and must agree on everything.
    """

    name: str
    kind: str
    default: Any
    limits: tuple = ()
    arg: str | None = None
    label: str = ""
    help: str = ""

    def __post_init__(self):
        if self.kind not in ("int", "float", "log", "choice", "toggle", "bool"):
            raise ValueError(f"control {self.name!r}: unknown kind {self.kind!r}")
        if self.kind in ("choice", "toggle") and self.default not in self.limits:
            raise ValueError(f"control {self.name!r}: default {self.default!r} not among {self.limits}")

    @property
    def keyword(self) -> str:
        return self.arg or self.name

    @property
    def text(self) -> str:
        return self.label or self.name.replace("_", " ")

    def check(self, value) -> Any:
        """``value`` as this control accepts it, or a ValueError that names the control."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be True or False, got {value!r}")
            return value
        if self.kind in ("choice", "toggle"):
            if value not in self.limits:
                raise ValueError(f"{self.name} must be one of {list(self.limits)}, got {value!r}")
            return value
        import math

        integer = self.kind == "int"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and value != int(value)):
            raise ValueError(f"{self.name} must be {'an int' if integer else 'a number'}, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{self.name} must be finite, got {value!r}")
        lo, hi = self.limits[0], self.limits[1]
        if not lo <= value <= hi:
            raise ValueError(f"{self.name} must be in [{lo}, {hi}], got {value!r}")
        return int(value) if integer else float(value)


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the table; see the module docstring.

    ``key``: short id; ``label``: the human name shown everywhere; ``function``: "module:name"
    of the pure function; ``display``: one of :data:`DISPLAYS`; ``family``: the group it is
    listed under; ``needs``: what it reads besides its controls (of :data:`NEEDS`);
    ``controls``: its own settings; ``fixed``: keyword arguments always passed; ``reduce``: how an
    H×W×C result becomes an H×W map (:data:`REDUCTIONS`); ``on_demand``: runs only when asked
    (the Run button), not on every change; ``progressive``: the function takes
    ``progress=callable(partial_result, fraction)`` and calls it with refinements, the last
    equal to the returned result; ``one_pass``: methods with the same value share one compiled
    forward/backward pass and are served together; ``layers``: which layers it can use
    ("spatial": any h×w×c layer, "differentiable": h×w×c layers the score is differentiable
    through); ``runner``: "module:name" of a ``(context, request, stop, progress) -> Result``
    that replaces the generic call when the method needs more than a map (receptive fields,
    feature visualisation); ``cite``: the paper.
    """

    key: str
    label: str
    function: str
    display: str
    family: str
    needs: frozenset = frozenset({"target"})
    controls: tuple = ()
    fixed: Mapping = dataclasses.field(default_factory=dict)
    reduce: str | None = None
    on_demand: bool = False
    progressive: bool = False
    one_pass: str | None = None
    layers: str = "spatial"
    runner: str | None = None
    cite: str = ""

    def __post_init__(self):
        if self.display not in DISPLAYS:
            raise ValueError(f"method {self.key!r}: display {self.display!r} not in {DISPLAYS}")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"method {self.key!r}: unknown needs {sorted(unknown)}")
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"method {self.key!r}: reduce {self.reduce!r} not in {REDUCTIONS}")

    def function_object(self) -> Callable:
        """The pure function this row calls (imported on first use)."""
        return _load(self.function)

    def runner_object(self) -> Callable | None:
        return None if self.runner is None else _load(self.runner)

    def defaults(self) -> dict:
        """{control name: default} of this row's controls."""
        return {c.name: c.default for c in self.controls}

    def kwargs(self, options: Mapping[str, Any]) -> dict:
        """The keyword arguments for :meth:`function_object` from control values by name
        (missing ones take their defaults), plus the fixed ones."""
        out = dict(self.fixed)
        for c in self.controls:
            out[c.keyword] = c.check(options.get(c.name, c.default))
        return out


def _load(spec: str) -> Callable:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


# --------------------------------------------------------------------------- controls

_MODE = Control("mode", "toggle", "theoretical", ("theoretical", "effective"), label="gradient",
                help="theoretical: every path counts; effective: gradients through the real activations")
_SAMPLES = Control("samples", "int", 16, (2, 64, 1), arg="n", help="noisy copies")
_NOISE = Control("noise", "float", 0.15, (0.0, 0.5, 0.01), help="noise, as a fraction of the image's range")
_IG_STEPS = Control("ig_steps", "int", 32, (4, 128, 1), arg="steps", label="IG steps", help="path steps")
_WINDOW = Control("window", "int", 16, (2, 64, 1), help="occluding window, pixels")
_STRIDE = Control("stride", "int", 8, (1, 32, 1), help="window stride, pixels")
_ASCENT = (
    Control("steps", "int", 64, (4, 512, 1)),
    Control("lr", "log", 0.05, (1e-3, 1.0, 0.1), label="learning rate"),
    Control("blur", "float", 0.0, (0.0, 3.0, 0.1)),
    Control("jitter", "int", 8, (0, 32, 1)),
    Control("scale", "float", 0.1, (0.0, 0.5, 0.01), label="scale ±"),
    Control("rotate", "float", 10.0, (0.0, 45.0, 1.0), label="rotation ±"),
    Control("octaves", "int", 1, (1, 5, 1)),
    Control("octave_scale", "float", 1.3, (1.0, 2.0, 0.05), label="octave ×"),
    Control("param", "toggle", "fft", ("fft", "pixel")),
)
_TOP_N = Control("top_n", "choice", None, (None, 16, 32, 64, 128, 256, 512), label="channels",
                 help="evaluate only the top-N channels by mean activation (None: all)")
_RISE = (
    Control("masks", "int", 4000, (100, 8000, 100), arg="n", help="random masks"),
    Control("cells", "int", 8, (2, 16, 1), help="mask grid cells per side"),
    Control("keep", "float", 0.5, (0.1, 0.9, 0.05), arg="p", label="keep p",
            help="probability that a grid cell is kept"),
)

_BLUR_STEPS = Control("blur_steps", "int", 32, (4, 200, 1), arg="steps", label="blur steps",
                      help="points on the blur path (PAIR saliency: 100)")
_MAX_SIGMA = Control("max_sigma", "float", 50.0, (1.0, 100.0, 1.0), label="max σ",
                     help="blur of the baseline, pixels")
_GUIDED = (
    Control("guided_steps", "int", 64, (8, 400, 1), arg="steps", label="guided steps",
            help="steps on the adaptive path (PAIR saliency: 200)"),
    Control("fraction", "float", 0.25, (0.05, 1.0, 0.05), help="features moved per pass"),
    Control("max_dist", "float", 0.02, (0.0, 1.0, 0.01), label="max distance",
            help="how far a feature may run ahead of the straight line"),
)
_LRP = (
    Control("lrp_rule", "choice", "epsilon", ("epsilon", "gamma", "alpha_beta", "z_plus",
                                             "epsilon_gamma_box", "epsilon_plus",
                                             "epsilon_alpha2_beta1"),
            arg="rule", label="rule", help="one rule for every layer, or a composite"),
    Control("epsilon", "log", 1e-6, (1e-9, 1.0, 0.1), label="ε", help="epsilon rule's stabiliser"),
    Control("gamma", "float", 0.25, (0.0, 2.0, 0.05), label="γ", help="gamma rule's boost of positive weights"),
    Control("lrp_alpha", "float", 2.0, (1.0, 4.0, 0.5), arg="alpha", label="α", help="alpha-beta rule (β = α - 1 conserves)"),
    Control("lrp_beta", "float", 1.0, (0.0, 3.0, 0.5), arg="beta", label="β"),
)

_TL = frozenset({"target", "layer"})

#: the view's own settings (how results are painted), with their defaults: the one place they live
VIEW_CONTROLS = (
    Control("cmap", "choice", "auto",
            ("auto", "inferno", "viridis", "magma", "plasma", "turbo", "jet", "hot", "gray", "RdBu_r", "coolwarm",
             "bwr", "PiYG"), label="colormap",
            help="auto: sequential for unsigned maps, diverging and centred on zero for signed ones"),
    Control("alpha", "float", 0.6, (0.0, 1.0, 0.05), label="opacity"),
    Control("grid", "bool", False, label="cell grid", help="the boundaries of the layer's output cells"),
)
#: the colormap of each display kind when ``cmap`` is "auto"
DEFAULT_CMAPS = {"unsigned": "inferno", "field": "inferno", "signed": "RdBu_r"}

# --------------------------------------------------------------------------- the table

METHODS: tuple[Method, ...] = (
    # receptive fields
    Method("rf", "receptive field (click)", "nbviz.methods.receptive_field:gradient_rf", "field",
           "receptive field", needs=frozenset({"layer", "point"}), controls=(_MODE,),
           runner="nbviz.session.runners:rf_click"),
    Method("rf_map", "RF of the class score map", "nbviz.methods.receptive_field:gradient_rf", "field",
           "receptive field", controls=(_MODE,), runner="nbviz.session.runners:rf_score_map"),
    Method("rf_max", "RF of the most activated cell", "nbviz.methods.receptive_field:gradient_rf", "field",
           "receptive field", controls=(_MODE,), runner="nbviz.session.runners:rf_max_cell"),
    # class activation maps
    Method("gradcam", "Grad-CAM", "nbviz.methods.gradcam:gradcam", "unsigned", "CAM", needs=_TL,
           one_pass="gradients", layers="differentiable", cite="Selvaraju et al. 2017"),
    Method("gradcam_pp", "Grad-CAM++", "nbviz.methods.gradcam:gradcam_plus_plus", "unsigned", "CAM",
           needs=_TL, one_pass="gradients", layers="differentiable", cite="Chattopadhyay et al. 2018"),
    Method("guided_gradcam", "guided Grad-CAM", "nbviz.methods.gradcam:guided_gradcam", "rgb", "CAM",
           needs=_TL, reduce="sum", layers="differentiable", cite="Selvaraju et al. 2017"),
    # gradients
    Method("saliency", "saliency", "nbviz.methods.gradients:saliency", "signed", "gradient",
           reduce="sum", one_pass="gradients", cite="Simonyan et al. 2014"),
    Method("guided_backprop", "guided backprop", "nbviz.methods.guided:guided_backprop", "rgb", "gradient",
           reduce="sum", cite="Springenberg et al. 2015"),
    Method("smoothgrad", "SmoothGrad", "nbviz.methods.gradients:smoothgrad", "signed", "gradient",
           controls=(_SAMPLES, _NOISE), reduce="sum", progressive=True, cite="Smilkov et al. 2017"),
    # the completeness check (a warning, and a rerun at twice the steps to estimate the steps
    # needed) is for direct calls; views and dataset runs take nbviz.metrics.completeness instead
    Method("integrated_gradients", "integrated gradients", "nbviz.methods.gradients:integrated_gradients",
           "signed", "gradient", controls=(_IG_STEPS,), fixed={"tolerance": None}, reduce="sum",
           progressive=True, cite="Sundararajan et al. 2017"),
    Method("blur_ig", "blur IG", "nbviz.methods.path_ig:blur_ig", "signed", "gradient",
           controls=(_BLUR_STEPS, _MAX_SIGMA), reduce="sum", cite="Xu et al. 2020"),
    Method("guided_ig", "guided IG", "nbviz.methods.path_ig:guided_ig", "signed", "gradient",
           controls=_GUIDED, reduce="sum", on_demand=True, cite="Kapishnikov et al. 2021"),
    Method("xrai", "XRAI", "nbviz.methods.xrai:xrai", "unsigned", "gradient", controls=(_IG_STEPS,),
           fixed={"score": "rank"}, on_demand=True, cite="Kapishnikov et al. 2019"),
    # relevance propagation
    Method("lrp", "LRP", "nbviz.methods.lrp:lrp", "signed", "relevance", controls=_LRP,
           reduce="sum", cite="Bach et al. 2015; Montavon et al. 2019"),
    # perturbation
    Method("occlusion", "occlusion", "nbviz.methods.occlusion:occlusion", "signed", "perturbation",
           controls=(_WINDOW, _STRIDE), progressive=True, cite="Zeiler & Fergus 2014"),
    # issue 16 (methods helper): more CAMs, VarGrad, gradient × input, RISE
    Method("layercam", "Layer-CAM", "nbviz.methods.layercam:layercam", "unsigned", "CAM", needs=_TL,
           layers="differentiable", cite="Jiang et al. 2021"),
    Method("eigencam", "Eigen-CAM", "nbviz.methods.eigencam:eigencam", "unsigned", "CAM",
           needs=frozenset({"layer"}), cite="Muhammad & Yeasin 2020"),
    Method("scorecam", "Score-CAM", "nbviz.methods.scorecam:scorecam", "unsigned", "CAM", needs=_TL,
           controls=(_TOP_N,), on_demand=True, cite="Wang et al. 2020"),
    Method("ablationcam", "Ablation-CAM", "nbviz.methods.ablationcam:ablationcam", "unsigned", "CAM",
           needs=_TL, on_demand=True, cite="Desai & Ramaswamy 2020"),
    Method("vargrad", "VarGrad", "nbviz.methods.gradients:vargrad", "unsigned", "gradient",
           controls=(_SAMPLES, _NOISE), reduce="sum", cite="Adebayo et al. 2018"),
    Method("gradient_x_input", "gradient × input", "nbviz.methods.gradients:gradient_x_input", "signed",
           "gradient", reduce="sum", cite="Shrikumar et al. 2016"),
    Method("rise", "RISE", "nbviz.methods.rise:rise", "unsigned", "perturbation",
           controls=_RISE, on_demand=True, cite="Petsiuk et al. 2018"),
    # features
    Method("activations", "activations", "nbviz.methods.activations:activations", "unsigned", "features",
           needs=frozenset({"layer", "channel"}), one_pass="gradients",
           runner="nbviz.session.runners:activation_channel"),
    Method("featvis", "feature visualisation", "nbviz.featvis:render", "picture", "features",
           needs=frozenset({"layer", "channel"}), controls=_ASCENT, on_demand=True,
           runner="nbviz.session.runners:feature_visualisation", cite="Olah et al. 2017"),
)

_BY_KEY = {m.key: m for m in METHODS}
if len(_BY_KEY) != len(METHODS):
    raise ValueError("method keys must be unique")


def method(key: str) -> Method:
    """The row of ``key``; a ValueError names the known keys."""
    try:
        return _BY_KEY[key]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {key!r}; choose one of {sorted(_BY_KEY)}") from None


def controls() -> dict[str, Control]:
    """Every control of every row by name (one setting per name; rows sharing a name agree)."""
    out: dict[str, Control] = {}
    for m in METHODS:
        for c in m.controls:
            if out.setdefault(c.name, c) != c:
                raise ValueError(f"control {c.name!r} is declared differently by two methods")
    clash = set(out) & {c.name for c in VIEW_CONTROLS}
    if clash:
        raise ValueError(f"method controls {sorted(clash)} clash with the view's own settings")
    return out


controls()  # checked at import: a conflicting row fails loudly, not in the widget
