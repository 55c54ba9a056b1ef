"""tensorflow_model_server's command line: every flag of its 2.x `--help`, with its default.

`IMPLEMENTED` flags act as they do in TF Serving; the others are accepted so that a start command
written for the official server runs unchanged, and each one given logs one line saying it has no
effect here. An argument that is no flag at all is reported ("unknown argument: ...") and
skipped, as tensorflow_model_server skips it. Flags take `--name=value` (TF Serving's form) or
`--name value`; booleans also take a bare `--name`.

A few flags are kerasface's own (`KERASFACE_FLAGS`): the bind address, a local folder for the
Docker image's /models paths, the REST body size limit and debug logging.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass

log = logging.getLogger("kerasface.serving")

MAX_REQUEST_BYTES = 256 * 2**20  # default REST body limit (--rest_api_max_request_bytes)


@dataclass(frozen=True)
class Flag:
    name: str
    kind: type  # int, float, str or bool
    default: object
    implemented: bool
    help: str


def _cpus() -> int:
    return os.cpu_count() or 1


# tensorflow_model_server 2.x, in its --help order
TF_SERVING_FLAGS = (
    Flag("port", int, 8500, True, "gRPC port (kerasface: 0 lets the system choose one)"),
    Flag("grpc_socket_path", str, "", True, "also serve gRPC on this UNIX socket"),
    Flag("rest_api_port", int, 0, True, "REST port; 0 disables REST; must differ from --port"),
    Flag("rest_api_num_threads", int, 4 * _cpus(), False, "REST threads (here: one thread per connection)"),
    Flag("rest_api_timeout_in_ms", int, 30000, True, "a REST client that stalls this long is disconnected"),
    Flag("rest_api_enable_cors_support", bool, False, True, "send CORS headers on REST answers"),
    Flag("enable_batching", bool, False, True, "server-side batching"),
    Flag("allow_version_labels_for_unavailable_models", bool, False, True,
         "a label not yet assigned may point at a version that is not available yet"),
    Flag("batching_parameters_file", str, "", True, "text-format BatchingParameters (needs --enable_batching)"),
    Flag("enable_per_model_batching_parameters", bool, False, False, "batching_params.pbtxt per SavedModel"),
    Flag("model_config_file", str, "", True, "text-format ModelServerConfig (then --model_name/base_path are ignored)"),
    Flag("model_config_file_poll_wait_seconds", int, 0, True, "re-read --model_config_file this often (0: once)"),
    Flag("model_name", str, "default", True, "name of the model (with --model_base_path)"),
    Flag("model_base_path", str, "", True, "folder holding the model's integer-named version folders"),
    Flag("num_load_threads", int, 0, False, "load thread pool size"),
    Flag("num_unload_threads", int, 0, False, "unload thread pool size"),
    Flag("max_num_load_retries", int, 5, True, "retries of a failed load before giving up"),
    Flag("load_retry_interval_micros", int, 60_000_000, True, "wait between load retries"),
    Flag("file_system_poll_wait_seconds", int, 1, True, "seconds between scans for new versions (0: once)"),
    Flag("flush_filesystem_caches", bool, True, False, "flush file system caches after loading"),
    Flag("tensorflow_session_parallelism", int, 0, True, "intra- and inter-op threads of each model's session"),
    Flag("tensorflow_session_config_file", str, "", True, "text-format ConfigProto for each model's session"),
    Flag("tensorflow_intra_op_parallelism", int, 0, True, "intra-op threads of each model's session"),
    Flag("tensorflow_inter_op_parallelism", int, 0, True, "inter-op threads of each model's session"),
    Flag("use_alts_credentials", bool, False, False, "Google ALTS credentials"),
    Flag("ssl_config_file", str, "", True, "text-format SSLConfig: serve gRPC over TLS"),
    Flag("platform_config_file", str, "", False, "text-format PlatformConfigMap"),
    Flag("per_process_gpu_memory_fraction", float, 0.0, True, "GPU memory fraction of each model's session"),
    Flag("saved_model_tags", str, "serve", True, "comma-separated tag set of the MetaGraphDef to load"),
    Flag("grpc_channel_arguments", str, "", True, "comma-separated gRPC server arguments, e.g. grpc.max_connection_age_ms=2000"),
    Flag("grpc_max_threads", int, 4 * _cpus(), True, "gRPC worker threads"),
    Flag("enable_model_warmup", bool, True, True, "replay assets.extra/tf_serving_warmup_requests at load"),
    Flag("num_request_iterations_for_warmup", int, 1, True, "times each warmup request is replayed"),
    Flag("version", bool, False, True, "print the versions and exit"),
    Flag("monitoring_config_file", str, "", True, "text-format MonitoringConfig: Prometheus metrics on the REST port"),
    Flag("remove_unused_fields_from_bundle_metagraph", bool, True, False, "drop unused MetaGraphDef fields"),
    Flag("prefer_tflite_model", bool, False, False, "serve model.tflite instead of saved_model.pb"),
    Flag("num_tflite_pools", int, _cpus(), False, "TFLite interpreter pools"),
    Flag("num_tflite_interpreters_per_pool", int, 1, False, "TFLite interpreters per pool"),
    Flag("enable_signature_method_name_check", bool, False, True, "check SignatureDef method_name per API"),
    Flag("xla_cpu_compilation_enabled", bool, False, False, "XLA:CPU JIT"),
    Flag("xla_gpu_compilation_enabled", bool, False, False, "XLA:CPU and XLA:GPU JIT"),
    Flag("enable_profiler", bool, True, False, "profiler service"),
    Flag("thread_pool_factory_config_file", str, "", False, "text-format ThreadPoolConfig"),
    Flag("mixed_precision", str, "", False, "mixed precision mode"),
    Flag("skip_initialize_tpu", bool, False, False, "skip TPU initialisation"),
    Flag("enable_grpc_healthcheck_service", bool, False, False, "standard gRPC health service"),
    Flag("enable_serialization_as_tensor_content", bool, False, True,
         "Predict answers pack tensors in tensor_content instead of the typed value fields"),
    # flags of earlier 2.x releases, still found in scripts
    Flag("use_tflite_model", bool, False, False, "(earlier 2.x) serve model.tflite"),
    Flag("num_tflite_interpreters", int, 1, False, "(earlier 2.x) TFLite interpreters"),
)

KERASFACE_FLAGS = (
    Flag("host", str, "0.0.0.0", True, "(kerasface) address to bind, e.g. 127.0.0.1"),
    Flag("models_dir", str, "", True, "(kerasface) local folder for /models/... base paths (default ./models)"),
    Flag("rest_api_max_request_bytes", int, MAX_REQUEST_BYTES, True,
         "(kerasface) larger REST bodies are refused with 413 before they are read"),
    Flag("verbose", bool, False, True, "(kerasface) debug logging"),
)

ALL_FLAGS = {f.name: f for f in TF_SERVING_FLAGS + KERASFACE_FLAGS}


def parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true"):
        return True
    if low in ("0", "false"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kerasface.serving", allow_abbrev=False,
                                description="TF Serving-compatible gRPC + REST model server "
                                            "(tensorflow_model_server's flags).")
    for flag in ALL_FLAGS.values():
        marker = "" if flag.implemented else "[no effect here] "
        text = f"{marker}{flag.help} (default {flag.default!r})"
        if flag.kind is bool:
            p.add_argument(f"--{flag.name}", type=parse_bool, nargs="?", const=True, default=None, help=text)
        else:
            p.add_argument(f"--{flag.name}", type=flag.kind, default=None, help=text)
    return p


def parse_flags(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """(every flag with its value or default, the names of the flags given)."""
    args, unknown = build_parser().parse_known_args(argv)
    for arg in unknown:
        log.error("unknown argument: %s", arg)
    given = [name for name in ALL_FLAGS if getattr(args, name) is not None]
    for name, flag in ALL_FLAGS.items():
        if getattr(args, name) is None:
            setattr(args, name, flag.default)
    return args, given


def report_no_effect(given: list[str]) -> None:
    for name in given:
        if not ALL_FLAGS[name].implemented:
            log.info("--%s is accepted for compatibility with tensorflow_model_server and has no effect here", name)


def channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """--grpc_channel_arguments "a=1,b=x" -> [("a", 1), ("b", "x")]: an integer value is passed as one."""
    result = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        try:
            result.append((key, int(value)))
        except ValueError:
            result.append((key, value))
    return result
