"""Photos in, faces and attributes out: detect once, crop per model, predict, report and draw.

    python -m kerasface.predict PATH... --model models/NAME [--model ...]
        [--format jsonl|csv] [--out FILE] [--annotate DIR] [--face all|largest|centre]
        [--batch-size 32] [--models-dir DIR] [--min-face-size N] [--threshold T] [--max-side N]
        [--threads N] [--strict] [--no-progress]

PATH is an image file, a folder (searched recursively for image files) or a glob ("photos/*.jpg",
"photos/**/*.png"; quote it so that the shell leaves it alone). A file named explicitly is read
whatever its extension, so a bad file is reported rather than skipped.

MODEL is one of
  models/NAME                 a SavedModel folder in TF Serving's layout: its highest integer
                              version folder is used; a version folder (models/NAME/3) works too
  FILE.tflite                 a TFLite export, described by FILE.tflite.json beside it
  grpc://host:port/NAME       a TF Serving compatible server (TF Serving or kerasface.serving);
  http://host:port/NAME       .../NAME/versions/N pins a version. The crop scheme comes from the
                              export.json of the served version, looked up under --models-dir
                              (default ./models: DIR/NAME/<version>/export.json), or is given in
                              the URL: grpc://host:8500/faces?crop=nose_centred_150
  ALIAS=MODEL                 any of the above, reported under the name ALIAS
A model is reported under its name: ALIAS, else export.json's "name", FILE for FILE.tflite, NAME
for a URL; a repeated name gets its kind appended (faces, faces-tflite, faces-grpc, faces-http).
gRPC sends float crops to serving_default; REST sends lossless PNG crops to predict_images (JSON
floats would be ~1 MB a face), which the graph decodes and resizes exactly as training did.
Each model's crop scheme, input size, colour mode and labels come from the description exported
with it (export.json or FILE.tflite.json), so every model sees the crop it was trained on. Faces
are detected once (MTCNN, kerasface.faces) and shared by all models; each crop scheme is cut once
and shared by the models that read it. A model that is not a kerasface export, or whose inputs do
not match its description, stops the run at start with one line naming it (exit status 2).

Output schema (JSON lines, the default: one object per image, on stdout or in --out FILE)
    {"path": "photos/a.jpg", "width": 640, "height": 480,
     "faces": [
       {"index": 0,                              # rank among ALL detected faces (best score = 0)
        "box": [x, y, width, height],            # image pixels, pixel centres at integers
        "score": 0.9993,                         # detector confidence
        "landmarks": {"left_eye": [x, y], "right_eye": [x, y], "nose": [x, y],
                      "mouth_left": [x, y], "mouth_right": [x, y]},   # detector's, image pixels
        "attributes": {
          "MODEL": {                             # one entry per --model (its name or ALIAS)
            "smile": {"label": "smiling", "score": 0.91,           # classification output
                      "probabilities": {"not_smiling": 0.09, "smiling": 0.91}},
            "landmarks": {"points": {"left_eye": [x, y], ...}}     # landmark output, mapped
          }}}]}                                                      #   back to image pixels
  An image with no face: "faces": [] (not a failure). An image that cannot be used (missing,
  unreadable, not an image, truncated, too large, or a model error on it):
    {"path": "photos/bad.jpg", "error": "photos/bad.jpg: truncated or corrupt image file (...)"}
  "left"/"right" are the image's left and right, as MTCNN and MTFL name them. Plain JSON numbers
  only: boxes and points rounded to 0.01 px, probabilities to 1e-6.

CSV (--format csv): one row per reported face (an image with no face or with an error still gets
one row, with empty face columns). Columns, in this order:
    path, width, height, face, box_x, box_y, box_w, box_h, score,
    left_eye_x, left_eye_y, ..., mouth_right_x, mouth_right_y,
    per model and attribute:  MODEL.ATTR (the label), MODEL.ATTR.LABEL (each probability),
                              landmark outputs: MODEL.ATTR.POINT_x, MODEL.ATTR.POINT_y,
    error
`results_table(results)` returns these rows as a list of dicts (pandas: `pd.DataFrame(rows)`,
or `to_dataframe(results)` when pandas is installed).

--annotate DIR writes every readable image with each reported face's box, detector landmarks and
predicted labels drawn (one colour per attribute value; line widths and font scale with the image;
predicted landmark outputs as crosses), keeping the folder structure below each PATH.

Exit status: 0 when every image was read and predicted (images without faces included), 1 when
some failed (they are in the output with "error" and in the summary), 2 for a bad model or bad
arguments. A progress bar (tqdm) and a closing summary (images, faces, failures, images/s) go to
stderr.

Python API:
    import kerasface
    results = kerasface.analyze("photos/", models=["models/faces", "models/faces.tflite"])
    results[0].faces[0].attributes["faces"]["smile"].label
    [r.to_dict() for r in results]                       # the JSON-lines objects above
    rows = kerasface.predict.results_table(results)       # the CSV rows above

For repeated calls, load the models once: `models = load_models([...])`, then
`analyze(images, models=models)`, or keep a `Predictor`.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from kerasface.export.run import Task
from kerasface.faces.align import LANDMARK_NAMES

DEFAULT_BATCH_SIZE = 32
FACE_RULES = ("all", "largest", "centre")
EXPORT_FORMAT_PREFIX = "kerasface-export/"
TFLITE_FORMAT_PREFIX = "kerasface-tflite/"
FLOAT_INPUT = "image"  # kerasface.export.graph.FLOAT_INPUT (not imported: it pulls TensorFlow in)
_GLOB_CHARS = set("*?[")


class ModelError(ValueError):
    """A --model that cannot be used; the message is one line and names the model."""


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _r(value: float, decimals: int) -> float:
    v = round(float(value), decimals)
    return v if math.isfinite(v) else None  # type: ignore[return-value]


# ================================================================================================
# Results (typed, JSON-safe)
# ================================================================================================


@dataclass
class AttributeResult:
    """A classification output: the most probable label, its probability, all probabilities."""

    label: str
    score: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": _r(self.score, 6),
            "probabilities": {k: _r(v, 6) for k, v in self.probabilities.items()},
        }


@dataclass
class LandmarksResult:
    """A landmark output, mapped back to image pixels: point name -> (x, y)."""

    points: dict[str, tuple[float, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"points": {k: [_r(x, 2), _r(y, 2)] for k, (x, y) in self.points.items()}}


@dataclass
class FaceResult:
    index: int  # rank among all faces detected in the image (0 = best score)
    box: tuple[float, float, float, float]  # x, y, width, height
    score: float
    landmarks: dict[str, tuple[float, float]]  # the detector's five points
    attributes: dict[str, dict[str, AttributeResult | LandmarksResult]] = field(default_factory=dict)

    @property
    def face(self):
        """The detection as a `kerasface.faces.Face`."""
        from kerasface.faces.detect import Face

        return Face(box=tuple(self.box), score=self.score,
                    landmarks=tuple(tuple(self.landmarks[n]) for n in LANDMARK_NAMES))

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": int(self.index),
            "box": [_r(v, 2) for v in self.box],
            "score": _r(self.score, 6),
            "landmarks": {k: [_r(x, 2), _r(y, 2)] for k, (x, y) in self.landmarks.items()},
            "attributes": {m: {a: r.to_dict() for a, r in attrs.items()}
                           for m, attrs in self.attributes.items()},
        }


@dataclass
class ImageResult:
    path: str  # the file as given/found; "<array N>" / "<bytes N>" for in-memory images
    width: int | None = None
    height: int | None = None
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "width": self.width, "height": self.height,
                "faces": [f.to_dict() for f in self.faces]}


@dataclass
class Summary:
    images: int = 0
    faces: int = 0
    failed: int = 0
    no_face: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: ImageResult) -> None:
        self.images += 1
        if result.error is not None:
            self.failed += 1
        else:
            self.faces += len(result.faces)
            self.no_face += not result.faces

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "faces": self.faces, "failed": self.failed,
                "no_face": self.no_face, "seconds": round(self.seconds, 3),
                "images_per_second": round(self.images_per_second, 3)}

    def __str__(self) -> str:
        return (f"{self.images} image(s), {self.faces} face(s), {self.failed} failed, "
                f"{self.no_face} without a face; {self.images_per_second:.2f} images/s "
                f"({self.seconds:.1f} s)")


# ================================================================================================
# Models: SavedModel, TFLite, remote (gRPC / REST)
# ================================================================================================


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


def _is_points(labels: Sequence[str]) -> bool:
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

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        i = self.info
        return (f"<{type(self).__name__} {i.name!r} from {i.source}: crop {i.crop}, input "
                f"{i.input_size[0]}x{i.input_size[1]}x{i.channels}, "
                f"outputs {', '.join(o.name for o in i.outputs)}>")


def _check_crop(crop: str | None, where: str) -> str:
    from kerasface.faces.crops import CROPS

    if not crop:
        raise ModelError(f"{where}: no crop scheme in the model's description")
    if crop not in CROPS:
        raise ModelError(f"{where}: crop scheme {crop!r} is not registered "
                         f"(known: {', '.join(CROPS.names())})")
    return crop


def _outputs_from_description(desc: dict, where: str) -> tuple[Output, ...]:
    outs = desc.get("outputs")
    labels = desc.get("labels") or {}
    if not isinstance(outs, dict) or not outs:
        raise ModelError(f"{where}: no outputs described (field 'outputs')")
    result = []
    for name, entry in outs.items():
        names = tuple(str(x) for x in (entry.get("labels") or labels.get(name) or ()))
        kind = entry.get("kind") or ("landmarks" if _is_points(names) else "classification")
        if kind not in ("classification", "landmarks"):
            raise ModelError(f"{where}: output {name!r} has kind {kind!r}")
        if not names:
            raise ModelError(f"{where}: output {name!r} has no labels")
        result.append(Output(str(name), kind, names))
    return tuple(result)


def _read_json(path: Path, where: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{where}: cannot read {path.name} ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{where}: {path.name} is not a JSON object")
    return data


def _geometry(desc: dict, where: str) -> tuple[tuple[int, int], int]:
    try:
        size = desc["input_size"]
        size = (int(size[0]), int(size[1]))
        channels = int(desc["channels"])
    except (KeyError, TypeError, ValueError, IndexError):
        raise ModelError(f"{where}: fields input_size [h, w] and channels are missing or invalid") from None
    if channels not in (1, 3):
        raise ModelError(f"{where}: channels must be 1 or 3, got {channels}")
    return size, channels


def _check_shape(shape, size, channels, where: str, what: str) -> None:
    want = [size[0], size[1], channels]
    got = [int(d) for d in list(shape)[1:]] if shape is not None else None
    if got is None or len(got) != 3 or any(g not in (w, -1) for g, w in zip(got, want)):
        raise ModelError(f"{where}: {what} input shape is {list(shape) if shape is not None else None}, "
                         f"the description says [batch, {size[0]}, {size[1]}, {channels}]; "
                         "inputs do not match")


def _check_outputs(available: Iterable[str], outputs: Sequence[Output], where: str) -> None:
    available = set(available)
    missing = [o.name for o in outputs if o.name not in available]
    if missing:
        raise ModelError(f"{where}: outputs {', '.join(missing)} are described but not in the model "
                         f"(it has {', '.join(sorted(available)) or 'none'})")


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


def _read_description(path: Path, where: str, format_prefix: str):
    """An export's description file -> (description, crop, input size, channels, outputs), checked."""
    desc = _read_json(path, where)
    if not str(desc.get("format", "")).startswith(format_prefix):
        raise ModelError(f"{where}: {path.name} has format {desc.get('format')!r}, expected {format_prefix}N")
    crop = _check_crop(desc.get("crop"), where)
    size, channels = _geometry(desc, where)
    return desc, crop, size, channels, _outputs_from_description(desc, where)


