"""A TensorFlow Serving-compatible model server: gRPC and REST over a TF Serving models folder.

    python -m kerasface.serving --port=8500 --rest_api_port=8501 \\
        --model_name=faces --model_base_path=$PWD/models/faces
    python -m kerasface.serving --port=8500 --rest_api_port=8501 \\
        --model_config_file=serving/models.config --enable_batching \\
        --batching_parameters_file=serving/batching.config --file_system_poll_wait_seconds=5

The flags are `tensorflow_model_server`'s (kerasface.serving.flags lists them all and says which
act here), so a script can start either server. Where the official server is available (the
`tensorflow/serving` image), use it; this one is for machines without it, and for tests. gRPC
serves the official `tensorflow.serving.PredictionService` (Predict, Classify, Regress,
MultiInference, GetModelMetadata) and `ModelService` (GetModelStatus, HandleReloadConfigRequest)
from the `tensorflow-serving-api` stubs, on a TCP port and optionally a UNIX socket; REST serves
/v1/models/... with the standard library's ThreadingHTTPServer.

ServingCore handles requests independently of the transport; ModelServer wires the manager, the
core and the two front ends together from the flags.
"""

from __future__ import annotations

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
from kerasface.serving.errors import ServingError
from kerasface.serving.flags import MAX_REQUEST_BYTES, channel_arguments, parse_flags, report_no_effect
from kerasface.serving.metrics import Metrics
from kerasface.serving.models import LoadOptions, ModelManager, read_model_config, single_model_config
from kerasface.serving.protos import message_class, read_text_proto
from kerasface.serving.signatures import (CLASSIFY, PREDICT, REGRESS, LoadedModel, Signature,
                                          classification_outputs, classification_result, example_input,
                                          regression_outputs, regression_result)

log = logging.getLogger("kerasface.serving")

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


