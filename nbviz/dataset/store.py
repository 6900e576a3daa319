"""The results store of :func:`nbviz.explain_dataset`, and its reader :func:`open_results`.

Layout of ``out/``::

    manifest.json            what was run (methods, metrics, target, source, model), the shard
                             size, the map shapes, per-run timings, and "complete"
    results.parquet          one row per processed image (the union of the shards), written last
    errors.parquet           one row per unusable item: index, id, path, reason
    shards/00000/            one finished shard: the images with index in [k*S, (k+1)*S)
        results.parquet      its rows of the results table
        errors.parquet       its rows of the errors table
        maps.zarr/           Zarr v3 group: one float32 array per method, (S, H, W[, C]), row i
                             for the image of index k*S + i (zeros for an unusable one); chunks
                             of about 4 MiB that divide the batch size (16 maps at 224 px),
                             Blosc-LZ4 compressed; "images" (the pixels; float ones
                             uncompressed; chunks of up to 20 MiB, a batch of 32 at 224 px)
                             for sources without files; "thumbs", uint8
                             thumbnails (longer side <= thumbnail_size; PNG made when read);
                             one file per chunk, named c.<i>.<j>... (no folder per index)
        shard.json           its row/error counts and timings, written last

A shard is built under ``shards/.<k>.tmp-<pid>-<random>/``, batch by batch as the results come
(:class:`ShardWriter`), and renamed to ``shards/<k>/`` with
``os.replace`` only when complete and on disk (every chunk file is flushed as it is written,
and dropped from the page cache: a run reads none of it back; the rest, and the folders, are
synced before the rename), so a killed run, or a machine that went down, leaves at most a
temporary folder (removed by the next run when its process is gone) and never a partial shard.
``manifest.json`` and the union tables are replaced the same way. A restarted run skips the
shards that exist; the union has exactly one row per usable image because a shard is a fixed
range of source indices. While a run is going on (or after it died) :func:`open_results` reads
the finished shards.

Results table columns: ``index`` (position in the source), ``id`` (relative path or ``#index``),
``path`` (null for arrays), ``label`` (null when unknown), ``prediction`` and ``score`` (top
class and its output value), ``top_classes`` / ``top_scores`` (top-k, best first), ``correct``
(null without a label), ``target`` (the class the maps explain), ``label_name`` /
``prediction_name`` (when class names are known), one float64 column ``<metric>_<method>`` per
metric and method, and ``shard`` / ``row`` (where the maps are).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nbviz.dataset.worker import Batch

__all__ = ["Store", "Results", "open_results", "FORMAT"]

FORMAT = "nbviz-results/2"  # 2: thumbnails in maps.zarr, not PNG bytes in thumbs.parquet
SHARDS = "shards"
#: the size of a Zarr chunk (several images' maps): 16 Grad-CAM maps at 224 px
CHUNK_BYTES = 4 << 20
#: the size of a chunk of stored pixels: a batch of 32 float images at 224 px in one file (about
#: half the writing CPU of 4 MiB chunks; opening one image reads its chunk, 5-22 ms measured)
IMAGE_CHUNK_BYTES = 20 << 20


_datasync = getattr(os, "fdatasync", os.fsync)


#: what a file system without the call answers (the write stands, only not forced to disk); any
#: other error (ENOSPC, EIO: a write that failed after all) is raised
_CANNOT_SYNC = {errno.EINVAL, errno.ENOSYS, errno.EBADF, getattr(errno, "ENOTSUP", -1),
                getattr(errno, "EOPNOTSUPP", -1)}


def _sync_file(path, *, drop: bool = False) -> None:
    """Put a written file's bytes on disk; with ``drop``, also out of the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            _datasync(fd)
        except OSError as exc:
            if exc.errno not in _CANNOT_SYNC:
                raise
        if drop and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    """Every file and folder under ``root``, and ``root`` itself, on disk (the files' bytes and
    the names in each folder), so that a shard renamed into place after it survives a crash of the
    machine, not only of the process."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            _sync_file(os.path.join(folder, name))
        _sync_dir(folder)


def _sync_dir(path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a platform whose folders cannot be opened (Windows): nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the files are synced already
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """``write(tmp)``, then ``tmp`` on disk and renamed to ``path``: after a crash of the process
    or of the machine, ``path`` holds the old or the new content, never a part."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    write(tmp)
    _sync_file(tmp)
    os.replace(tmp, path)
    _sync_dir(path.parent)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text))


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    _atomic_write(path, lambda tmp: pq.write_table(table, tmp))