class SavedModelModel(Model):
    def __init__(self, path: str | os.PathLike, name: str | None = None):
        folder = resolve_saved_model(path)
        where = str(folder)
        export = folder / "export.json"
        if not export.is_file():
            raise ModelError(f"{where}: not a kerasface export (no export.json beside saved_model.pb)")
        desc, crop, size, channels, outputs = _read_description(export, where, EXPORT_FORMAT_PREFIX)
        import tensorflow as tf  # noqa: F401  (after the cheap checks)

        from kerasface.export.saved_model import read_signature_defs

        try:
            sigs = read_signature_defs(folder)
        except Exception as exc:
            raise ModelError(f"{where}: cannot read saved_model.pb ({_one_line(exc)})") from None
        sig = sigs.get("serving_default")
        if sig is None or FLOAT_INPUT not in sig.inputs:
            raise ModelError(f"{where}: no serving_default signature with a float {FLOAT_INPUT!r} input")
        info = sig.inputs[FLOAT_INPUT]
        shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
        _check_shape(shape, size, channels, where, "serving_default")
        _check_outputs(sig.outputs.keys(), outputs, where)
        try:
            self._loaded = tf.saved_model.load(str(folder))
        except Exception as exc:
            raise ModelError(f"{where}: cannot load the SavedModel ({_one_line(exc)})") from None
        self._fn = self._loaded.signatures["serving_default"]
        version = int(folder.name) if folder.name.isdigit() else desc.get("version")
        self.info = ModelInfo(name or str(desc.get("name") or folder.parent.name), where, "saved_model",
                              crop, size, channels, outputs, version)

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        out = self._fn(**{FLOAT_INPUT: tf.constant(x, tf.float32)})
        return {k: v.numpy() for k, v in out.items()}


