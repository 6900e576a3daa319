"""Where the images of :func:`nbviz.explain_dataset` come from: one ordered list of items.

A source is turned into a :class:`Source`: ``len(source)`` items in a fixed order, each with a
position ``index`` (0-based), an ``id`` (the path relative to the folder, or ``"#<index>"``), an
optional ``path`` and ``label``, and a way to load its pixels. The order never changes between
runs over the same source, which is what makes a shard (a fixed range of indices) resumable.

Accepted sources:

* a folder: every file below it, recursively, in sorted order of the relative path (hidden files
  and the labels file skipped). PNG and JPEG files are images; any other file is reported in the
  errors table as unsupported, as is a file that fails to decode. Labels come from ``labels=``
  (a CSV path, or a mapping ``{relative path: label}``) or from a ``labels.csv`` at the folder's
  root: two columns ``path,label`` (a header row is optional; labels are class indices, or class
  names when ``class_names`` is given);
* a numpy array ``(N, H, W, C)`` (or ``(N, H, W)`` grey), with ``labels`` an ``(N,)`` int array;
* a ``tf.data.Dataset`` of ``image`` or ``(image, label)`` elements (unbatched), read once in
  order; its length is its cardinality when known, else counted while reading.

Images are loaded as they are stored (uint8 for files); grey and RGBA files are converted to the
model's channel count (``L`` for 1, ``RGB`` for 3). An image whose height and width differ from
the run's size is an error ("wrong size") unless ``resize=True`` (bilinear resampling).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

__all__ = ["Item", "Source", "as_source", "IMAGE_SUFFIXES", "ImageError"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABELS_FILE = "labels.csv"


class ImageError(Exception):
    """An image that cannot be used; its message is the reason stored in the errors table."""


@dataclasses.dataclass
class Item:
    """One image of a source: position, id, optional path and label, and pixels once loaded."""

    index: int
    id: str
    path: str | None = None
    label: int | None = None
    image: np.ndarray | None = None


class Source:
    """An ordered list of :class:`Item`; see the module docstring."""

    kind = "abstract"

    def __len__(self) -> int:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def items(self, start: int = 0) -> Iterator[Item]:
        """The items from position ``start`` on, pixels not loaded for file sources."""
        raise NotImplementedError

    @property
    def has_paths(self) -> bool:
        return False

    @property
    def pixel_dtype(self) -> str:
        """The dtype pixels are kept in when a run stores them: ``"uint8"`` for 8-bit sources,
        else ``"float32"`` (what the methods compute in), so a stored image is the one explained."""
        return "uint8"

    def fingerprint(self) -> dict:
        """What identifies this source in a results store (a rerun must see the same one)."""
        raise NotImplementedError


# --------------------------------------------------------------------------- loading pixels


def load_image(item: Item, *, channels: int, size: tuple[int, int] | None, resize: bool) -> np.ndarray:
    """The pixels of ``item`` as an ``H×W×channels`` array, or :class:`ImageError` with the reason."""
    if item.image is not None:
        image = np.asarray(item.image)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3:
            raise ImageError(f"wrong shape {image.shape}: an image is H×W×C")
        if image.shape[-1] != channels:
            if image.shape[-1] == 1 and channels == 3:
                image = np.repeat(image, 3, axis=-1)
            else:
                raise ImageError(f"wrong channel count {image.shape[-1]}: the model takes {channels}")
        return _fit(image, size, resize)
    return _fit(read_file(item.path, channels=channels), size, resize)


def read_file(path: str, *, channels: int) -> np.ndarray:
    """Decode a PNG or JPEG file to uint8 ``H×W×channels``; :class:`ImageError` otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageError(f"unsupported file type {suffix or '(none)'!r}: accepted are PNG and JPEG "
                         f"({', '.join(IMAGE_SUFFIXES)})")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.format not in ("PNG", "JPEG", "MPO"):
                raise ImageError(f"unsupported image format {img.format!r} behind the suffix {suffix!r}")
            img.load()
            mode = {1: "L", 3: "RGB"}.get(channels)
            if mode is None:
                raise ImageError(f"files decode to grey or RGB; the model takes {channels} channels")
            array = np.asarray(img.convert(mode))
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"unreadable: {type(exc).__name__}: {exc}") from None
    return array[..., None] if array.ndim == 2 else array


