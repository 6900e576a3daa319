"""Sanity checks for saliency maps: model parameter randomisation (Adebayo et al. 2018).

A map that explains the model must change when the model's weights are destroyed. The check
re-initialises the weights of the model's layers, top (output) layer first, on a copy, and
compares the method's map on the copy with its map on the trained model:

* ``mode="cascade"``: step k re-initialises the top k weighted layers (cumulative);
* ``mode="independent"``: step k re-initialises layer k alone, the others keep their weights.

A layer's weights are re-drawn from **the layer's own initializers** (``kernel_initializer``,
``bias_initializer``, ``gamma_initializer``, ``moving_mean_initializer``, ...; a variable without
one is re-drawn from a normal distribution with its trained mean and standard deviation), seeded
from ``seed`` and the layer's path, so the same layer gets the same random weights in both modes
and in every run. The copy is made with :func:`keras.models.clone_model` plus ``set_weights``:
the user's model is never touched. Nested models are cloned with their parent (their layers
appear as ``outer/inner`` paths); a subclassed model that Keras cannot clone raises a TypeError
that says what to do.

Similarity of the two maps (each reduced to H×W: an H×W×C map by ``sum_c |a_c|`` for the
magnitude, ``sum_c a_c`` for the sign):

* ``spearman_abs`` / ``spearman``: Spearman rank correlation (:func:`scipy.stats.spearmanr`) of
  the magnitudes / of the signed maps; 0.0 when either map is constant (no ranking to share);
* ``ssim``: structural similarity (:func:`skimage.metrics.structural_similarity`, data range 1)
  of the magnitudes, each divided by its own maximum;
* ``hog_distance``: Euclidean distance between the unit-normalised HOG descriptors
  (:func:`skimage.feature.hog`, 8×8 cells on 64 px, 2×2 blocks) of those normalised magnitudes,
  in [0, √2] (0: the same edge structure; 1 when one map is all zero).

Rank correlation near 1 after the top layer is randomised means the map does not depend on
what the model learned there (Adebayo et al. found this for guided backprop).
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
import zlib
from typing import Callable, Iterator

import numpy as np

__all__ = ["randomised", "model_randomisation", "Randomisation", "similarity", "MODES"]

MODES = ("cascade", "independent")


# --------------------------------------------------------------------------- copies


def _own_variables(layer) -> list:
    from nbviz.probe import _sublayers

    inner = {id(v) for sub in _sublayers(layer) for v in sub.weights}
    return [v for v in layer.weights if id(v) not in inner]


def _weighted_layers(model) -> list[tuple[str, object, list]]:
    """(path, layer, own variables) of every layer with weights, in tracking order."""
    from nbviz.probe import probe

    out = []
    for path, layer, _ in probe(model).walk():
        own = _own_variables(layer)
        if own:
            out.append((path, layer, own))
    return out


def _clone(model):
    import keras

    try:
        copy = keras.models.clone_model(model)
    except Exception as error:  # noqa: BLE001 - re-raised with what to do
        raise TypeError(
            f"model randomisation needs a copy of the model, and keras.models.clone_model cannot "
            f"clone {type(model).__name__} ({type(error).__name__}: {error}). Give the subclassed "
            f"model get_config()/from_config() (so Keras can rebuild it), or build it as a "
            f"functional or Sequential model") from error
    if len(copy.weights) != len(model.weights) and getattr(model, "inputs", None):
        try:  # a subclassed copy builds its weights on its first call
            copy(np.zeros([1] + [d or 32 for d in model.inputs[0].shape[1:]], "float32"))
        except Exception:  # noqa: BLE001 - the count check below explains the failure
            pass
    if len(copy.weights) != len(model.weights):
        raise TypeError(
            f"keras.models.clone_model made a copy of {type(model).__name__} with "
            f"{len(copy.weights)} weights instead of {len(model.weights)}; the copy cannot be "
            f"randomised layer by layer. Give the model get_config()/from_config() that rebuild "
            f"every layer, or build it as a functional or Sequential model")
    copy.set_weights(model.get_weights())
    return copy


def _seed(seed: int, path: str, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), zlib.crc32(path.encode()), index])
               .generate_state(1)[0] % (2 ** 31 - 1))


def _initializer(layer, variable):
    name = variable.name.split("/")[-1].split(":")[0]
    candidates = [f"{name}_initializer"]
    if name.endswith("_kernel"):
        candidates.append(f"{name[: -len('_kernel')]}_initializer")
    if "kernel" in name:
        candidates += ["kernel_initializer", "depthwise_initializer"]
    for attr in candidates:
        init = getattr(layer, attr, None)
        if init is not None:
            return init
    return None


def _fresh_values(layer, variables, seed: int, path: str) -> list[np.ndarray]:
    import keras

    values = []
    for i, v in enumerate(variables):
        shape, dtype = tuple(v.shape), v.dtype
        s = _seed(seed, path, i)
        init = _initializer(layer, v)
        if init is not None:
            init = keras.initializers.get(init)
            config = init.get_config()
            if "seed" in config:
                init = type(init).from_config({**config, "seed": s})
            values.append(np.asarray(init(shape, dtype=dtype)))
        else:
            current = np.asarray(v)
            rng = np.random.default_rng(s)
            values.append(rng.normal(current.mean(), current.std() or 1.0, shape).astype(current.dtype))
    return values


def _select(weighted, layers) -> list[int]:
    """Indices into ``weighted`` to randomise, top (last) layer first."""
    if layers is None:
        return list(range(len(weighted)))[::-1]
    if isinstance(layers, str):
        layers = [layers]
    paths = [p for p, _, _ in weighted]
    names = {}
    for i, (p, layer, _) in enumerate(weighted):
        names.setdefault(layer.name, []).append(i)
    chosen = []
    for spec in layers:
        spec = getattr(spec, "name", spec) if not isinstance(spec, str) else spec
        if spec in paths:
            chosen.append(paths.index(spec))
        elif spec in names and len(names[spec]) == 1:
            chosen.append(names[spec][0])
        else:
            raise ValueError(f"layers: {spec!r} is not a layer with weights of the model; "
                             f"choose among {paths}")
    return sorted(set(chosen), reverse=True)


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode must be 'cascade' or 'independent', got {mode!r}")


def _checked(model, mode, seed, layers):
    """(weighted layers, the indices to randomise in order) after checking the arguments."""
    _check_mode(mode)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {seed!r}")
    weighted = _weighted_layers(model)
    if not weighted:
        raise ValueError("the model has no weights to randomise")
    return weighted, _select(weighted, layers)


def _steps(model, mode, seed, layers) -> Iterator[tuple[str, object]]:
    """(path, working copy) per step; ONE copy whose weights are rewritten between steps (so a
    method compiled for it is not traced again)."""
    weighted, order = _checked(model, mode, seed, layers)
    copy = _clone(model)
    copies = {p: (layer, own) for p, layer, own in _weighted_layers(copy)}
    if set(copies) != {p for p, _, _ in weighted}:
        raise TypeError("the model's copy has different layer paths than the model; the copy "
                        "cannot be randomised layer by layer")
    previous = None
    for index in order:
        path, _, own = weighted[index]
        layer_c, own_c = copies[path]
        if mode == "independent" and previous is not None:
            p_path, p_own = previous
            for v, original in zip(copies[p_path][1], p_own):
                v.assign(np.asarray(original))
        for v, value in zip(own_c, _fresh_values(layer_c, own_c, seed, path)):
            v.assign(value)
        previous = (path, own)
        yield path, copy


def randomised(model, mode: str = "cascade", seed: int = 0, layers=None
               ) -> Iterator[tuple[str, object]]:
    """Copies of ``model`` with re-initialised weights, top layer first: yields ``(layer path,
    copy)``, one per weighted layer (or per layer in ``layers``: names, paths or layer objects),
    each copy a separate model (``list(randomised(m))`` keeps them all; for a large model
    iterate, or pass ``layers``). See the module doc for the modes and the initialisation; the
    model itself is not changed. Arguments are checked when called, not when iterated."""
    _checked(model, mode, seed, layers)
    _clone(model)  # a model Keras cannot clone fails here, with advice

    def copies():
        for path, working in _steps(model, mode, seed, layers):
            yield path, _clone(working)

    return copies()


# --------------------------------------------------------------------------- similarity


def _planes(a) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, np.float64)
    if a.ndim == 3:
        return np.abs(a).sum(-1), a.sum(-1)
    if a.ndim == 2:
        return np.abs(a), a
    raise ValueError(f"a map must be H×W or H×W×C, got shape {a.shape}")


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    a, b = a.ravel(), b.ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def _unit(a):
    m = a.max()
    return a / m if m > 0 else np.zeros_like(a)


def _hog(a):
    from skimage.feature import hog

    cell = max(1, min(a.shape) // 8)
    h = hog(a, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2),
            feature_vector=True)
    n = np.linalg.norm(h)
    return h / n if n > 0 else np.zeros_like(h)


def similarity(original, other) -> dict:
    """The four similarities of two maps (see the module doc), as a dict."""
    from skimage.metrics import structural_similarity

    abs1, sig1 = _planes(original)
    abs2, sig2 = _planes(other)
    if abs1.shape != abs2.shape:
        raise ValueError(f"maps of different shapes {abs1.shape} and {abs2.shape}")
    u1, u2 = _unit(abs1), _unit(abs2)
    win = min(7, min(u1.shape) - (1 - min(u1.shape) % 2))
    return {
        "spearman_abs": _spearman(abs1, abs2),
        "spearman": _spearman(sig1, sig2),
        "ssim": float(structural_similarity(u1, u2, data_range=1.0, win_size=win)),
        "hog_distance": float(np.linalg.norm(_hog(u1) - _hog(u2))),
    }


# --------------------------------------------------------------------------- the check


COLUMNS = ("layer", "spearman_abs", "spearman", "ssim", "hog_distance", "zero_map")


@dataclasses.dataclass(frozen=True, eq=False)
class Randomisation:
    """Result of :func:`model_randomisation`: one row (a dict with :data:`COLUMNS`) per
    randomised layer, top layer first; ``original`` and ``maps`` are the method's maps on the
    trained model and on each copy (as the method returned them)."""

    method: str
    mode: str
    seed: int
    target: object
    rows: tuple
    original: np.ndarray
    maps: tuple

    columns = COLUMNS

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def to_list(self) -> list[dict]:
        """The rows as plain dicts (no pandas needed; ``pandas.DataFrame(t.to_list())`` works)."""
        return [dict(r) for r in self.rows]

    def column(self, name: str) -> np.ndarray:
        return np.array([r[name] for r in self.rows])

    def to_markdown(self, digits: int = 3) -> str:
        head = "| " + " | ".join(COLUMNS) + " |"
        rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
        lines = [head, rule]
        for r in self.rows:
            cells = [f"{r[c]:.{digits}f}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __repr__(self):
        return (f"Randomisation({self.method}, mode={self.mode!r}, seed={self.seed}, "
                f"{len(self.rows)} layers)\n{self.to_markdown()}")

    def _repr_markdown_(self):
        return f"**{self.method}**, {self.mode} randomisation (seed {self.seed})\n\n{self.to_markdown()}"

    def plot(self, ax=None):
        """Similarity per randomised layer (x: layers, top first); returns the axes."""
        if ax is None:
            from matplotlib.figure import Figure

            ax = Figure(figsize=(max(4, 0.6 * len(self.rows) + 2), 3.2)).add_subplot()
        x = np.arange(len(self.rows))
        for name, style in (("spearman_abs", "o-"), ("spearman", "s--"), ("ssim", "^-"),
                            ("hog_distance", "x:")):
            ax.plot(x, self.column(name), style, label=name)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xticks(x, [r["layer"] for r in self.rows], rotation=45, ha="right")
        ax.set_ylim(-1.05, 1.45)
        ax.set_ylabel("similarity to the trained model's map")
        ax.set_title(f"{self.method}: {self.mode} randomisation, top layer first")
        ax.legend(fontsize="small", ncol=2)
        ax.figure.tight_layout()
        return ax


def _method(method) -> tuple[str, Callable]:
    if isinstance(method, str):
        from nbviz.methods import table

        return method, table.method(method).function_object()
    if callable(method):
        return getattr(method, "__name__", "method"), method
    raise TypeError(f"method must be a key of the method table (nbviz.methods.table) or a "
                    f"function (model, image, *, target=..., ...) -> map, got {method!r}")


def _top_class(model, image, preprocess, extra_inputs):
    from nbviz.methods import core

    p, images, _ = core.prepare(model, image, preprocess)
    if images.shape[0] != 1:
        raise ValueError(f"image must be one image (H×W×C), got a batch of {images.shape[0]}")
    shape = core.explained_shape(p, None, tuple(images.shape[1:3]))
    if len(shape) != 2:
        return None  # dense output: the target stays None (top channel of each model)
    logits = core.explain(p, images, None, core.extra_tensors(p, extra_inputs))
    return int(np.argmax(np.asarray(logits)[0]))


def model_randomisation(method, model, image, *, target=None, mode="cascade", seed=0,
                        layers=None, **method_kwargs) -> Randomisation:
    """Adebayo et al.'s model randomisation test of ``method`` on one ``image``.

    ``method``: a key of :mod:`nbviz.methods.table` or a function ``(model, image, *,
    target=..., **method_kwargs) -> map``. ``target`` None: the trained model's top class (for a
    class vector output), explained on every copy too. Returns a :class:`Randomisation` table;
    the model is not changed.
    """
    name, fn = _method(method)
    _check_mode(mode)
    if target is None:
        target = _top_class(model, image, method_kwargs.get("preprocess"),
                            method_kwargs.get("extra_inputs"))
    original = np.asarray(fn(model, image, target=target, **method_kwargs))
    rows, maps = [], []
    for path, copy in _steps(model, mode, seed, layers):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            other = np.asarray(fn(copy, image, target=target, **method_kwargs))
        zero = any("zero everywhere" in str(w.message) for w in caught)
        for w in caught:
            if "zero everywhere" not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        rows.append({"layer": path, **similarity(original, other), "zero_map": zero})
        maps.append(other)
    return Randomisation(name, mode, int(seed), target, tuple(rows), original, tuple(maps))