class TFLiteModel(Model):
    def __init__(self, path: str | os.PathLike, name: str | None = None, threads: int | None = None):
        from kerasface.export.tflite import sidecar_path

        file = Path(path)
        where = str(file)
        if not file.is_file():
            raise ModelError(f"{where}: no such .tflite file")
        side = sidecar_path(file)
        if not side.is_file():
            raise ModelError(f"{where}: not a kerasface export (no {side.name} beside it)")
        desc, crop, size, channels, outputs = _read_description(side, where, TFLITE_FORMAT_PREFIX)
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interp = Interpreter(model_path=str(file), num_threads=threads or min(4, os.cpu_count() or 1))
            runner_sigs = self._interp.get_signature_list()
        except Exception as exc:
            raise ModelError(f"{where}: cannot load the TFLite model ({_one_line(exc)})") from None
        sig = desc.get("signature") or "serving_default"
        if sig not in runner_sigs or FLOAT_INPUT not in runner_sigs[sig]["inputs"]:
            raise ModelError(f"{where}: no {sig} signature with an {FLOAT_INPUT!r} input "
                             f"(signatures: {', '.join(runner_sigs) or 'none'})")
        self._sig = sig
        runner = self._interp.get_signature_runner(sig)
        detail = runner.get_input_details()[FLOAT_INPUT]
        _check_shape(detail["shape"], size, channels, where, "TFLite")
        _check_outputs(runner_sigs[sig]["outputs"], outputs, where)
        self._signature_shape = detail.get("shape_signature")
        self._batch = 1
        self._runner = runner
        default = file.name[: -len(".tflite")] if file.name.endswith(".tflite") else file.stem
        self.info = ModelInfo(name or default, where, "tflite", crop, size, channels, outputs)

    def _resize(self, batch: int) -> None:
        if batch == self._batch:
            return
        index = self._runner.get_input_details()[FLOAT_INPUT]["index"]
        h, w = self.info.input_size
        self._interp.resize_tensor_input(index, [batch, h, w, self.info.channels], strict=True)
        self._interp.allocate_tensors()
        self._runner = self._interp.get_signature_runner(self._sig)
        self._batch = batch

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, np.float32)
        dynamic = self._signature_shape is not None and int(self._signature_shape[0]) == -1
        if dynamic:
            try:
                self._resize(len(x))
                return {k: np.array(v) for k, v in self._runner(**{FLOAT_INPUT: x}).items()}
            except (RuntimeError, ValueError):
                self._signature_shape = None  # the model does not take batches: one by one
                self._resize(1)
        self._resize(1)
        outs: dict[str, list] = {}
        for i in range(len(x)):
            for k, v in self._runner(**{FLOAT_INPUT: x[i : i + 1]}).items():
                outs.setdefault(k, []).append(np.array(v[0]))
        return {k: np.stack(v) for k, v in outs.items()}


def _served_version(client) -> int | None:
    try:
        status = client.status()
    except Exception:
        return None
    versions = [int(s["version"]) for s in status if s.get("state") == "AVAILABLE"]
    return max(versions) if versions else None


