"""The model interface every backend implements, and the checks of an export's description
(export.json / FILE.tflite.json) that every backend applies before it loads anything."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from kerasface.export.run import Task
from kerasface.faces.images import one_line
from kerasface.predict.geometry import model_inputs
from kerasface.tasks import HEAD_KINDS, head_kind

EXPORT_FORMAT_PREFIX = "kerasface-export/"
TFLITE_FORMAT_PREFIX = "kerasface-tflite/"
FLOAT_INPUT = "image"  # kerasface.export.graph.FLOAT_INPUT (not imported: it pulls TensorFlow in)


class ModelError(ValueError):
    """A --model that cannot be used; the message is one line and names the model."""


@dataclass(frozen=True)
class Output(Task):
    """An exported output as the exporter describes it (name, kind, labels), plus point names."""

    @property
    def point_names(self) -> list[str]:
        """Landmark outputs: point names from labels NAME_x, NAME_y (else p1, p2, ...)."""
        names = []
        for i in range(0, len(self.labels) - 1, 2):
            a, b = self.labels[i], self.labels[i + 1]
            if a.endswith("_x") and b.endswith("_y") and a[:-2] == b[:-2]:
                names.append(a[:-2])
            else:
                names.append(f"p{i // 2 + 1}")
        return names


def is_points(labels: Sequence[str]) -> bool:
    return bool(labels) and len(labels) % 2 == 0 and all(
        str(x).endswith("_x" if i % 2 == 0 else "_y") for i, x in enumerate(labels))


@dataclass
class ModelInfo:
    """What predict needs to know about one model (from export.json / FILE.tflite.json)."""

    name: str
    source: str
    kind: str  # saved_model | tflite | grpc | http
    crop: str
    input_size: tuple[int, int]  # (height, width) of the float input
    channels: int
    outputs: tuple[Output, ...]
    version: int | None = None


class Model:
    """One exported model: `predict(float32 [B, H, W, C] in [0, 255]) -> {output: [B, n]}`."""

    info: ModelInfo
    #: landmark outputs of `predict_crops` are in pixels of the float "input" or of the "crop"
    landmarks_in = "input"

    @property
    def name(self) -> str:
        return self.info.name

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_crops(self, crops: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """uint8 crops (the model's crop scheme) -> outputs, preprocessed as in training."""
        return self.predict(model_inputs(crops, self.info.input_size, self.info.channels))

    def predict_faces(self, crops: Sequence) -> dict[str, np.ndarray]:
        """Faces cut by the model's crop scheme (kerasface.predict.geometry.Crop) -> outputs."""
        return self.predict_crops([c.pixels for c in crops])

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        i = self.info
        return (f"<{type(self).__name__} {i.name!r} from {i.source}: crop {i.crop}, input "
                f"{i.input_size[0]}x{i.input_size[1]}x{i.channels}, "
                f"outputs {', '.join(o.name for o in i.outputs)}>")


def check_crop(crop: str | None, where: str) -> str:
    from kerasface.faces.crops import CROPS

    if not crop:
        raise ModelError(f"{where}: no crop scheme in the model's description")
    if crop not in CROPS:
        raise ModelError(f"{where}: crop scheme {crop!r} is not registered "
                         f"(known: {', '.join(CROPS.names())})")
    return crop


def outputs_from_description(desc: dict, where: str) -> tuple[Output, ...]:
    outs = desc.get("outputs")
    labels = desc.get("labels") or {}
    if not isinstance(outs, dict) or not outs:
        raise ModelError(f"{where}: no outputs described (field 'outputs')")
    result = []
    for name, entry in outs.items():
        names = tuple(str(x) for x in (entry.get("labels") or labels.get(name) or ()))
        kind = entry.get("kind") or ("landmarks" if is_points(names) else "classification")
        if kind not in HEAD_KINDS:
            raise ModelError(f"{where}: output {name!r} has kind {kind!r}; known: {', '.join(HEAD_KINDS.names())}")
        if not names and not head_kind(kind).needs_features:
            raise ModelError(f"{where}: output {name!r} has no labels")
        result.append(Output(str(name), kind, names))
    return tuple(result)


def read_json(path: Path, where: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{where}: cannot read {path.name} ({one_line(exc)})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{where}: {path.name} is not a JSON object")
    return data


def input_geometry(desc: dict, where: str) -> tuple[tuple[int, int], int]:
    try:
        size = desc["input_size"]
        size = (int(size[0]), int(size[1]))
        channels = int(desc["channels"])
    except (KeyError, TypeError, ValueError, IndexError):
        raise ModelError(f"{where}: fields input_size [h, w] and channels are missing or invalid") from None
    if channels not in (1, 3):
        raise ModelError(f"{where}: channels must be 1 or 3, got {channels}")
    return size, channels


def check_shape(shape, size, channels, where: str, what: str) -> None:
    want = [size[0], size[1], channels]
    got = [int(d) for d in list(shape)[1:]] if shape is not None else None
    if got is None or len(got) != 3 or any(g not in (w, -1) for g, w in zip(got, want)):
        raise ModelError(f"{where}: {what} input shape is {list(shape) if shape is not None else None}, "
                         f"the description says [batch, {size[0]}, {size[1]}, {channels}]; "
                         "inputs do not match")


def check_outputs(available: Iterable[str], outputs: Sequence[Output], where: str) -> None:
    available = set(available)
    missing = [o.name for o in outputs if o.name not in available]
    if missing:
        raise ModelError(f"{where}: outputs {', '.join(missing)} are described but not in the model "
                         f"(it has {', '.join(sorted(available)) or 'none'})")


def read_description(path: Path, where: str, format_prefix: str):
    """An export's description file -> (description, crop, input size, channels, outputs), checked."""
    desc = read_json(path, where)
    if not str(desc.get("format", "")).startswith(format_prefix):
        raise ModelError(f"{where}: {path.name} has format {desc.get('format')!r}, expected {format_prefix}N")
    crop = check_crop(desc.get("crop"), where)
    size, channels = input_geometry(desc, where)
    return desc, crop, size, channels, outputs_from_description(desc, where)
