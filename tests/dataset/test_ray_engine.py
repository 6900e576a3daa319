"""engine="ray": a Ray Data actor pool gives the same store as the local engine.

Ray is started by this module (2 CPUs, no dashboard) and shut down at its end; if it cannot start
the tests fail (Ray is an installed test extra), they never skip.
"""

import contextlib
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import ray

from nbviz import demo
from nbviz.dataset import explain_dataset
from tests.dataset.conftest import write_pngs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _agent_ports_given(folder):
    """Ray's raylet waits about 15 s for its agents (Python processes it starts) to publish their
    ports in files, and aborts after that; on 2 cores shared with other jobs their start can take
    longer. Choosing the ports in advance (and telling the raylet the dashboard agent's, which
    Ray's Python side does not pass on) removes those waits. Scoped to ray.init, undone after."""
    import ray._private.parameter as parameter
    import ray._private.services as services

    ports = {name: _free_port() for name in ("metrics_agent_port", "metrics_export_port",
                                             "dashboard_agent_listen_port", "runtime_env_agent_port")}
    original_params, original_raylet = parameter.RayParams, services.RAYLET_EXECUTABLE

    class Params(original_params):
        def __init__(self, *args, **kwargs):
            for name, port in ports.items():
                if not kwargs.get(name):
                    kwargs[name] = port
            super().__init__(*args, **kwargs)

    raylet = Path(folder) / "raylet"
    raylet.write_text(f'#!/bin/sh\nexec "{original_raylet}" "$@" '
                      f'--dashboard_agent_listen_port={ports["dashboard_agent_listen_port"]}\n')
    raylet.chmod(0o755)
    parameter.RayParams, services.RAYLET_EXECUTABLE = Params, str(raylet)
    try:
        yield
    finally:
        parameter.RayParams, services.RAYLET_EXECUTABLE = original_params, original_raylet


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    os.environ.setdefault("RAY_gcs_server_request_timeout_seconds", "240")  # a slow first GCS answer
    with _agent_ports_given(tmp_path_factory.mktemp("ray")):
        for attempt in range(3):  # a loaded machine can still miss a startup deadline: retry
            try:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                break
            except Exception:
                ray.shutdown()
                if attempt == 2:
                    raise
    yield
    ray.shutdown()


def mass(model, image, attribution, *, target=None, preprocess=None):
    return float(np.asarray(attribution).sum())


@pytest.mark.slow
def test_ray_and_local_engines_write_the_same_store(ray_cluster, demo_model, scenes, tmp_path):
    src = tmp_path / "images"
    write_pngs(src, scenes.images[:40], scenes.labels[:40])
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    args = dict(methods=("gradcam", "saliency"), metrics=(mass,), batch_size=16, shard_size=16,
                class_names=demo.LABELS, progress=False)
    local = explain_dataset(demo_model, src, out=tmp_path / "local", **args)
    # the actor builds its own model from a factory; Ray stays up (it was running before the call)
    remote = explain_dataset(demo.load_model, src, out=tmp_path / "ray", engine="ray", num_actors=1, **args)
    assert ray.is_initialized()
    assert remote.manifest["runs"][-1]["engine"] == "ray"
    assert len(remote) == len(local) == 40
    assert remote.errors.to_pylist() == local.errors.to_pylist()
    assert remote.errors["id"].to_pylist() == ["broken.png"]
    for column in ("index", "id", "label", "prediction", "top_classes", "correct", "target", "label_name"):
        assert remote.table[column].to_pylist() == local.table[column].to_pylist(), column
    for column in ("score", "mass_gradcam", "mass_saliency"):
        np.testing.assert_allclose(remote.table[column].to_numpy(), local.table[column].to_numpy(), rtol=1e-4)
    for key in local.table["id"].to_pylist():
        for method in ("gradcam", "saliency"):
            a, b = remote.maps(key, method), local.maps(key, method)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))
        assert remote.thumbnail(key) == local.thumbnail(key)
