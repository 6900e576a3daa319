"""Reading a Keras model without changing it.

Every method in nbviz goes through a :class:`Probe`. It

* lists the layers of a model by path, nested models and sub-layers of custom layers included
  (``"resnet50/conv5_block3_out"``), with output shapes and a coarse kind;
* resolves a layer given as object, name or path (a typo gets the closest names);
* describes the image input and turns user images into validated float32 batches;
* intercepts layers during one forward pass: capture an output, swap an activation, drop a final
  softmax. Interceptions are instance attributes set for the duration of a ``with`` block and
  removed in ``finally``: the model's weights, ``call`` and ``activation`` objects and config are
  the same afterwards, also when the block raises. Nothing is rebuilt, so nested and subclassed
  models work without "graph disconnected" errors;
* caches compiled functions per key (purpose, layer, input shape, ...) and counts their traces.

Interceptions only matter while Python runs the model. Inside a compiled function that is the
trace: once traced, a function runs its graph and the model is not touched at all.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import functools
import os
import re
import threading
import types
import warnings
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence


def _backend_message(name: str) -> str:
    return (f"nbviz needs Keras' TensorFlow backend (it runs TensorFlow graphs and "
            f"tf.custom_gradient), but Keras is set to the {name!r} backend: set the environment "
            f"variable KERAS_BACKEND=tensorflow (or \"backend\": \"tensorflow\" in "
            f"~/.keras/keras.json) before importing keras")


def _check_backend() -> None:
    """Fail at first use, in one sentence, when Keras runs on another backend.

    The environment variable is read before ``import keras`` (which would itself fail without the
    other backend's package installed); ``keras.backend.backend()`` covers keras.json after it."""
    name = os.environ.get("KERAS_BACKEND")
    if name and name != "tensorflow":
        raise ImportError(_backend_message(name))


_check_backend()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(_backend_message(keras.backend.backend()))

__all__ = [
    "ImageInput",
    "LayerInfo",
    "Probe",
    "probe",
    "clear_cache",
    "fn_key",
    "LRUCache",
]

# One lock for every interception: two threads must not patch the same layer at once (the widget
# computes off the main thread).
_LOCK = threading.RLock()
_MISSING = object()


# --------------------------------------------------------------------------- descriptions


@dataclasses.dataclass(frozen=True)
class ImageInput:
    """The model input that takes images: ``(batch, height, width, channels)``, channels last.

    ``channels_first``: the model itself takes ``(batch, channels, height, width)`` (its
    convolutions use ``data_format="channels_first"``); the probe transposes at its boundary, so
    every method still gives and gets channels-last images and maps.
    """

    name: str
    index: int
    height: int | None
    width: int | None
    channels: int
    dtype: str
    channels_first: bool = False
    #: the size comes from the model's Input layer (Functional / Sequential), not from a build
    #: or a first call (subclassed) or ``input_shape=``: views resize pictures to a declared size
    declared: bool = False

    @property
    def shape(self) -> tuple[int | None, int | None, int]:
        return (self.height, self.width, self.channels)


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One layer of a model, as the probe sees it."""

    path: str
    layer: keras.layers.Layer = dataclasses.field(repr=False, compare=False)
    kind: str
    output_shape: tuple | None  # batch axis included (as recorded with batch 1)
    depth: int  # 0 for top-level layers, 1 inside a nested model, ...

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def is_spatial(self) -> bool:
        """A 4-D (batch, height, width, channels) output."""
        return self.output_shape is not None and len(self.output_shape) == 4


_KINDS = (  # first match on the class hierarchy wins
    ("InputLayer", "input"),
    ("Functional", "model"),
    ("Sequential", "model"),
    ("Model", "model"),
    ("BaseDepthwiseConv", "conv"),
    ("BaseSeparableConv", "conv"),
    ("BaseConvTranspose", "conv"),
    ("BaseConv", "conv"),
    ("BaseGlobalPooling", "global-pooling"),
    ("BasePooling", "pooling"),
    ("BaseAdaptivePooling", "pooling"),
    ("Dense", "dense"),
    ("EinsumDense", "dense"),
    ("Activation", "activation"),
    ("ReLU", "activation"),
    ("Softmax", "activation"),
    ("LeakyReLU", "activation"),
    ("PReLU", "activation"),
    ("ELU", "activation"),
    ("Merge", "merge"),
    ("BatchNormalization", "normalization"),
    ("LayerNormalization", "normalization"),
    ("GroupNormalization", "normalization"),
    ("Normalization", "normalization"),
    ("Rescaling", "preprocessing"),
    ("Resizing", "preprocessing"),
    ("ZeroPadding2D", "padding"),
    ("Cropping2D", "cropping"),
    ("UpSampling2D", "upsampling"),
    ("Flatten", "reshape"),
    ("Reshape", "reshape"),
    ("Dropout", "regularization"),
    ("SpatialDropout2D", "regularization"),
    ("GaussianNoise", "regularization"),
)


def layer_kind(layer: keras.layers.Layer) -> str:
    """A coarse kind: conv, pooling, global-pooling, activation, merge, dense, model, ..."""
    names = [c.__name__ for c in type(layer).__mro__]
    for cls_name, kind in _KINDS:
        if cls_name in names:
            return kind
    return "other"


def _sublayers(layer) -> list:
    try:
        return list(layer._flatten_layers(include_self=False, recursive=False))
    except Exception:  # not a Keras layer with tracking
        return []


# --------------------------------------------------------------------------- interception


@contextlib.contextmanager
def patched(obj: Any, attr: str, value: Any) -> Iterator[None]:
    """Set ``obj.attr = value`` for the block, bypassing Keras attribute tracking; always undone.

    The original state is restored exactly: an attribute that lived only on the class (a method)
    is removed from the instance again, one that lived on the instance gets its object back.
    """
    with _LOCK:
        before = obj.__dict__.get(attr, _MISSING)
        object.__setattr__(obj, attr, value)
        try:
            yield
        finally:
            if before is _MISSING:
                object.__delattr__(obj, attr)
            else:
                object.__setattr__(obj, attr, before)


def _wrap_call(layer, wrapper: Callable) -> contextlib.AbstractContextManager:
    """Intercept ``layer.call``: ``wrapper(original_call, *args, **kwargs)`` runs instead."""
    original = layer.call

    def call(*args, **kwargs):
        return wrapper(original, *args, **kwargs)

    return patched(layer, "call", call)


# --------------------------------------------------------------------------- function keys, caches


def fn_key(fn: Callable) -> Any:
    """A hashable key for what a user's callable computes, for compiled-function cache keys.

    A plain Python function (a ``lambda`` made afresh on every call included) is keyed by its
    code object, the values of its closure cells, its defaults and, for a bound method, its
    ``self``: two lambdas written at the same place over equal values share one key, so they share
    one compiled function instead of compiling and keeping a new one per call. Globals the code
    reads are not part of the key. A callable whose closure holds unhashable values (arrays,
    tensors), or any other callable, is keyed by identity; the per-probe LRU bound
    (:attr:`Probe.max_functions`) then keeps memory bounded.
    """
    target = fn
    bound = None
    if isinstance(fn, types.MethodType):
        target, bound = fn.__func__, fn.__self__
    if isinstance(target, types.FunctionType):
        try:
            cells = tuple(c.cell_contents for c in (target.__closure__ or ()))
        except ValueError:  # an empty cell
            return ("id", fn)
        kwdefaults = tuple(sorted((target.__kwdefaults__ or {}).items()))
        key = ("code", target.__code__, cells, target.__defaults__, kwdefaults,
               None if bound is None else id(bound))
        try:
            hash(key)
        except TypeError:
            return ("id", fn)
        return key
    if isinstance(fn, functools.partial):
        try:
            key = ("partial", fn_key(fn.func), fn.args, tuple(sorted(fn.keywords.items())))
            hash(key)
            return key
        except TypeError:
            return ("id", fn)
    return ("id", fn)


class LRUCache(collections.OrderedDict):
    """A dict keeping at most ``maxsize`` entries; reading or writing a key makes it the most
    recent, and the least recently used entry is dropped first."""

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = int(maxsize)

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def get(self, key, default=None):
        if key in self:
            return self[key]
        return default

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


# --------------------------------------------------------------------------- the probe


class Probe:
    """A read-only view of one Keras model; see the module docstring.

    Use :func:`probe` to get the cached probe of a model instead of building one per call.

    Compiled functions are kept per probe in an LRU cache of at most :attr:`max_functions`
    entries (least recently used dropped first, with their trace counts); every other per-model
    cache lives in :meth:`cache`. :func:`clear_cache` drops all of them.
    """

    #: compiled functions kept per model (least recently used dropped first)
    max_functions = 64
    #: largest side tried when growing or searching input sizes (numeric receptive field, the
    #: smallest size a variable-size model runs at)
    max_input_size = 2048

    def __init__(self, model, *, image_input: str | None = None, input_shape=None):
        if not isinstance(model, keras.Model):
            if isinstance(model, keras.layers.Layer):
                raise TypeError(
                    f"expected a keras.Model, got the layer {model.name!r} "
                    f"({type(model).__name__}); wrap it: keras.Sequential([layer])"
                )
            raise TypeError(
                f"expected a Keras 3 model (keras.Model, Sequential or Functional), "
                f"got {type(model).__module__}.{type(model).__name__}"
            )
        self.model = model
        self.image_input = self._find_image_input(image_input, input_shape)
        self._records: dict[tuple, list[LayerInfo]] = {}
        self._functions: LRUCache = LRUCache(self.max_functions)
        self.traces: collections.Counter = collections.Counter()
        self._output_layer = _MISSING
        self._caches: dict[str, dict] = {}

    # ---------------------------------------------------------------- the image input

    def _input_specs(self, input_shape) -> list[tuple[str, tuple, str]]:
        self._declared = False
        if input_shape is not None:
            shape = tuple(input_shape)
            if len(shape) == 3:
                shape = (None,) + shape
            return [("input", shape, "float32")]
        try:
            inputs = self.model.inputs
        except (AttributeError, ValueError):
            inputs = None
        if inputs:
            self._declared = True
            return [(_input_name(t, i), tuple(t.shape), str(getattr(t, "dtype", "float32")))
                    for i, t in enumerate(inputs)]
        shapes = getattr(self.model, "_build_shapes_dict", None)
        if shapes:
            return [(k.removesuffix("_shape"), tuple(v), "float32") for k, v in shapes.items()]
        raise ValueError(
            f"model {self.model.name!r} has not been built, so its input shape is unknown: call it "
            "once on a batch of images, or pass input_shape=(height, width, channels)"
        )

    def _find_image_input(self, name, input_shape) -> ImageInput:
        specs = self._input_specs(input_shape)
        self._n_inputs = len(specs)
        images = [(i, s) for i, s in enumerate(specs) if len(s[1]) == 4]
        described = ", ".join(f"{n} {s}" for n, s, _ in specs)
        if name is not None:
            found = [(i, s) for i, s in images if s[0] == name]
            if not found:
                raise ValueError(
                    f"image_input={name!r} is not a 4-D input of {self.model.name!r}; "
                    f"its inputs are: {described}"
                )
            images = found
        if not images:
            raise ValueError(
                f"model {self.model.name!r} has no image input: nbviz needs a 4-D input "
                f"(batch, height, width, channels), and its inputs are: {described}"
            )
        if len(images) > 1:
            raise ValueError(
                f"model {self.model.name!r} has several image inputs ({described}); "
                f"choose one with image_input=<name>"
            )
        index, (iname, shape, dtype) = images[0]
        first = self._channels_first()
        if first and input_shape is None:  # the model's own (batch, channels, height, width)
            shape = (shape[0], shape[2], shape[3], shape[1])
        channels = shape[3]  # input_shape is always given channels-last, (height, width, channels)
        if channels is None:
            raise ValueError(f"input {iname!r} of {self.model.name!r} has no fixed channel count: {shape}")
        h, w = shape[1], shape[2]
        return ImageInput(iname, index, h, w, int(channels), dtype, channels_first=first,
                          declared=self._declared and h is not None and w is not None)

    def _channels_first(self) -> bool:
        """Whether the model's first spatial layer (convolution, pooling, padding, ...) reads
        ``(batch, channels, height, width)``."""
        for _, layer, _ in self.walk():
            fmt = getattr(layer, "data_format", None)
            if fmt is not None and layer_kind(layer) in (
                    "conv", "pooling", "global-pooling", "padding", "cropping", "upsampling"):
                return fmt == "channels_first"
        return False

    def to_model(self, images):
        """Channels-last images as the model takes them (transposed for a channels-first model)."""
        if self.image_input.channels_first:
            return tf.transpose(images, [0, 3, 1, 2])
        return images

    def from_model(self, value):
        """A 4-D tensor of the model as channels-last (transposed for a channels-first model)."""
        if self.image_input.channels_first and getattr(value, "shape", None) is not None \
                and len(value.shape) == 4:
            return tf.transpose(value, [0, 2, 3, 1])
        return value

    # ---------------------------------------------------------------- input sizes

    def accepts(self, height: int, width: int) -> bool:
        """Whether the model runs on an image of ``height``×``width``: checked once per size by a
        forward pass on zeros and cached on the probe. The model's own size is always accepted."""
        size = (int(height), int(width))
        spec = self.image_input
        if size == (spec.height, spec.width):
            return True
        cache = self.cache("accepted_sizes")
        if size not in cache:
            images = tf.zeros((1, *size, spec.channels), tf.float32)
            try:
                # under the interception lock: no other thread's patch may see this pass
                with _LOCK, warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = self.forward(images, extra_inputs=self.zero_extra_inputs())
                shape = tuple(out.shape)
                if 0 in shape:  # a "valid" window larger than its input: empty output
                    raise ValueError(f"the output is empty, shape {shape}")
                problem = self._symbolic_problem(size)
                if problem is not None:
                    # TensorFlow's oneDNN convolution returns a map where Keras' shape
                    # arithmetic gives an empty one (a "valid" window larger than its input)
                    raise ValueError(problem)
                cache[size] = None
            except Exception as err:  # noqa: BLE001 - whatever the model raises at that size
                lines = [line.strip() for line in str(err).splitlines() if line.strip()]
                telling = [line for line in lines if "negative" in line or "empty" in line]
                text = re.sub(r"\x1b\[[0-9;]*m|\{\{function_node [^}]*\}\}\s*", "",
                              (telling or lines or [""])[0])
                cache[size] = f"{type(err).__name__}: {text}"[:300]
        return cache[size] is None

    def _symbolic_problem(self, size) -> str | None:
        """What Keras' own shape arithmetic finds wrong at ``size`` (an empty or negative output
        size), or None (also when it cannot tell)."""
        if self._n_inputs != 1:
            return None
        spec = self.image_input
        shape = (1, spec.channels, *size) if spec.channels_first else (1, *size, spec.channels)
        try:
            out = self.model.compute_output_spec(keras.KerasTensor(shape, dtype="float32"))
        except Exception as err:  # noqa: BLE001 - no symbolic shape: the forward pass decides
            text = str(err).strip().splitlines()
            return text[0][:200] if text and "negative" in text[0] else None
        out = out[0] if isinstance(out, (list, tuple)) else (
            next(iter(out.values())) if isinstance(out, dict) else out)
        dims = tuple(getattr(out, "shape", ()) or ())
        if any(d is not None and d <= 0 for d in dims):
            return f"the output would be empty, shape {dims}"
        return None

    def smallest_size(self, start: int = 1) -> int | None:
        """The smallest square side >= ``start`` the model runs at (doubling, then bisection;
        None when nothing up to :attr:`max_input_size` works, or past the model's own size)."""
        spec = self.image_input
        fixed = spec.height if spec.height == spec.width else None
        ceiling = fixed or self.max_input_size
        lo, hi, s = start - 1, None, max(start, 2)
        while s <= ceiling:
            if self.accepts(s, s):
                hi = s
                break
            lo, s = s, min(s * 2, ceiling) if s < ceiling else ceiling + 1
        if hi is None:
            return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.accepts(mid, mid):
                hi = mid
            else:
                lo = mid
        return hi

    def check_size(self, height: int, width: int, *, shape=None) -> None:
        """Raise a ValueError naming what sizes work unless the model accepts ``height``×``width``."""
        if self.accepts(height, width):
            return
        spec = self.image_input
        what = f"image shape {tuple(shape)}" if shape is not None else f"input size {height}×{width}"
        reason = self.cache("accepted_sizes").get((int(height), int(width)))
        fixed = spec.height is not None and spec.width is not None
        if not fixed or max(height, width) < max(spec.height, spec.width):
            smallest = self.smallest_size(max(int(height), int(width)) + 1)
            if smallest is not None and (not fixed or smallest < min(spec.height, spec.width)):
                raise ValueError(
                    f"{what} is too small for model {self.model.name!r}: it does not run at "
                    f"{height}×{width} ({reason}); the smallest size that works is "
                    f"{smallest}×{smallest} (square sizes tried): enlarge or pad the image")
        if fixed:
            raise ValueError(
                f"{what} does not fit the model's input {_shape_text(spec)}: the model does not "
                f"run at {height}×{width} ({reason}); resize it to {spec.height}×{spec.width} first")
        raise ValueError(f"model {self.model.name!r} does not run on an input of {height}×{width} "
                         f"({reason})")

    def input_size(self, image_shape: Sequence[int] | None = None) -> tuple[int, int]:
        """(height, width) used for a forward pass: the image's (when given: callers check it
        with :meth:`check_size`), else the model's own, else 224."""
        spec = self.image_input
        if image_shape:
            return int(image_shape[0]), int(image_shape[1])
        return int(spec.height or 224), int(spec.width or 224)

    def output_shape(self, image_shape: Sequence[int] | None = None) -> tuple:
        """Shape of the model's (first) output for one image of ``image_shape`` (default: the
        model's own size), batch axis included, maps channels-last; cached per size."""
        size = self.input_size(image_shape)
        cache = self.cache("output_shape")
        if size not in cache:
            zeros = tf.zeros((1, *size, self.image_input.channels), tf.float32)
            cache[size] = tuple(self.forward(zeros, extra_inputs=self.zero_extra_inputs()).shape)
        return cache[size]

    @property
    def dense_output(self) -> tuple[int, int, int] | None:
        """``(h, w, k)`` when the model's output is a dense N×h×w×k map (segmentation, edges,
        depth, heatmaps; at the model's own input size, 224 for any-size models), else None.
        Targets on it: :func:`nbviz.methods.targets.point`, ``box``, ``mask``."""
        shape = self.output_shape()
        return tuple(int(n) for n in shape[1:]) if len(shape) == 4 else None

    def prepare(self, image, *, preprocess: Callable | None = None) -> tuple[tf.Tensor, bool]:
        """Validate an image or batch and return ``(float32 batch, was_single_image)``.

        Accepts H×W×C or N×H×W×C of any real numeric dtype (a ``tf.Tensor`` too), already in the
        model's input space; ``preprocess`` is applied first to map raw images into it.
        """
        if preprocess is not None:  # on a copy: keras' preprocess_input works in place
            if not callable(preprocess):
                raise TypeError(f"preprocess must be a callable raw image -> model input (or None), "
                                f"got {type(preprocess).__name__} {preprocess!r}")
            image = preprocess(image.numpy() if isinstance(image, tf.Tensor) else np.array(image))
            _check_preprocessed(image)
        array = image.numpy() if isinstance(image, tf.Tensor) else np.asarray(image)
        if array.dtype == object or not (
            np.issubdtype(array.dtype, np.number) or array.dtype == bool
        ) or np.iscomplexobj(array):
            raise TypeError(
                f"image must be a real numeric array (uint8, float32, ...), got dtype {array.dtype}"
            )
        spec = self.image_input
        single = array.ndim == 3
        if array.ndim not in (3, 4):
            raise ValueError(
                f"image must be H×W×C or N×H×W×C, got shape {array.shape}; "
                f"this model expects {_shape_text(spec)}"
            )
        batch = array[None] if single else array
        if batch.shape[-1] != spec.channels:
            raise ValueError(
                f"image has {batch.shape[-1]} channels (shape {array.shape}), the model expects "
                f"{spec.channels}: {_shape_text(spec)}"
            )
        if batch.shape[0] == 0 or 0 in batch.shape[1:3]:
            raise ValueError(f"image is empty: shape {array.shape}")
        if (int(batch.shape[1]), int(batch.shape[2])) != (spec.height, spec.width):
            # the image's size rules when the model runs at it (any-size models)
            self.check_size(int(batch.shape[1]), int(batch.shape[2]), shape=array.shape)
        batch = batch.astype(np.float32, copy=False)
        if not np.isfinite(batch).all():
            bad = int((~np.isfinite(batch)).sum())
            raise ValueError(f"image contains {bad} NaN or infinite values; all pixels must be finite")
        return tf.convert_to_tensor(batch), single

    # ---------------------------------------------------------------- forward passes

    def forward(self, images: tf.Tensor, *, extra_inputs: Mapping[str, Any] | None = None,
                training: bool = False) -> tf.Tensor:
        """Run the model on a batch of images; returns its (first) output as float32.

        ``extra_inputs`` gives the other inputs of a multi-input model by name; each is repeated
        over the batch when given for one example.
        """
        inputs = self.model_inputs(images, extra_inputs)
        out = self.model(inputs, training=training)
        if isinstance(out, (list, tuple)):
            out = out[0]
        elif isinstance(out, dict):
            out = next(iter(out.values()))
        return self.from_model(tf.cast(out, tf.float32))

    def model_inputs(self, images, extra_inputs=None):
        """What to pass to the model: the images alone, or every input in order (multi-input).
        ``images`` are channels-last (transposed here for a channels-first model)."""
        images = self.to_model(images)
        if self._n_inputs == 1:
            if extra_inputs:
                raise ValueError(f"model {self.model.name!r} has one input; extra_inputs is not used")
            return images
        specs = self._input_specs(None)
        extra = dict(extra_inputs or {})
        values = []
        n = tf.shape(images)[0]
        for i, (name, shape, dtype) in enumerate(specs):
            if i == self.image_input.index:
                values.append(images)
                continue
            if name not in extra:
                raise ValueError(
                    f"model {self.model.name!r} has other inputs besides images; pass their values "
                    f"as extra_inputs={{{name!r}: ...}} (missing: {name!r} with shape {shape})"
                )
            value = tf.convert_to_tensor(extra.pop(name), dtype=dtype)
            if len(value.shape) == len(shape) - 1:
                value = tf.repeat(value[None], n, axis=0)
            values.append(value)
        if extra:
            raise ValueError(f"extra_inputs names unknown inputs: {sorted(extra)}; inputs are "
                             f"{[s[0] for s in specs]}")
        return values

    # ---------------------------------------------------------------- layers

    def walk(self) -> Iterator[tuple[str, Any, int]]:
        """Every layer and sub-layer as ``(path, layer, depth)``, in tracking order (no forward
        pass; :meth:`layers` gives call order and shapes)."""
        seen = set()

        def visit(layer, prefix, depth):
            for sub in _sublayers(layer):
                if id(sub) in seen:
                    continue
                seen.add(id(sub))
                path = f"{prefix}{sub.name}"
                yield path, sub, depth
                yield from visit(sub, path + "/", depth + 1)

        yield from visit(self.model, "", 0)

    def layers(self, input_shape: Sequence[int] | None = None) -> list[LayerInfo]:
        """Every layer, in call order, with its output shape for a batch of one image.

        ``input_shape`` (height, width[, channels]) matters only for models without a fixed size.
        Shapes come from one recorded forward pass per input size (cached).
        """
        h, w = self.input_size(input_shape)
        key = (h, w)
        if key not in self._records:
            self._records[key] = self._record(h, w)
        return list(self._records[key])

    def _record(self, h: int, w: int) -> list[LayerInfo]:
        walked = list(self.walk())
        shapes: dict[int, tuple] = {}
        order: dict[int, int] = {}
        outputs: dict[int, Any] = {}

        def recorder(layer):
            def wrapper(original, *args, **kwargs):
                out = original(*args, **kwargs)
                if id(layer) not in order:
                    order[id(layer)] = len(order)
                first = out[0] if isinstance(out, (list, tuple)) and out else out
                shape = tuple(getattr(first, "shape", ()) or ())
                if self.image_input.channels_first and len(shape) == 4:
                    shape = (shape[0], shape[2], shape[3], shape[1])
                shapes[id(layer)] = shape
                outputs[id(layer)] = first
                return out
            return wrapper

        images = tf.zeros((1, h, w, self.image_input.channels), tf.float32)
        extra = self.zero_extra_inputs()
        with contextlib.ExitStack() as stack:
            for _, layer, _ in walked:
                if layer_kind(layer) != "input":
                    stack.enter_context(_wrap_call(layer, recorder(layer)))
            final = self.model(self.model_inputs(images, extra), training=False)
        final = final[0] if isinstance(final, (list, tuple)) else final
        # the innermost layer whose output is the model's output (for dropping a final softmax)
        self._output_layer = None
        for path, layer, _ in walked:
            if outputs.get(id(layer)) is final and not _sublayers(layer):
                self._output_layer = layer
        infos = []
        for path, layer, depth in walked:
            kind = layer_kind(layer)
            shape = shapes.get(id(layer))
            if kind == "input":
                shape = (1, h, w, self.image_input.channels) if layer.name == self.image_input.name else None
            infos.append(LayerInfo(path, layer, kind, shape, depth))
        big = len(order) + 1
        rank = {path: (order.get(id(info.layer), -1 if info.kind == "input" else big), i)
                for i, (path, info) in enumerate((i.path, i) for i in infos)}
        infos.sort(key=lambda i: rank[i.path])
        return infos

    def zero_extra_inputs(self):
        """Zeros for the non-image inputs of a multi-input model (None for one input)."""
        if self._n_inputs == 1:
            return None
        return {
            name: np.zeros([d or 1 for d in shape[1:]], dtype=dtype)
            for i, (name, shape, dtype) in enumerate(self._input_specs(None))
            if i != self.image_input.index
        }

    def layer(self, spec) -> LayerInfo:
        """Resolve a layer given as a Layer object, a path ("block/conv1") or a unique name."""
        infos = self.layers()
        if isinstance(spec, LayerInfo):
            spec = spec.layer
        if isinstance(spec, keras.layers.Layer):
            for info in infos:
                if info.layer is spec:
                    return info
            raise ValueError(f"layer {spec.name!r} is not part of model {self.model.name!r}")
        if not isinstance(spec, str):
            raise TypeError(f"layer must be a Keras layer, a name or a path, got {type(spec).__name__}")
        for info in infos:
            if info.path == spec:
                return info
        named = [info for info in infos if info.name == spec]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise ValueError(
                f"layer name {spec!r} is ambiguous in {self.model.name!r}; use a path: "
                + ", ".join(i.path for i in named)
            )
        candidates = sorted({i.path for i in infos} | {i.name for i in infos})
        close = difflib.get_close_matches(spec, candidates, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, close))}?" if close else (
            f"it has {len(infos)} layers, e.g. {', '.join(repr(i.path) for i in infos[-5:])}"
        )
        raise ValueError(f"model {self.model.name!r} has no layer {spec!r}; {hint}")

    def spatial_layer(self, spec=None) -> LayerInfo:
        """A layer with a (batch, height, width, channels) output; by default the last one.

        The default is the last layer with a 4-D output larger than 1×1 (before global
        pooling or flattening): Grad-CAM's usual choice.
        """
        if spec is not None:
            info = self.layer(spec)
            if info.kind == "input":
                raise ValueError(
                    f"layer={info.path!r} is the model's input layer, whose output is the image "
                    f"itself; choose a later layer: "
                    + ", ".join(i.path for i in self.spatial_layers()[-5:]))
            if not info.is_spatial:
                raise ValueError(
                    f"layer {info.path!r} has output shape {info.output_shape}, not a spatial "
                    f"(batch, height, width, channels) map; choose one of: "
                    + ", ".join(i.path for i in self.spatial_layers()[-5:])
                )
            return info
        candidates = self.spatial_layers()
        feeding = self._feeding_output()
        if feeding is not None:  # a multi-output model: layers the explained output depends on
            candidates = [i for i in candidates if id(i.layer) in feeding] or candidates
        if not candidates:
            raise ValueError(f"model {self.model.name!r} has no layer with a spatial 4-D output")
        big = [i for i in candidates if i.output_shape[1] * i.output_shape[2] > 1]
        return (big or candidates)[-1]

    def _feeding_output(self) -> set | None:
        """ids of the layers the model's first output depends on (a graph model with several
        outputs), else None. Nested models count as their inner layers."""
        outputs = getattr(self.model, "outputs", None) if hasattr(self.model, "_nodes_by_depth") \
            else None
        if not outputs or len(outputs) < 2:
            return None
        seen: set = set()
        stack = [outputs[0]]
        while stack:
            tensor = stack.pop()
            history = getattr(tensor, "_keras_history", None)
            if history is None:
                continue
            op = history.operation
            node = op._inbound_nodes[history.node_index]
            if id(op) not in seen:
                seen.add(id(op))
                for sub in getattr(op, "_flatten_layers", lambda **k: [])(
                        include_self=False, recursive=True):
                    seen.add(id(sub))
            stack.extend(node.input_tensors)
        return seen

    def spatial_layers(self) -> list[LayerInfo]:
        """Layers with a 4-D output, in call order; inputs and nested models left out (their
        output is that of their last inner layer, which is listed)."""
        return [i for i in self.layers() if i.is_spatial and i.kind not in ("input", "model")]

    # ---------------------------------------------------------------- interceptions

    @contextlib.contextmanager
    def capture(self, *layers) -> Iterator[dict[str, tf.Tensor]]:
        """Record the outputs of the given layers during the forward passes run in the block.

        Yields a dict ``path -> output`` filled as the model runs (the last call wins for a layer
        called twice). Works eagerly, under ``tf.GradientTape`` and while tracing a
        ``tf.function``.
        """
        infos = [self.layer(spec) for spec in layers]
        for info in infos:
            if info.kind == "input":
                raise ValueError(
                    f"layer {info.path!r} is the model's input layer: its output is the image "
                    f"itself; choose a later layer, e.g. "
                    + ", ".join(repr(i.path) for i in self.spatial_layers()[:3]))
        captured: dict[str, tf.Tensor] = {}
        first = self.image_input.channels_first

        def recorder(path):
            def wrapper(original, *args, **kwargs):
                out = original(*args, **kwargs)
                if first and getattr(out, "shape", None) is not None and len(out.shape) == 4:
                    # channels-last for the methods; the model continues from the same tensor
                    # (transposed back), so gradients with respect to the capture flow
                    last = tf.transpose(out, [0, 2, 3, 1])
                    captured[path] = last
                    return tf.transpose(last, [0, 3, 1, 2])
                captured[path] = out
                return out
            return wrapper

        with contextlib.ExitStack() as stack:
            for info in infos:
                stack.enter_context(_wrap_call(info.layer, recorder(info.path)))
            yield captured

    @contextlib.contextmanager
    def replace_activations(self, replace: Callable[[keras.layers.Layer], Callable | None]
                            ) -> Iterator[list[str]]:
        """Swap activations for the block.

        ``replace(layer)`` returns a new activation function for layers that have an
        ``activation`` attribute (Conv, Dense, Activation, ...) and for ``keras.layers.ReLU``
        (whose whole ``call`` is replaced), or None to leave the layer alone. Yields the paths of
        the layers that were swapped.
        """
        swapped = []
        with contextlib.ExitStack() as stack:
            for path, layer, _ in self.walk():
                new = replace(layer)
                if new is None:
                    continue
                if "activation" in layer.__dict__ or hasattr(type(layer), "activation"):
                    stack.enter_context(patched(layer, "activation", new))
                else:
                    stack.enter_context(_wrap_call(layer, lambda _orig, x, *a, _new=new, **k: _new(x)))
                swapped.append(path)
            yield swapped

    @property
    def output_layer(self):
        """The innermost layer whose output is the model's output (None when unknown)."""
        if self._output_layer is _MISSING:
            self.layers()
        return self._output_layer

    @property
    def ends_in_softmax(self) -> bool:
        layer = self.output_layer
        return layer is not None and _is_softmax(layer)

    @property
    def softmax_axis(self):
        """The axis (or axes) the final softmax normalises: a ``Softmax`` layer's own, else -1
        (an ``activation="softmax"`` and ``Activation("softmax")`` normalise the last axis)."""
        layer = self.output_layer
        axis = getattr(layer, "axis", -1) if isinstance(layer, keras.layers.Softmax) else -1
        return tuple(axis) if isinstance(axis, (list, tuple)) else int(axis)

    @contextlib.contextmanager
    def logits(self) -> Iterator[bool]:
        """In the block the model returns pre-softmax logits when it ends in a softmax.

        Yields whether a softmax was dropped. A Dense/Conv with ``activation="softmax"`` computes
        with a linear activation; a ``Softmax`` or ``Activation("softmax")`` layer passes its
        input through.
        """
        layer = self.output_layer
        if layer is None or not _is_softmax(layer):
            yield False
            return
        if isinstance(layer, keras.layers.Softmax) or isinstance(layer, keras.layers.Activation):
            ctx = _wrap_call(layer, lambda _orig, x, *a, **k: x)
        else:
            ctx = patched(layer, "activation", keras.activations.linear)
        with ctx:
            yield True

    # ---------------------------------------------------------------- compiled functions

    def compiled(self, key: tuple, fn: Callable) -> Callable:
        """A ``tf.function`` of ``fn`` cached under ``key``; ``self.traces[key]`` counts traces.

        Put everything that changes the graph in ``key`` (purpose, layer, input shape, options);
        pass what changes between calls (images, target weights) as tensors.
        Callables in ``key`` (a target, a preprocess) should enter as :func:`fn_key` so that a
        fresh lambda per call reuses the function. At most :attr:`max_functions` are kept (LRU);
        an evicted key's trace count is dropped with it.
        """
        with _LOCK:
            self._functions.maxsize = self.max_functions  # may be set per probe
            function = self._functions.get(key)
            if function is None:
                # a partial, not a closure: TensorFlow counts retraces per code object, and one
                # shared code object for every key would make it warn about retracing that never
                # happens
                function = tf.function(functools.partial(_traced, self.traces, key, fn))
                self._functions[key] = function
                for old in [k for k in self.traces if k not in self._functions]:
                    del self.traces[old]
            return function

    @property
    def function_count(self) -> int:
        """Compiled functions held for this model (at most :attr:`max_functions`)."""
        return len(self._functions)

    def cache(self, name: str, maxsize: int | None = None) -> dict:
        """A dict of per-model values kept on this probe (cleared with it by :func:`clear_cache`).

        Every module that keeps per-model state keeps it here, under its own ``name``, rather than
        in a module-level dict that would outlive the probe. With ``maxsize`` the dict is an
        :class:`LRUCache` holding at most that many entries (set on first use).
        """
        found = self._caches.get(name)
        if found is None:
            found = self._caches[name] = {} if maxsize is None else LRUCache(maxsize)
        return found

    def trace_count(self, purpose: str | None = None) -> int:
        """Traces so far, of every compiled function or of those whose key starts with purpose."""
        return sum(n for k, n in self.traces.items() if purpose is None or k[0] == purpose)