_FLUSHED_STORE = None


def _flushed_store(root: Path):
    """A Zarr ``LocalStore`` at ``root`` whose every file is on disk, and out of the page cache,
    when its write returns.

    A run writes each byte once and reads none of it back, so caching it would only evict what
    is worth caching (the source images being read), and pile up dirty pages for the kernel to
    write later on the cores the run is using. Flushed as it goes, the same few cached pages are
    reused for every chunk; where fresh pages are dear (a VM whose free memory goes back to the
    host, as on the benchmark machine) the float pixels of 256 images took 0.3-0.45 s of system
    time unflushed and 0.05-0.13 s flushed."""
    global _FLUSHED_STORE
    if _FLUSHED_STORE is None:
        import asyncio

        from zarr.storage import LocalStore

        class FlushedStore(LocalStore):
            async def set(self, key, value) -> None:
                await super().set(key, value)
                await asyncio.to_thread(_sync_file, self.root / key, drop=True)

        _FLUSHED_STORE = FlushedStore
    return _FLUSHED_STORE(root)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


ERROR_SCHEMA = pa.schema([("index", pa.int64()), ("id", pa.string()), ("path", pa.string()),
                          ("reason", pa.string())])


def results_schema(metric_columns: Sequence[str], named: bool) -> pa.Schema:
    fields = [("index", pa.int64()), ("id", pa.string()), ("path", pa.string()), ("label", pa.int64()),
              ("prediction", pa.int64()), ("score", pa.float32()),
              ("top_classes", pa.list_(pa.int32())), ("top_scores", pa.list_(pa.float32())),
              ("correct", pa.bool_()), ("target", pa.int64())]
    if named:
        fields += [("label_name", pa.string()), ("prediction_name", pa.string())]
    fields += [(c, pa.float64()) for c in metric_columns]
    fields += [("shard", pa.int32()), ("row", pa.int32())]
    return pa.schema(fields)


