"""Reference images ("baselines", "fills") for perturbation: what a hidden pixel becomes.

One meaning everywhere a pixel is removed (occlusion's fill, the deletion / insertion metrics,
MuFidelity): ``baseline`` is

* a number: every hidden value becomes that number (in the model's input space, after
  ``preprocess``: 0.0 is black for raw 0..255 or 0..1 inputs);
* ``"mean"``: the image's own per-channel mean (a flat grey-ish patch of the image's colour);
* ``"blur"``: the image blurred by a Gaussian of standard deviation ``max(H, W) / 16`` pixels
  (4 px on 64 px, 14 px on 224 px; Petsiuk et al. 2018 insert into a blurred copy), so hiding a
  region removes its detail but keeps its average colour;
* an array broadcastable to the image (H×W×C, or per channel C).

The blur uses :func:`scipy.ndimage.gaussian_filter` (reflecting borders) on each channel.
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

__all__ = ["BASELINES", "reference", "describe"]

#: the named baselines
BASELINES = ("blur", "mean")


def _check(baseline, name: str):
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(f"{name} must be a number, 'blur', 'mean' or an array broadcastable "
                             f"to the image, got {baseline!r}")
        return
    if isinstance(baseline, bool):
        raise TypeError(f"{name} must be a number, 'blur', 'mean' or an array, got {baseline!r}")
    if not isinstance(baseline, (numbers.Real, np.ndarray, tf.Tensor, list, tuple)):
        raise TypeError(f"{name} must be a number, 'blur', 'mean' or an array broadcastable to "
                        f"the image, got {type(baseline).__name__}")


def reference(baseline, images: tf.Tensor, *, name: str = "baseline") -> tf.Tensor:
    """The baseline for an N×H×W×C float32 batch, as a tensor of the batch's shape."""
    _check(baseline, name)
    x = images.numpy() if isinstance(images, tf.Tensor) else np.asarray(images, np.float32)
    if isinstance(baseline, str):
        if baseline == "mean":
            value = np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
        else:
            from scipy.ndimage import gaussian_filter

            sigma = max(x.shape[1], x.shape[2]) / 16.0
            value = gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="reflect")
        return tf.constant(np.ascontiguousarray(value, dtype=np.float32))
    value = baseline.numpy() if isinstance(baseline, tf.Tensor) else np.asarray(baseline)
    if not np.issubdtype(value.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {value.dtype}")
    value = value.astype(np.float32)
    try:
        value = np.broadcast_to(value, x.shape)
    except ValueError:
        raise ValueError(f"{name} of shape {value.shape} does not broadcast to the image batch "
                         f"{tuple(x.shape)}; give a number, 'blur', 'mean' or an H×W×C array"
                         ) from None
    if not np.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return tf.constant(np.ascontiguousarray(value))


def describe(baseline) -> str:
    """A short text for results and figure labels."""
    if isinstance(baseline, str):
        return baseline
    if isinstance(baseline, numbers.Real):
        return f"{float(baseline):g}"
    return "array"
