"""The run store of :class:`nbviz.callbacks.Recorder`: one folder per training run, one file per
record, readable while the run is still going and after it was killed.

Layout (every file is written under a temporary name, then renamed, so a file that has its final
name is complete; a killed run leaves complete records and at most a ``*.tmp`` file)::

    run.json            what was recorded: format, version, methods (name, display), layers (path,
                        TRF), featvis pairs, probe image shape, mass fraction, created
    probe.npz           images: the probe images as given (raw, before ``preprocess``)
    step-000000120.npz  one record: after 120 optimiser steps
    index.json          a summary of every record (step, epoch, seconds, ERF sizes, logs), for
                        people and other tools; rewritten after each record

A record holds (``numpy.savez``, uncompressed, so it reads back bit for bit):

* ``meta``: a JSON string: ``step``, ``epoch`` (epochs done; fractional for a record taken inside
  an epoch), ``seconds`` (Recorder cost of this record by part: maps, erf, featvis,
  tensorboard, and their ``total``; the file cannot hold the time of its own write, which
  ``Recorder.seconds`` adds), ``logs`` (Keras logs at that point), ``erf`` (one
  :class:`~nbviz.methods.erf.ErfSize` dict per layer), ``dead`` (methods whose map was all zero);
* ``maps/<k>``: method ``k``'s maps of the probe images, float32 N×H×W or N×H×W×C;
* ``erf/<k>``: layer ``k``'s mean input-gradient magnitude ``G``, float32 H×W;
* ``featvis/<k>``: the feature visualisation of pair ``k``, float32 H×W×3 in [0, 1].

(``k`` indexes the lists in ``run.json``, so names with any characters are safe.) Read a run with
:func:`open_run`.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import re
from pathlib import Path
import numpy as np

__all__ = ["FORMAT", "VERSION", "RunWriter", "Run", "Record", "open_run"]

FORMAT = "nbviz-run"
VERSION = 1
_RECORD = re.compile(r"^step-(\d{9})\.npz$")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def _dumps(value) -> str:
    return json.dumps(value, default=_json_default, allow_nan=True)


class RunWriter:
    """Writes a run store (see the module docstring). ``header`` becomes ``run.json``.

    A folder that already holds a run is appended to when its ``run.json`` describes the same
    recording (same methods, layers, featvis pairs and probe images), else a ValueError names
    ``out``: records of another run never mix.
    """

    def __init__(self, out, header: dict, images: np.ndarray):
        self.path = Path(out)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"out={str(out)!r} is a file; give a folder for the run store")
        self.path.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT, "version": VERSION, **header,
                  "images": {"shape": list(images.shape), "dtype": str(images.dtype)}}
        existing = self.path / "run.json"
        if existing.exists():
            old = json.loads(existing.read_text())
            same = ("methods", "layers", "featvis", "images", "erf_mass")
            if any(_norm(old.get(k)) != _norm(header.get(k)) for k in same) or \
                    not _same_images(self.path / "probe.npz", images):
                raise ValueError(f"out={str(out)!r} already holds a different run ({old.get('created')}); "
                                 "give an empty or new folder")
            self.header = old
        else:
            header["created"] = datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            buf = io.BytesIO()
            np.savez(buf, images=images)
            _atomic_write(self.path / "probe.npz", buf.getvalue())
            _atomic_write(existing, (json.dumps(header, indent=1, default=_json_default) + "\n").encode())
            self.header = header
        self.index = _read_index(self.path)

    def write(self, meta: dict, maps: list, erf: list, featvis: list) -> Path:
        """Write one record; returns its path. Arrays are lists in the header's order."""
        step = int(meta["step"])
        arrays = {"meta": np.array(_dumps(meta))}
        for prefix, values in (("maps", maps), ("erf", erf), ("featvis", featvis)):
            for k, a in enumerate(values):
                arrays[f"{prefix}/{k}"] = np.asarray(a)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path = self.path / f"step-{step:09d}.npz"
        _atomic_write(path, buf.getvalue())
        self.index = [r for r in self.index if r["step"] != step] + [meta]
        self.index.sort(key=lambda r: r["step"])
        _atomic_write(self.path / "index.json", (_dumps({"records": self.index}) + "\n").encode())
        return path


