"""nbviz.callbacks.Recorder, the run store (nbviz.runstore) and the ERF size (nbviz.methods.erf)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import layers

from nbviz import callbacks, runstore
from nbviz.methods import erf
from nbviz.methods.gradcam import gradcam
from nbviz.methods.gradients import saliency
from nbviz.probe import probe

ROOT = Path(__file__).resolve().parents[1]


def toy_classifier(seed=0, size=32, classes=3):
    """Conv-BN-ReLU-pool, conv-ReLU, dropout, global pooling, dense softmax: BN statistics and
    dropout's random state are what a careless callback would disturb."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", name="conv1")(inp)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.Dropout(0.3, name="drop")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(classes, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out, name="toy_classifier")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    return model


def toy_data(n=48, size=32, classes=3):
    rng = np.random.default_rng(1)
    y = rng.integers(classes, size=n)
    x = rng.random((n, size, size, 3)).astype("float32") * 0.3
    for i, c in enumerate(y):  # a bright square whose channel is the class
        top, left = rng.integers(0, size - 10, 2)
        x[i, top:top + 10, left:left + 10, c] += 0.7
    return x, y


class TraceLog(keras.callbacks.Callback):
    """Placed after the Recorder: the probe's trace count at every epoch end."""

    def __init__(self):
        super().__init__()
        self.counts = []

    def on_epoch_end(self, epoch, logs=None):
        self.counts.append(probe(self.model).trace_count())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-epoch run with every part of the Recorder on; shared by the read-back tests."""
    tmp = tmp_path_factory.mktemp("run")
    model = toy_classifier()
    x, y = toy_data()
    rec = callbacks.Recorder(x[:3], methods=("gradcam", "saliency"), featvis=(("conv2", 1),),
                             featvis_options={"steps": 3, "size": 32}, out=tmp / "store",
                             tensorboard=tmp / "tb")
    traces = TraceLog()
    before = _interceptable(model)
    history = model.fit(x, y, epochs=3, batch_size=16, callbacks=[rec, traces], verbose=0)
    assert _interceptable(model) == before  # the probe's scoped interceptions left nothing
    return model, x, rec, traces, history, tmp


def _interceptable(model):
    """What the probe patches, by identity: each layer's own ``call`` and ``activation``."""
    return [(id(layer), id(layer.__dict__.get("call")), id(layer.__dict__.get("activation")))
            for layer in model._flatten_layers(include_self=True, recursive=True)]


# --------------------------------------------------------------------------- never changes training

_SAME_TRAINING = textwrap.dedent("""
    import json, random, sys, tempfile
    import numpy as np, keras, tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    from tests.test_callbacks import toy_classifier, toy_data
    from nbviz.callbacks import Recorder

    def run(record):
        model = toy_classifier(seed=3)  # seeds Python, NumPy, TensorFlow and Keras
        x, y = toy_data()
        cbs = []
        if record:
            tmp = tempfile.mkdtemp()
            cbs = [Recorder(x[:2], methods=("gradcam", "saliency"),
                            featvis=(("conv2", 0),), featvis_options={"steps": 2, "size": 32},
                            every_batches=2, out=tmp + "/store", tensorboard=tmp + "/tb")]
        h = model.fit(x, y, epochs=2, batch_size=16, shuffle=True, callbacks=cbs, verbose=0)
        after = [random.random(), float(np.random.random()), float(tf.random.uniform(()))]
        weights = [w.tolist() for w in model.get_weights()]
        opt = [np.asarray(v).tolist() for v in model.optimizer.variables]
        return {"loss": h.history["loss"], "weights": weights, "optimizer": opt, "rng": after,
                "records": len(cbs[0].seconds) if cbs else 0}

    print(json.dumps([run(False), run(True)]))
""")


@pytest.mark.slow
def test_training_is_bit_identical_with_and_without_the_recorder():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", _SAME_TRAINING], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    without, with_ = json.loads(done.stdout.strip().splitlines()[-1])
    assert with_["records"] == 4  # before training, then after steps 2, 4 and 6
    assert without["loss"] == with_["loss"]
    assert without["weights"] == with_["weights"]  # exact equality of every float
    assert without["optimizer"] == with_["optimizer"]
    assert without["rng"] == with_["rng"]  # the global generators were left where they were


# --------------------------------------------------------------------------- cheap


