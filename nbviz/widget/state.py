"""What the Explorer shows, as traitlets (no ipywidgets): the view links its controls to these.

Changing a trait is all it takes to drive the Explorer, from a control, a test or a benchmark.
"""

from __future__ import annotations

import traitlets as T

__all__ = ["ExplorerState", "COMPUTE_TRAITS", "OVERLAY_TRAITS", "TOP_TRAITS", "ASCENT_TRAITS"]


class ExplorerState(T.HasTraits):
    """The Explorer's state; see the trait help strings."""

    method = T.Unicode("rf", help="key of the method shown (nbviz.widget.methods.METHODS)")
    layer = T.Unicode("", help="layer path the method looks at")
    target = T.Int(None, allow_none=True, help="class explained; None = the top prediction")
    channel = T.Int(0, help="channel of the layer (activations, feature visualisation)")
    point = T.Tuple(None, allow_none=True, help="(y, x) clicked, in image pixels")
    mode = T.Unicode("theoretical", help="gradient RF: 'theoretical' or 'effective'")
    # attribution options
    samples = T.Int(16, help="SmoothGrad: noisy samples")
    noise = T.Float(0.15, help="SmoothGrad: noise level (fraction of the image's range)")
    ig_steps = T.Int(32, help="integrated gradients: path steps")
    window = T.Int(16, help="occlusion: window size (pixels)")
    stride = T.Int(8, help="occlusion: stride (pixels)")
    # display
    cmap = T.Unicode("jet", help="matplotlib colormap of heatmaps")
    alpha = T.Float(0.5, help="overlay opacity in [0, 1]")
    grid = T.Bool(False, help="show the centres of the layer's output cells")
    # feature visualisation (ascent)
    steps = T.Int(64)
    lr = T.Float(0.05)
    blur = T.Float(0.0)
    jitter = T.Int(8)
    scale = T.Float(0.1, help="random scaling spread: scale=(1 - s, 1 + s)")
    rotate = T.Float(10.0, help="random rotation in degrees (±)")
    octaves = T.Int(1)
    octave_scale = T.Float(1.3)
    param = T.Unicode("fft", help="'fft' or 'pixel' parametrisation")


#: traits whose change asks for a new computation (the method decides which of them it reads)
COMPUTE_TRAITS = ("method", "layer", "target", "channel", "point", "mode", "samples", "noise",
                  "ig_steps", "window", "stride")
#: traits that only repaint the overlay layer from the last result
OVERLAY_TRAITS = ("cmap", "alpha")
#: traits that only repaint the top layer (box, crosshair, grid)
TOP_TRAITS = ("point", "layer", "grid")
#: feature-visualisation settings, read when a run starts
ASCENT_TRAITS = ("steps", "lr", "blur", "jitter", "scale", "rotate", "octaves", "octave_scale", "param")
