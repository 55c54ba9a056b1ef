"""A TensorFlow Serving-compatible model server: gRPC and REST over a TF Serving models folder.

    python -m kerasface.serving --port=8500 --rest_api_port=8501 \\
        --model_name=faces --model_base_path=$PWD/models/faces
    python -m kerasface.serving --port=8500 --rest_api_port=8501 \\
        --model_config_file=serving/models.config --enable_batching \\
        --batching_parameters_file=serving/batching.config --file_system_poll_wait_seconds=5

The flags are `tensorflow_model_server`'s, so a script can start either server. Where the
official server is available (the `tensorflow/serving` image), use it; this one is for machines
without it, and for tests. gRPC serves the official `tensorflow.serving.PredictionService`
(Predict, Classify, GetModelMetadata) and `ModelService` (GetModelStatus,
HandleReloadConfigRequest) from the `tensorflow-serving-api` stubs; REST serves /v1/models/...
with the standard library's ThreadingHTTPServer.

Extras (not in tensorflow_model_server): `--host` (bind address, default 0.0.0.0) and
`--models_dir`: a base path such as /models/faces in a config written for the Docker image is
looked up as MODELS_DIR/faces when /models does not exist here (default: ./models).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Iterable

import numpy as np

from kerasface.serving.batching import Batcher, BatchingParameters
from kerasface.serving.models import (LoadedModel, ModelManager, ServingError, read_model_config,
                                      single_model_config)

log = logging.getLogger("kerasface.serving")

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


class ServingCore:
    """Transport-independent request handling shared by the gRPC and REST front ends."""

    def __init__(self, manager: ModelManager, batching: BatchingParameters | None = None,
                 method_name_check: bool = False):
        self.manager = manager
        self.batching = batching
        self.method_name_check = method_name_check
        self._batchers: dict[tuple[str, int, str], Batcher] = {}
        self._lock = threading.Lock()
        manager.on_unload = self._drop_batchers
        manager.warmup_runner = self._warmup

    # ------------------------------------------------------------------ lifecycle

    def _drop_batchers(self, name: str, version: int) -> None:
        with self._lock:
            keys = [k for k in self._batchers if k[0] == name and k[1] == version]
            batchers = [self._batchers.pop(k) for k in keys]
        for b in batchers:
            b.close()

    def close(self) -> None:
        with self._lock:
            batchers = list(self._batchers.values())
            self._batchers.clear()
        for b in batchers:
            b.close()

    def batch_stats(self) -> dict:
        with self._lock:
            return {f"{k[0]}/{k[1]}/{k[2]}": {"batches": b.batches, "rows": b.batched_rows,
                                             "max_batch": max(b.batch_sizes, default=0)}
                    for k, b in self._batchers.items()}

    # ------------------------------------------------------------------ lookups

    def model(self, name: str, version: int | None = None, label: str | None = None) -> LoadedModel:
        if not name:
            raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
        return self.manager.get(name, version, label)

    def _batcher(self, model: LoadedModel, signature) -> Batcher:
        key = (model.name, model.version, signature.name)
        with self._lock:
            b = self._batchers.get(key)
            if b is None:
                b = Batcher(lambda inputs: model.run(signature, inputs), self.batching,
                            f"{model.name}-{model.version}-{signature.name}")
                self._batchers[key] = b
            return b

    # ------------------------------------------------------------------ APIs

    def predict(self, model: LoadedModel, signature_name: str, inputs: dict[str, np.ndarray],
                dtypes: dict[str, int], output_filter: Iterable[str] = ()) -> tuple[str, dict[str, np.ndarray]]:
        sig = model.signature(signature_name)
        if self.method_name_check and sig.method_name != "tensorflow/serving/predict":
            raise ServingError("INVALID_ARGUMENT", "Expected prediction signature method_name to be "
                                                   f"tensorflow/serving/predict. Was: {sig.method_name}")
        model.check_inputs(sig, inputs, dtypes)
        wanted = model.check_output_filter(sig, output_filter)
        if self.batching is not None:
            outputs = self._batcher(model, sig).submit(inputs)
        else:
            outputs = model.run(sig, inputs)
        return sig.name, {k: outputs[k] for k in wanted}

    def classify(self, model: LoadedModel, signature_name: str, serialized: list[bytes]):
        """Classify API: returns (signature name, classes [B, n] bytes or None, scores [B, n] or None)."""
        import tensorflow as tf

        sig = model.signature(signature_name)
        if self.method_name_check and sig.method_name != "tensorflow/serving/classify":
            raise ServingError("INVALID_ARGUMENT", "Expected classification signature method_name to be "
                                                   f"tensorflow/serving/classify. Was: {sig.method_name}")
        if len(sig.inputs) != 1:
            raise ServingError("INVALID_ARGUMENT", "Expected one input Tensor.")
        alias, (dtype, _) = next(iter(sig.inputs.items()))
        if dtype != tf.string.as_datatype_enum:
            raise ServingError("INVALID_ARGUMENT", f"Signature {sig.name} is not a classification signature: its "
                                                   "input must be a tensor of serialized tf.Example (string)")
        if "classes" not in sig.outputs and "scores" not in sig.outputs:
            raise ServingError("INVALID_ARGUMENT", "Expected classification signature outputs to contain classes "
                                                   f"and/or scores; {sig.name} has {', '.join(sorted(sig.outputs))}")
        if not serialized:
            raise ServingError("INVALID_ARGUMENT", "Invalid argument: Input is empty.")
        array = np.array(serialized, dtype=object)
        outputs = (self._batcher(model, sig).submit({alias: array}) if self.batching is not None
                   else model.run(sig, {alias: array}))
        return sig.name, outputs.get("classes"), outputs.get("scores")

    def _warmup(self, model: LoadedModel, path: Path) -> None:
        """Replay assets.extra/tf_serving_warmup_requests (PredictLog / ClassifyLog) before serving."""
        file = Path(path) / WARMUP_FILE
        if not file.is_file():
            return
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        count = 0
        for raw in tf.data.TFRecordDataset(str(file)):
            log_entry = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            kind = log_entry.WhichOneof("log_type")
            if kind == "predict_log":
                req = log_entry.predict_log.request
                inputs = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
                dtypes = {k: v.dtype for k, v in req.inputs.items()}
                sig = model.signature(req.model_spec.signature_name)
                model.check_inputs(sig, inputs, dtypes)
                model.run(sig, inputs)
            elif kind == "classify_log":
                req = log_entry.classify_log.request
                examples = [e.SerializeToString() for e in req.input.example_list.examples]
                sig = model.signature(req.model_spec.signature_name)
                alias = next(iter(sig.inputs))
                model.run(sig, {alias: np.array(examples, dtype=object)})
            else:
                raise ServingError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {kind}")
            count += 1
            if count >= MAX_WARMUP_RECORDS:
                raise ServingError("INVALID_ARGUMENT", f"Number of warmup records exceeds the maximum "
                                                       f"({MAX_WARMUP_RECORDS}) at {file}")
        log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d.", path, count)


def _path_mapper(models_dir: str | None):
    """A /models/NAME base path (the Docker image's) falls back to MODELS_DIR/NAME here."""
    root = Path(models_dir) if models_dir else Path("models")

    def resolve(base_path: str) -> Path:
        p = Path(base_path)
        if p.exists():
            return p
        parts = p.parts
        if p.is_absolute() and len(parts) >= 2 and parts[1] == "models":
            alt = root.joinpath(*parts[2:])
            if alt.exists():
                log.info("base path %s not found; using %s", base_path, alt)
                return alt
        return p

    return resolve


class ModelServer:
    """Start with `.start()`, stop with `.stop()` (also a context manager).

    Ports: an int binds that port, 0 lets the system choose (see `.grpc_port` / `.rest_port`),
    None disables that front end.
    """

    def __init__(self, *, port: int | None = 8500, rest_api_port: int | None = None, host: str = "0.0.0.0",
                 model_name: str | None = None, model_base_path: str | None = None,
                 model_config_file: str | None = None, config=None,
                 enable_batching: bool = False, batching_parameters_file: str | None = None,
                 batching_parameters: BatchingParameters | None = None,
                 file_system_poll_wait_seconds: float = 1.0, model_config_file_poll_wait_seconds: float = 0.0,
                 enable_model_warmup: bool = True, max_num_load_retries: int = 5,
                 enable_signature_method_name_check: bool = False, grpc_max_threads: int = 64,
                 models_dir: str | None = None):
        if config is None:
            if model_config_file:
                config = read_model_config(model_config_file)
            elif model_name and model_base_path:
                config = single_model_config(model_name, model_base_path)
            else:
                raise ValueError("give --model_config_file, or --model_name and --model_base_path")
        batching = None
        if enable_batching:
            batching = batching_parameters or (BatchingParameters.read(batching_parameters_file)
                                               if batching_parameters_file else BatchingParameters())
        self.port, self.rest_api_port, self.host = port, rest_api_port, host
        self.model_config_file = model_config_file
        self.config_poll_seconds = model_config_file_poll_wait_seconds
        self.grpc_max_threads = grpc_max_threads
        self.manager = ModelManager(config, poll_seconds=file_system_poll_wait_seconds, warmup=enable_model_warmup,
                                    max_load_retries=max_num_load_retries, path_map=_path_mapper(models_dir))
        self.core = ServingCore(self.manager, batching, enable_signature_method_name_check)
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc = None
        self._rest = None
        self._rest_thread = None
        self._stopped = threading.Event()
        self._config_thread = None

    @property
    def grpc_target(self) -> str:
        return f"{'127.0.0.1' if self.host in ('0.0.0.0', '') else self.host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else self.host}:{self.rest_port}"

    def start(self) -> "ModelServer":
        self.manager.start()
        if self.port is not None:
            from kerasface.serving.grpc import make_grpc_server

            self._grpc, self.grpc_port = make_grpc_server(self.core, self.host, self.port, self.grpc_max_threads)
            self._grpc.start()
            log.info("Running gRPC ModelServer at %s:%d ...", self.host, self.grpc_port)
        if self.rest_api_port is not None:
            from kerasface.serving.rest import make_rest_server

            self._rest = make_rest_server(self.core, self.host, self.rest_api_port)
            self.rest_port = self._rest.server_address[1]
            self._rest_thread = threading.Thread(target=self._rest.serve_forever, name="kerasface-rest", daemon=True)
            self._rest_thread.start()
            log.info("Exporting HTTP/REST API at:%s:%d ...", self.host, self.rest_port)
        if self.model_config_file and self.config_poll_seconds and self.config_poll_seconds > 0:
            self._config_thread = threading.Thread(target=self._watch_config, daemon=True, name="kerasface-config")
            self._config_thread.start()
        return self

    def _watch_config(self) -> None:
        last = Path(self.model_config_file).read_text()
        while not self._stopped.wait(self.config_poll_seconds):
            try:
                text = Path(self.model_config_file).read_text()
                if text != last:
                    self.manager.reload(read_model_config(self.model_config_file))
                    last = text
            except Exception as exc:  # keep the old config
                log.error("reloading %s failed: %s", self.model_config_file, exc)

    def stop(self, grace: float = 1.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        self.core.close()
        self.manager.stop()

    def wait(self) -> None:
        self._stopped.wait()

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ----------------------------------------------------------------------------- command line


def _bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kerasface.serving", allow_abbrev=False,
                                description="TF Serving-compatible gRPC + REST model server "
                                            "(tensorflow_model_server's flags).")
    flag = p.add_argument
    flag("--port", type=int, default=8500, help="gRPC port (default 8500; 0 = any free port)")
    flag("--rest_api_port", type=int, default=0, help="REST port; 0 disables REST (tensorflow_model_server's default)")
    flag("--rest_api_num_threads", type=int, default=0, help="accepted for compatibility (a thread per connection)")
    flag("--rest_api_timeout_in_ms", type=int, default=30000, help="accepted for compatibility")
    flag("--model_name", default="default", help="name of the model (with --model_base_path)")
    flag("--model_base_path", default="", help="folder holding the model's integer version folders")
    flag("--model_config_file", default="", help="text-format ModelServerConfig (overrides --model_name/base_path)")
    flag("--model_config_file_poll_wait_seconds", type=float, default=0, help="re-read the config file this often")
    flag("--enable_batching", type=_bool, nargs="?", const=True, default=False, help="server-side batching")
    flag("--batching_parameters_file", default="", help="text-format BatchingParameters")
    flag("--file_system_poll_wait_seconds", type=float, default=1, help="seconds between scans for new versions")
    flag("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True,
         help="replay assets.extra/tf_serving_warmup_requests at load (default true)")
    flag("--max_num_load_retries", type=int, default=5)
    flag("--load_retry_interval_micros", type=int, default=60_000_000, help="accepted for compatibility")
    flag("--enable_signature_method_name_check", type=_bool, nargs="?", const=True, default=False)
    flag("--tensorflow_intra_op_parallelism", type=int, default=0)
    flag("--tensorflow_inter_op_parallelism", type=int, default=0)
    flag("--tensorflow_session_parallelism", type=int, default=0, help="accepted for compatibility")
    flag("--grpc_max_threads", type=int, default=64, help="gRPC worker threads")
    flag("--allow_version_labels_for_unavailable_models", type=_bool, nargs="?", const=True, default=False,
         help="accepted for compatibility")
    flag("--host", default="0.0.0.0", help="(kerasface) address to bind, e.g. 127.0.0.1")
    flag("--models_dir", default="", help="(kerasface) local folder for /models/... base paths (default ./models)")
    flag("--verbose", action="store_true", help="(kerasface) debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname).1s %(name)s] %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if args.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    if not args.model_config_file and not args.model_base_path:
        print("error: give --model_config_file, or --model_name and --model_base_path", file=sys.stderr)
        return 2
    try:
        server = ModelServer(
            port=args.port, rest_api_port=args.rest_api_port or None, host=args.host,
            model_name=args.model_name, model_base_path=args.model_base_path,
            model_config_file=args.model_config_file or None, enable_batching=args.enable_batching,
            batching_parameters_file=args.batching_parameters_file or None,
            file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
            model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
            enable_model_warmup=args.enable_model_warmup, max_num_load_retries=args.max_num_load_retries,
            enable_signature_method_name_check=args.enable_signature_method_name_check,
            grpc_max_threads=args.grpc_max_threads, models_dir=args.models_dir or None)
        server.start()
    except (ValueError, FileNotFoundError, ServingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: threading.Thread(target=server.stop, daemon=True).start())
    ports = {"grpc": server.grpc_port, "rest": server.rest_port, "models": server.manager.model_names()}
    print(f"kerasface.serving ready: {json.dumps(ports)}", flush=True)
    server.wait()
    return 0
