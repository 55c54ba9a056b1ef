"""TFLite conversion of the float signature, and the LiteRT parity report.

Only `serving_default` (float32 image in [0, 255]) is converted: the bytes and tf.Example
signatures need TF ops LiteRT lacks, and phones decode images themselves. Quantization modes:

  none     float32 weights and activations
  fp16     float16 weights (dequantized to float32 at load), float32 compute
  dynamic  int8 weights, activations quantized on the fly (dynamic-range quantization)
  int8     full-integer: int8 weights AND activations, every op an int8 builtin
           (TFLITE_BUILTINS_INT8 only; conversion fails rather than fall back to float ops),
           calibrated on images of the run's train split, with one pixel at 0 and one at 255 so
           that the input's range is exactly [0, 255] (input scale 1).

Input/output types of an int8 model (`--io`, `convert(..., io=)`):

  float32  (default) a QUANTIZE op at the input and DEQUANTIZE at each output are the only float
           ops: callers feed the same [0, 255] floats as for every other mode and read
           probabilities / landmark pixels directly.
  uint8    integer tensors at both ends, for integer-only accelerators and camera pipelines: the
           input has scale 1 and zero point 0, i.e. it takes camera pixels as they are; each output
           has its own scale and zero point (softmax: 1/256, 0), recorded in FILE.tflite.json under
           inputs.image.quantization and outputs.NAME.quantization (real = scale * (q - zero_point)).
           The converter keeps a QUANTIZE (uint8 <-> int8, a zero-point shift) at each end.
  int8     as uint8 but int8 tensors (input zero point -128: feed pixel - 128); no boundary ops.

The parity report and kerasface.predict quantize float inputs and dequantize integer outputs with
the tensors' own parameters (kerasface.export.litert_io), so their figures stay comparable.

Why int8 is not faster than fp32 here (issue 17; measured on the canal_mtfl demo TCDCN, 60x60x3
with batch norm, 2-core AMD EPYC with AVX2+FMA but no VNNI, ai-edge-litert 2.3, one image per call,
benchmarks/bench_tflite.py; the machine was shared, ratios are same-run):
- Size: 1138 KiB fp32 -> 305 KiB int8 (0.27x). Accuracy on the demo test split, int8 vs fp32
  (float and uint8 I/O alike): gender -0.25, smile +0.50, glasses -0.25, pose 0.00 points,
  landmark NME 0.2677 -> 0.2702.
- Speed at 1 thread, XNNPACK (the default delegate): int8 is 1.4-1.6x SLOWER than fp32 (two runs:
  fp32 0.90 ms, int8 1.39 ms per image through the signature runner = 1.55x; invoke() alone
  1.38-1.59x; 2 threads 1.33-1.47x); the uint8-I/O file is no faster (1.54x), and neither is
  int8 I/O with no boundary ops at all (1.13-1.48x over runs), per-tensor instead of per-channel
  weights (1.12-1.14x, within noise of per-channel), a static batch of 1 (removes the
  SHAPE/STRIDED_SLICE/PACK of the dynamic Flatten, fp32 and int8 alike: 1.70x) or the delegate's
  latest features (1.63x). So the float I/O ops are not the cost.
- XNNPACK does take the int8 path: the int8 graph runs as 3 XNNPACK partitions (QUANTIZE + convs +
  pools; the FCs; the DEQUANTIZEs) plus 8 builtin nodes (the Flatten's shape ops and the 4 int8
  SOFTMAX, which XNNPACK lacks); fp32 is 2 partitions + 4 builtin nodes. Without XNNPACK
  (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES) int8 builtins beat fp32 builtins (0.63-0.77x)
  but stay slower than XNNPACK fp32 (about 1.7x its time).
- Per layer (prefix models, int8 I/O, invoke() medians): conv1 (5x5, 3 -> 20 channels, 56x56
  outputs, 75 MACs per output) costs 2.4-2.6x its fp32 time and is half of the int8 total; conv2
  (500 MACs per output) 1.2-1.4x; pools, FCs and softmax are small in both. The fewer MACs per
  output, the worse int8 does: that points (inferred, not profiled inside XNNPACK) to a cost per
  output element (requantizing every output, int8 -> int16 widening for the AVX2 multiply-add)
  that conv1 cannot amortise, while without VNNI the int8 GEMM has little throughput edge over
  FMA fp32 to pay for it.
So the limit is structural for this model on this CPU (a small net dominated by a 3-channel first
conv; AVX2 without VNNI), not a converter flag or the I/O ops: no setting tried makes int8 faster
than fp32 with XNNPACK, so the default int8 export is unchanged. int8 buys 3.7x smaller files and
integer-only hardware; whether it is faster on ARM (dot-product) or VNNI CPUs is not measured here.

Beside FILE.tflite sits FILE.tflite.json: labels, outputs, input size and colour mode,
preprocessing, the heads and run it came from, and (after `parity`) the parity report.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasface.export.description import (colour_mode, describe_answers, describe_input, describe_preprocessing,
                                          describe_source)
from kerasface.data.pipeline import preprocess_image
from kerasface.export.graph import FLOAT_INPUT, ServingGraph
from kerasface.export.litert_io import IO_TYPES, check_io, from_output, quantization, sidecar_path, to_input  # noqa: F401
from kerasface.export.run import Run, Selection, select_heads
from kerasface.tasks import head_kind

QUANT_MODES = ("none", "fp16", "dynamic", "int8")
def default_tflite_path(run: Run, quant: str, model: str | None, io: str = "float32") -> Path:
    stem = run.folder.resolve().name + (f"-{model}" if model else "")
    return Path("models") / f"{stem}-{quant}{'' if io == 'float32' else '-' + io}.tflite"


def read_records(files: list[str], limit: int | None = None):
    """(encoded bytes, landmarks (10,), {label: int}) of the records in `files`."""
    out = []
    for raw in tf.data.TFRecordDataset(files):
        ex = tf.train.Example.FromString(raw.numpy())
        f = ex.features.feature
        labels = {k[len("label/"):]: int(v.int64_list.value[0]) for k, v in f.items()
                  if k.startswith("label/") and v.int64_list.value}
        marks = np.array(f["face/landmarks"].float_list.value, np.float32) if "face/landmarks" in f else None
        h = f["image/height"].int64_list.value[0] if "image/height" in f else None
        w = f["image/width"].int64_list.value[0] if "image/width" in f else None
        out.append({"encoded": f["image/encoded"].bytes_list.value[0], "landmarks": marks, "labels": labels,
                    "height": h, "width": w})
        if limit and len(out) >= limit:
            break
    return out


_PREPROCESS_FNS: dict = {}


def _preprocess_fn(size: tuple[int, int], channels: int):
    key = (tuple(size), channels)
    if key not in _PREPROCESS_FNS:
        spec = tf.TensorSpec([size[0], size[1], channels], tf.float32)
        _PREPROCESS_FNS[key] = tf.function(
            lambda b: tf.map_fn(lambda e: preprocess_image(e, size, channels), b, fn_output_signature=spec),
            input_signature=[tf.TensorSpec([None], tf.string)])
    return _PREPROCESS_FNS[key]


def float_inputs(graph: ServingGraph, records: list[dict]) -> np.ndarray:
    """The float-signature input for each record, preprocessed as in training."""
    fn = _preprocess_fn(graph.input_size, graph.channels)
    encoded = [r["encoded"] for r in records]
    chunks = [fn(tf.constant(encoded[i:i + 64])).numpy() for i in range(0, len(encoded), 64)]
    return np.concatenate(chunks) if chunks else np.zeros((0, *graph.input_size, graph.channels), np.float32)


def _converter(saved_model_dir: str, quant: str, representative=None, io: str = "float32"):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_default"])
    if quant == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, io)
        converter.inference_output_type = getattr(tf, io)
    elif quant != "none":
        raise ValueError(f"--quant {quant!r}: expected one of {', '.join(QUANT_MODES)}")
    return converter


def convert(graph: ServingGraph, quant: str, run: Run | None = None, samples: int = 128,
            io: str = "float32") -> bytes:
    check_io(quant, io)
    representative = None
    if quant == "int8":
        if run is None:
            raise ValueError("int8 needs the run's TFRecords for calibration")
        records = read_records(run.records("train", graph.selection.crop), limit=samples)
        if not records:
            raise ValueError(f"{run.folder}: the train split is empty; int8 needs calibration images")
        calib = float_inputs(graph, records)
        # one pixel at 0 and one at 255: the input's calibrated range is exactly [0, 255], so its
        # scale is 1 (zero point 0 as uint8, -128 as int8) and camera pixels are the quantized input
        calib[0, 0, 0, :], calib[0, 0, 1, :] = 0.0, 255.0

        def representative():
            for x in calib:
                yield {FLOAT_INPUT: x[None]}

    with warnings.catch_warnings():  # the int8 calibrator uses tf.lite.Interpreter internally
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        return _converter(graph.float_saved_model(), quant, representative, io).convert()


def op_summary(model_content: bytes) -> dict:
    """Op types and how many compute on int8 (inputs of QUANTIZE/DEQUANTIZE excluded)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_content)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    kinds: dict[str, int] = {}
    float_ops = []
    for op in ops:
        kinds[op["op_name"]] = kinds.get(op["op_name"], 0) + 1
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        dtypes = {np.dtype(tensors[i]["dtype"]).name for i in op["inputs"] if i >= 0 and i in tensors}
        if "float32" in dtypes or "float16" in dtypes:
            float_ops.append(op["op_name"])
    return {"ops": dict(sorted(kinds.items())), "num_ops": len(ops), "float_ops": float_ops}


