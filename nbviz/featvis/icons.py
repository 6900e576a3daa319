"""Icons: one small feature visualisation per channel (or per direction) of a layer, rendered
several at a time and kept in a disk cache, for semantic dictionaries and neuron groups.

``icons(model, layer, [3, 17, 42])`` renders ``fv.channel(layer, [3, 17, 42])`` as one batch
(:func:`nbviz.featvis.render`); an ``n×c`` array instead of channel indices renders
``fv.directions(layer, rows)`` (e.g. the loadings of :func:`nbviz.neuron_groups`). Icons already
in the cache are read from disk and not rendered. Work is split into batches of at most
``batch_size``; a batch of ``r`` icons is padded to the next power of two (repeating its last
item) so that only a few batch sizes are ever compiled.

Cache key: the model's weights digest (:func:`weights_digest`), the layer's path, the channel (or
the direction's float32 bytes, hashed), and the settings (size, steps, seed, lr,
parametrisation, preprocess). The random start of an item depends on its place in its batch, so
the same channel rendered in another batch is another, equally valid, picture; the cache returns
whichever was stored first. Where the cache lives, its size bound and why two processes can share
it: :mod:`nbviz.featvis.icon_cache`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
from typing import Callable

import numpy as np
import tensorflow as tf

from nbviz.probe import probe as get_probe
from nbviz.featvis.icon_cache import IconCache
from nbviz.featvis.objectives import channel as channel_objective
from nbviz.featvis.objectives import directions as directions_objective
from nbviz.featvis.render import render

__all__ = ["icons", "IconPreview", "IconsStopped", "weights_digest"]

_VERSION = 1  # bump when the way icons are rendered changes


@dataclasses.dataclass(frozen=True, eq=False)
class IconPreview:
    """What the ``callback`` of :func:`icons` receives.

    ``positions``: indices into the requested ``channels`` that ``images`` (len(positions)×H×W×3
    float32 in [0, 1]) show; ``step`` of ``steps`` optimisation steps are done (``step ==
    steps`` when ``final``); ``cached``: read from the disk cache instead of rendered.
    """

    positions: tuple[int, ...]
    images: np.ndarray
    step: int
    steps: int
    cached: bool = False

    @property
    def final(self) -> bool:
        return self.step >= self.steps


class IconsStopped(RuntimeError):
    """Raised by :func:`icons` when its ``stop`` was set. ``images``: what there is (finished
    icons and the interrupted batch as it was; zeros for icons never started); ``done``: a bool
    per icon, True for finished ones (those were cached and passed to ``callback``)."""

    def __init__(self, images: np.ndarray, done: np.ndarray):
        super().__init__(f"icons stopped: {int(done.sum())} of {len(done)} finished")
        self.images = images
        self.done = done


def icons(model, layer, channels, *, size=64, steps: int = 64, preprocess: Callable | None = None,
          cache=True, callback: Callable | None = None, batch_size: int = 8, seed: int = 0,
          lr: float = 0.05, param: str = "fft", every: int | None = None,
          stop=None) -> np.ndarray:
    """One feature-visualisation picture per channel of ``layer``: float32 (N, H, W, 3) in [0, 1],
    in the order given (quantised to 1/255, so a cached icon equals a fresh one).

    channels: channel indices (ints), or an ``n×c`` float array of directions (one per icon).
    size, steps, seed, lr, param: passed to :func:`nbviz.featvis.render` (``size``: an int or
        ``(H, W)``); the other render settings are its defaults.
    preprocess: maps RGB in [0, 1] to the model's input (as in ``render``). It joins the cache key
        through its code and constants (for a function) or its ``repr`` (other callables); a
        callable with neither a code object nor a stable repr cannot be cached.
    cache: True (the default :class:`~nbviz.featvis.icon_cache.IconCache`), False (render
        every time), or an ``IconCache``.
    callback: ``callback(IconPreview)``: first once with every cached icon, then for each
        rendered batch every ``every`` steps (default ``max(1, steps // 8)``) and at its end.
    batch_size: most icons per render batch.
    stop: a :class:`~nbviz.featvis.Stop` or ``threading.Event``; when set, rendering ends within
        one step and :class:`IconsStopped` is raised with what there is.
    """
    p = get_probe(model)
    if layer is None:
        raise ValueError("layer is required: give a layer name, path or object")
    info = p.layer(layer)
    if not info.output_shape:
        raise ValueError(f"layer {info.path!r} has no recorded output shape (it is not called "
                         f"in the model's forward pass)")
    kind, items = _items(channels, info)
    size = _size(size)
    steps = _int(steps, "steps", 1)
    batch_size = _int(batch_size, "batch_size", 1)
    seed = _int(seed, "seed", 0)
    every = max(1, steps // 8) if every is None else _int(every, "every", 1)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(IconPreview), got {type(callback).__name__}")
    store = _store(cache)
    n = len(items)
    out = np.zeros((n, *size, 3), np.float32)
    done = np.zeros(n, bool)
    keys = [None] * n
    if store is not None:
        settings = _settings(p, info.path, size, steps, seed, lr, param, preprocess)
        if settings is not None:
            keys = [dict(settings, **{kind: _item_key(item)}) for item in items]
        hits = []
        for i, key in enumerate(keys):
            found = None if key is None else store.get(key, (*size, 3))
            if found is not None:
                out[i] = found.astype(np.float32) / 255.0
                done[i] = True
                hits.append(i)
        if hits and callback is not None:
            callback(IconPreview(tuple(hits), out[hits].copy(), steps, steps, cached=True))
    todo = [i for i in range(n) if not done[i]]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        width = min(batch_size, 1 << (len(chunk) - 1).bit_length())  # next power of two
        padded = [items[i] for i in chunk] + [items[chunk[-1]]] * (width - len(chunk))
        objective = (channel_objective(info.path, padded) if kind == "channel"
                     else directions_objective(info.path, np.asarray(padded)))
        reached = [0]

        def progress(step, images, value, _chunk=tuple(chunk)):
            reached[0] = step
            if callback is not None and step < steps:
                callback(IconPreview(_chunk, images[:len(_chunk)], step, steps))

        pictures = render(p, objective, steps=steps, size=size, batch=width, param=param, lr=lr,
                          seed=seed, preprocess=preprocess, callback=progress,
                          every=every if callback is not None else steps, stop=stop)
        pictures = np.round(pictures[:len(chunk)] * 255.0).astype(np.uint8)
        out[chunk] = pictures.astype(np.float32) / 255.0
        if reached[0] < steps:  # stopped before the last step: not finished, not cached
            raise IconsStopped(out, done)
        done[chunk] = True
        if store is not None:
            for i, picture in zip(chunk, pictures):
                if keys[i] is not None:
                    store.put(keys[i], picture)
        if callback is not None:
            callback(IconPreview(tuple(chunk), out[chunk].copy(), steps, steps))
    if store is not None and todo:
        store.prune()
    return out


# --------------------------------------------------------------------------- weights digest


def weights_digest(model) -> str:
    """A hex digest of the model's weights (every variable's bytes, shape and dtype) and layer
    structure (paths and classes): the model's part of an icon's cache key.

    Hashing the bytes costs about 1 ms per MB of weights, so the digest is kept on the model's
    probe (``probe(model).cache("weights_digest")``) with a cheap fingerprint, per variable the
    sum and the sum of squares of its values computed in one compiled function, and is recomputed
    only when the fingerprint changes (training, ``set_weights``, loading weights). A change
    that keeps both sums of every variable (e.g. permuting a kernel's values) is not noticed;
    :func:`nbviz.probe.clear_cache` forgets the digest.
    """
    p = get_probe(model)
    variables = list(p.model.weights)
    ids = tuple(id(v) for v in variables)
    numeric = tuple(i for i, v in enumerate(variables)
                    if tf.as_dtype(v.dtype).is_floating or tf.as_dtype(v.dtype).is_integer)

    def fingerprint():
        parts = []
        for i in numeric:
            x = tf.convert_to_tensor(variables[i])
            if x.dtype != tf.float32:
                x = tf.cast(x, tf.float32)
            parts.append(tf.stack([tf.reduce_sum(x), tf.reduce_sum(x * x)]))
        return tf.stack(parts) if parts else tf.zeros([0, 2], tf.float32)

    current = p.compiled(("weights_fingerprint", ids), fingerprint)().numpy()
    cache = p.cache("weights_digest")
    hit = cache.get("value")
    if hit is not None and hit[0] == ids and np.array_equal(hit[1], current):
        return hit[2]
    h = hashlib.blake2b(digest_size=20)
    structure = [(path, type(layer).__module__ + "." + type(layer).__qualname__)
                 for path, layer, _ in p.walk()]
    h.update(repr((p.image_input.shape, structure)).encode())
    for v in variables:
        value = np.ascontiguousarray(np.asarray(v))
        h.update(repr((tuple(value.shape), str(value.dtype))).encode())
        h.update(value.tobytes())
    digest = h.hexdigest()
    cache["value"] = (ids, current, digest)
    return digest


# --------------------------------------------------------------------------- helpers


def _items(channels, info):
    c = info.output_shape[-1]
    if isinstance(channels, numbers.Integral) and not isinstance(channels, bool):
        channels = [channels]
    array = np.asarray(channels)
    if array.ndim == 2 and np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.bool_):
        if array.shape[0] == 0 or array.shape[1] != c:
            raise ValueError(f"channels as directions must be an n×{c} array (layer "
                             f"{info.path!r} has {c} channels), got shape {array.shape}")
        if not np.isfinite(array).all() or not (np.abs(array).sum(axis=1) > 0).all():
            raise ValueError("channels as directions must be finite with no all-zero row")
        return "direction", [row.astype(np.float32) for row in array]
    values = list(channels) if isinstance(channels, (list, tuple, range, np.ndarray)) else None
    if (values is None or not values or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in values)):
        raise TypeError(f"channels must be a non-empty list of channel indices (ints) or an "
                        f"n×{c} array of directions, got {channels!r}")
    bad = [int(v) for v in values if not 0 <= v < c]
    if bad:
        raise ValueError(f"channels {bad} are out of range: layer {info.path!r} has {c} "
                         f"channels (0..{c - 1})")
    return "channel", [int(v) for v in values]


def _item_key(item):
    if isinstance(item, int):
        return item
    return hashlib.sha256(np.ascontiguousarray(item, np.float32).tobytes()).hexdigest()


def _settings(p, path, size, steps, seed, lr, param, preprocess):
    pre = _callable_key(preprocess)
    if pre is False:
        return None
    return {"v": _VERSION, "weights": weights_digest(p), "layer": path, "size": list(size),
            "steps": steps, "seed": seed, "lr": float(lr), "param": repr(param),
            "preprocess": pre}


def _callable_key(fn):
    """A text that names what ``fn`` computes across sessions, None for no function, False when
    there is none (then nothing is cached)."""
    if fn is None:
        return None
    import functools

    if isinstance(fn, functools.partial):
        inner = _callable_key(fn.func)
        return False if inner is False else repr(("partial", inner, fn.args,
                                                   sorted(fn.keywords.items())))
    code = getattr(fn, "__code__", None)
    if code is not None:
        cells = tuple(_plain(c.cell_contents) for c in (fn.__closure__ or ()))
        defaults = tuple(_plain(d) for d in (fn.__defaults__ or ()))
        defaults += tuple(_plain(d) for d in sorted((fn.__kwdefaults__ or {}).items()))
        if any(c is False for c in cells + defaults):
            return False
        parts = (fn.__module__, fn.__qualname__, code.co_code.hex(), repr(code.co_consts),
                 code.co_names, defaults, cells)
        return hashlib.sha256(repr(parts).encode()).hexdigest()
    text = repr(fn)
    return False if " at 0x" in text else text


def _plain(value):
    if isinstance(value, (numbers.Number, str, bytes, bool, type(None))):
        return repr(value)
    if isinstance(value, np.ndarray):
        return hashlib.sha256(value.tobytes()).hexdigest()
    if isinstance(value, (tuple, list)):
        parts = [_plain(v) for v in value]
        return False if any(p is False for p in parts) else repr(parts)
    if callable(value):
        return _callable_key(value)
    return False


def _store(cache):
    if cache is True:
        return IconCache()
    if cache is False or cache is None:
        return None
    if isinstance(cache, IconCache):
        return cache
    raise TypeError(f"cache must be True, False or an IconCache, got {cache!r}")


def _size(size):
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size)):
        raise TypeError(f"size must be an int or a (height, width) pair of ints, got {size!r}")
    if min(size) < 16:
        raise ValueError(f"size must be at least 16×16 pixels, got {tuple(size)}")
    return int(size[0]), int(size[1])


def _int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)