def _fit(image: np.ndarray, size, resize: bool) -> np.ndarray:
    if size is None or tuple(image.shape[:2]) == tuple(size):
        return image
    if not resize:
        raise ImageError(f"wrong size {image.shape[0]}×{image.shape[1]}: this run takes "
                         f"{size[0]}×{size[1]} (pass resize=True to resample)")
    from PIL import Image

    if image.dtype == np.uint8:
        mode_img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        out = np.asarray(mode_img.resize((size[1], size[0]), Image.BILINEAR))
        return out[..., None] if out.ndim == 2 else out
    import tensorflow as tf

    return tf.image.resize(image.astype(np.float32), size, method="bilinear").numpy()


# --------------------------------------------------------------------------- folders


class FolderSource(Source):
    kind = "folder"

    def __init__(self, root, labels=None, class_names: Sequence[str] | None = None):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ValueError(f"source folder {str(root)!r} does not exist or is not a folder")
        labels_path = None
        if labels is None and (self.root / LABELS_FILE).is_file():
            labels_path = self.root / LABELS_FILE
        elif isinstance(labels, (str, os.PathLike)):
            labels_path = Path(labels)
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                full = Path(dirpath) / name
                if name.startswith(".") or (labels_path is not None and full.resolve() == labels_path.resolve()):
                    continue
                files.append(full.relative_to(self.root).as_posix())
        files.sort()
        if not files:
            raise ValueError(f"source folder {str(self.root)!r} holds no files")
        self.files = files
        if labels_path is not None:
            mapping = read_labels_csv(labels_path)
        elif labels is None:
            mapping = {}
        elif isinstance(labels, Mapping):
            mapping = {str(k): v for k, v in labels.items()}
        else:
            raise TypeError(f"labels for a folder must be a CSV path or a mapping {{relative path: label}}, "
                            f"got {type(labels).__name__}")
        unknown = sorted(set(mapping) - set(files))
        if unknown:
            raise ValueError(f"labels name {len(unknown)} file(s) not in the folder, e.g. {unknown[:3]}")
        self.labels = {k: _label_index(v, class_names, k) for k, v in mapping.items()}

    def __len__(self):
        return len(self.files)

    @property
    def has_paths(self):
        return True

    def items(self, start=0):
        for i in range(start, len(self.files)):
            rel = self.files[i]
            yield Item(i, rel, str(self.root / rel), self.labels.get(rel))

    def fingerprint(self):
        return {"kind": self.kind, "root": str(self.root), "count": len(self.files),
                "first": self.files[0], "last": self.files[-1]}