class Store:
    """Writer side of a results folder (see the module docstring)."""

    def __init__(self, out, config: dict, *, count: int, shard_size: int, overwrite: bool = False):
        self.out = Path(out)
        self.shards_dir = self.out / SHARDS
        if overwrite and self.out.exists():
            if not (self.out / "manifest.json").is_file() and any(self.out.iterdir()):
                raise ValueError(f"overwrite=True refuses to delete {str(self.out)!r}: it is not an "
                                 f"nbviz results folder (no manifest.json)")
            shutil.rmtree(self.out)
        manifest_path = self.out / "manifest.json"
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("format") != FORMAT:
                raise ValueError(f"{str(self.out)!r} holds results of format {manifest.get('format')!r}, "
                                 f"not {FORMAT!r}")
            differ = _differences(manifest["config"], config)
            if manifest["count"] != count or manifest["shard_size"] != shard_size:
                differ.append(f"images/shard size {manifest['count']}/{manifest['shard_size']} "
                              f"vs {count}/{shard_size}")
            if differ:
                raise ValueError(
                    f"{str(self.out)!r} already holds results of a different run ({'; '.join(differ)}); "
                    f"use another out folder, or overwrite=True to start again")
            self.manifest = manifest
        else:
            if self.out.exists() and any(p for p in self.out.iterdir() if not p.name.startswith(".")):
                raise ValueError(f"out folder {str(self.out)!r} exists, is not empty and is not an nbviz "
                                 f"results folder; choose a new or empty folder")
            self.out.mkdir(parents=True, exist_ok=True)
            self.manifest = {"format": FORMAT, "config": config, "count": count, "shard_size": shard_size,
                             "shards": -(-count // shard_size), "complete": False, "runs": []}
            self.save_manifest()
        self.shards_dir.mkdir(exist_ok=True)
        self.clean_stale()

    # ---------------------------------------------------------------- bookkeeping

    @property
    def shard_count(self) -> int:
        return self.manifest["shards"]

    def shard_range(self, k: int) -> range:
        size = self.manifest["shard_size"]
        return range(k * size, min((k + 1) * size, self.manifest["count"]))

    def finished(self) -> set[int]:
        return finished_shards(self.out)

    def clean_stale(self) -> None:
        """Remove temporary shard folders left by runs whose process is gone."""
        for p in self.shards_dir.glob(".*.tmp-*"):
            try:
                pid = int(p.name.split(".tmp-")[1].split("-")[0])
            except (IndexError, ValueError):
                continue
            # this process writes one shard at a time, so its own leftovers are from an interrupt
            if pid == os.getpid() or not _pid_alive(pid):
                shutil.rmtree(p, ignore_errors=True)

    def save_manifest(self) -> None:
        _atomic_write_text(self.out / "manifest.json", json.dumps(self.manifest, indent=1, default=str))

    # ---------------------------------------------------------------- writing

    def finalize(self, schema: pa.Schema) -> tuple[int, int]:
        """Write the union tables and mark the run complete; returns (rows, errors)."""
        done = self.finished()
        missing = sorted(set(range(self.shard_count)) - done)
        if missing:
            raise RuntimeError(f"cannot finalize {str(self.out)!r}: shards {missing[:5]} are missing")
        table, errors = read_union(self.out, schema)
        _atomic_write_table(table, self.out / "results.parquet")
        _atomic_write_table(errors, self.out / "errors.parquet")
        if table.num_rows + errors.num_rows != self.manifest["count"]:
            raise RuntimeError(f"{table.num_rows} rows + {errors.num_rows} errors != "
                               f"{self.manifest['count']} images")
        self.manifest["complete"] = True
        self.save_manifest()
        return table.num_rows, errors.num_rows


def _chunk_rows(per_image: int, rows: int, batch_rows: int | None, budget: int = CHUNK_BYTES) -> int:
    """Images per Zarr chunk: about ``budget`` bytes, at most ``rows``, and a divisor of the
    run's batch size when known, so each batch fills whole chunks (no chunk is written twice)."""
    limit = int(max(1, min(rows, budget // max(1, per_image))))
    if batch_rows:
        return max(d for d in range(1, min(limit, batch_rows) + 1) if batch_rows % d == 0)
    return limit


class ShardWriter:
    """Shard ``k`` written part by part, under a temporary name (see the module docstring).

    The first part creates the Zarr arrays for the whole shard; every part's maps, thumbnails
    and pixels go straight to their rows (``row = index - first index of the shard``; the rows
    of unusable items stay zero), so nothing is gathered in memory and the last batch of a shard
    is the only write left when the computing ends. :meth:`finish` writes the two tables and
    ``shard.json`` and renames the folder into place; :meth:`abort` removes it."""

    def __init__(self, store: Store, k: int, *, batch_rows: int | None = None):
        import zarr

        self.store, self.k, self.batch_rows = store, k, batch_rows
        self.range = store.shard_range(k)
        self.tmp = store.shards_dir / f".{k:05d}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self.group = zarr.open_group(_flushed_store(self.tmp / "maps.zarr"), mode="w", zarr_format=3)
        self.arrays: dict = {}
        self.parts: list = []  # the parts without their arrays: the rows of the tables
        self.seconds = 0.0

    def _array(self, name: str, data: np.ndarray):
        from zarr.codecs import BloscCodec

        hit = self.arrays.get(name)
        if hit is None:
            n = len(self.range)
            per_image = data[0].nbytes if len(data) else 1
            budget = IMAGE_CHUNK_BYTES if name == "images" else CHUNK_BYTES
            chunks = (_chunk_rows(per_image, n, self.batch_rows, budget), *data.shape[1:])
            # LZ4 with byte shuffle: about 4x faster to write than zstd with bit shuffle, and only
            # somewhat larger (measured on Grad-CAM maps: 0.51 vs 0.33 of the raw size); float
            # pixels hardly compress (0.89 of the raw size for 224 px RGB at 1.5x the writing
            # time) and are stored as they are
            codecs = None if name == "images" and data.dtype.kind == "f" else \
                BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
            # every chunk is written as it comes (Zarr's default test of each chunk for being all
            # fill value, to skip it, is one more pass over the data), as one file named
            # c.<row>.0... (no folder per chunk index: creating folders showed in the store's
            # kernel time)
            hit = self.arrays[name] = self.group.create_array(
                name, shape=(n, *data.shape[1:]), dtype=data.dtype, chunks=chunks, compressors=codecs,
                fill_value=0, config={"write_empty_chunks": True},
                chunk_key_encoding={"name": "default", "separator": "."})
        return hit

    def add(self, batch) -> None:
        """Write one part: a :class:`~nbviz.dataset.worker.Batch` of items of this shard."""
        t0 = time.perf_counter()
        rows = np.asarray(batch.index, np.int64) - self.range.start
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self.range)):
            raise RuntimeError(f"shard {self.k}: got indices {batch.index[:3]}... outside {self.range}")
        arrays = {**batch.maps, "thumbs": batch.thumbs}
        if batch.images is not None:
            arrays["images"] = batch.images
        if len(rows):
            contiguous = bool((np.diff(rows) == 1).all())
            for name, data in arrays.items():
                target = self._array(name, data)
                if contiguous:
                    target[int(rows[0]):int(rows[-1]) + 1] = data
                else:
                    target.oindex[rows] = data
        self.parts.append(batch.rows_only())
        self.seconds += time.perf_counter() - t0

    def finish(self, *, class_names=None, top_k: int = 5, metric_columns: Sequence[str] = ()) -> float:
        """Write the tables, rename the shard into place; returns the seconds spent writing the
        whole shard. A shard already there (another writer finished it) is kept and this one
        discarded."""
        t0 = time.perf_counter()
        batch = Batch.join_rows(self.parts)
        expected = list(self.range)
        if batch.index.tolist() != expected:
            raise RuntimeError(f"shard {self.k}: got indices {batch.index[:3]}..., expected {expected[:3]}...")
        good = [i for i, e in enumerate(batch.error) if not e]
        bad = [i for i, e in enumerate(batch.error) if e]
        table = _results_table(batch, good, self.k, self.range.start, class_names, top_k, metric_columns)
        pq.write_table(table, self.tmp / "results.parquet")
        errors = pa.table({"index": pa.array([int(batch.index[i]) for i in bad], pa.int64()),
                           "id": pa.array([batch.ids[i] for i in bad], pa.string()),
                           "path": pa.array([batch.paths[i] for i in bad], pa.string()),
                           "reason": pa.array([batch.error[i] for i in bad], pa.string())},
                          schema=ERROR_SCHEMA)
        pq.write_table(errors, self.tmp / "errors.parquet")
        self.seconds += time.perf_counter() - t0
        info = {"shard": self.k, "rows": len(good), "errors": len(bad), "first": expected[0],
                "last": expected[-1], "write_s": self.seconds, "written_at": time.time()}
        (self.tmp / "shard.json").write_text(json.dumps(info))
        _sync_tree(self.tmp)
        final = self.store.shards_dir / f"{self.k:05d}"
        try:
            os.replace(self.tmp, final)
        except OSError:
            if (final / "shard.json").is_file():  # finished meanwhile by another writer
                shutil.rmtree(self.tmp, ignore_errors=True)
            else:
                raise
        _sync_dir(self.store.shards_dir)
        return self.seconds

    def abort(self) -> None:
        """Remove the unfinished shard (a run that stops keeps only whole shards)."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), json.loads(json.dumps(new.get(key), default=str))
        if a != b:
            out.append(f"{key}: {a!r} then, {b!r} now")
    return out


def _results_table(batch, good, shard, first, class_names, top_k, metric_columns) -> pa.Table:
    outputs = batch.outputs[good] if good else batch.outputs[:0]
    width = outputs.shape[1] if outputs.ndim == 2 else 0
    k = min(top_k, width)
    if width:
        order = np.argsort(-outputs, axis=1, kind="stable")[:, :k]
        top_scores = np.take_along_axis(outputs, order, axis=1)
        prediction = order[:, 0].astype(np.int64) if k else None
    labels = [batch.labels[i] for i in good]
    columns: dict[str, Any] = {
        "index": pa.array(batch.index[good] if good else [], pa.int64()),
        "id": pa.array([batch.ids[i] for i in good], pa.string()),
        "path": pa.array([batch.paths[i] for i in good], pa.string()),
        "label": pa.array(labels, pa.int64()),
    }
    if width:
        columns["prediction"] = pa.array(prediction, pa.int64())
        columns["score"] = pa.array(top_scores[:, 0], pa.float32())
        columns["top_classes"] = pa.array([r.tolist() for r in order.astype(np.int32)], pa.list_(pa.int32()))
        columns["top_scores"] = pa.array([r.tolist() for r in top_scores], pa.list_(pa.float32()))
        columns["correct"] = pa.array([None if l is None else bool(l == p) for l, p in zip(labels, prediction)],
                                      pa.bool_())
    else:
        n = len(good)
        for name, typ in (("prediction", pa.int64()), ("score", pa.float32()), ("top_classes", pa.list_(pa.int32())),
                          ("top_scores", pa.list_(pa.float32())), ("correct", pa.bool_())):
            columns[name] = pa.nulls(n, typ)
    columns["target"] = pa.array([batch.targets[i] for i in good], pa.int64())
    if class_names is not None:
        names = list(class_names)
        name = lambda c: None if c is None or not 0 <= c < len(names) else names[c]  # noqa: E731
        columns["label_name"] = pa.array([name(l) for l in labels], pa.string())
        columns["prediction_name"] = pa.array([name(int(p)) for p in prediction] if width else [None] * len(good),
                                              pa.string())
    for c in metric_columns:
        columns[c] = pa.array(batch.metrics[c][good] if good else [], pa.float64())
    columns["shard"] = pa.array([shard] * len(good), pa.int32())
    columns["row"] = pa.array(batch.index[good] - first if good else [], pa.int32())
    return pa.table(columns, schema=results_schema(metric_columns, class_names is not None))


def finished_shards(out) -> set[int]:
    shards = Path(out) / SHARDS
    if not shards.is_dir():
        return set()
    return {int(p.name) for p in shards.iterdir()
            if p.name.isdigit() and (p / "shard.json").is_file()}


def read_union(out, schema: pa.Schema | None = None) -> tuple[pa.Table, pa.Table]:
    """(results, errors) of every finished shard, sorted by index."""
    shards = Path(out) / SHARDS
    tables, errors = [], []
    for k in sorted(finished_shards(out)):
        tables.append(pq.read_table(shards / f"{k:05d}" / "results.parquet", schema=schema))
        errors.append(pq.read_table(shards / f"{k:05d}" / "errors.parquet", schema=ERROR_SCHEMA))
    table = pa.concat_tables(tables) if tables else (schema.empty_table() if schema else pa.table({}))
    error = pa.concat_tables(errors) if errors else ERROR_SCHEMA.empty_table()
    if table.num_rows:
        table = table.sort_by("index")
    if error.num_rows:
        error = error.sort_by("index")
    return table, error


# --------------------------------------------------------------------------- reading


class Results:
    """A results folder opened for reading: the table, the errors, maps, images, thumbnails.

    ``table`` / ``errors`` are ``pyarrow.Table``\\s (``.to_pandas()`` for pandas); maps and
    images are read lazily from Zarr, one image's chunk at a time. An image is named by its
    source ``index`` (int) or its ``id`` (str).
    """

    def __init__(self, out):
        self.out = Path(out)
        path = self.out / "manifest.json"
        if not path.is_file():
            raise ValueError(f"{str(self.out)!r} is not an nbviz results folder (no manifest.json)")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{str(self.out)!r}: unknown results format {self.manifest.get('format')!r}")
        final = self.out / "results.parquet"
        if self.manifest.get("complete") and final.is_file():
            self.table = pq.read_table(final)
            self.errors = pq.read_table(self.out / "errors.parquet")
        else:  # a run in progress or one that died: the finished shards
            self.table, self.errors = read_union(self.out)
        self._positions: dict | None = None
        self._arrays: dict = {}

    # ---------------------------------------------------------------- description

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def methods(self) -> list[str]:
        return list(self.manifest["config"]["methods"])

    @property
    def metric_columns(self) -> list[str]:
        return list(self.manifest.get("metric_columns", []))

    @property
    def class_names(self) -> list[str] | None:
        return self.manifest["config"].get("class_names")

    def __len__(self) -> int:
        return self.table.num_rows

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"{len(finished_shards(self.out))}/{self.manifest['shards']} shards"
        return (f"<nbviz Results {str(self.out)!r}: {len(self)} images, {self.errors.num_rows} errors, "
                f"methods {self.methods}, {state}>")

    # ---------------------------------------------------------------- rows

    def _position(self, key) -> int:
        if self._positions is None:
            ids = self.table.column("id").to_pylist()
            idx = self.table.column("index").to_pylist()
            self._positions = {**{v: i for i, v in enumerate(ids)}, **{v: i for i, v in enumerate(idx)}}
        if isinstance(key, (np.integer,)):
            key = int(key)
        try:
            return self._positions[key]
        except KeyError:
            if (self.errors.num_rows and (key in self.errors.column("id").to_pylist()
                                          or key in self.errors.column("index").to_pylist())):
                raise KeyError(f"image {key!r} was not processed: it is in the errors table") from None
            raise KeyError(f"no image {key!r} in these results (give a source index or an id)") from None

    def row(self, key) -> dict:
        """The table row of an image as a dict."""
        return self.table.slice(self._position(key), 1).to_pylist()[0]

    def _array(self, shard: int, name: str):
        hit = self._arrays.get((shard, name))
        if hit is None:
            import zarr

            group = zarr.open_group(self.out / SHARDS / f"{shard:05d}" / "maps.zarr", mode="r")
            if name not in group:
                known = [n for n in group.array_keys() if n not in ("images", "thumbs")]
                raise KeyError(f"no stored {name!r} here; stored methods: {known}")
            hit = self._arrays[(shard, name)] = group[name]
        return hit

    def maps(self, key, method: str) -> np.ndarray:
        """The stored map of ``method`` for image ``key`` (as the method returned it)."""
        if method not in self.methods:
            raise KeyError(f"method {method!r} was not run; stored methods: {self.methods}")
        r = self.row(key)
        return np.asarray(self._array(r["shard"], method)[r["row"]])

    def image(self, key) -> np.ndarray:
        """The image's pixels: from the store (array sources) or read from its file."""
        r = self.row(key)
        if r["path"] is not None:
            from nbviz.dataset.source import read_file

            return read_file(r["path"], channels=self.manifest["config"]["channels"])
        if not self.manifest["config"].get("store_images", True):
            raise KeyError(f"image {r['id']!r} has no file and its pixels are not in this store (the "
                           f"run had store_images=False); run again with store_images=True to open it")
        return np.asarray(self._array(r["shard"], "images")[r["row"]])

    def thumbnail(self, key) -> bytes:
        """PNG bytes of the image's thumbnail (ready for ``ipywidgets.Image(value=...)``)."""
        import io

        from PIL import Image

        r = self.row(key)
        pixels = np.asarray(self._array(r["shard"], "thumbs")[r["row"]])
        buf = io.BytesIO()
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buf, format="PNG")
        return buf.getvalue()

    # ---------------------------------------------------------------- sort and filter

    def sort(self, by, descending: bool = False, table: pa.Table | None = None) -> pa.Table:
        """The table sorted by a column (or ``[(column, "ascending"|"descending"), ...]``); nulls last."""
        table = self.table if table is None else table
        keys = [(by, "descending" if descending else "ascending")] if isinstance(by, str) else list(by)
        for column, _ in keys:
            if column not in table.column_names:
                raise KeyError(f"no column {column!r}; columns: {table.column_names}")
        return table.sort_by(keys)

    def filter(self, expression=None, table: pa.Table | None = None, **equal) -> pa.Table:
        """Rows where every ``column=value`` holds (a list value means "one of") and where the
        optional ``pyarrow.compute`` expression is true, e.g.
        ``filter(pc.field("score") < 0.5, correct=False)``."""
        table = self.table if table is None else table
        mask = None
        for column, value in equal.items():
            if column not in table.column_names:
                raise KeyError(f"no column {column!r}; columns: {table.column_names}")
            if isinstance(value, (list, tuple, set)):
                m = pc.is_in(table[column], value_set=pa.array(list(value)))
            elif value is None:
                m = pc.is_null(table[column])
            else:
                m = pc.equal(table[column], value)
            mask = m if mask is None else pc.and_(mask, m)
        if mask is not None:
            table = table.filter(pc.fill_null(mask, False))
        if expression is not None:
            table = table.filter(expression)
        return table

    def failures(self) -> pa.Table:
        """Wrong predictions, most confident first (then by index)."""
        wrong = self.filter(correct=False)
        return wrong.sort_by([("score", "descending"), ("index", "ascending")])

    def lowest(self, column: str, n: int = 10) -> pa.Table:
        """The ``n`` rows with the smallest ``column`` (e.g. a metric, or ``"score"``)."""
        return self.sort(column).slice(0, n)


def open_results(out) -> Results:
    """Open a results folder written by :func:`nbviz.explain_dataset` (finished or not)."""
    return Results(out)
