"""A session that also serves maps read from a results store (:func:`nbviz.explain_dataset`).

:class:`StoredSession` is a :class:`~nbviz.session.Session` whose cache is seeded with stored
maps: :meth:`StoredSession.add_stored` turns each stored array into the :class:`Result` the method
would give (through the same ``from_array`` conversion a computed result takes) and caches it
under the request key a view makes for that image, layer, target and options. A view asking for
that method then gets the stored map at once (a cache hit: ``counts["computed"]`` does not move
and the method function is not called); any other method or setting is computed live as usual.

Images are recognised by content: :meth:`image_id` returns the stored image's id for an array
with the same shape, dtype and bytes, so a view that re-reads the image keeps its stored maps.
While :attr:`quiet` is True, :meth:`submit` starts nothing (a view being built asks for its
default method before it is told which stored method to show).
"""

from __future__ import annotations

import hashlib

import numpy as np

from nbviz.methods import table
from nbviz.session.session import Session

__all__ = ["StoredSession", "image_digest"]


def image_digest(image) -> str:
    """Content key of an image array: shape, dtype and bytes."""
    a = np.ascontiguousarray(np.asarray(image))
    h = hashlib.sha1(f"{a.shape}{a.dtype.str}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


class StoredSession(Session):
    """See the module docstring. ``cache_size`` as for :class:`Session`."""

    def __init__(self, model, *, preprocess=None, cache_size: int = 64):
        super().__init__(model, preprocess=preprocess, cache_size=cache_size)
        self._stored_ids: dict[str, int] = {}
        #: while True, :meth:`submit` starts nothing and calls nothing back
        self.quiet = False

    def image_id(self, image=None) -> int:
        """The stored image's id when ``image`` has a stored image's content, else a new id."""
        if image is not None:
            hit = self._stored_ids.get(image_digest(image))
            if hit is not None:
                return hit
        return super().image_id(image)

    def add_stored(self, image, maps: dict, *, image_id: int | None = None, layer=None, target=None,
                   options: dict | None = None) -> int:
        """Cache the stored ``maps`` (``{table key: array as the method returned it}``) of
        ``image`` for requests at ``layer`` / ``target`` with the methods' ``options``
        (``{table key: {keyword: value}}``, the store's ``method_options``); returns the image id
        (``image_id`` when given, e.g. the id a view already uses). Keys that are not table rows,
        or rows that run through a runner, are ignored (the view cannot ask for them)."""
        image = np.asarray(image)
        if image_id is None:
            image_id = self.image_id(image)
        self._stored_ids[image_digest(image)] = int(image_id)
        options = options or {}
        for key, array in maps.items():
            try:
                row = table.method(key)
            except ValueError:
                continue
            if row.runner is not None:
                continue
            by_keyword = {c.keyword: c.name for c in row.controls}
            names = {by_keyword.get(k, k): v for k, v in (options.get(key) or {}).items()}
            req = self.request(key, image, image_id=image_id, layer=layer, target=target, options=names)
            result = self.from_array(row, np.asarray(array), req)
            result = result.replace(note=f"{result.note} (stored)", elapsed_ms=0.0)
            self._store(self.key(req), result)
        self.cache_size = max(self.cache_size, len(maps) * 4)
        return int(image_id)

    def submit(self, req, on_result, *, on_error=None, channel: str = "main"):
        if self.quiet:
            return None
        return super().submit(req, on_result, on_error=on_error, channel=channel)
