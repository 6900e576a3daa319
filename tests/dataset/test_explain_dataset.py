"""explain_dataset with the local engine: rows, maps, predictions, errors, resume, progress."""

import io
import json
import sys
import types

import numpy as np
import pyarrow.compute as pc
import pytest
import tensorflow as tf
from PIL import Image

import nbviz
from nbviz import demo
from nbviz.dataset import explain_dataset, open_results
from nbviz.dataset.store import finished_shards
from tests.conftest import unchanged
from tests.dataset.conftest import write_pngs

QUIET = {"disable": True}


def _close(a, b, rtol=1e-4):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1e-6, float(np.abs(b).max())))


def test_array_source_every_row_map_and_prediction(demo_model, scenes, tmp_path):
    n = 80
    images, labels = scenes.images[:n], scenes.labels[:n]
    with unchanged(demo_model):
        r = explain_dataset(demo_model, images, labels=labels, methods=("gradcam", "saliency"),
                            out=tmp_path / "out", batch_size=16, shard_size=32,
                            class_names=demo.LABELS, progress=False)
    assert r.complete and len(r) == n and r.errors.num_rows == 0
    assert r.table["index"].to_pylist() == list(range(n))
    assert sorted(finished_shards(r.out)) == [0, 1, 2]  # 32 + 32 + 16
    probs = demo_model.predict(images, verbose=0)
    np.testing.assert_array_equal(r.table["prediction"].to_numpy(), probs.argmax(1))
    np.testing.assert_allclose(r.table["score"].to_numpy(), probs.max(1), rtol=1e-5)
    np.testing.assert_array_equal(r.table["correct"].to_numpy(), probs.argmax(1) == labels)
    top = np.array(r.table["top_classes"].to_pylist())
    np.testing.assert_array_equal(top, np.argsort(-probs, axis=1)[:, :5])
    assert r.table["label_name"].to_pylist() == [demo.LABELS[l] for l in labels]
    # the maps are those of direct calls on the same images (batches of 16, as in the run)
    direct = {name: np.concatenate([getattr(nbviz, name)(demo_model, images[i:i + 16]) for i in range(0, n, 16)])
              for name in ("gradcam", "saliency")}
    for i in range(n):
        for method, maps in direct.items():
            _close(r.maps(i, method), maps[i])
    # a single-image call gives the same map, addressed by id
    _close(r.maps("#7", "gradcam"), nbviz.gradcam(demo_model, images[7]))
    np.testing.assert_array_equal(r.image(5), images[5])  # arrays are stored: no file to go back to
    thumb = Image.open(io.BytesIO(r.thumbnail(5)))
    assert thumb.format == "PNG" and thumb.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(thumb), images[5])
    # reading helpers: failures are the wrong predictions, most confident first
    wrong = r.failures()
    assert wrong.num_rows == int((probs.argmax(1) != labels).sum())
    scores = wrong["score"].to_numpy()
    assert (np.diff(scores) <= 0).all()
    assert r.filter(label=[0, 1]).num_rows == int(np.isin(labels, [0, 1]).sum())
    low = r.lowest("score", 3)["score"].to_numpy()
    np.testing.assert_allclose(low, np.sort(probs.max(1))[:3], rtol=1e-5)
    assert r.filter(pc.field("score") < 0.5, correct=False).num_rows == int(
        ((probs.argmax(1) != labels) & (probs.max(1) < 0.5)).sum())