class RemoteModel(Model):
    """A model behind TF Serving's Predict API (gRPC or REST), serving_default with float crops."""

    def __init__(self, url: str, name: str | None = None, models_dirs: Sequence[str | os.PathLike] = ("models",),
                 timeout: float = 60.0):
        from urllib.parse import parse_qs, urlparse

        from kerasface.serving.client import ClientError, connect, parse_url

        where = url
        try:
            scheme, _, model_name, pinned, _ = parse_url(url)
        except ValueError as exc:
            raise ModelError(_one_line(exc)) from None
        query = parse_qs(urlparse(url).query)
        client_url = url.split("?", 1)[0]
        self._client = connect(client_url, timeout=timeout)
        try:
            metadata = self._client.metadata()
            served = self._client.labels()
        except ClientError as exc:
            self._client.close()
            if exc.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise ModelError(f"{where}: cannot reach the server ({_one_line(exc)})") from None
            raise ModelError(f"{where}: the server answered {_one_line(exc)}") from None
        except Exception as exc:  # connection refused, DNS, timeouts, bad JSON
            self._client.close()
            raise ModelError(f"{where}: cannot reach the model ({type(exc).__name__}: "
                             f"{_one_line(exc) or 'no answer'})") from None
        try:
            sig = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
            tensor = sig["inputs"][FLOAT_INPUT]
            shape = [int(d.get("size", -1)) for d in tensor["tensor_shape"]["dim"]]
            output_names = list(sig.get("outputs", {}))
            signatures = metadata["metadata"]["signature_def"]["signature_def"]
        except (KeyError, TypeError, ValueError):
            self._client.close()
            raise ModelError(f"{where}: no serving_default signature with a float {FLOAT_INPUT!r} "
                             "input; not a kerasface export") from None
        version = pinned if pinned is not None else _served_version(self._client)
        desc, desc_where = self._find_description(model_name, version, models_dirs)
        crop = (query.get("crop") or [None])[0]
        if desc is not None:
            crop = crop or desc.get("crop")
            size, channels = _geometry(desc, f"{where} ({desc_where})")
            outputs = _outputs_from_description(desc, f"{where} ({desc_where})")
            for o in outputs:
                if o.name in served and tuple(served[o.name]) != o.labels:
                    self._client.close()
                    raise ModelError(f"{where}: the server's labels for {o.name} {served[o.name]} differ from "
                                     f"{desc_where} {list(o.labels)}; is it the same model version?")
        elif crop:
            if len(shape) != 4:
                self._client.close()
                raise ModelError(f"{where}: serving_default input shape {shape}: expected [batch, h, w, c]")
            size, channels = (shape[1], shape[2]), shape[3]
            outputs = tuple(Output(k, "landmarks" if _is_points(v) else "classification", tuple(v))
                            for k, v in served.items())
        else:
            self._client.close()
            dirs = ", ".join(str(d) for d in models_dirs) or "(none)"
            raise ModelError(f"{where}: crop scheme unknown: no {model_name}/<version>/export.json under "
                             f"--models-dir {dirs}; give the folder the server serves with --models-dir, "
                             f"or the scheme in the URL ({client_url}?crop=SCHEME)")
        crop = _check_crop(crop, where)
        try:
            _check_shape(shape, size, channels, where, "serving_default")
            _check_outputs(output_names, outputs, where)
        except ModelError:
            self._client.close()
            raise
        self.info = ModelInfo(name or model_name, where, scheme if scheme != "https" else "http", crop, size,
                              channels, outputs, version)
        # Over REST, float crops would travel as JSON numbers (~1 MB a face); send lossless PNG
        # crops to predict_images instead: the graph decodes and resizes them with the training
        # pipeline's own function, and its landmarks are then in crop pixels.
        self._bytes = scheme != "grpc" and "image_bytes" in (signatures.get("predict_images") or {}).get(
            "inputs", {})
        if self._bytes:
            self.landmarks_in = "crop"

    @staticmethod
    def _find_description(name: str, version: int | None, dirs) -> tuple[dict | None, str]:
        for d in dirs:
            base = Path(d) / name
            if not base.is_dir():
                continue
            candidates = [base / str(version)] if version is not None else []
            if version is None:
                nums = sorted(int(c.name) for c in base.iterdir() if c.is_dir() and c.name.isdigit())
                candidates = [base / str(n) for n in reversed(nums)]
            for c in candidates:
                if (c / "export.json").is_file():
                    return _read_json(c / "export.json", str(c)), str(c / "export.json")
        return None, ""

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out = self._client.predict({FLOAT_INPUT: np.asarray(x, np.float32)}, "serving_default")
        return {k: np.asarray(v, np.float32) for k, v in out.items()}

    def predict_crops(self, crops: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        if not self._bytes:
            return super().predict_crops(crops)
        from PIL import Image

        encoded = []
        for crop in crops:
            buf = io.BytesIO()
            Image.fromarray(crop[..., 0] if crop.shape[-1] == 1 else crop).save(buf, format="PNG", compress_level=1)
            encoded.append(buf.getvalue())
        out = self._client.predict({"image_bytes": np.array(encoded, dtype=object)}, "predict_images")
        return {k: np.asarray(v, np.float32) for k, v in out.items()}

    def close(self) -> None:
        self._client.close()


def _split_alias(spec: str) -> tuple[str | None, str]:
    head, sep, tail = spec.partition("=")
    if sep and head and tail and all(c.isalnum() or c in "_-" for c in head):
        return head, tail
    return None, spec


def load_model(spec: str | os.PathLike | Model, models_dirs: Sequence[str | os.PathLike] | None = None,
               threads: int | None = None) -> Model:
    """One --model argument -> a loaded `Model` (raises ModelError naming it)."""
    if isinstance(spec, Model):
        return spec
    alias, target = _split_alias(os.fspath(spec))
    if target.startswith(("grpc://", "http://", "https://")):
        return RemoteModel(target, alias, models_dirs if models_dirs is not None else ("models",))
    if target.endswith(".tflite") or (Path(target).is_file() and Path(target + ".json").is_file()):
        return TFLiteModel(target, alias, threads)
    return SavedModelModel(target, alias)


def load_models(specs: Sequence[str | os.PathLike | Model] | str | os.PathLike | Model,
                models_dirs: Sequence[str | os.PathLike] | None = None, threads: int | None = None) -> list[Model]:
    """Load every model; names are made unique (NAME, NAME-tflite, NAME-grpc, NAME-2, ...).
    An empty list is allowed (detection only: faces without attributes)."""
    if isinstance(specs, (str, os.PathLike, Model)):
        specs = [specs]
    models: list[Model] = []
    try:
        for spec in specs:
            models.append(load_model(spec, models_dirs, threads))
    except BaseException:
        for m in models:
            m.close()
        raise
    seen: set[str] = set()
    for m in models:
        name = m.info.name
        if name in seen:
            name = f"{m.info.name}-{m.info.kind.replace('_', '')}"
            k = 2
            while name in seen:
                name, k = f"{m.info.name}-{k}", k + 1
            m.info.name = name
        seen.add(name)
    return models


# ================================================================================================
# Inputs
# ================================================================================================


@dataclass
class Item:
    """One image to analyse: a source (path, bytes or array), its reported name, where to draw it."""

    source: Any
    name: str
    rel: Path  # relative output name for --annotate


def expand_inputs(inputs) -> list[Item]:
    """Paths (files, folders searched recursively, globs), bytes and arrays -> Items in order."""
    from kerasface.faces.images import IMAGE_EXTENSIONS, find_images

    if isinstance(inputs, (str, os.PathLike, bytes, bytearray, np.ndarray)) or hasattr(inputs, "numpy"):
        inputs = [inputs]
    items: list[Item] = []
    for k, inp in enumerate(inputs):
        if isinstance(inp, (bytes, bytearray)):
            items.append(Item(bytes(inp), f"<bytes {k}>", Path(f"image_{k}.png")))
            continue
        if not isinstance(inp, (str, os.PathLike)):
            items.append(Item(inp, f"<array {k}>", Path(f"image_{k}.png")))
            continue
        text = os.fspath(inp)
        path = Path(text)
        if path.is_dir():
            items.extend(Item(f, str(f), f.relative_to(path)) for f in find_images([path]))
        elif not path.exists() and _GLOB_CHARS & set(text):
            # a pattern ending in a wildcard ("dir/*", "dir/**") takes image files only
            wild_tail = Path(text).name in ("*", "**")
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))
                       if Path(m).is_file() and (not wild_tail or Path(m).suffix.lower() in IMAGE_EXTENSIONS)]
            if not matches:
                items.append(Item(path, text, Path(path.name)))  # reported: no such file
            # annotated copies keep the structure below the pattern's fixed leading folders
            fixed = Path(*_leading_fixed(Path(text).parts))
            for m in matches:
                try:
                    rel = m.relative_to(fixed)
                except ValueError:
                    rel = Path(m.name)
                items.append(Item(m, str(m), rel))
        else:
            items.append(Item(path, text, Path(path.name)))
    return items