class ServingCore:
    """Transport-independent request handling shared by the gRPC and REST front ends."""

    def __init__(self, manager: ModelManager, batching: BatchingParameters | None = None,
                 method_name_check: bool = False, warmup_iterations: int = 1):
        self.manager = manager
        self.batching = batching
        self.method_name_check = method_name_check
        self.warmup_iterations = max(warmup_iterations, 1)
        self.metrics = Metrics()
        self._batchers: dict[tuple[str, int, str], Batcher] = {}
        self._lock = threading.Lock()
        manager.on_unload = self._drop_batchers
        manager.warmup_runner = self._warmup
        manager.on_load = lambda path, ok: self.metrics.load(str(path), ok)

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

    # ------------------------------------------------------------------ lookups and running

    def model(self, name: str, version: int | None = None, label: str | None = None) -> LoadedModel:
        if not name:
            raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
        return self.manager.get(name, version, label)

    def _run(self, model: LoadedModel, sig: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """All outputs of `sig`; through the batcher when batching is on and the signature has batch dims."""
        if self.batching is None or not sig.batchable:
            return model.run(sig, inputs)
        key = (model.name, model.version, sig.name)
        with self._lock:
            batcher = self._batchers.get(key)
            if batcher is None:
                batcher = Batcher(lambda merged: model.run(sig, merged), self.batching,
                                  f"{model.name}-{model.version}-{sig.name}",
                                  observe=lambda rows, pad: self.metrics.batch(model.name, sig.name, rows, pad))
                self._batchers[key] = batcher
        return batcher.submit(inputs)

    def _check_method(self, sig: Signature, method: str, api: str) -> None:
        if self.method_name_check and sig.method_name != method:
            raise ServingError("INVALID_ARGUMENT", f"Expected {api} signature method_name to be {method}. "
                                                   f"Was: {sig.method_name}")

    # ------------------------------------------------------------------ APIs

    def predict(self, model: LoadedModel, signature_name: str, inputs: dict[str, np.ndarray],
                dtypes: dict[str, int], output_filter: Iterable[str] = ()) -> tuple[str, dict[str, np.ndarray]]:
        sig = model.signature(signature_name)
        self._check_method(sig, PREDICT, "prediction")
        model.check_inputs(sig, inputs, dtypes)
        wanted = model.check_output_filter(sig, output_filter)
        outputs = self._run(model, sig, inputs)
        return sig.name, {k: outputs[k] for k in wanted}

    def _examples(self, model: LoadedModel, signature_name: str, method: str, api: str,
                  serialized: list[bytes]) -> tuple[Signature, dict[str, np.ndarray]]:
        sig = model.signature(signature_name)
        self._check_method(sig, method, api)
        alias = example_input(model, sig, api)
        if not serialized:
            raise ServingError("INVALID_ARGUMENT", "Invalid argument: Input is empty.")
        return sig, {alias: np.array(serialized, dtype=object)}

    def classify(self, model: LoadedModel, signature_name: str, serialized: list[bytes]):
        """Classify API: (signature name, [[(label, score) per class] per example])."""
        sig, inputs = self._examples(model, signature_name, CLASSIFY, "classification", serialized)
        classification_outputs(sig)
        return sig.name, classification_result(self._run(model, sig, inputs), len(serialized))

    def regress(self, model: LoadedModel, signature_name: str, serialized: list[bytes]):
        """Regress API: (signature name, [value per example])."""
        sig, inputs = self._examples(model, signature_name, REGRESS, "regression", serialized)
        regression_outputs(sig)
        return sig.name, regression_result(self._run(model, sig, inputs), len(serialized))

    def multi_inference(self, model: LoadedModel, tasks: list[tuple[str, str]], serialized: list[bytes]):
        """MultiInference API: tasks [(signature name, method name)] over one shared input tensor.

        Returns [(signature name, method name, result)] with Classify's or Regress's result.
        """
        if not tasks:
            raise ServingError("INVALID_ARGUMENT", "MultiInferenceRequest must specify at least one task.")
        seen, plan, input_tensor = set(), [], None
        for signature_name, method in tasks:
            sig = model.signature(signature_name)
            if sig.name in seen:
                raise ServingError("INVALID_ARGUMENT", f"Duplicate evaluation of signature: {sig.name}")
            seen.add(sig.name)
            if method == CLASSIFY:
                fetch = classification_outputs(sig)
            elif method == REGRESS:
                fetch = regression_outputs(sig)
            else:
                raise ServingError("UNIMPLEMENTED", f"Unsupported signature method_name: {method}")
            alias = example_input(model, sig, "classification" if method == CLASSIFY else "regression")
            if input_tensor is not None and sig.input_tensors[alias] != input_tensor:
                raise ServingError("INVALID_ARGUMENT", "Input tensor must be the same for all Signatures.")
            input_tensor = sig.input_tensors[alias]
            plan.append((sig, method, fetch))
        if not serialized:
            raise ServingError("INVALID_ARGUMENT", "Invalid argument: Input is empty.")
        feed = np.array(serialized, dtype=object)
        results = []
        for sig, method, fetch in plan:
            outputs = model.run(sig, {"inputs": feed}, fetch)
            result = (classification_result(outputs, len(serialized)) if method == CLASSIFY
                      else regression_result(outputs, len(serialized)))
            results.append((sig.name, method, result))
        return results

    # ------------------------------------------------------------------ warmup

    def _warmup(self, model: LoadedModel, path: Path) -> None:
        """Replay assets.extra/tf_serving_warmup_requests (PredictionLog records) before serving."""
        file = Path(path) / WARMUP_FILE
        if not file.is_file():
            return
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        from kerasface.serving.grpc import input_examples

        count = 0
        for raw in tf.data.TFRecordDataset(str(file)):
            entry = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            kind = entry.WhichOneof("log_type")
            for _ in range(self.warmup_iterations):
                if kind == "predict_log":
                    req = entry.predict_log.request
                    self.predict(model, req.model_spec.signature_name,
                                 {k: tf.make_ndarray(v) for k, v in req.inputs.items()},
                                 {k: v.dtype for k, v in req.inputs.items()}, req.output_filter)
                elif kind in ("classify_log", "regress_log"):
                    req = getattr(entry, kind).request
                    run = self.classify if kind == "classify_log" else self.regress
                    run(model, req.model_spec.signature_name, input_examples(req.input))
                elif kind == "multi_inference_log":
                    req = entry.multi_inference_log.request
                    self.multi_inference(model, [(t.model_spec.signature_name, t.method_name) for t in req.tasks],
                                         input_examples(req.input))
                else:
                    raise ServingError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {kind}")
            count += 1
            if count > MAX_WARMUP_RECORDS:
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


def session_config(config_file: str = "", session_parallelism: int = 0, intra_op: int = 0, inter_op: int = 0,
                   gpu_memory_fraction: float = 0.0):
    """Each model's ConfigProto, from TF Serving's session flags (their precedence, their error)."""
    from tensorflow.core.protobuf import config_pb2

    config = config_pb2.ConfigProto()
    if config_file:
        read_text_proto(config_file, config)
    if intra_op > 0 and inter_op > 0 and session_parallelism > 0:
        raise ServingError("INVALID_ARGUMENT", "Either configure server_options.tensorflow_session_parallelism "
                                               "or (server_options.tensorflow_intra_op_parallelism, "
                                               "server_options.tensorflow_inter_op_parallelism) separately. "
                                               "You cannot configure all.")
    if intra_op > 0 or inter_op > 0:
        config.intra_op_parallelism_threads, config.inter_op_parallelism_threads = intra_op, inter_op
    elif session_parallelism > 0:
        config.intra_op_parallelism_threads = config.inter_op_parallelism_threads = session_parallelism
    if gpu_memory_fraction > 0:
        config.gpu_options.per_process_gpu_memory_fraction = gpu_memory_fraction
    return config


class ModelServer:
    """Start with `.start()`, stop with `.stop()` (also a context manager).

    Ports: an int binds that port, 0 lets the system choose (see `.grpc_port` / `.rest_port`),
    None disables that front end. `grpc_socket_path` adds a UNIX socket to gRPC.
    """

    def __init__(self, *, port: int | None = 8500, rest_api_port: int | None = None, host: str = "0.0.0.0",
                 grpc_socket_path: str = "", grpc_channel_arguments: str = "", ssl_config_file: str = "",
                 model_name: str | None = None, model_base_path: str | None = None,
                 model_config_file: str | None = None, config=None,
                 enable_batching: bool = False, batching_parameters_file: str | None = None,
                 batching_parameters: BatchingParameters | None = None,
                 file_system_poll_wait_seconds: float = 1.0, model_config_file_poll_wait_seconds: float = 0.0,
                 enable_model_warmup: bool = True, num_request_iterations_for_warmup: int = 1,
                 max_num_load_retries: int = 5, load_retry_interval_micros: int = 60_000_000,
                 saved_model_tags: str = "serve", session_config=None,
                 allow_version_labels_for_unavailable_models: bool = False,
                 enable_signature_method_name_check: bool = False, grpc_max_threads: int = 64,
                 rest_api_timeout_in_ms: int = 30000, rest_api_enable_cors_support: bool = False,
                 rest_api_max_request_bytes: int = MAX_REQUEST_BYTES, monitoring_config_file: str = "",
                 enable_serialization_as_tensor_content: bool = False, models_dir: str | None = None):
        if config is None:
            if model_config_file:
                config = read_model_config(model_config_file)
            elif model_base_path:
                config = single_model_config(model_name or "default", model_base_path)
            else:
                raise ServingError("INVALID_ARGUMENT", "Both server_options.model_base_path and "
                                                       "server_options.model_config_file are empty!")
        batching = None
        if enable_batching:
            batching = batching_parameters or (BatchingParameters.read(batching_parameters_file)
                                               if batching_parameters_file else BatchingParameters())
        elif batching_parameters_file:
            raise ServingError("INVALID_ARGUMENT", "server_options.batching_parameters_file is set without setting "
                                                   "server_options.enable_batching to true.")
        self.monitoring_path = None
        if monitoring_config_file:
            monitoring = read_text_proto(monitoring_config_file, message_class("MonitoringConfig")())
            if monitoring.prometheus_config.enable:
                from kerasface.serving.metrics import DEFAULT_PATH

                self.monitoring_path = monitoring.prometheus_config.path or DEFAULT_PATH
        self.ssl_config = (read_text_proto(ssl_config_file, message_class("SSLConfig")())
                           if ssl_config_file else None)
        self.channel_arguments = channel_arguments(grpc_channel_arguments)
        self.port, self.rest_api_port, self.host = port, rest_api_port, host
        if rest_api_port and rest_api_port == port:
            log.error("--rest_api_port cannot be same as --port. Please use a different port for HTTP/REST API. "
                      "Skipped exporting HTTP/REST API.")
            self.rest_api_port = None
        self.grpc_socket_path = grpc_socket_path
        self.model_config_file = model_config_file
        self.config_poll_seconds = model_config_file_poll_wait_seconds
        self.grpc_max_threads = grpc_max_threads
        self.rest_options = {"timeout_s": rest_api_timeout_in_ms / 1000 if rest_api_timeout_in_ms > 0 else None,
                             "cors": rest_api_enable_cors_support, "max_request_bytes": rest_api_max_request_bytes,
                             "monitoring_path": self.monitoring_path}
        self.tensor_content = enable_serialization_as_tensor_content
        options = LoadOptions(tags=tuple(t for t in saved_model_tags.split(",") if t) or ("serve",),
                              session_config=session_config, max_load_retries=max_num_load_retries,
                              load_retry_interval_s=max(load_retry_interval_micros, 0) / 1e6,
                              warmup=enable_model_warmup,
                              allow_labels_for_unavailable=allow_version_labels_for_unavailable_models)
        self.manager = ModelManager(config, poll_seconds=file_system_poll_wait_seconds, options=options,
                                    path_map=_path_mapper(models_dir))
        self.core = ServingCore(self.manager, batching, enable_signature_method_name_check,
                                num_request_iterations_for_warmup)
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
        self.manager.start()  # as TF Serving: the ports open once every model has loaded (or failed)
        if self.port is not None:
            from kerasface.serving.grpc import make_grpc_server

            self._grpc, self.grpc_port = make_grpc_server(
                self.core, self.host, self.port, self.grpc_max_threads, socket_path=self.grpc_socket_path,
                channel_arguments=self.channel_arguments, ssl_config=self.ssl_config,
                tensor_content=self.tensor_content)
            self._grpc.start()
            log.info("Running gRPC ModelServer at %s:%d ...", self.host, self.grpc_port)
            if self.grpc_socket_path:
                log.info("Running gRPC ModelServer at UNIX socket %s ...", self.grpc_socket_path)
        if self.rest_api_port is not None:
            from kerasface.serving.rest import make_rest_server

            self._rest = make_rest_server(self.core, self.host, self.rest_api_port, **self.rest_options)
            self.rest_port = self._rest.server_address[1]
            self._rest_thread = threading.Thread(target=self._rest.serve_forever, name="kerasface-rest", daemon=True)
            self._rest_thread.start()
            log.info("Exporting HTTP/REST API at:%s:%d ...", self.host, self.rest_port)
        if self.model_config_file and self.config_poll_seconds and self.config_poll_seconds > 0:
            self._config_thread = threading.Thread(target=self._watch_config, daemon=True, name="kerasface-config")
            self._config_thread.start()
        return self

    def _watch_config(self) -> None:
        while not self._stopped.wait(self.config_poll_seconds):
            try:
                self.manager.reload(read_model_config(self.model_config_file))
            except ServingError as exc:  # keep the old config, as TF Serving does
                log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", exc.detail or exc.message)

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


def server_from_flags(args) -> ModelServer:
    return ModelServer(
        port=args.port, rest_api_port=args.rest_api_port or None, host=args.host,
        grpc_socket_path=args.grpc_socket_path, grpc_channel_arguments=args.grpc_channel_arguments,
        ssl_config_file=args.ssl_config_file, model_name=args.model_name, model_base_path=args.model_base_path,
        model_config_file=args.model_config_file or None, enable_batching=args.enable_batching,
        batching_parameters_file=args.batching_parameters_file or None,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        enable_model_warmup=args.enable_model_warmup,
        num_request_iterations_for_warmup=args.num_request_iterations_for_warmup,
        max_num_load_retries=args.max_num_load_retries, load_retry_interval_micros=args.load_retry_interval_micros,
        saved_model_tags=args.saved_model_tags,
        session_config=session_config(args.tensorflow_session_config_file, args.tensorflow_session_parallelism,
                                      args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism,
                                      args.per_process_gpu_memory_fraction),
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        enable_signature_method_name_check=args.enable_signature_method_name_check,
        grpc_max_threads=args.grpc_max_threads, rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        rest_api_enable_cors_support=args.rest_api_enable_cors_support,
        rest_api_max_request_bytes=args.rest_api_max_request_bytes,
        monitoring_config_file=args.monitoring_config_file,
        enable_serialization_as_tensor_content=args.enable_serialization_as_tensor_content,
        models_dir=args.models_dir or None)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s] %(message)s")
    args, given = parse_flags(argv)
    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if args.version:
        from kerasface import __version__

        print(f"TensorFlow ModelServer: kerasface.serving {__version__}\nTensorFlow Library: {tf.__version__}")
        return 0
    report_no_effect(given)
    try:
        server = server_from_flags(args)
        server.start()
    except ServingError as exc:  # TF Serving's words, exit status 255 (its -1)
        if exc.detail:
            log.error("%s", exc.detail)
        print(f"Failed to start server. Error: {exc.code}: {exc.message}", file=sys.stderr, flush=True)
        return 255
    except (ValueError, OSError) as exc:
        print(f"Failed to start server. Error: INVALID_ARGUMENT: {exc}", file=sys.stderr, flush=True)
        return 255
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: threading.Thread(target=server.stop, daemon=True).start())
    ports = {"grpc": server.grpc_port, "rest": server.rest_port, "models": server.manager.model_names()}
    print(f"kerasface.serving ready: {json.dumps(ports)}", flush=True)
    server.wait()
    return 0
