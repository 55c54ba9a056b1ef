"""TFLite fp32 vs int8 (float I/O) vs int8 (uint8 I/O): ms/image at 1 and 2 threads, as ratios to
fp32 measured in the same run, plus the accuracy / parity delta (printed, never asserted).

    python benchmarks/bench_tflite.py [RUN_DIR] [--model KEY] [--rounds 20] [--calls 50] [--layers] [--json out.json]

Without RUN_DIR a tiny fixture run is built first (tests/run_fixture.py). For the issue-17 figure
use the canal_mtfl demo TCDCN:

    python -m kerasface.train --paper canal_mtfl --demo --model tcdcn_multitask --crop nose_centred_150 \\
        --no-export --run-dir runs/tcdcn_demo
    python benchmarks/bench_tflite.py runs/tcdcn_demo

The machine is shared and noisy, so the files are timed interleaved: each round calls every file
`--calls` times back to back (one image per call through the signature runner, as
kerasface.export.tflite.latency_ms does; uint8 input is quantized before the clock starts), and a
file's figure is the median over rounds. Besides the signature-runner time (what a Python caller
pays) the table gives invoke() alone (the interpreter's own time), and where XNNPACK is turned off
(the int8 builtin kernels) for the 1-thread case. `--layers` adds a per-layer profile: prefix
models of the (single) Keras model ending after each conv/pool/flatten/dense block, fp32 and int8
(int8 I/O), whose time differences are the blocks' costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_fixture_module  # noqa: E402

import numpy as np  # noqa: E402

FILES = (("fp32", "none", "float32"), ("int8", "int8", "float32"), ("int8 uint8-I/O", "int8", "uint8"))


def interpreters(path: Path, threads: int, xnnpack: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from kerasface.export.graph import FLOAT_INPUT

    kw = {} if xnnpack else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    runner_interp = Interpreter(model_path=str(path), num_threads=threads, **kw)
    runner = runner_interp.get_signature_runner("serving_default")
    invoke_interp = Interpreter(model_path=str(path), num_threads=threads, **kw)
    invoke_interp.allocate_tensors()
    return runner_interp, runner, invoke_interp, runner.get_input_details()[FLOAT_INPUT]


def timed(paths: dict[str, Path], xs: np.ndarray, threads: int, rounds: int, calls: int, xnnpack: bool = True) -> dict:
    from kerasface.export.graph import FLOAT_INPUT
    from kerasface.export.litert_io import to_input

    setups = {}
    for name, path in paths.items():
        keep, runner, interp, detail = interpreters(path, threads, xnnpack)
        xq = to_input(detail, xs)
        frames = [xq[i:i + 1] for i in range(len(xq))]
        interp.set_tensor(interp.get_input_details()[0]["index"], frames[0])
        for f in frames[:3]:
            runner(**{FLOAT_INPUT: f})
        interp.invoke()
        setups[name] = (keep, runner, interp, frames)
    runner_ms = {n: [] for n in paths}
    invoke_ms = {n: [] for n in paths}
    for _ in range(rounds):
        for name, (_, runner, interp, frames) in setups.items():
            t0 = time.perf_counter()
            for i in range(calls):
                runner(**{FLOAT_INPUT: frames[i % len(frames)]})
            runner_ms[name].append((time.perf_counter() - t0) * 1e3 / calls)
            t0 = time.perf_counter()
            for _ in range(calls):
                interp.invoke()
            invoke_ms[name].append((time.perf_counter() - t0) * 1e3 / calls)
    return {n: {"runner_ms": float(np.median(runner_ms[n])), "invoke_ms": float(np.median(invoke_ms[n]))}
            for n in paths}


BLOCK_STARTS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "AveragePooling2D", "Flatten",
                "GlobalAveragePooling2D", "Dense")


def prefix_ends(model) -> list[str]:
    """Layer names ending each block of the trunk (a conv/pool/flatten/dense and the batch norm,
    activation, ... after it), up to the first layer that is an output or feeds the heads."""
    outputs = {id(t) for t in model.outputs}
    ends, current = [], None
    for layer in model.layers[1:]:
        if id(layer.output) in outputs or layer.name.startswith("head_"):
            break
        if type(layer).__name__ in BLOCK_STARTS and current is not None:
            ends.append(current)
        current = layer.name
    return ends + ([current] if current else [])


def _endpoint(model):
    def serve(image):
        return model(image, training=False)

    return serve


def layer_profile(model, calib: np.ndarray, x: np.ndarray, rounds: int, calls: int) -> list[dict]:
    """Per-layer cost from prefix models (fp32 vs int8 with int8 I/O, so no boundary ops), invoke()
    at 1 thread, interleaved; a block's cost is its prefix's time minus the previous prefix's."""
    import warnings

    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from kerasface.export.litert_io import to_input

    shape = tuple(model.inputs[0].shape[1:])
    ends = prefix_ends(model) + ["ALL"]
    interps = {}
    for end in ends:
        sub = model if end == "ALL" else keras.Model(model.inputs, model.get_layer(end).output)
        for int8 in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                archive = keras.export.ExportArchive()
                archive.track(sub)
                archive.add_endpoint("serving_default", _endpoint(sub),
                                     [tf.TensorSpec((None,) + shape, tf.float32, name="image")])
                archive.write_out(tmp, verbose=False)
                conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
                if int8:
                    conv.optimizations = [tf.lite.Optimize.DEFAULT]
                    conv.representative_dataset = lambda: ({"image": v[None]} for v in calib)
                    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                    conv.inference_input_type = conv.inference_output_type = tf.int8
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    content = conv.convert()
            interp = Interpreter(model_content=content, num_threads=1)
            interp.allocate_tensors()
            detail = interp.get_input_details()[0]
            interp.set_tensor(detail["index"], to_input(detail, x[:1]))
            interp.invoke()
            interps[(end, int8)] = interp
    times = {k: [] for k in interps}
    for _ in range(rounds):
        for k, interp in interps.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                interp.invoke()
            times[k].append((time.perf_counter() - t0) * 1e6 / calls)
    us = {k: float(np.median(v)) for k, v in times.items()}
    rows, prev = [], (0.0, 0.0)
    for end in ends:
        f, q = us[(end, False)], us[(end, True)]
        rows.append({"up_to": end, "fp32_us": f, "int8_us": q, "block_fp32_us": f - prev[0], "block_int8_us": q - prev[1]})
        prev = (f, q)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", help="a training run folder (default: build a tiny fixture run)")
    parser.add_argument("--model", help="export this unit or model key (default: best per attribute)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=50, help="calls per file per round")
    parser.add_argument("--images", type=int, default=32, help="test images cycled through while timing")
    parser.add_argument("--layers", action="store_true",
                        help="also a per-layer profile from prefix models (fp32 vs int8, 1 thread; one-model exports)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import os

    import tensorflow as tf

    from kerasface.export.graph import ServingGraph
    from kerasface.export.run import load_run, select_heads
    from kerasface.export.tflite import export_tflite, float_inputs, op_summary, parity_report, read_records

    work = Path(tempfile.mkdtemp(prefix="kerasface-bench-tflite-"))
    run_dir = Path(args.run_dir) if args.run_dir else load_fixture_module().make_run(work / "run")
    run = load_run(run_dir)
    selection = select_heads(run, args.model)
    graph = ServingGraph(selection)
    paths = {}
    for name, quant, io in FILES:
        paths[name] = export_tflite(run, selection, quant, work / f"{quant}-{io}.tflite", log=lambda m: None,
                                    graph=graph, io=io)
    xs = float_inputs(graph, read_records(run.records("test", selection.crop), limit=args.images))
    h, w = graph.input_size
    print(f"run {run_dir}: {', '.join(h.unit.name for h in graph.heads)}, input {h}x{w}x{graph.channels}; "
          f"{os.cpu_count()} CPU(s), TF {tf.__version__}; {args.rounds} rounds x {args.calls} calls, interleaved")
    results: dict = {"run": str(run_dir), "files": {}}
    timing = {("XNNPACK", 1): timed(paths, xs, 1, args.rounds, args.calls),
              ("XNNPACK", 2): timed(paths, xs, 2, args.rounds, args.calls),
              ("no XNNPACK", 1): timed(paths, xs, 1, max(3, args.rounds // 4), args.calls, xnnpack=False)}
    print(f"  {'file':<16}{'KiB':>7}{'ops':>5}  {'kernels':<11}{'thr':>4}{'runner ms':>11}{'vs fp32':>9}"
          f"{'invoke ms':>11}{'vs fp32':>9}")
    for (kernels, threads), figures in timing.items():
        ref = figures["fp32"]
        for name, f in figures.items():
            content = paths[name].read_bytes()
            f["runner_vs_fp32"] = f["runner_ms"] / ref["runner_ms"]
            f["invoke_vs_fp32"] = f["invoke_ms"] / ref["invoke_ms"]
            print(f"  {name:<16}{len(content) / 1024:>7.1f}{op_summary(content)['num_ops']:>5}  {kernels:<11}"
                  f"{threads:>4}{f['runner_ms']:>11.3f}{f['runner_vs_fp32']:>8.2f}x{f['invoke_ms']:>11.3f}"
                  f"{f['invoke_vs_fp32']:>8.2f}x")
            results["files"].setdefault(name, {})[f"{kernels} {threads}"] = f
    print("  int8 speed-up over fp32 at 1 thread (XNNPACK, runner): "
          + ", ".join(f"{n} {1 / timing[('XNNPACK', 1)][n]['runner_vs_fp32']:.2f}x" for n in paths if n != "fp32")
          + "  (target >= 1.5x)")
    # accuracy: every file on the whole test split, against Keras
    print(f"  {'attribute':<12}" + "".join(f"{n:>17}" for n in paths) + "   (test split; int8 delta vs fp32)")
    reports = {n: parity_report(run, p, threads=(), repeats=0) for n, p in paths.items()}
    for task, e in reports["fp32"]["attributes"].items():
        key = "tflite_accuracy" if e.get("tflite_accuracy") is not None else "tflite_nme" if "tflite_nme" in e else None
        if key is None:
            continue
        scale = 100.0 if key == "tflite_accuracy" else 1.0
        cells = []
        for n in paths:
            v = reports[n]["attributes"][task][key] * scale
            d = v - e[key] * scale
            digits = 2 if scale == 100 else 4
            cells.append(f"{v:>9.{digits}f}" + (f" ({d:+.{digits}f})" if n != "fp32" else " " * (digits + 6)))
        print(f"  {task + (' %' if scale == 100 else ' nme'):<12}" + "".join(f"{c:>17}" for c in cells))
    results["parity"] = {n: r["attributes"] for n, r in reports.items()}
    if args.layers:
        if not graph.single:
            print("  --layers: skipped (the export merges several models; pass --model KEY)")
        else:
            calib = float_inputs(graph, read_records(run.records("train", selection.crop), limit=64))
            rows = layer_profile(graph.heads[0].model, calib, xs, args.rounds, args.calls)
            print("  per layer, 1 thread, XNNPACK, invoke() us of prefix models ending at the layer (int8 with int8 I/O);")
            print("  block = this prefix minus the previous one (noise makes small blocks negative)")
            print(f"  {'up to':<14}{'fp32 us':>9}{'int8 us':>9}{'ratio':>7}{'block fp32':>12}{'block int8':>12}{'ratio':>7}")
            for r in rows:
                ratio = r["block_int8_us"] / r["block_fp32_us"] if r["block_fp32_us"] > 20 else float("nan")
                print(f"  {r['up_to']:<14}{r['fp32_us']:>9.1f}{r['int8_us']:>9.1f}{r['int8_us'] / r['fp32_us']:>7.2f}"
                      f"{r['block_fp32_us']:>12.1f}{r['block_int8_us']:>12.1f}{ratio:>7.2f}")
            results["layers"] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
