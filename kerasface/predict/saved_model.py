"""A SavedModel export in TF Serving's layout (models/NAME or a version folder), run in process."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerasface.faces.images import one_line
from kerasface.predict.model import (EXPORT_FORMAT_PREFIX, FLOAT_INPUT, Model, ModelError, ModelInfo,
                                     check_outputs, check_shape, read_description)


def resolve_saved_model(path: str | os.PathLike) -> Path:
    """models/NAME -> models/NAME/<highest integer version>; a version folder is returned as is."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such model folder or file")
    if not p.is_dir():
        raise ModelError(f"{p}: not a SavedModel folder, a .tflite file or a grpc:// / http:// URL")
    if (p / "saved_model.pb").is_file():
        return p
    versions = sorted((int(c.name), c) for c in p.iterdir()
                      if c.is_dir() and c.name.isdigit() and (c / "saved_model.pb").is_file())
    if not versions:
        raise ModelError(f"{p}: not a kerasface export (no saved_model.pb, and no integer version "
                         "folder holding one)")
    return versions[-1][1]


class SavedModelModel(Model):
    def __init__(self, path: str | os.PathLike, name: str | None = None):
        folder = resolve_saved_model(path)
        where = str(folder)
        export = folder / "export.json"
        if not export.is_file():
            raise ModelError(f"{where}: not a kerasface export (no export.json beside saved_model.pb)")
        desc, crop, size, channels, outputs = read_description(export, where, EXPORT_FORMAT_PREFIX)
        import tensorflow as tf  # noqa: F401  (after the cheap checks)

        from kerasface.export.saved_model import read_signature_defs

        try:
            sigs = read_signature_defs(folder)
        except Exception as exc:
            raise ModelError(f"{where}: cannot read saved_model.pb ({one_line(exc)})") from None
        sig = sigs.get("serving_default")
        # a photo export (kerasface.export.photo) takes the encoded photo and its landmarks
        self.photo = desc.get("input_mode") == "photo_landmarks"
        wanted = ("image_bytes", "landmarks") if self.photo else (FLOAT_INPUT,)
        if sig is None or any(k not in sig.inputs for k in wanted):
            raise ModelError(f"{where}: no serving_default signature with the input(s) {', '.join(wanted)}")
        if not self.photo:
            info = sig.inputs[FLOAT_INPUT]
            shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
            check_shape(shape, size, channels, where, "serving_default")
        check_outputs(sig.outputs.keys(), outputs, where)
        try:
            self._loaded = tf.saved_model.load(str(folder))
        except Exception as exc:
            raise ModelError(f"{where}: cannot load the SavedModel ({one_line(exc)})") from None
        self._fn = self._loaded.signatures["serving_default"]
        version = int(folder.name) if folder.name.isdigit() else desc.get("version")
        self.info = ModelInfo(name or str(desc.get("name") or folder.parent.name), where, "saved_model",
                              crop, size, channels, outputs, version)

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        if self.photo:
            raise ModelError(f"{self.info.source}: a photo export takes photos and landmarks (predict_faces), "
                             "not float crops")
        out = self._fn(**{FLOAT_INPUT: tf.constant(x, tf.float32)})
        return {k: v.numpy() for k, v in out.items()}

    def predict_faces(self, crops) -> dict[str, np.ndarray]:
        if not self.photo:
            return super().predict_faces(crops)
        import tensorflow as tf

        from kerasface.data.convert import encode

        # crop "original": each face's whole photo (lossless PNG) with its landmarks
        out = self._fn(image_bytes=tf.constant([encode(c.pixels, "png", 0) for c in crops]),
                       landmarks=tf.constant(np.stack([c.points for c in crops]), tf.float32))
        return {k: v.numpy() for k, v in out.items()}