def read_labels_csv(path) -> dict[str, Any]:
    """``{relative path: label}`` from a two-column CSV (``path,label``; header optional)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"labels file {str(path)!r} does not exist")
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["path", "label"], ["file", "label"], ["id", "label"]):
        rows = rows[1:]
    out = {}
    for k, row in enumerate(rows):
        if len(row) < 2:
            raise ValueError(f"{path.name} line {k + 1}: need two columns path,label, got {row}")
        out[row[0].strip()] = row[1].strip()
    return out


def _label_index(value, class_names, where) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if class_names is not None and text in class_names:
        return list(class_names).index(text)
    known = "" if class_names is None else f"; class names: {list(class_names)}"
    raise ValueError(f"label {value!r} of {where!r} is neither a class index nor a known class name "
                     f"(pass class_names=... to use names){known}")


# --------------------------------------------------------------------------- arrays


def _whole_bytes(images: np.ndarray, chunk: int = 8) -> bool:
    """Whether every value is a whole number in 0..255 (checked ``chunk`` images at a time)."""
    if images.dtype == np.uint8:
        return True
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk]
        if part.dtype.kind == "f" and not np.array_equal(np.rint(part), part):
            return False  # also NaN
        if part.size and (part.min() < 0 or part.max() > 255):
            return False
    return True


class ArraySource(Source):
    kind = "array"

    def __init__(self, images, labels=None):
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"an array source must be N×H×W×C (or N×H×W), got shape {images.shape}")
        if not (np.issubdtype(images.dtype, np.number) or images.dtype == bool):
            raise TypeError(f"an array source must be numeric, got dtype {images.dtype}")
        self.images = images
        self.labels = None if labels is None else _labels_array(labels, len(images))
        self._dtype = None

    def __len__(self):
        return len(self.images)

    @property
    def pixel_dtype(self):
        """``"uint8"`` also for other dtypes whose every value is a whole number in 0..255 (e.g.
        the float32 of ``keras.utils.img_to_array``): stored exactly in a quarter of the bytes."""
        if self._dtype is None:
            self._dtype = "uint8" if _whole_bytes(self.images) else "float32"
        return self._dtype

    def items(self, start=0):
        for i in range(start, len(self.images)):
            yield Item(i, f"#{i}", None, None if self.labels is None else int(self.labels[i]), self.images[i])

    def fingerprint(self):
        sample = self.images[:: max(1, len(self.images) // 16)]
        import hashlib

        digest = hashlib.sha1(np.ascontiguousarray(sample).tobytes()).hexdigest()[:16]
        return {"kind": self.kind, "shape": list(self.images.shape), "dtype": str(self.images.dtype),
                "sample_sha1": digest}


def _labels_array(labels, n) -> np.ndarray:
    values = np.asarray(labels)
    if values.shape != (n,) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"labels must be {n} integer class indices, one per image; got shape "
                         f"{values.shape} and dtype {values.dtype}")
    return values.astype(np.int64)


# --------------------------------------------------------------------------- tf.data


class TFDataSource(Source):
    kind = "tf.data"

    def __init__(self, dataset, labels=None):
        import tensorflow as tf

        if labels is not None:
            raise ValueError("labels= is not used with a tf.data.Dataset: give (image, label) elements")
        spec = dataset.element_spec
        if isinstance(spec, tuple):
            if len(spec) not in (1, 2):
                raise ValueError(f"a tf.data source yields image or (image, label); got {len(spec)} parts")
            image_spec = spec[0]
        elif isinstance(spec, dict):
            raise ValueError("a tf.data source yields image or (image, label) tuples, not dicts")
        else:
            image_spec = spec
        if image_spec.shape.rank not in (None, 2, 3):
            raise ValueError(f"a tf.data source yields one image per element (H×W×C); its elements "
                             f"have shape {image_spec.shape}: call .unbatch() first")
        self.dataset = dataset
        self._uint8 = image_spec.dtype == tf.uint8
        self.labelled = isinstance(spec, tuple) and len(spec) == 2
        n = int(dataset.cardinality())
        if n < 0:  # unknown or infinite: count once (a finite dataset is required)
            if n == int(tf.data.INFINITE_CARDINALITY):
                raise ValueError("the tf.data.Dataset is infinite; take a finite part with .take(n)")
            n = sum(1 for _ in dataset)
        self.count = n

    def __len__(self):
        return self.count

    @property
    def pixel_dtype(self):
        return "uint8" if self._uint8 else "float32"

    def items(self, start=0):
        for i, element in enumerate(self.dataset.skip(start).as_numpy_iterator(), start):
            if isinstance(element, tuple):
                image = element[0]
                label = int(element[1]) if len(element) > 1 else None
            else:
                image, label = element, None
            yield Item(i, f"#{i}", None, label, np.asarray(image))

    def fingerprint(self):
        return {"kind": self.kind, "count": self.count, "spec": str(self.dataset.element_spec)}


def as_source(source, labels=None, class_names=None) -> Source:
    """The :class:`Source` for a folder path, a numpy array or a ``tf.data.Dataset``."""
    if isinstance(source, Source):
        return source
    if isinstance(source, (str, os.PathLike)):
        return FolderSource(source, labels, class_names)
    if isinstance(source, np.ndarray):
        return ArraySource(source, labels)
    try:
        import tensorflow as tf

        if isinstance(source, tf.data.Dataset):
            return TFDataSource(source, labels)
        if isinstance(source, tf.Tensor):
            return ArraySource(source.numpy(), labels)
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"source must be a folder path, a numpy array N×H×W×C or a tf.data.Dataset; "
                    f"got {type(source).__name__}")
