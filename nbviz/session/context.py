"""What stays fixed while a user explores one model: the model, its preprocessing, and the
helpers built once for it (receptive fields per layer, the fully convolutional copy, the
feature-visualisation input mapping, predictions per image)."""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

from nbviz.probe import probe as get_probe

__all__ = ["Context"]


class Context:
    """The model and its per-session helpers; thread-safe (jobs run on the session's thread,
    views read cached values from the kernel's thread)."""

    def __init__(self, model, preprocess: Callable | None = None):
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be a function image -> model input, got {type(preprocess).__name__}")
        self.model = model
        self.preprocess = preprocess
        self.probe = get_probe(model)
        self._lock = threading.RLock()
        self._rf: dict[str, Any] = {}
        self._fcn: list = []
        self._fv_preprocess: dict = {}
        self._predictions: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------ receptive fields

    def receptive_field(self, layer: str):
        """The (cached) receptive field of ``layer``; an exception is cached and raised again."""
        with self._lock:
            if layer not in self._rf:
                from nbviz.methods.receptive_field import receptive_field

                try:
                    self._rf[layer] = receptive_field(self.model, layer)
                except Exception as exc:  # e.g. a layer after global pooling
                    self._rf[layer] = exc
            value = self._rf[layer]
        if isinstance(value, Exception):
            raise value
        return value

    def cached_rf(self, layer: str | None):
        """The receptive field of ``layer`` if already computed (and valid), else None."""
        value = self._rf.get(layer) if layer else None
        return None if isinstance(value, Exception) else value

    def fully_convolutional(self):
        """The model with its classifier turned into 1×1 convolutions (built once)."""
        with self._lock:
            if not self._fcn:
                from nbviz.methods.receptive_field import fully_convolutional

                self._fcn.append(fully_convolutional(self.model))
            return self._fcn[0]

    # ------------------------------------------------------------ inputs and predictions

    def model_input(self, image) -> np.ndarray:
        """``image`` in the model's input space (``preprocess`` applied to a copy)."""
        x = self.preprocess(np.array(image)) if self.preprocess is not None else image
        return np.asarray(x, np.float32)

    def predictions(self, image_id: int, image) -> np.ndarray:
        """The model's output for the image (cached per image id)."""
        with self._lock:
            if image_id in self._predictions:
                return self._predictions[image_id]
        p = self.probe
        out = np.asarray(p.forward(p.prepare(self.model_input(image))[0]))[0]
        with self._lock:
            self._predictions[image_id] = out
            while len(self._predictions) > 16:
                self._predictions.pop(next(iter(self._predictions)))
        return out

    def cached_predictions(self, image_id: int) -> np.ndarray | None:
        return self._predictions.get(image_id)

    def top_class(self, image_id: int, image) -> int:
        out = self.predictions(image_id, image)
        out = out.reshape(-1, out.shape[-1]).max(axis=0) if out.ndim > 1 else out
        return int(np.argmax(out))

    def featvis_preprocess(self, image) -> Callable:
        """Map feature-visualisation pictures in [0, 1] to the model's input: scaled to 0..255
        when the image is in that range (uint8 or values above 1), then ``preprocess``. One
        function object per range, so repeated runs reuse the compiled step."""
        raw255 = np.asarray(image).dtype == np.uint8 or float(np.max(image)) > 1.0
        with self._lock:
            if raw255 not in self._fv_preprocess:
                pre = self.preprocess

                def fn(x):
                    y = x * 255.0 if raw255 else x
                    return pre(y) if pre is not None else y
                self._fv_preprocess[raw255] = fn
            return self._fv_preprocess[raw255]
