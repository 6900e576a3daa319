"""How the optimised images are parametrised.

A parametrisation maps a raw float32 tensor (what the optimiser changes) to RGB images in
[0, 1], ``(N, H, W, 3)`` (``images(raw, (H, W))``), and back (``from_images``, used to carry a picture from one octave to
the next size).

* :class:`Pixel`: one raw value per pixel and channel, bounded by a sigmoid.
* :class:`FFT`: lucid's parametrisation. The raw tensor holds the real and imaginary parts of the
  2-D real FFT of each colour channel; each frequency is scaled by ``1 / max(f, 1 / max(H, W))
  ** decay`` (``f`` in cycles per pixel) so that all frequencies get comparable steps, the
  inverse FFT gives the image in a decorrelated colour space, the square root of ImageNet's colour
  correlation matrix maps it to RGB, and a sigmoid bounds it. Low frequencies and natural colours
  are as easy to change as pixel noise, which is what makes the pictures sharp.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

__all__ = ["Pixel", "FFT", "COLOR_CORRELATION", "parametrisation"]

# square root of ImageNet's RGB colour correlation (lucid), columns scaled to a largest norm of 1
_SVD_SQRT = np.array([[0.26, 0.09, 0.02],
                      [0.27, 0.00, -0.05],
                      [0.27, -0.09, 0.03]], np.float32)
COLOR_CORRELATION = _SVD_SQRT / np.max(np.linalg.norm(_SVD_SQRT, axis=0))
_EPS = 1e-4  # images are clipped to [EPS, 1 - EPS] before inverting the sigmoid


def _logit(images):
    p = tf.clip_by_value(tf.cast(images, tf.float32), _EPS, 1.0 - _EPS)
    return tf.math.log(p) - tf.math.log1p(-p)


@dataclasses.dataclass(frozen=True)
class Pixel:
    """``images = sigmoid(raw)``; ``raw`` has shape (N, H, W, 3). ``sd``: spread of the random
    start (raw values ~ N(0, sd), images near grey)."""

    sd: float = 0.5
    name = "pixel"

    def init(self, batch, height, width, rng: np.random.Generator) -> np.ndarray:
        return (self.sd * rng.standard_normal((batch, height, width, 3))).astype(np.float32)

    def images(self, raw, size=None) -> tf.Tensor:
        return tf.sigmoid(raw)

    def from_images(self, images) -> tf.Tensor:
        return _logit(images)


def fft_frequencies(height: int, width: int) -> np.ndarray:
    """|f| in cycles per pixel on the grid of ``rfft2d`` of an H×W image, shape (H, W // 2 + 1)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(fx * fx + fy * fy)


@dataclasses.dataclass(frozen=True)
class FFT:
    """lucid's spectral, colour-decorrelated image (see module docstring).

    ``raw`` has shape (N, 3, H, W // 2 + 1, 2): real and imaginary parts of the spectrum.
    ``sd`` is the spread of the random start, ``decay`` the power of the frequency scaling.
    """

    sd: float = 0.01
    decay: float = 1.0
    decorrelate: bool = True
    name = "fft"

    def _scale(self, height, width) -> np.ndarray:
        f = fft_frequencies(height, width)
        scale = 1.0 / np.maximum(f, 1.0 / max(height, width)) ** self.decay
        return (scale * np.sqrt(height * width)).astype(np.float32)

    def init(self, batch, height, width, rng: np.random.Generator) -> np.ndarray:
        shape = (batch, 3, height, width // 2 + 1, 2)
        return (self.sd * rng.standard_normal(shape)).astype(np.float32)

    def _color_matrix(self):
        return COLOR_CORRELATION if self.decorrelate else np.eye(3, dtype=np.float32)

    def images(self, raw, size) -> tf.Tensor:
        height, width = size
        scale = tf.constant(self._scale(height, width))
        spectrum = tf.complex(raw[..., 0] * scale, raw[..., 1] * scale)
        planes = tf.signal.irfft2d(spectrum, fft_length=[height, width])  # (N, 3, H, W)
        colours = tf.transpose(planes, [0, 2, 3, 1]) / 4.0
        rgb = tf.tensordot(colours, tf.constant(self._color_matrix().T), axes=[[-1], [0]])
        return tf.sigmoid(rgb)

    def from_images(self, images) -> tf.Tensor:
        """The raw spectrum whose images are ``images`` (up to the clipping of the sigmoid)."""
        images = tf.convert_to_tensor(images, tf.float32)
        height, width = int(images.shape[1]), int(images.shape[2])
        rgb = _logit(images)
        colours = tf.tensordot(rgb, tf.constant(np.linalg.inv(self._color_matrix().T)),
                               axes=[[-1], [0]])
        planes = tf.transpose(colours * 4.0, [0, 3, 1, 2])
        spectrum = tf.signal.rfft2d(planes, fft_length=[height, width])
        scale = tf.constant(self._scale(height, width))
        return tf.stack([tf.math.real(spectrum) / scale, tf.math.imag(spectrum) / scale], axis=-1)


def parametrisation(param) -> Pixel | FFT:
    """``"fft"``, ``"pixel"`` or a :class:`Pixel` / :class:`FFT` object."""
    if isinstance(param, (Pixel, FFT)):
        return param
    if param == "fft":
        return FFT()
    if param == "pixel":
        return Pixel()
    raise ValueError(f"param must be 'fft', 'pixel', fv.params.FFT(...) or fv.params.Pixel(...), "
                     f"got {param!r}")