def test_no_retrace_after_the_first_record(trained):
    model, x, rec, traces, history, _ = trained
    assert len(rec.seconds) == 4  # epoch 0 (before training) and after each of 3 epochs
    assert traces.counts[0] > 0
    assert traces.counts == [traces.counts[0]] * 3  # weights changed, no function was retraced
    # the cost is logged per epoch and per record
    assert history.history["recorder_seconds"] == pytest.approx(
        [s["total"] for s in rec.seconds[1:]])
    assert all(s["total"] >= s["maps"] + s["erf"] + s["featvis"] for s in rec.seconds)


# --------------------------------------------------------------------------- the run store


def test_store_reads_back_what_was_recorded(trained):
    model, x, rec, _, history, tmp = trained
    run = callbacks.open_run(tmp / "store")
    np.testing.assert_array_equal(run.epochs, [0, 1, 2, 3])
    np.testing.assert_array_equal(run.steps, [0, 3, 6, 9])  # 48 images / 16 = 3 steps per epoch
    np.testing.assert_array_equal(run.images, x[:3])
    assert run.methods == ["gradcam", "saliency"] and run.layers == ["conv1", "conv2"]
    # the last record was taken on the final weights: the methods give the same maps now
    np.testing.assert_array_equal(run.maps(3, "gradcam"), gradcam(model, x[:3]))
    np.testing.assert_array_equal(run.maps(3, "saliency", 1), saliency(model, x[:3])[1])
    assert not np.array_equal(run.maps(0, "saliency"), run.maps(3, "saliency"))  # it learned
    last = run.record(3)
    assert last.logs["loss"] == pytest.approx(history.history["loss"][-1])
    np.testing.assert_array_equal(
        last.erf_maps["conv2"], erf.erf_gradients(model, x[:3], ["conv1", "conv2"])[1])
    table = run.erf_table()
    assert list(table["layer"]) == ["conv1", "conv2"] * 4
    sizes = [s.as_dict() for sizes in rec.erf_sizes for s in sizes]
    np.testing.assert_array_equal(table["side"], [s["side"] for s in sizes])
    np.testing.assert_array_equal(table["trf"], [3, 8, 3, 8, 3, 8, 3, 8])  # conv2 after a pool: 8
    pictures = run.featvis(3)
    assert list(pictures) == [("conv2", 1)] and pictures[("conv2", 1)].shape == (32, 32, 3)
    for k, cost in enumerate(rec.seconds):  # the cost by part (the file's own write aside)
        stored = run.record(step=run.steps[k]).seconds
        assert {p: stored[p] for p in ("maps", "erf", "featvis")} == \
            {p: cost[p] for p in ("maps", "erf", "featvis")}
        assert stored["total"] <= cost["total"] == pytest.approx(stored["total"] + cost["write"], abs=1e-3)


def test_store_round_trip_and_a_killed_write(tmp_path, monkeypatch):
    header = {"methods": [{"name": "m", "display": "unsigned"}], "layers": [{"path": "a/b"}],
              "featvis": [["a/b", 2]], "erf_mass": 0.9}
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    writer = runstore.RunWriter(tmp_path, header, images)
    rng = np.random.default_rng(0)
    written = []
    for step in (0, 5):
        arrays = ([rng.random((2, 4, 4), dtype=np.float32)], [rng.random((4, 4))],
                  [rng.random((4, 4, 3), dtype=np.float32)])
        meta = {"step": step, "epoch": step / 5, "seconds": {"total": 0.5}, "logs": {"loss": 1.0},
                "erf": [{"layer": "a/b", "side": 3.0, "radius": 1.0, "trf": 5.0, "ratio": 0.6}]}
        writer.write(meta, *arrays)
        written.append(arrays)

    def killed(src, dst):  # the process dies after the temporary file, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(runstore.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        writer.write({"step": 9, "epoch": 2.0, "seconds": {"total": 0.1}}, *written[0])
    monkeypatch.undo()
    (tmp_path / "step-000000012.npz.tmp").write_bytes(b"PK\x03\x04 truncated")
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())

    run = runstore.open_run(tmp_path)
    np.testing.assert_array_equal(run.steps, [0, 5])  # only complete records
    np.testing.assert_array_equal(run.images, images)
    for step, (maps, erf_maps, pictures) in zip((0, 5), written):
        rec = run.record(step=step)
        assert rec.maps["m"].dtype == np.float32 and rec.erf_maps["a/b"].dtype == np.float64
        np.testing.assert_array_equal(rec.maps["m"], maps[0])
        np.testing.assert_array_equal(rec.erf_maps["a/b"], erf_maps[0])
        np.testing.assert_array_equal(rec.featvis[("a/b", 2)], pictures[0])
    np.testing.assert_array_equal(run.maps(1.0, "m", 1), written[1][0][0][1])
    assert run.erf_table()["ratio"].tolist() == [0.6, 0.6]
    # appending to the same run is fine; another run in the same folder is refused
    runstore.RunWriter(tmp_path, header, images)
    with pytest.raises(ValueError, match="out=.*different run"):
        runstore.RunWriter(tmp_path, {**header, "erf_mass": 0.5}, images)
    with pytest.raises(ValueError, match="epoch 7"):
        run.maps(7, "m")
    with pytest.raises(ValueError, match="method 'x'"):
        run.maps(0, "x")


