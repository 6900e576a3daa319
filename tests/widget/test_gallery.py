"""The Gallery over a results store: sort, filter, pages, opening an image with its stored maps."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

import nbviz
from nbviz import demo
from nbviz.demo import shapes
from nbviz.methods import table
from nbviz.session.results import reduce_map
from nbviz.widget.gallery import Gallery, caption, page_of, parse_filter, select

N = 40
WRONG = (3, 10)  # deliberately mislabelled scenes


@pytest.fixture(scope="module")
def model():
    return demo.load_model()


@pytest.fixture(scope="module")
def store(model, tmp_path_factory):
    """40 generated scenes, two with a wrong label; Grad-CAM and saliency with insertion AUC."""
    s = shapes.scenes(N, seed=1818)
    labels = s.labels.copy()
    for i in WRONG:
        labels[i] = (labels[i] + 1) % len(demo.LABELS)
    out = tmp_path_factory.mktemp("gallery") / "out"
    nbviz.explain_dataset(model, s.images, labels=labels, methods=("gradcam", "saliency"),
                          metrics=("insertion_auc",), out=out, batch_size=20, shard_size=16,
                          class_names=demo.LABELS, progress=False)
    return out, s.images, labels


@pytest.fixture
def gallery(store, model):
    g = Gallery(store[0], model, page_size=12)
    yield g
    g.close()


def _parquet(out):
    return pq.read_table(out / "results.parquet")


@pytest.mark.parametrize("column", ["insertion_auc_gradcam", "score", "label_name", "correct"])
@pytest.mark.parametrize("descending", [False, True])
def test_sort_is_the_parquet_tables_order(gallery, store, column, descending):
    gallery.set(sort_by=column, descending=descending)
    direct = _parquet(store[0]).sort_by([(column, "descending" if descending else "ascending"), ("index", "ascending")])
    assert gallery.rows["index"].to_pylist() == direct["index"].to_pylist()
    # the first tile shows its id, label, prediction and (for a metric) the sort value
    first = direct.slice(0, 1).to_pylist()[0]
    text = gallery.captions[0]
    assert text.startswith(f"{first['id']} · label {first['label_name']} · pred {first['prediction_name']}")
    if column == "insertion_auc_gradcam":
        assert text.endswith(f"insertion_auc_gradcam {first[column]:.3g}")
        values = gallery.rows[column].to_numpy()
        assert np.all(np.diff(values) <= 0) if descending else np.all(np.diff(values) >= 0)


def test_wrong_predictions_filter_shows_exactly_the_wrong_rows(gallery, store, model):
    _, images, labels = store
    predicted = model.predict(images, verbose=0).argmax(1)
    wrong = set(np.flatnonzero(predicted != labels).tolist())
    assert set(WRONG) <= wrong  # the mislabelled scenes are among them
    gallery.set(show="wrong predictions", sort_by="score", descending=True)
    assert set(gallery.rows["index"].to_pylist()) == wrong
    assert gallery.rows.num_rows == len(wrong)
    assert all("✗" in c for c in gallery.captions)
    # the same rows through a typed condition on the column
    gallery.set(show="all", where="correct == false")
    assert set(gallery.rows["index"].to_pylist()) == wrong
    gallery.set(show="right predictions", where="")
    assert set(gallery.rows["index"].to_pylist()) == set(range(N)) - wrong
    # a label, and a metric threshold combined with it
    gallery.set(show="label: circle", where="insertion_auc_gradcam < 0.8")
    t = _parquet(store[0]).to_pandas()
    expect = t[(t.label == 0) & (t.insertion_auc_gradcam < 0.8)]["index"]
    assert sorted(gallery.rows["index"].to_pylist()) == sorted(expect.tolist())


def test_pages_cover_the_selection_once(gallery):
    gallery.set(sort_by="insertion_auc_saliency")
    pages = [gallery.set(page=p).page_rows["index"].to_pylist() for p in range(4)]
    assert [len(p) for p in pages] == [12, 12, 12, 4]
    assert sum(pages, []) == gallery.rows["index"].to_pylist()
    assert len(gallery.grid.children) == 4  # the last page's tiles
    assert "37–40 of 40 (page 4 of 4)" in gallery.page_w.value
    with pytest.raises(ValueError, match=r"page must be an int in \[0, 3\]"):
        gallery.set(page=4)
    assert gallery.state.page == 3  # nothing changed
    gallery.prev_w.click()
    assert gallery.state.page == 2 and len(gallery.grid.children) == 12
    gallery.set(sort_by="score")  # a new order starts at the first page
    assert gallery.state.page == 0
    gallery.set(sort_by="insertion_auc_gradcam", descending=True, page=2)  # unless a page is given
    assert gallery.state.page == 2 and gallery.sort_w.value == "insertion_auc_gradcam" and gallery.desc_w.value
    # the page's controls drive the same state
    gallery.sort_w.value = "label_name"
    assert gallery.state.sort_by == "label_name" and gallery.state.page == 0
    names = gallery.page_rows["label_name"].to_pylist()
    assert names == sorted(names, reverse=True)  # still descending


def test_opening_a_tile_shows_the_stored_map_without_recomputing(gallery, store, monkeypatch):
    import nbviz.methods.gradcam as gradcam_module
    import nbviz.methods.gradients as gradients_module

    import nbviz.session.one_pass as one_pass_module

    calls = []  # the functions themselves, and the one-pass group that serves both in the Explorer
    originals = {}
    for module, name in ((gradcam_module, "gradcam"), (gradients_module, "saliency"), (one_pass_module, "gradients")):
        original = originals[name] = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name, **k: (calls.append(_n), _f(*a, **k))[1])
    gallery.set(show="wrong predictions", sort_by="insertion_auc_gradcam")
    key = gallery.page_rows["index"][0].as_py()
    tile = gallery.grid.children[0]
    tile.children[2].click()  # the tile's "open" button
    ex = gallery.explorer
    assert ex is not None and ex in gallery.viewer.children
    ex.wait(30)
    results = nbviz.open_results(store[0])
    assert ex.state.method == "gradcam" and "(stored)" in ex.result.note
    np.testing.assert_array_equal(ex.result.data, results.maps(key, "gradcam"))
    # it is the map of the layer and target the Explorer names (a direct call, outside the count)
    direct = originals["gradcam"](gallery.session.model, results.image(key), layer=ex.state.layer,
                                  target=ex.state.target)
    np.testing.assert_allclose(ex.result.data, direct, rtol=1e-4, atol=1e-6)
    ex.set(method="saliency").wait(30)
    stored = results.maps(key, "saliency")
    np.testing.assert_array_equal(ex.result.values, reduce_map(stored, table.method("saliency").reduce))
    assert calls == [] and gallery.session.counts["computed"] == gallery.session.counts["one_pass"] == 0
    # every other method runs live on the model, on the same image
    ex.set(method="gradient_x_input").wait(60)
    assert gallery.session.counts["computed"] == 1 and "(stored)" not in ex.result.note
    direct = nbviz.gradient_x_input(gallery.session.model, results.image(key))
    expect = reduce_map(direct, table.method("gradient_x_input").reduce)
    np.testing.assert_allclose(ex.result.values, expect, rtol=1e-4, atol=1e-6 * float(np.abs(expect).max()))
    # opening another image replaces the Explorer
    other = gallery.open_image(gallery.page_rows["index"][1].as_py()).wait(30)
    assert gallery.explorer is other and ex not in gallery.viewer.children
    assert calls == []
    # the count sees real calls: Grad-CAM at a layer the run did not use is computed
    layer = next(p for p in gallery.session.layers("gradcam") if p != other.state.layer)
    other.set(layer=layer).wait(60)
    assert calls == ["gradients"] and "(stored)" not in other.result.note


def test_model_from_the_store_and_a_wrong_model_refused(model, store, tmp_path):
    _, images, labels = store
    out = tmp_path / "from_file"
    nbviz.explain_dataset(str(demo.MODEL_PATH), images[:6], labels=labels[:6], methods=("gradcam",), out=out,
                          batch_size=6, progress=False)
    g = Gallery(out)  # no model given: the recorded file, loaded with safe_mode
    ex = g.open_image(2).wait(30)
    np.testing.assert_array_equal(ex.result.data, g.results.maps(2, "gradcam"))
    assert g.session.counts["computed"] == 0
    g.close()
    import keras

    other = keras.models.clone_model(model)  # same architecture, fresh weights
    g2 = Gallery(out, other)
    with pytest.raises(ValueError, match="weights differ"):
        g2.open_image(0)
    g2.grid.children[0].children[2].click()  # from the button: the error is shown, not raised
    assert "weights differ" in g2.message.value
    g2.close()


def test_a_run_still_going_shows_new_shards_on_reload(store, model, tmp_path):
    out = tmp_path / "partial"
    shutil.copytree(store[0], out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "results.parquet").unlink()
    shutil.move(out / "shards" / "00002", tmp_path / "later")
    g = Gallery(out, model, page_size=50)
    assert g.rows.num_rows == 32 and "run in progress" in g.page_w.value
    shutil.move(tmp_path / "later", out / "shards" / "00002")  # the run finishes its last shard
    g.refresh_w.click()
    assert g.rows.num_rows == N and len(g.grid.children) == N
    g.close()


def test_bad_arguments_name_what_is_wrong(store, tmp_path, model):
    with pytest.raises(ValueError, match=r"Gallery out='.*nowhere'.*not an nbviz results folder"):
        Gallery(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="out must be the path"):
        Gallery(42)
    g = Gallery(store[0], model)
    with pytest.raises(ValueError, match="sort_by must be one of"):
        g.set(sort_by="top_scores")  # a list column
    with pytest.raises(ValueError, match="no column 'scroe'"):
        g.set(where="scroe < 0.5")
    with pytest.raises(ValueError, match="not a value of column 'score'"):
        g.set(where="score < high")
    with pytest.raises(ValueError, match="show must be one of"):
        g.set(show="failures")
    assert g.state.sort_by == "index" and g.state.where == ""  # nothing changed
    g.where_w.value = "label ~ 3"  # typed in the box: the message says why
    assert "column op value" in g.message.value
    with pytest.raises(KeyError, match="no image 999"):
        g.open_image(999)
    g.close()


def test_pure_functions():
    import pyarrow as pa

    t = pa.table({"index": [0, 1, 2, 3], "id": ["a", "b", "c", "d"], "label": [0, 1, None, 1],
                  "prediction": [0, 0, 1, 1], "correct": [True, False, None, True], "m": [0.5, None, 0.1, 0.5]})
    assert select(t, sort_by="m")["index"].to_pylist() == [2, 0, 3, 1]  # ties by index, nulls last
    assert select(t, sort_by="m", descending=True)["index"].to_pylist() == [0, 3, 2, 1]
    assert select(t, show="wrong predictions")["index"].to_pylist() == [1]
    assert select(t, show="label: 1")["index"].to_pylist() == [1, 3]
    assert select(t, where="label == null")["index"].to_pylist() == [2]
    assert select(t, where="id = 'c'")["index"].to_pylist() == [2]
    assert parse_filter("  ", t.schema) is None
    assert page_of(t, 1, 3)["index"].to_pylist() == [3]
    assert caption({"id": "b", "label": 1, "prediction": 0, "correct": False, "m": 0.25}, "m", ["x", "y"]) == \
        "b · label y · pred x ✗ · m 0.25"


def test_maps_explaining_the_label_open_with_that_target(model, store, tmp_path):
    _, images, labels = store
    out = tmp_path / "label"
    nbviz.explain_dataset(model, images[:12], labels=labels[:12], methods=("gradcam",), target="label", out=out,
                          batch_size=12, progress=False)
    g = Gallery(out, model, show="wrong predictions")
    key = g.rows["index"][0].as_py()
    row = g.results.row(key)
    assert row["target"] == row["label"] != row["prediction"]
    ex = g.open_image(key).wait(30)
    assert ex.state.target == row["label"] and "(stored)" in ex.result.note
    np.testing.assert_array_equal(ex.result.data, g.results.maps(key, "gradcam"))
    assert g.session.counts["computed"] == 0
    g.close()