def test_folder_errors_labels_and_resize(demo_model, scenes, tmp_path):
    src = tmp_path / "images"
    names = write_pngs(src, scenes.images[:12], scenes.labels[:12])
    Image.fromarray(scenes.images[12]).save(src / "photo.jpg", quality=95)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))  # header, no image
    good_png = (src / names[1]).read_bytes()
    (src / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (src / "notes.txt").write_text("not an image")
    Image.fromarray(scenes.images[13]).save(src / "anim.gif")
    Image.fromarray(scenes.images[14][:32, :32]).save(src / "small.png")
    r = explain_dataset(demo_model, src, methods=("gradcam",), out=tmp_path / "out", batch_size=8,
                        shard_size=8, progress=False)
    reasons = dict(zip(r.errors["id"].to_pylist(), r.errors["reason"].to_pylist()))
    assert set(reasons) == {"broken.png", "truncated.png", "notes.txt", "anim.gif", "small.png"}
    assert reasons["notes.txt"].startswith("unsupported file type '.txt'")
    assert reasons["anim.gif"].startswith("unsupported file type '.gif'")
    assert reasons["broken.png"].startswith("unreadable")
    assert reasons["truncated.png"].startswith("unreadable")
    assert reasons["small.png"].startswith("wrong size 32×32")
    assert len(r) == 13 and len(r) + r.errors.num_rows == 18
    # labels come from the folder's labels.csv; the JPEG has none
    by_id = {row["id"]: row for row in r.table.to_pylist()}
    for k, name in enumerate(names):
        assert by_id[name]["label"] == scenes.labels[k]
        _close(r.maps(name, "gradcam"), nbviz.gradcam(demo_model, scenes.images[k]))
    assert by_id["photo.jpg"]["label"] is None and by_id["photo.jpg"]["correct"] is None
    np.testing.assert_array_equal(r.image("photo.jpg"), np.asarray(Image.open(src / "photo.jpg")))
    # resize=True takes the small image in, resampled
    r2 = explain_dataset(demo_model, src, methods=("gradcam",), out=tmp_path / "out2", resize=True,
                         progress=False)
    assert "small.png" in r2.table["id"].to_pylist() and r2.errors.num_rows == 4


def test_resume_rewrites_only_missing_shards(demo_model, scenes, tmp_path):
    import shutil

    images = scenes.images[:48]
    args = dict(methods=("gradcam",), out=tmp_path / "out", batch_size=16, shard_size=16, progress=False)
    first = explain_dataset(demo_model, images, **args)
    before = first.maps(20, "gradcam")
    shutil.rmtree(tmp_path / "out" / "shards" / "00001")  # as if the run had died in shard 1
    stale = tmp_path / "out" / "shards" / ".00002.tmp-999999999-deadbeef"  # a killed writer's leftovers
    stale.mkdir()
    (tmp_path / "out" / "results.parquet").unlink()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    manifest["complete"] = False
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    partial = open_results(tmp_path / "out")  # a dead run's finished shards are readable
    assert not partial.complete and len(partial) == 32
    second = explain_dataset(demo_model, images, **args)
    assert second.manifest["runs"][-1]["shards_written"] == 1
    assert len(second) == 48 and second.table["index"].to_pylist() == list(range(48))
    assert not stale.exists()
    _close(second.maps(20, "gradcam"), before)
    third = explain_dataset(demo_model, images, **args)  # idempotent: nothing to do
    assert third.manifest["runs"][-1]["shards_written"] == 0 and len(third) == 48
    with pytest.raises(ValueError, match="different run.*methods"):
        explain_dataset(demo_model, images, **{**args, "methods": ("saliency",)})
    with pytest.raises(ValueError, match="different run"):
        explain_dataset(demo_model, images[::-1].copy(), **args)
    redone = explain_dataset(demo_model, images, **{**args, "methods": ("saliency",), "overwrite": True})
    assert redone.methods == ["saliency"] and len(redone) == 48


def test_everything_is_on_disk_before_it_is_renamed_into_place(demo_model, scenes, tmp_path, monkeypatch):
    """A shard, the manifest and the union tables are renamed into place only once every file
    and folder in them is synced (so a finished shard survives a crash of the machine too), and
    each chunk file is flushed as it is written."""
    import os

    from nbviz.dataset import store

    out = (tmp_path / "out").resolve()
    synced, checked = set(), []
    fsync, datasync, replace = os.fsync, store._datasync, os.replace

    def record(real):
        def sync(fd):
            synced.add(os.path.realpath(f"/proc/self/fd/{fd}"))
            return real(fd)
        return sync

    def checked_replace(src, dst, *a, **k):
        src, dst = os.path.realpath(src), os.path.realpath(dst)
        if os.path.dirname(dst) in (str(out), str(out / "shards")):  # not Zarr's own chunk renames
            walked = [src] if os.path.isfile(src) else [
                os.path.join(d, n) for d, _, files in os.walk(src) for n in [*files, "."]]
            missing = [p for p in map(os.path.realpath, walked) if p not in synced]
            assert not missing, f"renamed {dst} with unsynced {missing[:3]}"
            checked.append(dst)
        return replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "fsync", record(fsync))
    monkeypatch.setattr(store, "_datasync", record(datasync))
    monkeypatch.setattr(os, "replace", checked_replace)
    r = explain_dataset(demo_model, scenes.images[:32], methods=("gradcam",), out=out, batch_size=16,
                        shard_size=16, progress=False)
    names = [os.path.basename(p) for p in checked]
    assert names.count("00000") == names.count("00001") == 1
    assert {"manifest.json", "results.parquet", "errors.parquet"} <= set(names)
    chunks = [p for p in synced if "/maps.zarr/gradcam/c." in p]
    assert len(chunks) == 2, chunks  # one chunk of 16 maps per shard, each flushed when written
    assert len(r) == 32


