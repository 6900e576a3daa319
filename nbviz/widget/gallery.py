"""The Gallery: browse a results store of :func:`nbviz.explain_dataset`, open an image in the Explorer.

``Gallery(out, model=None)`` shows the stored thumbnails in a grid, one page at a time, sorted by
any column of the results table (ascending or descending, ties by source index, nulls last) and
filtered by a preset ("wrong predictions", "right predictions", one label) and/or a typed
condition ``column op value`` (``op`` one of ``== != < <= > >=``; e.g. ``insertion_auc_gradcam <
0.2``, ``label_name == circle``). Each tile shows the image's id, label, prediction and the value
it is sorted by. ``open`` on a tile (or :meth:`Gallery.open_image`) shows an :class:`~nbviz.widget.Explorer`
on that image below the grid with its stored map shown at once: the store's maps are put into the
Explorer's session cache (:class:`nbviz.session.stored.StoredSession`), so nothing is recomputed
for the stored method, layer and target, while every other method runs live on the model.

The model is the one passed, else the model file the run recorded (its path, or the copy a Ray
run saved in the store), loaded with Keras' ``safe_mode``; a model whose weights differ from the
run's is refused (its live maps would not match the stored ones). The table is re-read from the
store on :meth:`refresh` and on every page while the run is not complete, so a run still going
shows its new shards.

The page logic is plain functions over ``pyarrow`` tables (:func:`select`, :func:`page_of`,
:func:`parse_filter`, :func:`caption`), testable without a browser.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import traitlets as T

import ipywidgets as W

__all__ = ["Gallery", "select", "page_of", "page_count", "parse_filter", "caption", "SHOW_PRESETS"]

#: the preset filters; "label: <name>" entries are added per label present
SHOW_PRESETS = ("all", "wrong predictions", "right predictions")
_OPS = {"==": pc.equal, "!=": pc.not_equal, "<=": pc.less_equal, ">=": pc.greater_equal,
        "<": pc.less, ">": pc.greater}
_FILTER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|<=|>=|<|>|=)\s*(.+?)\s*$")


# --------------------------------------------------------------------------- pure page logic


def sortable_columns(table: pa.Table) -> list[str]:
    """Columns a table can be sorted by (every column but list-valued ones)."""
    return [f.name for f in table.schema if not pa.types.is_list(f.type) and not pa.types.is_large_list(f.type)]


def parse_filter(text: str, schema: pa.Schema):
    """``"column op value"`` as a ``pyarrow.compute`` expression, or None for an empty text.

    ``op``: ``== (or =) != < <= > >=``; ``value`` is cast to the column's type (numbers, ``true``
    / ``false``, ``null`` with ``==`` / ``!=``, text with or without quotes). A ValueError names
    what is wrong: the syntax, an unknown column (with the known ones) or a value of the wrong
    type."""
    if text is None or not str(text).strip():
        return None
    m = _FILTER_RE.match(str(text))
    if not m:
        raise ValueError(f"filter {text!r}: write 'column op value' with op one of == != < <= > >= "
                         f"(e.g. 'correct == false' or 'score < 0.5')")
    column, op, raw = m.groups()
    op = "==" if op == "=" else op
    if column not in schema.names:
        raise ValueError(f"filter {text!r}: no column {column!r}; columns: {schema.names}")
    typ = schema.field(column).type
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        raise ValueError(f"filter {text!r}: column {column!r} holds lists; filter on a plain column")
    field = pc.field(column)
    if raw.lower() in ("null", "none"):
        if op not in ("==", "!="):
            raise ValueError(f"filter {text!r}: null compares only with == or !=")
        return field.is_null() if op == "==" else ~field.is_null()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        raw = raw[1:-1]
    try:
        if pa.types.is_boolean(typ):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            value = pa.scalar(raw.lower() in ("true", "1"))
        elif pa.types.is_integer(typ) or pa.types.is_floating(typ):
            number = float(raw)
            value = pa.scalar(int(number) if pa.types.is_integer(typ) and number.is_integer() else number)
        else:
            value = pa.scalar(raw).cast(typ)
    except (ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise ValueError(f"filter {text!r}: {raw!r} is not a value of column {column!r} ({typ})") from None
    return _OPS[op](field, value)


def select(table: pa.Table, *, sort_by: str | None = None, descending: bool = False, show: str = "all",
           where: str | None = None, class_names=None) -> pa.Table:
    """The rows the gallery shows, in order: ``show`` (a :data:`SHOW_PRESETS` entry or
    ``"label: <name or number>"``), then the ``where`` condition (:func:`parse_filter`), sorted by
    ``sort_by`` (None: source index) ascending or ``descending``; ties by source index, nulls
    last."""
    if show not in SHOW_PRESETS and not str(show).startswith("label: "):
        raise ValueError(f"show must be one of {list(SHOW_PRESETS)} or 'label: <name>', got {show!r}")
    if show in ("wrong predictions", "right predictions"):
        if "correct" not in table.column_names:
            raise ValueError("these results have no 'correct' column")
        keep = pc.equal(table["correct"], show == "right predictions")
        table = table.filter(pc.fill_null(keep, False))
    elif str(show).startswith("label: "):
        name = str(show)[len("label: "):]
        names = list(class_names or [])
        label = names.index(name) if name in names else None
        if label is None:
            try:
                label = int(name)
            except ValueError:
                raise ValueError(f"show={show!r}: no label {name!r}; labels: {names or 'class numbers'}") from None
        table = table.filter(pc.fill_null(pc.equal(table["label"], label), False))
    expression = parse_filter(where, table.schema)
    if expression is not None:
        table = table.filter(expression)
    column = sort_by or "index"
    if column not in sortable_columns(table):
        raise ValueError(f"sort_by must be one of {sortable_columns(table)}, got {sort_by!r}")
    keys = [(column, "descending" if descending else "ascending")]
    if column != "index":
        keys.append(("index", "ascending"))
    return table.sort_by(keys)


def page_count(rows: int, page_size: int) -> int:
    """Pages needed for ``rows`` rows (at least one, possibly empty)."""
    return max(1, -(-int(rows) // int(page_size)))


def page_of(table: pa.Table, page: int, page_size: int) -> pa.Table:
    """Rows of page ``page`` (0-based); a ValueError for a page that does not exist."""
    pages = page_count(table.num_rows, page_size)
    if isinstance(page, bool) or not isinstance(page, (int, np.integer)) or not 0 <= page < pages:
        raise ValueError(f"page must be an int in [0, {pages - 1}], got {page!r}")
    return table.slice(int(page) * page_size, page_size)


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def caption(row: dict, sort_by: str | None = None, class_names=None) -> str:
    """One tile's text: id, label, prediction (✗ when wrong) and the sort value."""
    def name(k):
        if k is None:
            return "–"
        return str(class_names[k]) if class_names is not None and 0 <= k < len(class_names) else str(k)

    parts = [str(row["id"]), f"label {name(row.get('label'))}"]
    mark = " ✗" if row.get("correct") is False else ""
    parts.append(f"pred {name(row.get('prediction'))}{mark}")
    if sort_by and sort_by not in ("id", "index", "label", "prediction", "label_name", "prediction_name"):
        parts.append(f"{sort_by} {_fmt(row.get(sort_by))}")
    return " · ".join(parts)