def _traced(traces, key, fn, *args, **kwargs):
    traces[key] += 1
    with _LOCK:
        return fn(*args, **kwargs)


def _check_preprocessed(image) -> None:
    """A preprocess that makes NaN or infinite values is named as the cause."""
    try:
        array = image.numpy() if isinstance(image, tf.Tensor) else np.asarray(image)
        bad = (np.issubdtype(array.dtype, np.floating) or np.iscomplexobj(array)) and \
            not np.isfinite(array).all()
    except (TypeError, ValueError):
        return  # not numeric: prepare's own checks say so
    if bad:
        raise ValueError(f"preprocess returned {int((~np.isfinite(array)).sum())} NaN or infinite "
                         f"values (of {array.size}); it must map the image to finite numbers")


def _input_name(tensor, index: int) -> str:
    """The InputLayer's name of a symbolic input (what users see in model.summary())."""
    history = getattr(tensor, "_keras_history", None)
    op = getattr(history, "operation", None) if history is not None else None
    return getattr(op, "name", None) or getattr(tensor, "name", None) or f"input_{index}"


def _shape_text(spec: ImageInput) -> str:
    h = spec.height if spec.height is not None else "any"
    w = spec.width if spec.width is not None else "any"
    return f"H×W×C = {h}×{w}×{spec.channels} (or a batch N×H×W×C)"