def _leading_fixed(parts: Sequence[str]) -> list[str]:
    fixed = []
    for part in parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return fixed or ["."]


def _annotated_name(rel: Path) -> Path:
    if rel.suffix.lower() in (".jpg", ".jpeg", ".png"):
        return rel
    return rel.with_name(rel.name + ".png")


def _load(item: Item) -> np.ndarray:
    from kerasface.faces.images import load_image, to_rgb_uint8

    if isinstance(item.source, (str, os.PathLike, bytes)):
        return load_image(item.source)
    return to_rgb_uint8(item.source, item.name)


# ================================================================================================
# Crops and model inputs
# ================================================================================================


def _fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 affine map taking src points to dst points (least squares; exact for crop maps)."""
    a = np.hstack([np.asarray(src, np.float64), np.ones((len(src), 1))])
    m, *_ = np.linalg.lstsq(a, np.asarray(dst, np.float64), rcond=None)
    return m.T  # 2x3


def _invert_affine(m: np.ndarray) -> np.ndarray:
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


@dataclass
class _Crop:
    pixels: np.ndarray  # uint8 H x W x C
    to_image: np.ndarray  # 2x3: crop pixels -> image pixels


def _cut(image: np.ndarray, points: np.ndarray, scheme: str) -> _Crop:
    from kerasface.faces.crops import apply_crop

    pixels, in_crop = apply_crop(scheme, image, points)
    forward = _fit_affine(points, in_crop)
    return _Crop(pixels, _invert_affine(forward))


def model_inputs(crops: Sequence[np.ndarray], size: tuple[int, int], channels: int) -> np.ndarray:
    """uint8 crops -> float32 [B, h, w, channels] in [0, 255], as the training pipeline makes them:
    tf.image.rgb_to_grayscale for grayscale models, then tf.image.resize(bilinear, antialias=False)
    (kerasface.data.pipeline.preprocess_image after decoding)."""
    import tensorflow as tf

    def convert(batch: np.ndarray) -> np.ndarray:
        x = tf.convert_to_tensor(batch.astype(np.float32))
        if x.shape[-1] == 3 and channels == 1:
            x = tf.image.rgb_to_grayscale(x)
        elif x.shape[-1] == 1 and channels == 3:
            x = tf.image.grayscale_to_rgb(x)
        if tuple(x.shape[1:3]) != tuple(size):
            x = tf.image.resize(x, size, method="bilinear", antialias=False)
        return x.numpy()

    shapes = {c.shape for c in crops}
    if len(shapes) == 1:
        return convert(np.stack(crops))
    return np.concatenate([convert(c[None]) for c in crops])


def _interpret(model: Model, outputs: dict[str, np.ndarray], row: int, crop: _Crop,
               crop_hw: tuple[int, int]) -> dict[str, AttributeResult | LandmarksResult]:
    result: dict[str, AttributeResult | LandmarksResult] = {}
    h_in, w_in = model.info.input_size
    for out in model.info.outputs:
        values = np.asarray(outputs[out.name][row], np.float64).reshape(-1)
        if out.kind == "landmarks":
            pts = values[: 2 * (len(values) // 2)].reshape(-1, 2)
            if model.landmarks_in == "input":
                pts = pts * np.array([crop_hw[1] / w_in, crop_hw[0] / h_in])  # input -> crop pixels
            img = pts @ crop.to_image[:, :2].T + crop.to_image[:, 2]
            result[out.name] = LandmarksResult(
                {n: (float(x), float(y)) for n, (x, y) in zip(out.point_names, img)})
        else:
            k = int(np.argmax(values))
            labels = out.labels if len(out.labels) == len(values) else tuple(str(i) for i in range(len(values)))
            result[out.name] = AttributeResult(labels[k], float(values[k]),
                                               {lab: float(p) for lab, p in zip(labels, values)})
    return result


# ================================================================================================
# Drawing
# ================================================================================================

#: Distinct colours (RGB) for attribute values. Value v of the a-th distinct classification
#: attribute (in model order, by attribute name) gets PALETTE[(first colour of a) + v]: one value
#: has one colour whichever model predicted it, and the values of one legend differ.
#: Bright colours, readable on the dark label background; green is left to the box.
PALETTE = ((255, 220, 0), (127, 219, 255), (255, 133, 27), (255, 110, 199), (190, 160, 255),
           (255, 90, 90), (57, 204, 204), (255, 255, 160), (160, 255, 200), (255, 180, 140),
           (170, 170, 170), (120, 160, 255))


def value_colour(models: Sequence[Model], attribute: str, label: str) -> tuple[int, int, int]:
    offset = 0
    seen: set[str] = set()
    for m in models:
        for o in m.info.outputs:
            if o.kind != "classification" or o.name in seen:
                continue
            seen.add(o.name)
            if o.name == attribute:
                idx = o.labels.index(label) if label in o.labels else 0
                return PALETTE[(offset + idx) % len(PALETTE)]
            offset += len(o.labels)
    return (255, 255, 255)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def annotate(image: np.ndarray, faces: Sequence[FaceResult], models: Sequence[Model] = ()) -> np.ndarray:
    """A copy of `image` with each face's box, detector landmarks, predicted landmark outputs
    (crosses) and predicted labels (one line per attribute, coloured by value) drawn on it.
    Line widths, point sizes and the font scale with the image's larger side."""
    from PIL import Image, ImageDraw

    from kerasface.faces.detect import LANDMARK_COLOURS

    base = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    h, w = image.shape[:2]
    side = max(h, w)
    line = max(1, round(side / 320))
    font_px = max(10, round(side / 42))
    font = _font(font_px)
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    several = len({name for f in faces for name in f.attributes}) > 1
    for face in faces:
        x, y, bw, bh = face.box
        draw.rectangle([x, y, x + bw, y + bh], outline=(0, 255, 0, 255), width=line)
        r = max(2.0, max(bw, bh) / 45.0, line * 1.5)
        for (px, py), colour in zip(face.landmarks.values(), LANDMARK_COLOURS):
            draw.ellipse([px - r, py - r, px + r, py + r], fill=colour + (255,), outline=(0, 0, 0, 255))
        lines: list[tuple[str, tuple[int, int, int]]] = [(f"face {face.index}  {face.score:.2f}", (0, 255, 0))]
        for model, attrs in face.attributes.items():
            for attr, res in attrs.items():
                prefix = f"{model}." if several else ""
                if isinstance(res, AttributeResult):
                    lines.append((f"{prefix}{attr}: {res.label} {res.score:.2f}",
                                  value_colour(models, attr, res.label)))
                else:
                    c = max(2.0, r)
                    for px, py in res.points.values():
                        draw.line([px - c, py - c, px + c, py + c], fill=(255, 255, 255, 255), width=line)
                        draw.line([px - c, py + c, px + c, py - c], fill=(255, 255, 255, 255), width=line)
        pad = max(2, font_px // 5)
        sizes = [draw.textbbox((0, 0), t, font=font) for t, _ in lines]
        tw = max(b[2] - b[0] for b in sizes) + 2 * pad
        step = font_px + pad
        th = step * len(lines) + pad
        tx = min(max(0.0, x), max(0.0, w - tw))
        if y + bh + line + th <= h:
            ty = y + bh + line
        elif y - line - th >= 0:
            ty = y - line - th
        else:
            ty = max(0.0, min(y, h - th))
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=(0, 0, 0, 170))
        for k, (text, colour) in enumerate(lines):
            draw.text((tx + pad, ty + pad + k * step), text, font=font, fill=colour + (255,))
    return np.asarray(Image.alpha_composite(base.convert("RGBA"), overlay).convert("RGB"))