def _io_text(quant: str, io: str) -> str:
    if io == "float32":
        return "float32 input and outputs" + (" (int8 inside)" if quant == "int8" else "")
    return (f"{io} input and outputs (int8 inside): real = scale * (q - zero_point) with each tensor's "
            f"quantization below; feed pixels q = round(p / scale) + zero_point")


def tflite_description(graph: ServingGraph, run: Run, selection: Selection, quant: str, file: Path,
                       content: bytes, io: str = "float32") -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=content)
    runner_sig = interp.get_signature_list()
    runner = interp.get_signature_runner("serving_default")
    in_detail = runner.get_input_details()[FLOAT_INPUT]
    image = {"dtype": np.dtype(in_detail["dtype"]).name,
             "shape": [1, graph.input_size[0], graph.input_size[1], graph.channels],
             "range": [0, 255], "color": colour_mode(graph.channels)}
    answers = describe_answers(graph, selection)
    if io != "float32":  # integer tensors: what an app needs to feed pixels and read answers
        image["quantization"] = quantization(in_detail)
        for name, detail in runner.get_output_details().items():
            answers["outputs"][name]["dtype"] = np.dtype(detail["dtype"]).name
            answers["outputs"][name]["quantization"] = quantization(detail)
    return {
        "format": "kerasface-tflite/1",
        "file": file.name,
        "quant": quant,
        "io": io,
        "io_note": _io_text(quant, io),
        "signature": "serving_default",
        "signatures": runner_sig,
        **describe_source(run),
        "crop": selection.crop,
        **describe_input(graph),
        "inputs": {FLOAT_INPUT: image},
        "preprocessing": describe_preprocessing(),
        **answers,
        "size_bytes": len(content),
        "ops": op_summary(content),
        "run_config": run.config,
        "run_metrics": run.metrics,
    }


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def export_tflite(run: Run, selection: Selection, quant: str, out: str | Path, samples: int = 128,
                  log=print, graph: ServingGraph | None = None, io: str = "float32") -> Path:
    check_io(quant, io)
    out = Path(out)
    graph = graph or ServingGraph(selection)
    what = quant + ("" if io == "float32" else f", {io} I/O")
    log(f"converting serving_default of {', '.join(h.unit.name for h in graph.heads)} ({what}) -> {out}")
    content = convert(graph, quant, run, samples, io)
    description = tflite_description(graph, run, selection, quant, out, content, io)
    if quant == "int8" and description["ops"]["float_ops"]:
        raise RuntimeError(f"{out}: int8 model still has float ops: {description['ops']['float_ops']}")
    _atomic_write(out, content)
    _atomic_write(sidecar_path(out), (json.dumps(description, indent=2) + "\n").encode())
    return out