@pytest.mark.parametrize("code, fails", [("EINVAL", False), ("ENOSPC", True)])
def test_a_file_system_that_cannot_sync_still_gets_the_run_but_a_failed_write_is_raised(
        demo_model, scenes, tmp_path, monkeypatch, code, fails):
    import errno
    import os

    from nbviz.dataset import store

    real = store._datasync

    def refuse(fd):  # every file (EINVAL), or the maps' chunk files only: a write failing mid-run
        if code == "EINVAL" or "/maps.zarr/gradcam/c." in os.path.realpath(f"/proc/self/fd/{fd}"):
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
        return real(fd)

    monkeypatch.setattr(store, "_datasync", refuse)
    args = dict(methods=("gradcam",), out=tmp_path / "out", batch_size=16, shard_size=16, progress=False)
    if fails:
        with pytest.raises(OSError) as info:
            explain_dataset(demo_model, scenes.images[:32], **args)
        assert info.value.errno == errno.ENOSPC
        assert not finished_shards(tmp_path / "out")  # no shard taken for finished
    else:
        assert len(explain_dataset(demo_model, scenes.images[:32], **args)) == 32


def test_progress_bar_advances_with_rate(demo_model, scenes, tmp_path):
    buf = io.StringIO()
    explain_dataset(demo_model, scenes.images[:48], methods=("gradcam",), out=tmp_path / "out",
                    batch_size=16, shard_size=16, progress={"file": buf, "mininterval": 0, "miniters": 1, "ascii": True})
    text = buf.getvalue()
    states = [s for s in text.replace("\r", "\n").split("\n") if "/48" in s]
    counts = [int(s.split("/48")[0].split()[-1]) for s in states]
    assert counts[0] == 0 and counts[-1] == 48 and {16, 32} <= set(counts)
    assert counts == sorted(counts)
    assert "img/s" in states[-1]


def test_tf_data_source_label_target_and_metric(demo_model, scenes, tmp_path):
    images, labels = scenes.images[:24], scenes.labels[:24]
    ds = tf.data.Dataset.from_tensor_slices((images, labels))

    def mass(model, image, attribution, *, target=None, preprocess=None):
        assert image.shape == (64, 64, 3) and isinstance(target, int)
        return float(np.asarray(attribution).sum())

    r = explain_dataset(demo_model, ds, methods=("gradcam",), metrics=(mass,), target="label",
                        out=tmp_path / "out", batch_size=8, shard_size=16, progress=False)
    assert r.table["target"].to_pylist() == labels.tolist()
    direct = nbviz.gradcam(demo_model, images, target=labels)
    for i in range(24):
        _close(r.maps(i, "gradcam"), direct[i])
    np.testing.assert_allclose(r.table["mass_gradcam"].to_numpy(), direct.sum(axis=(1, 2)), rtol=1e-4)
    np.testing.assert_array_equal(r.image(3), images[3])