# --------------------------------------------------------------------------- TensorBoard


def test_tensorboard_holds_the_images_and_scalars(trained):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    model, x, rec, _, _, tmp = trained
    acc = event_accumulator.EventAccumulator(str(tmp / "tb"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"maps/gradcam", "maps/saliency", "erf_map/conv1", "erf_map/conv2", "featvis/conv2/1",
            "erf/conv1", "erf/conv2", "erf_trf/conv2", "recorder/seconds"} <= tags
    steps = [0, 3, 6, 9]
    for tag in ("erf/conv2", "erf_trf/conv2"):
        events = acc.Tensors(tag)
        assert [e.step for e in events] == steps
        values = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in events]
        key = "side" if tag.startswith("erf/") else "ratio"
        assert values == pytest.approx([getattr(s[1], key) for s in rec.erf_sizes])
    images = acc.Tensors("maps/gradcam")
    assert [e.step for e in images] == steps
    content = tensor_util.make_ndarray(images[-1].tensor_proto)  # width, height, one PNG per image
    assert content[:2].tolist() == [b"32", b"32"] and len(content) == 2 + 3
    picture = tf.io.decode_png(content[2]).numpy()
    assert picture.shape == (32, 32, 3) and picture.std() > 0


# --------------------------------------------------------------------------- the ERF statistic


def box_stack(depth=6, size=33):
    """``depth`` 3×3 convolutions with all-one kernels and ReLU: on positive images every unit is
    on, so the centre cell's input gradient is the ``depth``-fold convolution of a 3×3 box."""
    inp = keras.Input((size, size, 1))
    x = inp
    for k in range(depth):
        x = layers.Conv2D(1, 3, padding="same", use_bias=False, activation="relu",
                          kernel_initializer="ones", name=f"box{k}")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(2)(x))


def direct_side(g, cy, cx, mass):
    """The smallest odd (or, for a half-integer centre, even) square side holding ``mass``:
    grow the square pixel by pixel and sum."""
    h, w = g.shape
    total = g.sum()
    for half in np.arange(0, max(h, w) + 1, 0.5):
        rows = [u for u in range(h) if abs(u - cy) <= half]
        cols = [v for v in range(w) if abs(v - cx) <= half]
        if g[np.ix_(rows, cols)].sum() >= mass * total * (1 - 1e-9):
            return 2 * half + 1


def test_erf_size_of_a_box_stack_matches_the_closed_form(tmp_path):
    model = box_stack()
    images = np.random.default_rng(0).random((2, 33, 33, 1)).astype("float32") + 0.1
    rec = callbacks.Recorder(images, methods=("saliency",), layers=["box5", "box1"], out=tmp_path)
    rec.set_model(model)
    rec.record(epoch=0.0)
    deep, shallow = rec.erf_sizes[0]
    # closed form: per axis the gradient is (1 + z + z²)^6; a square of half-width k holds
    # (its central 2k+1 coefficients / 3^6)² of the mass: k=3 gives 0.852, k=4 gives 0.962
    coeffs = np.array([1.0])
    for _ in range(6):
        coeffs = np.convolve(coeffs, [1, 1, 1])
    held = [(coeffs[6 - k:7 + k].sum() / coeffs.sum()) ** 2 for k in range(7)]
    k = next(k for k, m in enumerate(held) if m >= 0.95)
    assert (k, deep.side, deep.trf) == (4, 9.0, 13.0)
    assert deep.ratio == pytest.approx(9 / 13)
    assert (shallow.side, shallow.trf) == (5.0, 5.0)  # two boxes: (1,2,3,2,1)², k=1 holds 0.60
    # the same statistics computed directly from the gradient
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        with probe(model).capture("box5") as got:
            model(x)
        score = tf.reduce_sum(got["box5"][:, 16, 16, :])
    g = np.abs(tape.gradient(score, x).numpy()).sum(-1).mean(0)
    assert abs(deep.side - direct_side(g, 16, 16, 0.95)) <= 1
    yy, xx = np.mgrid[:33, :33]
    dist = np.hypot(yy - 16, xx - 16)
    radius = min(r for r in np.unique(dist) if g[dist <= r].sum() >= 0.95 * g.sum() * (1 - 1e-9))
    assert abs(deep.radius - radius) <= 1
    np.testing.assert_allclose(callbacks.open_run(tmp_path).erf_map(0, "box5"), g, rtol=1e-5)