# ================================================================================================
# The predictor
# ================================================================================================


class Predictor:
    """Loaded models + detection settings; `run(inputs)` yields one ImageResult per image, in order.

    Images are read, detected and predicted `batch_size` at a time: the next batch is decoded in
    a background thread while the current one is detected (MTCNN, once for all models), cropped
    (once per crop scheme) and predicted (each model, `batch_size` faces per call).
    """

    def __init__(self, models, face: str = "all", batch_size: int = DEFAULT_BATCH_SIZE,
                 models_dirs: Sequence[str | os.PathLike] | None = None, threads: int | None = None,
                 min_face_size: float | None = None, threshold: float | None = None,
                 max_side: int | None | str = "default", annotate_dir: str | os.PathLike | None = None):
        from kerasface.faces.detect import _normalise_rule

        rule = _normalise_rule(face)
        if rule not in FACE_RULES:
            raise ValueError(f"face rule {face!r}: expected one of {', '.join(FACE_RULES)}")
        self.rule = rule
        self.batch_size = max(1, int(batch_size))
        self.models = load_models(models, models_dirs, threads)
        self.detect_kwargs: dict[str, Any] = {}
        if min_face_size is not None:
            self.detect_kwargs["min_face_size"] = float(min_face_size)
        if threshold is not None:
            self.detect_kwargs["score_threshold"] = float(threshold)
        if max_side != "default":
            self.detect_kwargs["max_side"] = int(max_side) if max_side else None
        self.annotate_dir = Path(annotate_dir) if annotate_dir else None
        self.detect_seconds = 0.0

    def close(self) -> None:
        for m in self.models:
            m.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -------------------------------------------------------------- one batch of images

    def _detect(self, images: list[np.ndarray]) -> list[list | Exception]:
        from kerasface.faces.detect import detect_faces, detect_faces_batch

        t0 = time.perf_counter()
        # Only images of one size share an MTCNN batch: a batch is padded to its largest image,
        # which would make an image's faces depend on its neighbours in the folder.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(tuple(image.shape[:2]), []).append(i)
        found: list[list | Exception] = [[] for _ in images]
        for idx in groups.values():
            try:
                batch = detect_faces_batch([images[i] for i in idx], batch_size=self.batch_size,
                                           **self.detect_kwargs)
                for i, faces in zip(idx, batch):
                    found[i] = faces
            except Exception:  # find the culprit: one by one
                for i in idx:
                    try:
                        found[i] = detect_faces(images[i], **self.detect_kwargs)
                    except Exception as exc:
                        found[i] = exc
        self.detect_seconds += time.perf_counter() - t0
        return found

    def _process(self, items: list[Item], loaded: list[np.ndarray | Exception]) -> list[ImageResult]:
        from kerasface.faces.detect import select_faces

        results = [ImageResult(item.name) for item in items]
        good = []
        for k, (item, img) in enumerate(zip(items, loaded)):
            if isinstance(img, Exception):
                results[k].error = _error_text(item, img)
            else:
                results[k].height, results[k].width = int(img.shape[0]), int(img.shape[1])
                good.append(k)
        detections = self._detect([loaded[k] for k in good]) if good else []
        # (image k, face rank, Face) for every reported face
        chosen: list[tuple[int, int, Any]] = []
        for k, faces in zip(good, detections):
            if isinstance(faces, Exception):
                results[k].error = _error_text(items[k], faces)
                continue
            keep = select_faces(faces, self.rule, image_shape=loaded[k].shape)
            for face in keep:
                chosen.append((k, faces.index(face), face))
        # one crop per (face, scheme), shared by the models reading that scheme
        crops: dict[str, list[_Crop | Exception]] = {}
        for scheme in dict.fromkeys(m.info.crop for m in self.models):
            cut = []
            for k, _, face in chosen:
                try:
                    cut.append(_cut(loaded[k], face.points, scheme))
                except Exception as exc:
                    cut.append(exc)
            crops[scheme] = cut
        per_face: list[dict[str, dict]] = [{} for _ in chosen]
        for model in self.models:
            cut = crops[model.info.crop]
            rows = [j for j, c in enumerate(cut) if not isinstance(c, Exception)]
            for j, c in enumerate(cut):
                if isinstance(c, Exception):
                    k = chosen[j][0]
                    results[k].error = results[k].error or _error_text(items[k], c, f"crop {model.info.crop}")
            for start in range(0, len(rows), self.batch_size):
                part = rows[start : start + self.batch_size]
                try:
                    out = model.predict_crops([cut[j].pixels for j in part])
                    for row, j in enumerate(part):
                        per_face[j][model.name] = _interpret(model, out, row, cut[j], cut[j].pixels.shape[:2])
                except Exception as exc:  # a model failing on this batch fails these images only
                    for j in part:
                        k = chosen[j][0]
                        results[k].error = results[k].error or _error_text(items[k], exc, f"model {model.name}")
        for (k, rank, face), attrs in zip(chosen, per_face):
            if results[k].error is not None:
                continue
            results[k].faces.append(FaceResult(
                index=rank, box=tuple(float(v) for v in face.box), score=float(face.score),
                landmarks={n: (float(x), float(y)) for n, (x, y) in zip(LANDMARK_NAMES, face.landmarks)},
                attributes=attrs))
        for k in range(len(results)):
            if results[k].error is not None:
                results[k].faces = []
                results[k].width = results[k].height = None
            elif self.annotate_dir is not None:
                self._annotate(items[k], loaded[k], results[k])
        return results

    def _annotate(self, item: Item, image: np.ndarray, result: ImageResult) -> None:
        from kerasface.faces.images import save_image

        try:
            save_image(self.annotate_dir / _annotated_name(item.rel), annotate(image, result.faces, self.models),
                       quality=92)
        except Exception as exc:  # a full disk is worth knowing, but it is not this image's fault
            print(f"warning: {item.name}: cannot write the annotated image ({_one_line(exc)})", file=sys.stderr)

    # -------------------------------------------------------------- many images

    def run(self, inputs) -> Iterator[ImageResult]:
        """Analyse paths / folders / globs / arrays / bytes; yields results in input order."""
        items = inputs if isinstance(inputs, list) and all(isinstance(i, Item) for i in inputs) \
            else expand_inputs(inputs)
        chunks = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        if not chunks:
            return

        def load_all(chunk: list[Item]) -> list[np.ndarray | Exception]:
            out: list[np.ndarray | Exception] = []
            for item in chunk:
                try:
                    out.append(_load(item))
                except Exception as exc:  # ImageError, MemoryError, ...
                    out.append(exc)
            return out

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kerasface-load") as pool:
            pending = pool.submit(load_all, chunks[0])
            for n, chunk in enumerate(chunks):
                loaded = pending.result()
                if n + 1 < len(chunks):
                    pending = pool.submit(load_all, chunks[n + 1])
                yield from self._process(chunk, loaded)
                del loaded