def test_float_pixels_are_stored_as_explained_for_every_source_kind(demo_model, scenes, tmp_path):
    # float pixels in [0, 1] (the model's own scale is 0..255: preprocess maps them), from an
    # array and from a tf.data.Dataset: the stored image is the float image explained, not a
    # uint8 cast of it, and each shard's rows follow the source order with an unusable item
    images = scenes.images[:12].astype(np.float32) / 255.0
    labels = scenes.labels[:12].copy()
    labels[5] = 99  # not a class of the model: an error row inside the first shard's second batch
    scale = lambda x: x * 255.0  # noqa: E731
    direct = nbviz.gradcam(demo_model, images, preprocess=scale)
    for name, source, kw in (("array", images, {"labels": labels}),
                             ("tf.data", tf.data.Dataset.from_tensor_slices((images, labels)), {})):
        r = explain_dataset(demo_model, source, methods=("gradcam",), preprocess=scale,
                            out=tmp_path / name, batch_size=4, shard_size=8, progress=False, **kw)
        assert len(r) == 11 and r.errors["index"].to_pylist() == [5], name
        for i in [i for i in range(12) if i != 5]:
            stored = r.image(i)
            assert stored.dtype == np.float32, name
            np.testing.assert_array_equal(stored, images[i])
            _close(r.maps(i, "gradcam"), direct[i])


def test_whole_number_float_pixels_are_stored_exactly_as_uint8(demo_model, scenes, tmp_path):
    # keras.utils.img_to_array gives float32 with whole values 0..255: a quarter of the bytes,
    # the same values, the same maps as the float images explained
    images = (scenes.images[:8] // 2 + 40).astype(np.float32)  # 40..167: no min-max stretch
    r = explain_dataset(demo_model, images, methods=("gradcam",), out=tmp_path / "out", batch_size=4,
                        progress=False)
    direct = nbviz.gradcam(demo_model, images)
    for i in range(8):
        assert r.image(i).dtype == np.uint8
        np.testing.assert_array_equal(r.image(i), images[i])
        _close(r.maps(i, "gradcam"), direct[i])
    # the thumbnails show the pixels as they are (64 px scenes: the thumbnail is the image)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.thumbnail(3)))), images[3])
    half = images.copy()
    half[7, 0, 0, 0] = 0.5  # one value that is not a whole number: float32 kept for all
    r = explain_dataset(demo_model, half, methods=("gradcam",), out=tmp_path / "half", batch_size=4,
                        progress=False)
    assert r.image(0).dtype == np.float32 and r.image(7)[0, 0, 0] == 0.5


def test_store_images_false_keeps_maps_and_thumbnails_and_says_why_no_image(demo_model, scenes, tmp_path):
    images = scenes.images[:6]
    r = explain_dataset(demo_model, images, methods=("gradcam",), out=tmp_path / "out", batch_size=4,
                        progress=False, store_images=False)
    direct = nbviz.gradcam(demo_model, images)
    for i in range(6):
        _close(r.maps(i, "gradcam"), direct[i])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.thumbnail(5)))), images[5])
    assert not (tmp_path / "out" / "shards" / "00000" / "maps.zarr" / "images").exists()
    with pytest.raises(KeyError, match="'#2' has no file .* store_images=False"):
        r.image(2)
    r = explain_dataset(demo_model, images, methods=("gradcam",), out=tmp_path / "np", batch_size=4,
                        progress=False, store_images=np.False_)
    assert r.manifest["config"]["store_images"] is False
    with pytest.raises(KeyError, match="store_images=False"):
        r.image(2)


