"""A bounded on-disk cache of feature-visualisation icons, safe to share between processes.

Where: ``$NBVIZ_CACHE/icons`` when the ``NBVIZ_CACHE`` environment variable is set, else the
platform's user cache directory (platformdirs: ``~/.cache/nbviz/icons`` on Linux,
``~/Library/Caches/nbviz/icons`` on macOS, ``%LOCALAPPDATA%\\nbviz\\Cache\\icons`` on Windows).

Each icon is one PNG file named by the SHA-256 of its key (model weights digest, layer, channel or
direction, render settings; see :func:`nbviz.featvis.icons`), with the key as a PNG text chunk.

Bound: at most ``max_bytes`` (default 256 MiB, or ``NBVIZ_ICON_CACHE_MB`` mebibytes) of icons.
After writing, :meth:`IconCache.prune` deletes the least recently used files (oldest
modification time first; a read sets a file's time to now) until the total fits.

Concurrency: a writer writes a temporary file in the same directory and renames it into place
with ``os.replace``, which is atomic on POSIX and Windows, so a reader sees either no file or a
whole one; two writers of the same icon both succeed and the last rename wins. A reader treats a
missing, unreadable or wrongly sized file as a miss, and pruning ignores files that another process
deleted first. Temporary files left by a crashed writer are removed by pruning after an hour.

This module needs only numpy, Pillow and platformdirs (no TensorFlow).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["IconCache", "default_root", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 256 * 2 ** 20
_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 3600.0


def default_root() -> Path:
    """``$NBVIZ_CACHE/icons``, else the platform's user cache directory for nbviz + ``icons``."""
    base = os.environ.get("NBVIZ_CACHE")
    if not base:
        import platformdirs

        base = platformdirs.user_cache_dir("nbviz", appauthor=False)
    return Path(base).expanduser() / "icons"


def _default_max_bytes() -> int:
    text = os.environ.get("NBVIZ_ICON_CACHE_MB")
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"NBVIZ_ICON_CACHE_MB must be a number of mebibytes, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"NBVIZ_ICON_CACHE_MB must be > 0, got {text!r}")
    return int(value * 2 ** 20)


class IconCache:
    """Icons on disk under ``root`` (default :func:`default_root`), at most ``max_bytes`` in all
    (default ``NBVIZ_ICON_CACHE_MB`` or 256 MiB); see the module docstring."""

    def __init__(self, root=None, max_bytes: int | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        if max_bytes is None:
            max_bytes = _default_max_bytes()
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes

    def __repr__(self):
        return f"IconCache(root={str(self.root)!r}, max_bytes={self.max_bytes})"

    @staticmethod
    def name(key) -> str:
        """The file name of a key (any JSON-serialisable value): its SHA-256, hex, + ``.png``."""
        text = json.dumps(key, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest() + ".png"

    def path(self, key) -> Path:
        return self.root / self.name(key)

    def get(self, key, shape=None) -> np.ndarray | None:
        """The icon (H×W×3 uint8) stored under ``key``, or None when missing or unreadable (or
        not of ``shape``). A hit marks the file as recently used."""
        from PIL import Image

        path = self.path(key)
        try:
            with Image.open(path) as image:
                image.load()
                array = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError):  # missing, partial, not a PNG
            return None
        if shape is not None and array.shape != tuple(shape):
            return None
        try:
            os.utime(path)
        except OSError:  # deleted meanwhile by another process's pruning: still a hit
            pass
        return array

    def put(self, key, image: np.ndarray) -> Path:
        """Store an H×W×3 uint8 icon atomically (temporary file, then ``os.replace``)."""
        from PIL import Image, PngImagePlugin

        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"icon must be an H×W×3 uint8 array, got {array.dtype} {array.shape}")
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(key)
        info = PngImagePlugin.PngInfo()
        info.add_text("nbviz-key", json.dumps(key, sort_keys=True))
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=_TMP_PREFIX, suffix=".png")
        try:
            with os.fdopen(fd, "wb") as f:
                Image.fromarray(array, "RGB").save(f, format="PNG", pnginfo=info, compress_level=1)
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return final

    def entries(self) -> list[tuple[float, int, Path]]:
        """``(mtime, bytes, path)`` of every stored icon, oldest first."""
        found = []
        try:
            scan = os.scandir(self.root)
        except FileNotFoundError:
            return []
        with scan:
            for entry in scan:
                if entry.name.startswith(_TMP_PREFIX) or not entry.name.endswith(".png"):
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                found.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        found.sort(key=lambda e: (e[0], e[2].name))
        return found

    def size(self) -> int:
        """Total bytes of the stored icons."""
        return sum(size for _, size, _ in self.entries())

    def prune(self) -> int:
        """Delete least recently used icons until at most ``max_bytes`` remain, and temporary files
        older than an hour; returns how many icons were deleted."""
        self._remove_stale_tmp()
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:  # another process pruned it first
                pass
            total -= size
        return removed

    def clear(self) -> None:
        """Delete every stored icon."""
        for _, _, path in self.entries():
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def _remove_stale_tmp(self) -> None:
        now = time.time()
        try:
            scan = os.scandir(self.root)
        except FileNotFoundError:
            return
        with scan:
            for entry in scan:
                if not entry.name.startswith(_TMP_PREFIX):
                    continue
                try:
                    if now - entry.stat().st_mtime > _STALE_TMP_S:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    pass
