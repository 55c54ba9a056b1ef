"""SavedModel export in TF Serving's layout: models/NAME/<version>/.

    models/NAME/<version>/
      saved_model.pb, variables/, fingerprint.pb     the SavedModel (signatures below)
      assets.extra/tf_serving_warmup_requests        PredictionLog records TF Serving replays at load
      export.json                                    inputs, outputs, crop, size, channels, preprocessing,
                                                     labels and provenance (kerasface.predict reads it)
      labels.json, <task>.labels.txt                 class names per output (landmarks: x1, y1, ...)
      config.json, metrics.json                      the run's, copied

Signatures:
  serving_default     image        float32 [B, H, W, C] in [0, 255]      -> one output per attribute
  predict_images      image_bytes  string  [B] encoded JPEG/PNG crops   -> same outputs
  predict_examples    examples     string  [B] serialized tf.Example     -> same outputs
  classify_<task>     inputs       string  [B] serialized tf.Example     -> classes, scores (Classify API)
  embed_<task>        image_bytes  string  [B] encoded crops             -> embedding [B, D] (embedding heads)
  labels              rows         int32   [B] (values ignored)          -> each output's labels, per row

The version folder is written under a temporary name inside models/NAME/ (TF Serving and
kerasface.serving only pick up integer names) and renamed at the very end.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasface.export.description import (colour_mode, describe_answers, describe_input, describe_preprocessing,
                                          describe_source)
from kerasface.export.graph import BYTES_INPUT, EXAMPLES_INPUT, FLOAT_INPUT, ServingGraph, serving_graph
from kerasface.export.run import Run, Selection

WARMUP_FILE = "tf_serving_warmup_requests"
CLASSIFY_METHOD = "tensorflow/serving/classify"
EXPORT_FORMAT = "kerasface-export/1"


def existing_versions(base: Path) -> list[int]:
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(base: Path) -> int:
    versions = existing_versions(base)
    return versions[-1] + 1 if versions else 1


def _dtype_name(enum_value: int) -> str:
    return tf.dtypes.as_dtype(enum_value).name


def _tensor_info_json(info) -> dict:
    shape = None if info.tensor_shape.unknown_rank else [int(d.size) for d in info.tensor_shape.dim]
    return {"name": info.name, "dtype": _dtype_name(info.dtype), "shape": shape}


def read_signature_defs(saved_model_dir: str | Path) -> dict:
    """SignatureDefs of the serving meta graph, read from saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    for mg in sm.meta_graphs:
        if "serve" in mg.meta_info_def.tags:
            return dict(mg.signature_def)
    return dict(sm.meta_graphs[0].signature_def)


def _set_classify_method_names(saved_model_dir: Path) -> None:
    """TF2 saves every signature as a Predict one; mark classify_* as Classify signatures.

    TF Serving only checks method names with --enable_signature_method_name_check, but the
    metadata then tells clients which signatures the Classify API accepts. The fingerprint is
    recomputed because it includes a checksum of saved_model.pb.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    path = saved_model_dir / "saved_model.pb"
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(path.read_bytes())
    changed = False
    for mg in sm.meta_graphs:
        for name, sig in mg.signature_def.items():
            if name.startswith("classify_") and sig.method_name != CLASSIFY_METHOD:
                sig.method_name = CLASSIFY_METHOD
                changed = True
    if not changed:
        return
    path.write_bytes(sm.SerializeToString(deterministic=True))
    try:
        from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

        fp = fingerprinting.CreateFingerprintDef(str(saved_model_dir))
        (saved_model_dir / "fingerprint.pb").write_bytes(fp)
    except Exception:  # pragma: no cover - the fingerprint is informational
        (saved_model_dir / "fingerprint.pb").unlink(missing_ok=True)


def gray_jpeg(height: int, width: int, channels: int = 3, value: int = 128) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    mode = "L" if channels == 1 else "RGB"
    Image.new(mode, (width, height), value if channels == 1 else (value,) * 3).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def warmup_records(graph: ServingGraph, name: str, crop_hw: tuple[int, int]) -> list[bytes]:
    """Serialized PredictionLog records: one request per predict signature (TF Serving warmup)."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    records = []
    h, w = graph.input_size
    jpeg = gray_jpeg(*crop_hw)
    example = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[crop_hw[0]])),
        "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[crop_hw[1]])),
    })).SerializeToString()
    for signature, key, value in (
        ("serving_default", FLOAT_INPUT, np.full((1, h, w, graph.channels), 128.0, np.float32)),
        ("predict_images", BYTES_INPUT, np.array([jpeg], dtype=object)),
        ("predict_examples", EXAMPLES_INPUT, np.array([example], dtype=object)),
    ):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.model_spec.signature_name = signature
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


def crop_size(graph: ServingGraph) -> tuple[int, int]:
    from kerasface.faces.crops import CROPS

    crop = graph.selection.crop
    if crop in CROPS and CROPS.get(crop).size is not None:
        return tuple(CROPS.get(crop).size)
    return graph.input_size