def test_metric_names_resolve_lazily_from_nbviz_metrics(demo_model, scenes, tmp_path, monkeypatch):
    class Curve:
        def __init__(self, auc):
            self.auc = auc

    def deletion(model, image, attribution, *, target=None, preprocess=None):
        return Curve(float(np.asarray(attribution).max()))

    fake = types.ModuleType("nbviz.metrics")
    fake.deletion = deletion
    fake.__all__ = ["deletion"]
    monkeypatch.setitem(sys.modules, "nbviz.metrics", fake)
    r = explain_dataset(demo_model, scenes.images[:8], methods=("gradcam",), metrics=("deletion_auc",),
                        out=tmp_path / "out", progress=False)
    np.testing.assert_allclose(r.table["deletion_auc_gradcam"].to_numpy(),
                               [r.maps(i, "gradcam").max() for i in range(8)])
    with pytest.raises(ValueError, match=r"unknown metric 'pointing'.*\['deletion'\]"):
        explain_dataset(demo_model, scenes.images[:8], metrics=("pointing",), out=tmp_path / "o2")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"methods": ("rf",)}, ValueError, "runner"),
    ({"methods": ("nope",)}, ValueError, "unknown method 'nope'"),
    ({"methods": ("gradcam", "gradcam")}, ValueError, "listed twice"),
    ({"target": "best"}, ValueError, "target must be"),
    ({"engine": "spark"}, ValueError, "engine must be"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"target": "label"}, ValueError, "needs labels"),
    ({"options": {"smoothgrad": {"samples": 4}}}, ValueError, "not run"),
    ({"options": {"occlusion": {"window": 0}}, "methods": ("occlusion",)}, ValueError, "window"),
    ({"store_images": "yes"}, TypeError, "store_images must be None .* True or False; got 'yes'"),
    ({"store_images": 1}, TypeError, "store_images must be"),
])
def test_bad_arguments_are_named(demo_model, scenes, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        explain_dataset(demo_model, scenes.images[:4], out=tmp_path / "out", progress=False, **kwargs)


def test_out_folder_that_is_not_a_store_is_refused(demo_model, scenes, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an nbviz results folder"):
        explain_dataset(demo_model, scenes.images[:4], out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="refuses to delete"):
        explain_dataset(demo_model, scenes.images[:4], out=tmp_path, overwrite=True, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_a_first_batch_of_only_bad_files(demo_model, scenes, tmp_path):
    """The first batch (and shard) has no usable image: its rows are errors, the rest runs."""
    src = tmp_path / "images"
    src.mkdir()
    (src / "a1.png").write_bytes(b"garbage")
    (src / "a2.jpg").write_bytes(b"\xff\xd8\xff garbage")
    for k in range(3):
        Image.fromarray(scenes.images[k]).save(src / f"b{k}.png")
    r = explain_dataset(demo_model, src, methods=("gradcam", "saliency"), out=tmp_path / "out",
                        batch_size=2, shard_size=2, progress=False)
    assert r.errors["id"].to_pylist() == ["a1.png", "a2.jpg"] and len(r) == 3
    for k in range(3):
        _close(r.maps(f"b{k}.png", "saliency"), nbviz.saliency(demo_model, scenes.images[k]))


def test_one_pass_gives_maps_and_predictions(demo_model, scenes, tmp_path):
    """Grad-CAM and saliency with their default options come from one compiled pass that also
    gives the predictions: no separate forward pass is compiled, and the stored predictions
    are the model's own outputs."""
    from nbviz.probe import probe

    images = scenes.images[:20]
    r = nbviz.explain_dataset(demo_model, images, methods=("gradcam", "saliency"), out=tmp_path / "r",
                              batch_size=8, progress=False)
    assert not [k for k in probe(demo_model).traces if k[0] == "dataset_outputs"]
    probs = np.asarray(demo_model(images.astype(np.float32)))
    np.testing.assert_array_equal(r.table["prediction"].to_numpy(), probs.argmax(1))
    np.testing.assert_allclose(r.table["score"].to_numpy(), probs.max(1), rtol=1e-5)


def test_thumbnails_keep_the_aspect_ratio():
    from nbviz.dataset.worker import thumbnail_shape, thumbnails

    assert thumbnail_shape(200, 100, 64) == (64, 32) and thumbnail_shape(30, 40, 64) == (30, 40)
    block = np.zeros((2, 200, 100, 3), np.uint8)
    block[:, :100] = 200  # top half bright: area averaging keeps the two halves apart
    small = thumbnails(block, 64)
    assert small.shape == (2, 64, 32, 3) and small.dtype == np.uint8
    assert (small[:, :32] == 200).all() and (small[:, 32:] == 0).all()
    floats = thumbnails(np.linspace(-1, 1, 2 * 8 * 8 * 1).reshape(2, 8, 8, 1), 64)  # min-max per image
    assert floats.shape == (2, 8, 8, 1) and floats[0].min() == 0 and floats[0].max() == 255
