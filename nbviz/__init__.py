"""nbviz: look inside convolutional networks from a notebook.

``import nbviz`` imports TensorFlow and nothing heavier: no model is built, nothing is downloaded.
The public functions are loaded on first use (``nbviz.gradcam``, ``nbviz.Explorer``, ...), so the
widget stack (ipywidgets, ipycanvas) is imported only when ``nbviz.Explorer`` is used.
"""

import importlib

from nbviz.probe import ImageInput, LayerInfo, Probe

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # attribution (nbviz/methods/)
    "saliency": "nbviz.methods.gradients",
    "smoothgrad": "nbviz.methods.gradients",
    "integrated_gradients": "nbviz.methods.gradients",
    "lrp": "nbviz.methods.lrp",
    "blur_ig": "nbviz.methods.path_ig",
    "guided_ig": "nbviz.methods.path_ig",
    "xrai": "nbviz.methods.xrai",
    "guided_backprop": "nbviz.methods.guided",
    "guided_relu": "nbviz.methods.guided",
    "gradcam": "nbviz.methods.gradcam",
    "gradcam_plus_plus": "nbviz.methods.gradcam",
    "guided_gradcam": "nbviz.methods.gradcam",
    "occlusion": "nbviz.methods.occlusion",
    "activations": "nbviz.methods.activations",
    "tile_channels": "nbviz.methods.activations",
    "layercam": "nbviz.methods.layercam",
    "eigencam": "nbviz.methods.eigencam",
    "scorecam": "nbviz.methods.scorecam",
    "ablationcam": "nbviz.methods.ablationcam",
    "rise": "nbviz.methods.rise",
    "vargrad": "nbviz.methods.gradients",
    "gradient_x_input": "nbviz.methods.gradients",
    # receptive fields
    "ReceptiveField": "nbviz.methods.receptive_field",
    "receptive_field": "nbviz.methods.receptive_field",
    "GradientRF": "nbviz.methods.receptive_field",
    "gradient_rf": "nbviz.methods.receptive_field",
    "RFGrid": "nbviz.methods.receptive_field",
    "rf_grid": "nbviz.methods.receptive_field",
    "fully_convolutional": "nbviz.methods.receptive_field",
    # per-model caches (probe, compiled functions, receptive fields, targets)
    "clear_cache": "nbviz.probe",
    "plot_rf_grid": "nbviz.methods.rf_plot",
    "plot_gradient_at": "nbviz.methods.rf_plot",
    "effective_rf": "nbviz.methods.erf",
    # training
    "Recorder": "nbviz.callbacks",
    "open_run": "nbviz.runstore",

    # semantic dictionary and neuron groups (Building Blocks of Interpretability)
    "dictionary": "nbviz.methods.dictionary",
    "SemanticDictionary": "nbviz.methods.dictionary",
    "neuron_groups": "nbviz.methods.neuron_groups",
    "NeuronGroups": "nbviz.methods.neuron_groups",
    "color_groups": "nbviz.methods.neuron_groups",
    # the widget
    "Explorer": "nbviz.widget",
    "Timeline": "nbviz.widget.timeline",
    # can I trust this map? (metrics, sanity checks, side-by-side comparison)
    "deletion": "nbviz.metrics",
    "insertion": "nbviz.metrics",
    "mufidelity": "nbviz.metrics",
    "pointing_game": "nbviz.metrics",
    "energy_in_box": "nbviz.metrics",
    "completeness": "nbviz.metrics",
    "randomised": "nbviz.sanity",
    "model_randomisation": "nbviz.sanity",
    "compare": "nbviz.comparison",
    "compare_scores": "nbviz.comparison",
    # whole datasets (nbviz/dataset/)
    "explain_dataset": "nbviz.dataset",
    "open_results": "nbviz.dataset",
    # the widget-free session the Explorer (and other views) build on
    "Session": "nbviz.session",
    "CompareView": "nbviz.widget.compare_view",

    # browse a results store, open an image in the Explorer
    "Gallery": "nbviz.widget.gallery",
}
_SUBMODULES = (
    "featvis",
    "demo",
    "methods",
    "probe",
    "widget",
    "session",
    "callbacks",
    "metrics",
    "sanity",
    "comparison",
    "dataset",
    "session",
)

__all__ = ["ImageInput", "LayerInfo", "Probe", "__version__", *_EXPORTS, *_SUBMODULES]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"nbviz.{name}")
    raise AttributeError(f"module 'nbviz' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