# ----------------------------------------------------------------------------- parity


def _interpreter(path: Path, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path), num_threads=threads)


def run_tflite(path: Path, x: np.ndarray, threads: int = 2) -> dict[str, np.ndarray]:
    """Float [0, 255] images in, float outputs back, whatever the file's input/output types."""
    interp = _interpreter(path, threads)
    runner = interp.get_signature_runner("serving_default")
    in_detail = runner.get_input_details()[FLOAT_INPUT]
    out_details = runner.get_output_details()
    xq = to_input(in_detail, x)
    outs: dict[str, list] = {}
    for i in range(len(xq)):
        res = runner(**{FLOAT_INPUT: xq[i:i + 1]})
        for k, v in res.items():
            outs.setdefault(k, []).append(from_output(out_details[k], v[0]))
    return {k: np.stack(v) for k, v in outs.items()}


def file_io(path: Path) -> str:
    """The input tensor's type: float32, uint8 or int8."""
    interp = _interpreter(path, 1)
    return np.dtype(interp.get_signature_runner("serving_default").get_input_details()[FLOAT_INPUT]["dtype"]).name


def latency_ms(path: Path, x: np.ndarray, threads: int, repeats: int = 50) -> dict:
    """One image per call through the signature runner. An integer-input file gets its input
    quantized before the clock starts (an app hands it camera pixels); outputs are not dequantized."""
    interp = _interpreter(path, threads)
    runner = interp.get_signature_runner("serving_default")
    x = to_input(runner.get_input_details()[FLOAT_INPUT], x)
    for i in range(3):
        runner(**{FLOAT_INPUT: x[i % len(x):i % len(x) + 1]})
    times = []
    for i in range(repeats):
        j = i % len(x)
        t0 = time.perf_counter()
        runner(**{FLOAT_INPUT: x[j:j + 1]})
        times.append((time.perf_counter() - t0) * 1e3)
    return {"mean": float(np.mean(times)), "p50": float(np.median(times))}


