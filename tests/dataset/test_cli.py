"""The command line: a run SIGKILLed mid-way and restarted; safe_mode for Lambda layers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import nbviz
from nbviz import demo
from nbviz.dataset import explain_dataset
from nbviz.dataset.cli import main
from nbviz.dataset.modelfile import load_model_file
from nbviz.dataset.store import finished_shards, open_results

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_killed_run_restarts_to_exactly_n_rows(demo_model, scenes, tmp_path):
    n, shard = 48, 16
    images, labels = scenes.images[:n], scenes.labels[:n]
    np.savez(tmp_path / "scenes.npz", images=images, labels=labels)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nbviz.dataset", str(tmp_path / "scenes.npz"), "--model", str(demo.MODEL_PATH),
           "--methods", "gradcam,occlusion", "--out", str(out), "--shard-size", str(shard),
           "--batch-size", "8", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not finished_shards(out):
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "no shard finished within 240 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = finished_shards(out)
    assert 1 <= len(done) < n // shard, f"killed too late to test a restart: shards {sorted(done)} done"
    assert not (out / "results.parquet").exists()
    # restart with the same arguments (the CLI's call, in this process)
    r = explain_dataset(str(demo.MODEL_PATH), images, labels=labels, methods=["gradcam", "occlusion"],
                        out=out, shard_size=shard, batch_size=8, progress=False)
    assert r.manifest["runs"][-1]["shards_written"] == n // shard - len(done)
    assert len(r) == n and r.errors.num_rows == 0
    assert r.table["index"].to_pylist() == list(range(n))  # exactly N rows, no duplicates
    assert not list((out / "shards").glob(".*"))  # no temporary shard left
    # every map, those of the killed process included, equals a direct function call
    cam = np.concatenate([nbviz.gradcam(demo_model, images[i:i + 8]) for i in range(0, n, 8)])
    occ = np.concatenate([nbviz.occlusion(demo_model, images[i:i + 8]) for i in range(0, n, 8)])
    for i in range(n):
        np.testing.assert_allclose(r.maps(i, "gradcam"), cam[i], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(r.maps(i, "occlusion"), occ[i], rtol=1e-4,
                                   atol=1e-4 * float(np.abs(occ[i]).max()))
    assert (r.table["correct"].to_numpy() == (r.table["prediction"].to_numpy() == labels)).all()


def _lambda_model(path):
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale_pixels")(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    keras.Model(inp, out).save(path)


def test_safe_mode_names_the_lambda_layer(tmp_path, capsys):
    path = tmp_path / "lam.keras"
    _lambda_model(path)
    with pytest.raises(ValueError, match=r"layer 'scale_pixels' \(Lambda\) stores Python bytecode.*--unsafe"):
        load_model_file(path)
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3)).astype(np.uint8)
    np.save(tmp_path / "x.npy", images)
    code = main([str(tmp_path / "x.npy"), "--model", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "'scale_pixels' (Lambda)" in err and "--unsafe" in err
    assert not (tmp_path / "out" / "shards").exists()  # nothing was run
    code = main([str(tmp_path / "x.npy"), "--model", str(path), "--out", str(tmp_path / "out"), "--unsafe",
                 "--methods", "gradcam,saliency", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "6 images explained, 0 errors" in capsys.readouterr().out
    np.testing.assert_array_equal(open_results(tmp_path / "out").image(0), images[0])  # pixels kept
    code = main([str(tmp_path / "x.npy"), "--model", str(path), "--out", str(tmp_path / "bare"), "--unsafe",
                 "--no-images", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    with pytest.raises(KeyError, match="store_images=False"):
        open_results(tmp_path / "bare").image(0)
