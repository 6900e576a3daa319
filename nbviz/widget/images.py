"""Images for the Explorer: from an array, a PIL image, a file path or a FileUpload value.

Every source becomes an ``H×W×C`` numpy array with the model's channel count (RGB or gray):
grayscale is repeated to RGB, an alpha channel is dropped, and (:func:`for_model`) the image keeps
its size when the model runs at it, unless the model declares a fixed size in its Input layer;
otherwise it is resized to the model's size (bilinear). uint8 images stay uint8; other numeric images become
float32 without rescaling, so pixel values keep meaning what the model expects.
"""

from __future__ import annotations

import io
import os

import numpy as np

__all__ = ["load_image", "fit_image", "for_model"]

_ACCEPTED = "a numpy array (H×W, H×W×1/3/4), a PIL image, a file path, PNG/JPEG bytes or a FileUpload value"


def load_image(source) -> np.ndarray:
    """Read ``source`` into an ``H×W×3`` array (uint8 for files and PIL images).

    ``source``: numpy array (H×W, H×W×1, H×W×3, H×W×4), PIL image, ``str``/``os.PathLike``
    file path, raw file bytes, or the ``value`` of an ``ipywidgets.FileUpload`` (its first file).
    """
    from PIL import Image

    if isinstance(source, Image.Image):
        return np.asarray(_pil_rgb(source))
    if isinstance(source, (str, os.PathLike)):
        if not os.path.exists(source):
            raise ValueError(f"image file {os.fspath(source)!r} does not exist")
        with Image.open(source) as im:
            return np.asarray(_pil_rgb(im))
    if isinstance(source, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(source))) as im:
                return np.asarray(_pil_rgb(im))
        except Exception as exc:
            raise ValueError(f"could not read the image bytes ({len(bytes(source))} bytes): {exc}") from None
    if isinstance(source, (tuple, list)) and source and isinstance(source[0], dict):
        return load_image(source[0].get("content", b""))  # FileUpload.value (ipywidgets 8)
    if isinstance(source, dict) and "content" in source:
        return load_image(source["content"])
    if isinstance(source, (tuple, list)) and not source:
        raise ValueError("the FileUpload has no file yet; upload an image first")
    try:
        array = np.asarray(source)
    except Exception:
        array = None
    if array is None or array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"image must be {_ACCEPTED}; got {type(source).__name__}")
    return _array_rgb(array)


def _pil_rgb(im):
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA").convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im


def _array_rgb(array: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(array):
        raise TypeError(f"image must be real-valued, got dtype {array.dtype}")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image must be H×W, H×W×1, H×W×3 or H×W×4, got shape {array.shape}")
    if 0 in array.shape[:2]:
        raise ValueError(f"image is empty: shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        array = array[..., :3]
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    out = array.astype(np.float32)
    if not np.isfinite(out).all():
        raise ValueError("image contains NaN or infinite values")
    return out


def fit_image(image: np.ndarray, size=None, channels: int = 3) -> np.ndarray:
    """Resize ``image`` (H×W×3) to ``size`` = (height, width) when given (bilinear), and give it
    ``channels`` channels (1: luminance, 3: RGB). dtype is kept."""
    from PIL import Image

    a = np.asarray(image)
    if size is not None and tuple(a.shape[:2]) != tuple(size):
        h, w = int(size[0]), int(size[1])
        if a.dtype == np.uint8:
            a = np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR))
        else:
            a = np.stack(
                [np.asarray(Image.fromarray(a[..., c].astype(np.float32), "F").resize((w, h), Image.BILINEAR))
                 for c in range(a.shape[-1])], axis=-1).astype(np.float32)
    if channels == 1 and a.shape[-1] == 3:
        gray = a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        a = (np.clip(np.rint(gray), 0, 255).astype(np.uint8) if a.dtype == np.uint8 else gray)[..., None]
    elif channels not in (1, 3):
        raise ValueError(f"the Explorer shows images with 1 or 3 channels; the model expects {channels}")
    return a


def for_model(image: np.ndarray, probe) -> np.ndarray:
    """``image`` as the views show it to ``probe``'s model: at its own size when the model runs at
    that size and does not declare a fixed one in an Input layer (any-size fully convolutional and
    subclassed models), else resized to the model's input size; channels as the model takes them."""
    a = np.asarray(image)
    spec = probe.image_input
    size = None
    if spec.height and spec.width and (spec.declared or not probe.accepts(*a.shape[:2])):
        size = (spec.height, spec.width)
    return fit_image(a, size, spec.channels)