def _error_text(item: Item, exc: BaseException, what: str | None = None) -> str:
    from kerasface.faces.images import ImageError

    msg = _one_line(exc)
    if isinstance(exc, ImageError) and what is None:
        return msg if msg.startswith(item.name) else f"{item.name}: {msg}"
    where = f"{item.name}: {what}: " if what else f"{item.name}: "
    return f"{where}{type(exc).__name__}: {msg}" if not isinstance(exc, ImageError) else where + msg


# ================================================================================================
# Python API
# ================================================================================================


def analyze(image_or_paths, models, *, face: str = "all", batch_size: int = DEFAULT_BATCH_SIZE,
            annotate_dir: str | os.PathLike | None = None, models_dirs: Sequence[str | os.PathLike] | None = None,
            progress: bool = False, **detect_kwargs) -> list[ImageResult]:
    """Faces and attributes of images.

    image_or_paths: a path (image file, folder searched recursively, or glob), encoded bytes, an
        image array (HxW, HxWx1/3/4; see kerasface.faces.to_rgb_uint8), or a list of those.
    models: one or a list of: a SavedModel folder (models/NAME or a version folder), a .tflite
        file, grpc://host:port/NAME or http://host:port/NAME, or `Model`s from `load_models`
        (loaded once, reused across calls; not closed here). [] detects faces only.
    face: "all" (default), "largest" or "centre".
    detect_kwargs: min_face_size, threshold, max_side (see kerasface.faces.detect).
    Returns one `ImageResult` per image, in order (bad images carry `error`, never raise).
    Raises ModelError when a model cannot be used.
    """
    given = models if isinstance(models, (list, tuple)) else [models]
    owned = not all(isinstance(m, Model) for m in given)
    predictor = Predictor(list(given), face=face, batch_size=batch_size, models_dirs=models_dirs,
                          annotate_dir=annotate_dir, **detect_kwargs)
    try:
        items = expand_inputs(image_or_paths)
        results = []
        bar = _progress(len(items), not progress)
        for r in predictor.run(items):
            results.append(r)
            bar.update(1)
        bar.close()
        return results
    finally:
        if owned:
            for m, spec in zip(predictor.models, given):
                if not isinstance(spec, Model):
                    m.close()


def _flat_attributes(model: str, attr: str, res: AttributeResult | LandmarksResult | Output) -> list[str]:
    key = f"{model}.{attr}"
    if isinstance(res, Output):
        if res.kind == "landmarks":
            return [f"{key}.{p}_{c}" for p in res.point_names for c in "xy"]
        return [key] + [f"{key}.{lab}" for lab in res.labels]
    if isinstance(res, LandmarksResult):
        return [f"{key}.{p}_{c}" for p in res.points for c in "xy"]
    return [key] + [f"{key}.{lab}" for lab in res.probabilities]


BASE_COLUMNS = ["path", "width", "height", "face", "box_x", "box_y", "box_w", "box_h", "score"] + [
    f"{n}_{c}" for n in LANDMARK_NAMES for c in "xy"]


def table_columns(models: Sequence[Model] = (), results: Iterable[ImageResult] = ()) -> list[str]:
    cols: dict[str, None] = dict.fromkeys(BASE_COLUMNS)
    for m in models:
        for o in m.info.outputs:
            cols.update(dict.fromkeys(_flat_attributes(m.name, o.name, o)))
    for r in results:
        for f in r.faces:
            for model, attrs in f.attributes.items():
                for attr, res in attrs.items():
                    cols.update(dict.fromkeys(_flat_attributes(model, attr, res)))
    cols["error"] = None
    return list(cols)


