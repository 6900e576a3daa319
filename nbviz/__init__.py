"""nbviz: look inside convolutional networks from a notebook.

``import nbviz`` imports TensorFlow and nothing heavier: no model is built, nothing is downloaded.
"""

from nbviz.probe import ImageInput, LayerInfo, Probe, probe

__version__ = "0.1.0"

__all__ = ["ImageInput", "LayerInfo", "Probe", "probe", "__version__"]