def test_erf_size_of_an_even_map_and_of_a_dead_one():
    g = np.zeros((8, 8))
    g[3:5, 3:5] = 1.0  # four pixels around the half-integer centre (3.5, 3.5)
    assert erf.erf_size(g, (3.5, 3.5), mass=1.0) == (2.0, pytest.approx(np.hypot(0.5, 0.5)))
    g[0, 0] = 0.1
    assert erf.erf_size(g, (3.5, 3.5), mass=0.95)[0] == 2.0
    assert erf.erf_size(g, (3.5, 3.5), mass=1.0)[0] == 8.0
    side, radius = erf.erf_size(np.zeros((4, 4)), (2, 2))
    assert np.isnan(side) and np.isnan(radius)


# --------------------------------------------------------------------------- schedules and inputs


def test_every_batches_records_inside_epochs(tmp_path):
    model = toy_classifier()
    x, y = toy_data(n=32)
    rec = callbacks.Recorder(x[:1], methods=("saliency",), erf=False, every_batches=3,
                             initial=False, out=tmp_path)
    model.fit(x, y, epochs=2, batch_size=8, callbacks=[rec], verbose=0)  # 4 steps per epoch
    run = callbacks.open_run(tmp_path)
    np.testing.assert_array_equal(run.steps, [3, 6])
    np.testing.assert_allclose(run.epochs, [0.75, 1.5])
    assert run.layers == [] and run.erf_table()["side"].size == 0


def test_bad_arguments_name_themselves(tmp_path):
    x = np.zeros((2, 32, 32, 3), np.float32)
    cases = [
        (dict(every=0), "every must be"),
        (dict(every_batches=0), "every_batches must be"),
        (dict(methods=("nope",)), "methods: unknown method 'nope'"),
        (dict(methods=("rf",)), "methods: 'rf' is not a map"),
        (dict(methods=(3,)), "methods: 3 is neither"),
        (dict(erf_mass=1.5), "erf_mass must be"),
        (dict(featvis=(("conv2",),)), "featvis must be"),
        (dict(out=None), "out and tensorboard"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            callbacks.Recorder(x, **{"out": tmp_path, **kwargs})
    with pytest.raises(ValueError, match="images must be"):
        callbacks.Recorder(np.zeros(3), out=tmp_path)
    model = toy_classifier()
    for kwargs, message in [(dict(layers=["gap"]), "layers: layer 'gap' has output shape"),
                            (dict(layers=["nope"]), "layers: model 'toy_classifier' has no layer"),
                            (dict(featvis=(("conv2", 99),)), "featvis: channel 99")]:
        rec = callbacks.Recorder(x, out=tmp_path / "bad", **kwargs)
        rec.set_model(model)
        with pytest.raises(ValueError, match=message):
            rec.on_train_begin()
    assert not (tmp_path / "bad").exists()  # nothing written for a bad set-up


# --------------------------------------------------------------------------- the demo's --record


@pytest.mark.slow
def test_demo_train_records_without_changing_the_model(tmp_path):
    from nbviz.demo import train

    sizes = ["--seed", "3", "--train-scenes", "24", "--heldout-scenes", "8", "--shipped-scenes", "4",
             "--epochs", "2"]
    assert train.main([*sizes, "--out", str(tmp_path / "a")]) == 0
    assert train.main([*sizes, "--out", str(tmp_path / "b"), "--record", str(tmp_path / "run"),
                       "--record-scenes", "2", "--tensorboard", str(tmp_path / "tb")]) == 0
    a = keras.saving.load_model(tmp_path / "a" / "demo_model.keras", compile=False).get_weights()
    b = keras.saving.load_model(tmp_path / "b" / "demo_model.keras", compile=False).get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    run = callbacks.open_run(tmp_path / "run")
    np.testing.assert_array_equal(run.epochs, [0, 1, 2])
    assert run.images.shape == (2, 64, 64, 3) and run.layers[-1] == "block3_conv"
    assert run.maps(2, "gradcam").shape == (2, 64, 64)
    assert set(run.featvis(2)) == {("block3_relu", 0), ("block3_relu", 1)}
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    assert len(card["recorder_seconds"]) == 3
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())
