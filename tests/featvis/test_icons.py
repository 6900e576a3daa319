"""featvis.icons and its disk cache: a second call renders nothing, previews stream, batches are
padded to powers of two, the weights digest follows the weights, the cache is bounded (least
recently used go first), tolerates broken files, and two processes writing one icon leave a valid
file."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from nbviz import featvis as fv
import importlib
from nbviz.featvis.icon_cache import IconCache, default_root
from nbviz.featvis.objectives import Context
from nbviz.probe import probe
from tests.conftest import unchanged

FAST = dict(size=32, steps=8)
ICON_CACHE = Path(fv.__file__).with_name("icon_cache.py")


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    x = layers.Conv2D(12, 3, strides=2, padding="same", name="conv2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(3, activation="softmax", name="logits")(x)
    return keras.Model(inp, out, name="icon_toy")


@pytest.fixture(scope="module")
def toy():
    return _model()


@pytest.fixture
def counted(monkeypatch):
    """Every render call icons makes: its batch size."""
    calls = []
    icons_module = importlib.import_module("nbviz.featvis.icons")  # fv.icons is the function
    real = icons_module.render

    def render(*args, **kwargs):
        calls.append(kwargs["batch"])
        return real(*args, **kwargs)

    monkeypatch.setattr(icons_module, "render", render)
    return calls


def test_second_call_reads_the_disk_cache_and_renders_nothing(toy, tmp_path, counted):
    cache = IconCache(tmp_path)
    seen = []
    with unchanged(toy):
        first = fv.icons(toy, "relu2", [3, 1, 7], cache=cache, callback=seen.append, **FAST)
    assert first.shape == (3, 32, 32, 3) and first.dtype == np.float32
    assert 0 <= first.min() and first.max() <= 1 and first.std() > 0.01
    assert counted == [4]  # three icons: one batch padded to a power of two
    assert len(cache.entries()) == 3
    traces = probe(toy).trace_count("featvis.step")
    # previews stream while rendering, then the finished batch
    assert [e.step for e in seen] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(e.positions == (0, 1, 2) and not e.cached for e in seen)
    assert seen[-1].final and not seen[0].final
    np.testing.assert_array_equal(seen[-1].images, first)

    seen.clear()
    with unchanged(toy):
        again = fv.icons(toy, "relu2", [3, 1, 7], cache=cache, callback=seen.append, **FAST)
    np.testing.assert_array_equal(again, first)  # exactly: icons are stored as 8-bit PNG
    assert counted == [4] and probe(toy).trace_count("featvis.step") == traces
    assert len(seen) == 1 and seen[0].cached and seen[0].final and seen[0].positions == (0, 1, 2)

    # a mix: cached ones come from disk, only the new one is rendered (batch of 1)
    seen.clear()
    mixed = fv.icons(toy, "relu2", [7, 5, 3], cache=cache, callback=seen.append, **FAST)
    np.testing.assert_array_equal(mixed[0], first[2])
    np.testing.assert_array_equal(mixed[2], first[0])
    assert counted == [4, 1]
    assert seen[0].cached and seen[0].positions == (0, 2) and seen[-1].positions == (1,)
    # other settings are other icons
    fv.icons(toy, "relu2", [3], cache=cache, size=32, steps=9)
    assert counted == [4, 1, 1]


def test_batches_of_at_most_batch_size_without_cache(toy, tmp_path, counted):
    out = fv.icons(toy, "conv1", list(range(8)) + [0, 1, 2], cache=False, batch_size=4, **FAST)
    assert out.shape == (11, 32, 32, 3) and counted == [4, 4, 4]
    assert not any(tmp_path.iterdir())


def test_the_icon_of_a_channel_excites_that_channel(toy):
    # the picture rendered for channel c raises c's mean activation above the other pictures'
    channels = [0, 4, 9]
    pictures = fv.icons(toy, "relu2", channels, cache=False, size=32, steps=16)
    front = keras.Model(toy.input, toy.get_layer("relu2").output)
    means = front(pictures).numpy().mean(axis=(1, 2))[:, channels]  # (icon, channel)
    assert (np.argmax(means, axis=0) == np.arange(3)).all(), means


def test_directions_render_one_icon_per_row(toy, counted, tmp_path):
    rng = np.random.default_rng(0)
    rows = np.abs(rng.standard_normal((3, 12)))
    out = fv.icons(toy, "relu2", rows, cache=IconCache(tmp_path), **FAST)
    assert out.shape == (3, 32, 32, 3) and counted == [4]
    again = fv.icons(toy, "relu2", rows, cache=IconCache(tmp_path), **FAST)
    np.testing.assert_array_equal(out, again)
    assert counted == [4]
    # a channel and its one-hot direction are different icons (keys differ)
    fv.icons(toy, "relu2", np.eye(12)[:1], cache=IconCache(tmp_path), **FAST)
    assert counted == [4, 1]


def test_directions_objective_projects_each_item_on_its_row():
    act = tf.constant(np.random.default_rng(1).normal(size=(5, 4, 3, 6)), tf.float32)
    rows = np.random.default_rng(2).normal(size=(2, 6))
    obj = fv.directions("a", rows)
    ctx = Context(tf.zeros((5, 8, 8, 3)), {"a": act})
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    want = np.stack([(act.numpy()[k] @ unit[k % 2]).mean() for k in range(5)])
    np.testing.assert_allclose(obj.value(ctx).numpy(), want, rtol=1e-5)
    assert obj.batch == 2
    # the rows are parameters: other rows, same compiled structure
    assert fv.directions("a", rows[::-1]).structure() == obj.structure()
    for bad in ([1, 2], [[0, 0]], np.zeros((0, 3)), [[np.nan, 1]]):
        with pytest.raises(ValueError, match="direction"):
            fv.directions("a", bad)


def test_weights_digest_follows_the_weights():
    model = _model(seed=1)
    twin = _model(seed=2)
    twin.set_weights(model.get_weights())
    digest = fv.weights_digest(model)
    assert digest == fv.weights_digest(model) == fv.weights_digest(twin)
    assert probe(model).cache("weights_digest")["value"][2] == digest
    assert fv.weights_digest(_model(seed=3)) != digest
    original = model.get_weights()
    kernel = model.get_layer("conv2").kernel
    kernel.assign(kernel + 1e-3)
    changed = fv.weights_digest(model)
    assert changed != digest and probe(model).cache("weights_digest")["value"][2] == changed
    model.set_weights(original)
    assert fv.weights_digest(model) == digest


def test_changed_weights_render_anew(tmp_path, counted):
    model = _model(seed=4)
    cache = IconCache(tmp_path)
    fv.icons(model, "relu2", [2], cache=cache, **FAST)
    fv.icons(model, "relu2", [2], cache=cache, **FAST)
    assert counted == [1]
    bias = model.get_layer("conv2").bias
    bias.assign(bias + 0.5)
    fv.icons(model, "relu2", [2], cache=cache, **FAST)
    assert counted == [1, 1] and len(cache.entries()) == 2


def test_preprocess_joins_the_key_by_its_code_and_constants(toy, tmp_path, counted):
    key = importlib.import_module("nbviz.featvis.icons")._callable_key
    scale = 2.0
    same = [key(lambda x: x * 2.0 - 1.0), key(lambda x: x * 2.0 - 1.0)]
    assert same[0] == same[1] and isinstance(same[0], str)  # across sessions too: no ids
    assert key(lambda x: x * 3.0 - 1.0) != same[0]
    assert key(lambda x: x * scale) != key(lambda x: x * 2.0)  # closures by value
    assert key(None) is None

    class Opaque:
        def __call__(self, x):
            return x

    assert key(Opaque()) is False and key(lambda x, f=Opaque(): f(x)) is False
    cache = IconCache(tmp_path)
    fv.icons(toy, "relu2", [1], cache=cache, preprocess=Opaque(), **FAST)
    fv.icons(toy, "relu2", [1], cache=cache, preprocess=Opaque(), **FAST)
    assert len(counted) == 2 and cache.entries() == []  # no stable name: never cached


def test_stop_raises_with_what_there_is(toy):
    stop = fv.Stop()

    def callback(preview):
        if preview.step == 2:
            stop.set()

    with unchanged(toy), pytest.raises(fv.IconsStopped) as info:
        fv.icons(toy, "relu2", [0, 1], cache=False, callback=callback, stop=stop, **FAST)
    assert info.value.images.shape == (2, 32, 32, 3) and not info.value.done.any()


def test_stop_between_batches_keeps_the_finished_icons(toy, tmp_path):
    stop, cache = fv.Stop(), IconCache(tmp_path)

    def callback(preview):
        if preview.final:
            stop.set()  # after the first batch is finished (and cached)

    with pytest.raises(fv.IconsStopped) as info:
        fv.icons(toy, "relu2", [0, 1], cache=cache, batch_size=1, callback=callback, stop=stop,
                 **FAST)
    assert info.value.done.tolist() == [True, False] and len(cache.entries()) == 1
    stop.clear()
    again = fv.icons(toy, "relu2", [0], cache=cache, **FAST)
    np.testing.assert_array_equal(again[0], info.value.images[0])


# --------------------------------------------------------------------------- the cache


def _icon(value, size=8):
    return np.full((size, size, 3), value, np.uint8)


def test_size_bound_drops_least_recently_used(tmp_path):
    cache = IconCache(tmp_path, max_bytes=10 ** 9)
    rng = np.random.default_rng(0)
    now = time.time()
    for i in range(10):
        path = cache.put({"i": i}, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        os.utime(path, (now - 100 + i, now - 100 + i))
    sizes = [s for _, s, _ in cache.entries()]
    assert cache.get({"i": 0}) is not None  # a read makes icon 0 the most recent
    cache.max_bytes = sum(sizes) - sizes[0] - sizes[1] - 1  # room for at most 7
    assert cache.prune() == 3
    kept = {i for i in range(10) if cache.path({"i": i}).exists()}
    assert kept == {0, 4, 5, 6, 7, 8, 9}
    assert cache.size() <= cache.max_bytes
    cache.max_bytes = 0
    cache.prune()
    assert cache.entries() == [] and cache.get({"i": 9}) is None


def test_icons_call_keeps_the_bound(toy, tmp_path):
    cache = IconCache(tmp_path, max_bytes=1)
    out = fv.icons(toy, "conv1", [0, 1], cache=cache, **FAST)
    assert out.shape == (2, 32, 32, 3) and cache.size() <= 1


def test_reader_tolerates_missing_partial_and_foreign_files(tmp_path):
    cache = IconCache(tmp_path)
    assert cache.get("k") is None
    cache.put("k", _icon(200))
    path = cache.path("k")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a truncated PNG
    assert cache.get("k") is None
    path.write_bytes(b"not a png")
    assert cache.get("k") is None
    cache.put("k", _icon(100))
    assert cache.get("k", (8, 8, 3))[0, 0].tolist() == [100] * 3
    assert cache.get("k", (16, 16, 3)) is None  # another size: a miss


def test_stale_temporary_files_are_removed(tmp_path):
    cache = IconCache(tmp_path)
    stale, fresh = tmp_path / ".tmp-old.png", tmp_path / ".tmp-new.png"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    cache.prune()
    assert not stale.exists() and fresh.exists()


def test_two_processes_writing_one_icon_leave_a_valid_file(tmp_path):
    writer = textwrap.dedent(f"""
        import importlib.util, sys
        import numpy as np
        spec = importlib.util.spec_from_file_location("icon_cache", {str(ICON_CACHE)!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        cache = mod.IconCache({str(tmp_path)!r})
        value = int(sys.argv[1])
        for _ in range(150):
            cache.put({{"key": "same"}}, np.full((24, 24, 3), value, np.uint8))
            cache.prune()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(v)]) for v in (40, 220)]
    cache = IconCache(tmp_path)
    reads = 0
    while any(p.poll() is None for p in procs):
        found = cache.get({"key": "same"})
        if found is not None:  # a reader sees a whole icon of one writer, never a mix
            assert found.shape == (24, 24, 3) and len(np.unique(found)) == 1
            assert found[0, 0, 0] in (40, 220)
            reads += 1
    assert all(p.wait() == 0 for p in procs)
    found = cache.get({"key": "same"})
    assert found is not None and found[0, 0, 0] in (40, 220) and len(np.unique(found)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [cache.name({"key": "same"})]  # no temp left


def test_location_from_env_or_platform_cache_dir(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.setenv("NBVIZ_CACHE", str(tmp_path / "c"))
    assert default_root() == tmp_path / "c" / "icons" and IconCache().root == default_root()
    monkeypatch.delenv("NBVIZ_CACHE")
    assert default_root() == Path(platformdirs.user_cache_dir("nbviz", appauthor=False)) / "icons"
    monkeypatch.setenv("NBVIZ_ICON_CACHE_MB", "2")
    assert IconCache(tmp_path).max_bytes == 2 * 2 ** 20
    monkeypatch.setenv("NBVIZ_ICON_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="NBVIZ_ICON_CACHE_MB"):
        IconCache(tmp_path)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(channels=[12]), ValueError, ["channels", "12", "0..11"]),
    (dict(channels=[]), TypeError, ["channels"]),
    (dict(channels=["a"]), TypeError, ["channels"]),
    (dict(channels=np.ones((2, 5))), ValueError, ["channels", "n×12"]),
    (dict(channels=np.zeros((1, 12))), ValueError, ["all-zero"]),
    (dict(size=8), ValueError, ["size"]),
    (dict(size="big"), TypeError, ["size"]),
    (dict(steps=0), ValueError, ["steps"]),
    (dict(batch_size=0), ValueError, ["batch_size"]),
    (dict(cache="yes"), TypeError, ["cache"]),
    (dict(callback=3), TypeError, ["callback"]),
    (dict(layer="relu3"), ValueError, ["relu2"]),
    (dict(layer=None), ValueError, ["layer"]),
])
def test_bad_inputs_name_the_argument(toy, tmp_path, kwargs, error, words):
    args = dict(layer="relu2", channels=[1], cache=IconCache(tmp_path), size=32, steps=2)
    args.update(kwargs)
    with unchanged(toy), pytest.raises(error) as info:
        fv.icons(toy, args.pop("layer"), args.pop("channels"), **args)
    for word in words:
        assert word in str(info.value)
    assert not list(tmp_path.glob("*.png"))