def _landmark_nme(pred_px: np.ndarray, target_px: np.ndarray) -> float:
    p = pred_px.reshape(-1, 5, 2)
    t = target_px.reshape(-1, 5, 2)
    iod = np.maximum(np.linalg.norm(t[:, 0] - t[:, 1], axis=-1), 1e-6)
    return float((np.linalg.norm(p - t, axis=-1) / iod[:, None]).mean())


def parity_report(run: Run, tflite_file: str | Path, model: str | None = None, max_images: int | None = None,
                  threads: tuple[int, ...] = (1, 2), repeats: int = 50) -> dict:
    """TFLite vs Keras on the run's test split (val where the data has none, as an identity tree):
    per attribute accuracy, max |diff|; size; latency."""
    path = Path(tflite_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .tflite file")
    side = sidecar_path(path)
    meta = json.loads(side.read_text()) if side.is_file() else {}
    if meta.get("selection", {}).get("heads"):
        from kerasface.export.run import Selection as Sel

        missing = sorted({u for u in meta["selection"]["heads"].values() if u not in run.units})
        if missing:
            raise ValueError(f"{side}: made from unit(s) {', '.join(missing)}, which {run.folder} does not hold")
        heads = {task: run.units[unit] for task, unit in meta["selection"]["heads"].items()}
        selection = Sel(crop=meta["selection"]["crop"], heads=heads, rule=meta["selection"]["rule"])
    else:
        selection = select_heads(run, model)
    graph = ServingGraph(selection)
    split = run.held_out_split(selection.crop)
    records = read_records(run.records(split, selection.crop), limit=max_images)
    if not records:
        raise ValueError(f"{run.folder}: the {split} split is empty")
    x = float_inputs(graph, records)
    keras_out = {}
    serve = tf.function(graph.serve_float)
    for i in range(0, len(x), 64):
        for k, v in serve(tf.constant(x[i:i + 64])).items():
            keras_out.setdefault(k, []).append(v.numpy())
    keras_out = {k: np.concatenate(v) for k, v in keras_out.items()}
    lite_out = run_tflite(path, x, threads=max(threads, default=2))
    attributes = {}
    for task in graph.tasks:
        k, t = keras_out[task.name], lite_out[task.name]
        entry = {"max_abs_diff": float(np.max(np.abs(k - t)))}
        kind = head_kind(task.kind)
        if kind.has_classes:
            labels = np.array([r["labels"].get(getattr(task, "label", "") or task.name, -1) for r in records])
            known = labels >= 0
            kp, tp = k.argmax(-1), t.argmax(-1)
            entry.update({
                "count": int(known.sum()),
                "keras_accuracy": float((kp[known] == labels[known]).mean()) if known.any() else None,
                "tflite_accuracy": float((tp[known] == labels[known]).mean()) if known.any() else None,
                "agreement": float((kp == tp).mean()),
            })
        elif kind.pixel_coordinates:
            # landmarks: predicted pixels of the float input -> pixels of the stored image
            scale = np.array([[r["width"] / graph.input_size[1], r["height"] / graph.input_size[0]]
                              if r["width"] else [1.0, 1.0] for r in records], np.float32)
            target = np.stack([r["landmarks"] for r in records])
            s = np.tile(scale, (1, 5))
            entry.update({"count": len(records), "keras_nme": _landmark_nme(k * s, target),
                          "tflite_nme": _landmark_nme(t * s, target)})
        else:  # multilabel probabilities, values, embeddings: how closely the two agree
            entry.update({"count": len(records), "mean_abs_diff": float(np.mean(np.abs(k - t)))})
        attributes[task.name] = entry
    latency = {str(n): latency_ms(path, x, n, repeats) for n in threads}
    return {
        "file": str(path),
        "quant": meta.get("quant"),
        "io": file_io(path),
        "size_bytes": path.stat().st_size,
        "images": len(records),
        "split": split,
        "attributes": attributes,
        "latency_ms": latency,
    }


def format_parity(report: dict) -> str:
    io = "" if report.get("io", "float32") == "float32" else f", {report['io']} I/O"
    lines = [f"parity of {report['file']} ({report.get('quant') or '?'}{io}), {report['images']} "
             f"{report.get('split', 'test')} images, "
             f"{report['size_bytes'] / 1024:.1f} KiB"]
    lines.append(f"  {'attribute':<14}{'keras':>10}{'tflite':>10}{'agree':>8}{'max|diff|':>12}")
    for name, e in report["attributes"].items():
        if "keras_accuracy" in e and e["keras_accuracy"] is not None:
            lines.append(f"  {name:<14}{100 * e['keras_accuracy']:>9.1f}%{100 * e['tflite_accuracy']:>9.1f}%"
                         f"{100 * e['agreement']:>7.1f}%{e['max_abs_diff']:>12.2e}")
        elif "keras_nme" not in e:  # multilabel, values, embeddings, or no labelled test image
            lines.append(f"  {name:<14}{'mean|diff|':>20}{e.get('mean_abs_diff', 0.0):>8.1e}{e['max_abs_diff']:>12.2e}")
        else:
            lines.append(f"  {name:<14}{e['keras_nme']:>10.4f}{e['tflite_nme']:>10.4f}{'(nme)':>8}"
                         f"{e['max_abs_diff']:>12.2e}")
    lat = ", ".join(f"{n} thread{'s' if n != '1' else ''}: {v['mean']:.2f} ms/image (p50 {v['p50']:.2f})"
                    for n, v in report["latency_ms"].items())
    if lat:
        lines.append(f"  latency: {lat}")
    return "\n".join(lines)


def attach_parity(tflite_file: str | Path, report: dict) -> None:
    side = sidecar_path(tflite_file)
    if side.is_file():
        meta = json.loads(side.read_text())
        meta["parity"] = report
        _atomic_write(side, (json.dumps(meta, indent=2) + "\n").encode())

