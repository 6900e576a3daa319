"""nbviz: look inside convolutional networks from a notebook.

``import nbviz`` imports TensorFlow and nothing heavier: no model is built, nothing is downloaded,
and the widget stack (ipywidgets, ipycanvas) is imported only when ``nbviz.Explorer`` is used.
"""

from nbviz.probe import ImageInput, LayerInfo, Probe

__version__ = "0.1.0"

__all__ = ["ImageInput", "LayerInfo", "Probe", "__version__"]