def _is_softmax(layer) -> bool:
    if isinstance(layer, keras.layers.Softmax):
        return True
    act = layer.__dict__.get("activation", getattr(layer, "activation", None))
    return getattr(act, "__name__", "") == "softmax"


# --------------------------------------------------------------------------- cache

_CACHE_SIZE = 8
_PROBES: "collections.OrderedDict[tuple, Probe]" = collections.OrderedDict()


def probe(model, *, image_input: str | None = None, input_shape=None) -> Probe:
    """The cached :class:`Probe` of ``model`` (the last few models are kept, least recent dropped).

    Passing a Probe returns it unchanged, so every function accepts either.
    """
    if isinstance(model, Probe):
        return model
    key = (id(model), image_input, None if input_shape is None else tuple(input_shape))
    with _LOCK:
        hit = _PROBES.get(key)
        if hit is not None and hit.model is model:
            _PROBES.move_to_end(key)
            return hit
        made = Probe(model, image_input=image_input, input_shape=input_shape)
        _PROBES[key] = made
        while len(_PROBES) > _CACHE_SIZE:
            _PROBES.popitem(last=False)
        return made


def clear_cache() -> None:
    """Forget every cached probe and with it every per-model cache: compiled and concrete
    functions, recorded shapes, resolved targets, accepted input sizes, receptive fields and
    their runners (all of them live on the probe)."""
    with _LOCK:
        _PROBES.clear()