def _norm(value):
    return json.loads(json.dumps(value, default=_json_default))


def _same_images(path: Path, images: np.ndarray) -> bool:
    try:
        with np.load(path) as data:
            return np.array_equal(data["images"], images)
    except (OSError, KeyError, ValueError):
        return False


def _read_index(path: Path) -> list:
    try:
        return list(json.loads((path / "index.json").read_text())["records"])
    except (OSError, ValueError, KeyError):
        return []


# --------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class Record:
    """One record, fully read: ``maps`` {method: array}, ``erf_maps`` {layer: H×W}, ``erf``
    {layer: ErfSize dict}, ``featvis`` {(layer, channel): H×W×3}, and the meta fields."""

    step: int
    epoch: float
    seconds: dict
    logs: dict
    erf: dict
    maps: dict = dataclasses.field(repr=False)
    erf_maps: dict = dataclasses.field(repr=False)
    featvis: dict = dataclasses.field(repr=False)
    dead: tuple = ()


class Run:
    """A run store opened for reading (:func:`open_run`). Records that appear while it is open
    are seen after :meth:`refresh`.

    ``header`` (run.json), ``methods`` (names), ``layers`` (paths), ``featvis_pairs``,
    ``images`` (the probe images), ``steps`` / ``epochs`` (one per record, in order).
    """

    def __init__(self, path):
        self.path = Path(path)
        head = self.path / "run.json"
        if not head.is_file():
            raise ValueError(f"{str(path)!r} is not a run store: it has no run.json")
        self.header = json.loads(head.read_text())
        if self.header.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r}: run.json is not of format {FORMAT!r}")
        if int(self.header.get("version", 0)) > VERSION:
            raise ValueError(f"{str(path)!r}: run store version {self.header['version']} is newer "
                             f"than this nbviz reads ({VERSION})")
        with np.load(self.path / "probe.npz") as data:
            self.images = data["images"]
        self.methods = [m["name"] for m in self.header["methods"]]
        self.layers = [layer["path"] for layer in self.header["layers"]]
        self.featvis_pairs = [tuple(pair) for pair in self.header["featvis"]]
        self._meta: dict[int, dict] = {}
        self.refresh()

    def refresh(self) -> "Run":
        """Look for new records (complete files only)."""
        steps = sorted(int(m.group(1)) for m in map(_RECORD.match, os.listdir(self.path)) if m)
        for step in steps:
            if step not in self._meta:
                with np.load(self._file(step)) as data:
                    self._meta[step] = json.loads(str(data["meta"]))
        self._meta = {s: self._meta[s] for s in steps}
        return self

    def _file(self, step: int) -> Path:
        return self.path / f"step-{step:09d}.npz"

    def __len__(self) -> int:
        return len(self._meta)

    def __repr__(self):
        return (f"Run({str(self.path)!r}, records={len(self)}, methods={self.methods}, "
                f"layers={self.layers})")

    @property
    def steps(self) -> np.ndarray:
        return np.array(list(self._meta), dtype=np.int64)

    @property
    def epochs(self) -> np.ndarray:
        return np.array([m["epoch"] for m in self._meta.values()], dtype=np.float64)

    @property
    def seconds(self) -> np.ndarray:
        """The Recorder's total cost of each record, seconds."""
        return np.array([m["seconds"]["total"] for m in self._meta.values()], dtype=np.float64)

    def meta(self, epoch=None, *, step=None) -> dict:
        return dict(self._meta[self._step(epoch, step)])

    def _step(self, epoch, step) -> int:
        if (epoch is None) == (step is None):
            raise ValueError("give either epoch= (a value of run.epochs) or step= (of run.steps)")
        if step is not None:
            if int(step) not in self._meta:
                raise ValueError(f"step {step} has no record; recorded steps: {self.steps.tolist()}")
            return int(step)
        hits = [s for s, m in self._meta.items() if abs(m["epoch"] - float(epoch)) < 1e-9]
        if not hits:
            raise ValueError(f"epoch {epoch} has no record; recorded epochs: {self.epochs.tolist()}")
        return hits[-1]

    def _index(self, names: list, name, what: str) -> int:
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool) and 0 <= name < len(names):
            return int(name)
        if name in names:
            return names.index(name)
        raise ValueError(f"{what} {name!r} was not recorded; recorded: {names}")

    def _array(self, step: int, key: str) -> np.ndarray:
        with np.load(self._file(step)) as data:
            return data[key]

    def maps(self, epoch=None, method=None, image=None, *, step=None) -> np.ndarray:
        """The maps of ``method`` (name or index) recorded at ``epoch`` (or ``step``): N×H×W[×C],
        or one image's when ``image`` is an index."""
        if method is None:
            raise ValueError(f"method is required; recorded: {self.methods}")
        k = self._index(self.methods, method, "method")
        a = self._array(self._step(epoch, step), f"maps/{k}")
        return a if image is None else a[int(image)]

    def erf_map(self, epoch=None, layer=None, *, step=None) -> np.ndarray:
        """Mean input-gradient magnitude ``G`` (H×W) of ``layer``'s centre cell at ``epoch``."""
        k = self._index(self.layers, self.layers[-1] if layer is None else layer, "layer")
        return self._array(self._step(epoch, step), f"erf/{k}")

    def featvis(self, epoch=None, *, step=None) -> dict:
        """{(layer, channel): H×W×3 picture} recorded at ``epoch``."""
        s = self._step(epoch, step)
        with np.load(self._file(s)) as data:
            return {pair: data[f"featvis/{k}"] for k, pair in enumerate(self.featvis_pairs)}

    def record(self, epoch=None, *, step=None) -> Record:
        s = self._step(epoch, step)
        m = self._meta[s]
        with np.load(self._file(s)) as data:
            maps = {n: data[f"maps/{k}"] for k, n in enumerate(self.methods)}
            erf_maps = {n: data[f"erf/{k}"] for k, n in enumerate(self.layers) if f"erf/{k}" in data}
            fv = {pair: data[f"featvis/{k}"] for k, pair in enumerate(self.featvis_pairs)}
        return Record(s, float(m["epoch"]), dict(m["seconds"]), dict(m.get("logs", {})),
                      {e["layer"]: e for e in m.get("erf", [])}, maps, erf_maps, fv,
                      tuple(m.get("dead", ())))

    def erf_table(self) -> dict[str, np.ndarray]:
        """The ERF sizes of every record and layer as columns: step, epoch, layer, side,
        radius, trf, ratio (``pandas.DataFrame(run.erf_table())`` for a table)."""
        rows = [(s, m["epoch"], e["layer"], e["side"], e["radius"], e["trf"], e["ratio"])
                for s, m in self._meta.items() for e in m.get("erf", [])]
        names = ("step", "epoch", "layer", "side", "radius", "trf", "ratio")
        cols = list(zip(*rows)) if rows else [()] * len(names)
        types = (np.int64, np.float64, object, np.float64, np.float64, np.float64, np.float64)
        return {n: np.array(c, dtype=t) for n, c, t in zip(names, cols, types)}

    def logs(self, key: str) -> np.ndarray:
        """One Keras log value (e.g. "loss") per record; NaN where it was not logged."""
        return np.array([m.get("logs", {}).get(key, np.nan) for m in self._meta.values()], float)


def open_run(path) -> Run:
    """Open a run store written by :class:`nbviz.callbacks.Recorder` (see the module docstring):
    ``run.epochs``, ``run.maps(epoch, method, image)``, ``run.erf_table()``,
    ``run.featvis(epoch)``, ``run.record(epoch)``."""
    return Run(path)