# --------------------------------------------------------------------------- the widget


class GalleryState(T.HasTraits):
    """What the gallery shows; changing a trait re-renders the page."""

    sort_by = T.Unicode("index", help="column the tiles are sorted by")
    descending = T.Bool(False, help="sort from the largest value")
    show = T.Unicode("all", help="preset filter: " + ", ".join(SHOW_PRESETS) + ", or 'label: <name>'")
    where = T.Unicode("", help="condition 'column op value' (see parse_filter)")
    page = T.Int(0, help="page shown (0-based)")


class Gallery(W.VBox):
    """Thumbnails of a results store, paged, sorted and filtered; open one in the Explorer.

    ``Gallery(out, model=None, *, preprocess=None, labels=None, sort_by=None, descending=False,
    show="all", where=None, page_size=12, columns=6)``: ``out`` a folder written by
    :func:`nbviz.explain_dataset`; ``model`` the model the run used (default: the model file the
    run recorded, loaded with ``safe_mode``; browsing works without one, opening needs it);
    ``preprocess``: the run's preprocess function (it is recorded by name only); ``labels``:
    class names (default: the run's). See the module docstring.

    From code: :meth:`set` (sort_by, descending, show, where, page), :meth:`open_image`,
    :meth:`refresh`; read :attr:`rows` (the selected table), :attr:`page_rows`, :attr:`explorer`.
    """

    def __init__(self, out, model=None, *, preprocess=None, labels=None, sort_by=None, descending=False,
                 show="all", where=None, page_size: int = 12, columns: int = 6):
        from nbviz.dataset.store import open_results

        if isinstance(out, (str, Path)) is False and not hasattr(out, "__fspath__"):
            raise TypeError(f"out must be the path of a results folder written by nbviz.explain_dataset, "
                            f"got {type(out).__name__}")
        try:
            self.results = open_results(out)
        except ValueError as exc:
            raise ValueError(f"Gallery out={str(out)!r}: {exc}") from None
        for name, value in (("page_size", page_size), ("columns", columns)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be a function image -> model input, got {type(preprocess).__name__}")
        self.out = Path(out)
        self.page_size, self.columns = int(page_size), int(columns)
        self.preprocess = preprocess
        self.class_names = list(labels) if labels is not None else self.results.class_names
        self._model = model
        self._session = None
        self.explorer = None
        self.state = GalleryState()
        self._selected: pa.Table | None = None
        self._batch = self._syncing = False
        c = self._controls()
        self.grid = W.GridBox(layout=W.Layout(grid_template_columns=f"repeat({self.columns}, 150px)", grid_gap="6px"))
        self.viewer = W.VBox()
        super().__init__(children=[c, self.message, self.grid, self.viewer])
        self.add_class("nbviz-gallery")
        self.set(sort_by=sort_by or "index", descending=descending, show=show, where=where or "")
        self._render()
        self.state.observe(self._on_state)

    # ---------------------------------------------------------------- controls

    def _controls(self):
        lay = W.Layout(width="auto")
        self.sort_w = W.Dropdown(description="sort by", options=sortable_columns(self.results.table), value="index",
                                 layout=W.Layout(width="260px"))
        self.desc_w = W.Checkbox(description="descending", value=False, indent=False, layout=lay)
        self.show_w = W.Dropdown(description="show", options=self._show_options(), value="all",
                                 layout=W.Layout(width="240px"))
        self.where_w = W.Text(description="where", placeholder="e.g. score < 0.5", continuous_update=False,
                              layout=W.Layout(width="300px"))
        self.prev_w = W.Button(description="◀", layout=W.Layout(width="40px"), tooltip="previous page")
        self.next_w = W.Button(description="▶", layout=W.Layout(width="40px"), tooltip="next page")
        self.page_w = W.HTML()
        self.refresh_w = W.Button(description="reload", tooltip="re-read the store (a run still going)",
                                  layout=W.Layout(width="80px"))
        self.message = W.HTML()
        for w, name in ((self.sort_w, "sort_by"), (self.desc_w, "descending"), (self.show_w, "show"),
                        (self.where_w, "where")):
            w.observe(lambda ch, name=name: self._from_control(name, ch["new"]), names="value")
        self.prev_w.on_click(lambda _: self._step(-1))
        self.next_w.on_click(lambda _: self._step(+1))
        self.refresh_w.on_click(lambda _: self.refresh())
        return W.VBox([W.HBox([self.sort_w, self.desc_w, self.show_w, self.where_w]),
                       W.HBox([self.prev_w, self.next_w, self.page_w, self.refresh_w])])

    def _show_options(self) -> list[str]:
        labels = self.results.table["label"].drop_null().unique().to_pylist() if self.results.table.num_rows else []
        names = self.class_names
        return list(SHOW_PRESETS) + [f"label: {names[k] if names is not None and 0 <= k < len(names) else k}"
                                     for k in sorted(labels)]

    def _from_control(self, name, value):
        if self._syncing:  # the widget follows the state: nothing to do
            return
        try:
            self.set(**{name: value, **({"page": 0} if name != "page" else {})})
        except ValueError as exc:
            self.message.value = f"<span style='color:#b00020'>{html.escape(str(exc))}</span>"

    def _step(self, step):
        pages = page_count(self.rows.num_rows, self.page_size)
        self.state.page = int(np.clip(self.state.page + step, 0, pages - 1))

    # ---------------------------------------------------------------- public API

    def set(self, **values) -> "Gallery":
        """Set sort_by, descending, show, where and/or page, all or nothing: the selection is
        computed first (a ValueError names what is wrong and nothing changes)."""
        known = set(self.state.trait_names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown Gallery setting(s) {unknown}; known: {sorted(known)}")
        new = {k: getattr(self.state, k) for k in known}
        new.update(values)
        new["where"] = new["where"] or ""
        new["sort_by"] = new["sort_by"] or "index"
        rows = select(self.results.table, sort_by=new["sort_by"], descending=bool(new["descending"]),
                      show=new["show"], where=new["where"], class_names=self.class_names)
        if "page" in values:
            page_of(rows, values["page"], self.page_size)  # checks the page
        elif any(k in values for k in ("sort_by", "descending", "show", "where")):
            new["page"] = 0
        self._selected = rows
        before = {k: getattr(self.state, k) for k in known}
        self._batch = True
        try:
            with self.state.hold_trait_notifications():
                for k, v in new.items():
                    setattr(self.state, k, v)
        finally:
            self._batch = False
        self._sync_controls()
        if before != {k: getattr(self.state, k) for k in known}:
            self._changed()  # one redraw for all the settings
        return self

    @property
    def rows(self) -> pa.Table:
        """The selected rows in the order shown (every page)."""
        if self._selected is None:
            s = self.state
            self._selected = select(self.results.table, sort_by=s.sort_by, descending=s.descending, show=s.show,
                                    where=s.where, class_names=self.class_names)
        return self._selected

    @property
    def page_rows(self) -> pa.Table:
        """The rows of the page shown."""
        rows = self.rows
        page = min(self.state.page, page_count(rows.num_rows, self.page_size) - 1)
        return page_of(rows, page, self.page_size)

    @property
    def captions(self) -> list[str]:
        """The text of each tile on the page shown."""
        return [caption(r, self.state.sort_by, self.class_names) for r in self.page_rows.to_pylist()]

    def refresh(self) -> "Gallery":
        """Re-read the store (new shards of a run still going) and redraw the page."""
        from nbviz.dataset.store import open_results

        self.results = open_results(self.out)
        self._selected = None
        options = sortable_columns(self.results.table)
        if list(self.sort_w.options) != options:
            self.sort_w.options = options
        shows = self._show_options()
        if list(self.show_w.options) != shows:
            self.show_w.options = shows
        self._sync_controls()
        self._render()
        return self

    def open_image(self, key):
        """Show the Explorer on image ``key`` (source index or id) below the grid, its stored
        map at once; returns the Explorer."""
        from nbviz.widget.images import for_model, load_image
        from nbviz.widget.view import Explorer

        results = self.results
        row = results.row(key)  # KeyError names the image
        session = self.session
        cfg = results.manifest["config"]
        target = None if cfg.get("target") in (None, "top") else row["target"]
        maps = {m: results.maps(key, m) for m in results.methods if (results.manifest.get("displays") or {}).get(m)}
        image = for_model(load_image(results.image(key)), session.probe)
        layer = cfg.get("layer") or session.probe.spatial_layer().path
        options = cfg.get("method_options") or {}
        iid = session.add_stored(image, maps, layer=layer, target=target, options=options)
        old = self.explorer
        session.quiet = True
        try:
            ex = Explorer(session=session, image=image, labels=self.class_names)
        finally:
            session.quiet = False
        if ex.image_id != iid:  # the Explorer re-read the image differently: its own id gets the maps
            session.add_stored(ex.image, maps, image_id=ex.image_id, layer=layer, target=target, options=options)
        shown = next(iter(maps), None)
        settings = {"layer": layer, "target": target}
        if shown is not None:
            from nbviz.methods import table

            row_m = table.method(shown)
            by_keyword = {c.keyword: c.name for c in row_m.controls}
            settings["method"] = shown
            settings.update({by_keyword.get(k, k): v for k, v in (options.get(shown) or {}).items()})
        ex.set(**settings)
        if ex.result is None:  # nothing changed from the defaults: ask again (the cache answers)
            ex.set_image(ex.image)
        if old is not None:
            old.close()
        self.explorer = ex
        close = W.Button(description="close", layout=W.Layout(width="80px"))
        close.on_click(lambda _: self._close_explorer())
        title = W.HTML(f"<b>{html.escape(caption(row, None, self.class_names))}</b>")
        self.viewer.children = [W.HBox([title, close]), ex]
        return ex

    @property
    def session(self):
        """The :class:`~nbviz.session.stored.StoredSession` the opened Explorers share (its model is
        loaded on first use)."""
        if self._session is None:
            from nbviz.session.stored import StoredSession

            self._session = StoredSession(self._load_model(), preprocess=self.preprocess)
        return self._session

    def close(self):
        if getattr(self, "explorer", None) is not None:
            self.explorer.close()
        if getattr(self, "_session", None) is not None:
            self._session.close()
        super().close()

    # ---------------------------------------------------------------- internals

    def _load_model(self):
        from nbviz.dataset.run import _weights_digest

        cfg = self.results.manifest["config"]
        model = self._model
        if model is None:
            from nbviz.dataset.modelfile import load_model_file

            recorded = (cfg.get("model") or {}).get("name")
            candidates = [Path(recorded)] if recorded else []
            candidates.append(self.out / ".model.keras")  # the copy a Ray run keeps
            path = next((p for p in candidates if str(p).endswith(".keras") and p.is_file()), None)
            if path is None:
                raise ValueError(f"Gallery: the run at out={str(self.out)!r} recorded no model file "
                                 f"(model {recorded!r}); pass model= to open images in the Explorer")
            model = self._model = load_model_file(path, safe_mode=True)
        want = (cfg.get("model") or {}).get("weights_sha1")
        if want and _weights_digest(model) != want:
            raise ValueError(f"Gallery model: its weights differ from those of the run stored at "
                             f"out={str(self.out)!r} (digest {_weights_digest(model)} != {want}); "
                             f"pass the model the run used")
        return model

    def _close_explorer(self):
        if self.explorer is not None:
            self.explorer.close()
        self.explorer = None
        self.viewer.children = []

    def _sync_controls(self):
        s = self.state
        self._syncing = True
        try:
            for w, v in ((self.sort_w, s.sort_by), (self.desc_w, s.descending), (self.show_w, s.show),
                         (self.where_w, s.where)):
                if w.value != v:
                    try:
                        w.value = v
                    except T.TraitError:
                        pass
        finally:
            self._syncing = False

    def _on_state(self, change):
        if not self._batch:  # a trait set directly (g.state.page = 2, the page buttons)
            self._selected = None
            self._changed()

    def _changed(self):
        if not self.results.complete:  # a run still going: pick up its new shards
            self.refresh()
            return
        self._render()

    def _render(self):
        rows = self.rows
        pages = page_count(rows.num_rows, self.page_size)
        page = min(self.state.page, pages - 1)
        shown = page_of(rows, page, self.page_size)
        tiles = [self._tile(r) for r in shown.to_pylist()]
        self.grid.children = tiles
        first = page * self.page_size + 1 if rows.num_rows else 0
        state = "" if self.results.complete else " (run in progress: reload for new shards)"
        self.page_w.value = (f"{first}–{page * self.page_size + shown.num_rows} of {rows.num_rows} "
                             f"(page {page + 1} of {pages}){state}")
        self.message.value = ""

    def _tile(self, row: dict):
        image = W.Image(value=self.results.thumbnail(row["index"]), format="png",
                        layout=W.Layout(width="96px", height="96px", object_fit="contain"))
        text = W.HTML(f"<div style='font-size:11px;line-height:1.2'>"
                      f"{html.escape(caption(row, self.state.sort_by, self.class_names))}</div>")
        button = W.Button(description="open", tooltip=str(row["id"]), layout=W.Layout(width="96px"))
        button.add_class("nbviz-gallery-open")
        button.on_click(lambda _, key=row["index"]: self._open_safely(key))
        box = W.VBox([image, text, button], layout=W.Layout(border="1px solid #ddd", padding="4px",
                                                            align_items="center"))
        box.add_class("nbviz-gallery-tile")
        return box

    def _open_safely(self, key):
        try:
            self.open_image(key)
        except Exception as exc:  # shown, not lost in a callback
            self.message.value = f"<span style='color:#b00020'>open {key!r}: {html.escape(str(exc))}</span>"

    def __repr__(self):
        return f"nbviz Gallery of {self.results!r}"

