"""Serving and TFLite figures for an exported run (printed, never asserted).

    python benchmarks/bench_serving.py [RUN_DIR] [--duration 3] [--clients 1,4,16] [--json out.json]

Without RUN_DIR a tiny fixture run is built first (tests/run_fixture.py: two small conv nets on
150x150 crops, merged into one 3-attribute export).

1. Exports the run's default deployable as a SavedModel (temporary models folder).
2. In-process baseline: the same SavedModel signature called directly from N threads.
3. `python -m kerasface.serving` in a subprocess, batching off, then on (max_batch_size 16,
   batch_timeout_micros 2000, 2 batch threads); N closed-loop gRPC clients (threads here) send
   one-image Predict requests: requests/s, p50 and p99 latency at N = 1, 4, 16.
4. TFLite none/fp16/dynamic/int8: file size and single-image latency (1 and 2 threads) as
   ratios against fp32.

On a 2-core machine the clients, the server and TensorFlow's own thread pools share the cores,
so compare rows of one run, not absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, load_fixture_module  # noqa: E402

import numpy as np  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q / 100.0 * (len(values) - 1)))))
    return values[k]


def closed_loop(call, clients: int, duration: float, warmup: float = 0.5) -> dict:
    """`clients` threads calling `call()` back to back; requests/s and latency percentiles (ms)."""
    stop = threading.Event()
    measuring = threading.Event()
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def worker(i):
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                call()
            except BaseException as exc:  # noqa: BLE001 - reported
                errors.append(exc)
                return
            if measuring.is_set():
                lat[i].append((time.perf_counter() - t0) * 1e3)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(warmup)
    measuring.set()
    started = time.perf_counter()
    time.sleep(duration)
    measuring.clear()
    elapsed = time.perf_counter() - started
    stop.set()
    for t in threads:
        t.join(timeout=30)
    if errors:
        raise RuntimeError(f"benchmark call failed: {errors[0]}")
    flat = [x for per in lat for x in per]
    return {"clients": clients, "requests": len(flat), "rps": len(flat) / elapsed,
            "p50_ms": percentile(flat, 50), "p99_ms": percentile(flat, 99)}


def start_server(models: Path, name: str, batching_file: Path | None) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "kerasface.serving", "--port=0", "--host=127.0.0.1", f"--model_name={name}",
           f"--model_base_path={models / name}", "--file_system_poll_wait_seconds=0"]
    if batching_file:
        cmd += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    end = time.time() + 180
    while time.time() < end:
        line = proc.stdout.readline()
        if "ready" in line:
            ports = json.loads(line.split("ready:", 1)[1])
            return proc, int(ports["grpc"])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("kerasface.serving did not start")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


def table(title: str, rows: list[dict]) -> str:
    lines = [title, f"  {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"]
    for r in rows:
        lines.append(f"  {r['clients']:>7} {r['rps']:>9.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", help="a training run folder (default: build a tiny fixture run)")
    parser.add_argument("--model", help="export this unit or model key (default: best per attribute)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per concurrency level")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--skip-tflite", action="store_true")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from kerasface.export.run import load_run, select_heads
    from kerasface.export.saved_model import export_saved_model

    work = Path(tempfile.mkdtemp(prefix="kerasface-bench-"))
    run_dir = Path(args.run_dir) if args.run_dir else load_fixture_module().make_run(work / "run")
    run = load_run(run_dir)
    selection = select_heads(run, args.model)
    models = work / "models"
    export = export_saved_model(run, selection, "bench", models, verify=False, log=lambda m: None)
    info = json.loads((export / "export.json").read_text())
    h, w = info["input_size"]
    c = info["channels"]
    x = np.random.default_rng(0).uniform(0, 255, (1, h, w, c)).astype(np.float32)
    heads = ", ".join(f"{t}<-{u}" for t, u in info["selection"]["heads"].items())
    print(f"run {run_dir}: export {h}x{w}x{c}, heads {heads}; "
          f"{os.cpu_count()} CPU(s), TF {tf.__version__}; {args.duration:g} s per level")
    results: dict = {"input": [h, w, c], "heads": info["selection"]["heads"], "cpus": os.cpu_count()}

    # in-process baseline: the same signature, no RPC
    loaded = tf.saved_model.load(str(export))
    fn = loaded.signatures["serving_default"]
    xt = tf.constant(x)
    fn(image=xt)
    base = [closed_loop(lambda: fn(image=xt), n, args.duration) for n in levels]
    results["in_process"] = base
    print(table("in-process SavedModel call (baseline)", base))

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "bench"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(x))
    batching = work / "batching.config"
    batching.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"
                        "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 100 }\n")
    import grpc

    for label, bfile in (("batching off", None), ("batching on", batching)):
        proc, port = start_server(models, "bench", bfile)
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            stub.Predict(request, timeout=60)
            rows = [closed_loop(lambda: stub.Predict(request, timeout=60), n, args.duration) for n in levels]
            channel.close()
        finally:
            stop_server(proc)
        results[f"grpc_{label.replace(' ', '_')}"] = rows
        print(table(f"gRPC Predict, kerasface.serving, {label}", rows))
        for r, b in zip(rows, base):
            r["vs_in_process"] = r["rps"] / b["rps"] if b["rps"] else float("nan")
        print("  req/s vs in-process: " + ", ".join(f"{r['clients']}: {r['vs_in_process']:.2f}x" for r in rows))

    if not args.skip_tflite:
        from kerasface.export.graph import ServingGraph
        from kerasface.export.tflite import export_tflite, float_inputs, latency_ms, read_records

        graph = ServingGraph(selection)
        try:
            recs = read_records(run.records("test", selection.crop), limit=32)
            xs = float_inputs(graph, recs)
        except Exception:  # a run without test shards: random crops
            xs = np.random.default_rng(1).uniform(0, 255, (32, h, w, c)).astype(np.float32)
        lite = {}
        for quant in ("none", "fp16", "dynamic", "int8"):
            path = export_tflite(run, selection, quant, work / f"bench-{quant}.tflite", log=lambda m: None,
                                 graph=graph)
            lite[quant] = {"size_bytes": path.stat().st_size,
                           "ms_1_thread": latency_ms(path, xs, 1, repeats=100)["mean"],
                           "ms_2_threads": latency_ms(path, xs, 2, repeats=100)["mean"]}
        ref = lite["none"]
        print("TFLite (float32 = 'none'); ratios against float32")
        print(f"  {'quant':<8} {'size KiB':>9} {'size':>6} {'ms 1 thr':>9} {'ratio':>6} {'ms 2 thr':>9} {'ratio':>6}")
        for quant, r in lite.items():
            r["size_ratio"] = r["size_bytes"] / ref["size_bytes"]
            r["latency_ratio_1"] = r["ms_1_thread"] / ref["ms_1_thread"]
            r["latency_ratio_2"] = r["ms_2_threads"] / ref["ms_2_threads"]
            print(f"  {quant:<8} {r['size_bytes'] / 1024:>9.1f} {r['size_ratio']:>6.2f} {r['ms_1_thread']:>9.3f} "
                  f"{r['latency_ratio_1']:>6.2f} {r['ms_2_threads']:>9.3f} {r['latency_ratio_2']:>6.2f}")
        results["tflite"] = lite
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
