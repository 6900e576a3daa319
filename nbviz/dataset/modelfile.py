"""Loading a saved Keras model for a dataset run, with Keras' ``safe_mode`` on by default.

A ``.keras`` file can hold Python bytecode: a ``Lambda`` layer's function (or another
``__lambda__`` value in a layer's config) is stored as marshalled code, and loading it runs that
code. ``safe_mode=True`` (Keras' default, and ours) refuses such files; the error below names
the layers that need ``safe_mode=False`` (``--unsafe`` on the command line), so the user can
decide whether they trust the file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

__all__ = ["load_model_file", "unsafe_layers"]


def unsafe_layers(path) -> list[tuple[str, str]]:
    """``[(layer name, class name)]`` of the layers in a ``.keras`` file whose config holds
    Python bytecode (a ``__lambda__`` value), outermost first."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError):
        return []
    found: list[tuple[str, str]] = []

    def visit(node, layer):
        if isinstance(node, dict):
            if "class_name" in node and isinstance(node.get("config"), dict) and "name" in node["config"] \
                    and node["class_name"] != "__lambda__":
                layer = (str(node["config"]["name"]), str(node["class_name"]))
            if node.get("class_name") == "__lambda__" and layer is not None and layer not in found:
                found.append(layer)
            for value in node.values():
                visit(value, layer)
        elif isinstance(node, list):
            for value in node:
                visit(value, layer)

    visit(config, None)
    return found


def load_model_file(path, *, safe_mode: bool = True):
    """``keras.saving.load_model(path, compile=False, safe_mode=safe_mode)`` with a clear error."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {str(path)!r} does not exist")
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ValueError(f"model file {str(path)!r}: give a Keras model saved with model.save('x.keras')")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except ValueError as exc:
        if not safe_mode or "safe_mode" not in str(exc):
            raise
        layers = unsafe_layers(path)
        names = ", ".join(f"{name!r} ({cls})" for name, cls in layers) or "a layer"
        raise ValueError(
            f"{path.name}: layer {names} stores Python bytecode (a lambda), and loading it would run "
            f"that code, which Keras' safe_mode refuses (it could do anything on this machine). If "
            f"you trust where the file comes from, load it with safe_mode=False (command line: "
            f"--unsafe); otherwise rebuild the layer as a registered custom layer."
        ) from exc