def export_description(graph: ServingGraph, run: Run, selection: Selection, name: str | None,
                       version: int | None, signatures: dict | None) -> dict:
    import keras

    from kerasface.faces.crops import CROPS

    crop = selection.crop
    scheme = CROPS.get(crop) if crop in CROPS else None
    return {
        "format": EXPORT_FORMAT,
        "name": name,
        "version": version,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **describe_source(run),
        "crop": crop,
        "crop_size": list(scheme.size) if scheme and scheme.size else None,
        "crop_grayscale": bool(scheme.grayscale) if scheme else None,
        **describe_input(graph),
        "preprocessing": {
            "float_input": (f"float32 [batch, {graph.input_size[0]}, {graph.input_size[1]}, {graph.channels}] "
                            f"in [0, 255] ({'RGB' if graph.channels == 3 else 'grayscale'}) of the "
                            f"{crop!r} crop" + ("" if graph.single else
                                                "; each head converts colour and resizes in the graph")),
            "bytes_input": "encoded JPEG/PNG of the crop (kerasface.faces.crops.apply_crop output), any size",
            **describe_preprocessing(),
            "color": colour_mode(graph.channels),
            "grayscale": "tf.image.rgb_to_grayscale (ITU-R 601 luma 0.2989, 0.5870, 0.1140)",
        },
        "inputs": {name: spec for name, spec in {
            "serving_default": {FLOAT_INPUT: {"dtype": "float32",
                                              "shape": [-1, graph.input_size[0], graph.input_size[1], graph.channels]}},
            "predict_images": {BYTES_INPUT: {"dtype": "string", "shape": [-1]}},
            "predict_examples": {EXAMPLES_INPUT: {"dtype": "string", "shape": [-1],
                                                  "feature": "image/encoded (bytes)"}},
        }.items() if signatures is None or name in signatures},
        **describe_answers(graph, selection),
        "signatures": signatures or {},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def write_metadata(folder: Path, description: dict, run: Run) -> None:
    labels = description["labels"]
    _write_text(folder / "labels.json", json.dumps(labels, indent=2) + "\n")
    for task, names in labels.items():
        _write_text(folder / f"{task}.labels.txt", "\n".join(names) + "\n")
    for fname in ("config.json", "metrics.json"):
        src = run.folder / fname
        if src.is_file():
            shutil.copyfile(src, folder / fname)
    _write_text(folder / "export.json", json.dumps(description, indent=2) + "\n")


def verify_export(folder: Path, graph: ServingGraph, atol: float = 1e-5) -> float:
    """Reload the written SavedModel and compare its float signature with the Keras graph."""
    loaded = tf.saved_model.load(str(folder))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, graph.input_size[0], graph.input_size[1], graph.channels)).astype(np.float32)
    got = loaded.signatures["serving_default"](**{FLOAT_INPUT: tf.constant(x)})
    want = graph.serve_float(tf.constant(x))
    worst = 0.0
    for key, value in want.items():
        diff = float(np.max(np.abs(got[key].numpy() - value.numpy())))
        worst = max(worst, diff)
    if worst > atol * 100:
        raise RuntimeError(f"{folder}: reloaded SavedModel differs from Keras by {worst:g}")
    return worst


def export_saved_model(run: Run, selection: Selection, name: str, out: str | Path = "models",
                       version: int | None = None, verify: bool = True, log=print, float_only: bool = False,
                       graph: ServingGraph | None = None) -> Path:
    """Write models/NAME/<version>/ and return its path. `float_only`: serving_default alone, no
    warm-up requests (a SavedModel for kerasface.predict in this process, as verify and identify
    use: tracing the other signatures is most of an export's time). `graph`: the selection's
    serving graph when the caller holds one (its models already loaded)."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"--name {name!r}: expected a plain model name")
    base = Path(out) / name
    base.mkdir(parents=True, exist_ok=True)
    if version is None:
        version = next_version(base)
    if version < 0:
        raise ValueError(f"--version {version}: expected a non-negative integer")
    final = base / str(version)
    if final.exists():
        raise FileExistsError(f"{final}: version {version} already exists; versions: "
                              f"{existing_versions(base)}; omit --version for the next one")
    tmp = base / f".tmp-{version}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    graph = graph or serving_graph(selection)
    log(f"exporting {', '.join(t.name for t in graph.tasks)} from "
        f"{', '.join(h.unit.name for h in graph.heads)} -> {final}")
    try:
        archive = graph.archive(float_only)
        archive.write_out(str(tmp), verbose=False)
        _set_classify_method_names(tmp)
        if not float_only:
            extra = tmp / "assets.extra"
            extra.mkdir(exist_ok=True)
            with tf.io.TFRecordWriter(str(extra / WARMUP_FILE)) as writer:
                for record in (graph.warmup_requests(name) if graph.photo else
                               warmup_records(graph, name, crop_size(graph))):
                    writer.write(record)
        signatures = {k: {"method_name": v.method_name,
                          "inputs": {n: _tensor_info_json(i) for n, i in v.inputs.items()},
                          "outputs": {n: _tensor_info_json(i) for n, i in v.outputs.items()}}
                      for k, v in sorted(read_signature_defs(tmp).items()) if k != "__saved_model_init_op"}
        description = export_description(graph, run, selection, name, version, signatures)
        if graph.photo:
            description.update(graph.input_description())
        write_metadata(tmp, description, run)
        if verify:
            worst = graph.check_reloaded(tmp) if graph.photo else verify_export(tmp, graph)
            log(f"verified: reloaded serving_default matches Keras (max abs diff {worst:.2g})")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