def _rows(result: ImageResult, columns: list[str]) -> list[dict[str, Any]]:
    blank = dict.fromkeys(columns)
    if result.error is not None or not result.faces:
        row = dict(blank, path=result.path, width=result.width, height=result.height, error=result.error)
        return [row]
    rows = []
    for f in result.faces:
        row = dict(blank, path=result.path, width=result.width, height=result.height, face=f.index,
                   box_x=_r(f.box[0], 2), box_y=_r(f.box[1], 2), box_w=_r(f.box[2], 2), box_h=_r(f.box[3], 2),
                   score=_r(f.score, 6))
        for n, (x, y) in f.landmarks.items():
            row[f"{n}_x"], row[f"{n}_y"] = _r(x, 2), _r(y, 2)
        for model, attrs in f.attributes.items():
            for attr, res in attrs.items():
                key = f"{model}.{attr}"
                if isinstance(res, LandmarksResult):
                    for p, (x, y) in res.points.items():
                        row[f"{key}.{p}_x"], row[f"{key}.{p}_y"] = _r(x, 2), _r(y, 2)
                else:
                    row[key] = res.label
                    for lab, p in res.probabilities.items():
                        row[f"{key}.{lab}"] = _r(p, 6)
        rows.append(row)
    return rows


def results_table(results: Iterable[ImageResult], models: Sequence[Model] = ()) -> list[dict[str, Any]]:
    """Flat rows, one per reported face (one per face-less or failed image), same keys in every
    row (the CSV columns of the module docstring): ready for `pandas.DataFrame(rows)`."""
    results = list(results)
    columns = table_columns(models, results)
    return [row for r in results for row in _rows(r, columns)]


def to_dataframe(results: Iterable[ImageResult], models: Sequence[Model] = ()):
    """`results_table` as a pandas DataFrame (pandas is not a dependency of kerasface)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_dataframe needs pandas (pip install pandas); "
                          "results_table(results) gives the same rows as dicts") from None
    rows = results_table(results, models)
    return pd.DataFrame(rows, columns=table_columns(models, results) if not rows else None)


# ================================================================================================
# Command line
# ================================================================================================


def _progress(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="predict", unit="img", file=sys.stderr, disable=disable,
                dynamic_ncols=True, mininterval=0.5)


class _Writer:
    """JSON lines or CSV to stdout or to a temporary file renamed to FILE at the end."""

    def __init__(self, out: str | None, fmt: str, columns: list[str]):
        self.out = Path(out) if out else None
        self.tmp: Path | None = None
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent)
            self.tmp = Path(tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result is an ordinary file
            self.fh = os.fdopen(fd, "w", newline="" if fmt == "csv" else None, encoding="utf-8")
        else:
            self.fh = sys.stdout
        self.fmt = fmt
        self.columns = columns
        if fmt == "csv":
            self.csv = csv.DictWriter(self.fh, fieldnames=columns, extrasaction="ignore")
            self.csv.writeheader()

    def write(self, result: ImageResult) -> None:
        if self.fmt == "csv":
            for row in _rows(result, self.columns):
                self.csv.writerow({k: ("" if v is None else v) for k, v in row.items()})
        else:
            self.fh.write(json.dumps(result.to_dict()) + "\n")
        if self.out is None:
            self.fh.flush()

    def close(self, ok: bool = True) -> None:
        if self.out is None:
            self.fh.flush()
            return
        self.fh.close()
        if ok:
            os.replace(self.tmp, self.out)
        else:
            self.tmp.unlink(missing_ok=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kerasface.predict",
        description="Detect faces in photos and predict their attributes with exported kerasface models "
                    "(SavedModel, TFLite or a TF Serving endpoint).",
        epilog="Output schema, CSV columns and exit codes: see the kerasface.predict module docstring.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image file, folder (recursive) or glob")
    p.add_argument("--model", action="append", required=True, metavar="MODEL",
                   help="models/NAME (latest version) or a version folder, FILE.tflite, "
                        "grpc://host:port/NAME or http://host:port/NAME; repeat for several; ALIAS=MODEL names it")
    p.add_argument("--format", choices=("jsonl", "json", "csv"), default="jsonl",
                   help="jsonl: one JSON object per image (default); csv: one row per face")
    p.add_argument("--out", metavar="FILE", help="write the output here (default: stdout)")
    p.add_argument("--annotate", metavar="DIR", help="write annotated copies of the images here")
    p.add_argument("--face", default="all", choices=("all", "largest", "centre", "center"),
                   help="which faces to report: all (default), the largest, or the one closest to the centre")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"images per detection batch and faces per model call (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--models-dir", action="append", metavar="DIR",
                   help="where export.json of grpc:// / http:// models is looked up as DIR/NAME/<version>/ "
                        "(default: models)")
    p.add_argument("--min-face-size", type=float, help="smallest face in pixels (default 20)")
    p.add_argument("--threshold", type=float, help="minimum detector score (default 0.8)")
    p.add_argument("--max-side", type=int, help="detect on a copy shrunk to this longest side "
                   "(default 2000; 0 = never)")
    p.add_argument("--threads", type=int, help="TFLite interpreter threads (default: up to 4)")
    p.add_argument("--strict", action="store_true", help="stop at the first image that fails (exit 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    max_side: Any = "default" if args.max_side is None else args.max_side
    try:
        predictor = Predictor(args.model, face=args.face, batch_size=args.batch_size,
                              models_dirs=args.models_dir or ["models"], threads=args.threads,
                              min_face_size=args.min_face_size, threshold=args.threshold, max_side=max_side,
                              annotate_dir=args.annotate)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fmt = "csv" if args.format == "csv" else "jsonl"
    summary = Summary()
    t0 = time.perf_counter()
    writer = None
    stopped = False
    try:
        items = expand_inputs(args.paths)
        writer = _Writer(args.out, fmt, table_columns(predictor.models))
        bar = _progress(len(items), args.no_progress)
        for result in predictor.run(items):
            writer.write(result)
            summary.add(result)
            bar.update(1)
            if result.error is not None:
                bar.write(f"error: {result.error}", file=sys.stderr)
                if args.strict:
                    stopped = True
                    break
        bar.close()
        summary.seconds = time.perf_counter() - t0
        writer.close(ok=True)
    except KeyboardInterrupt:
        if writer is not None:
            writer.close(ok=False)
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        sys.stdout = open(os.devnull, "w")
        return 141
    finally:
        predictor.close()
    note = " (stopped: --strict)" if stopped else ""
    print(f"predict: {summary}{note}", file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
