"""Model management for kerasface.serving: config files, version policy, loading, validation.

Mirrors TensorFlow Serving's ServerCore over a folder in its layout (BASE_PATH/<integer version>/
holding a SavedModel):

- the model config is a text-format `ModelServerConfig` (tensorflow_serving.config), or one model
  from --model_name/--model_base_path; `model_version_policy` is `latest {num_versions}` (default
  latest 1), `all {}` or `specific {versions}`; `version_labels` map labels to versions;
- every `file_system_poll_wait_seconds` the base paths are listed again: new aspired versions are
  loaded first (warmed up from assets.extra/tf_serving_warmup_requests), then versions no longer
  aspired are unloaded, so a model stays available while it is upgraded;
- requests are checked against the SignatureDef as TF Serving checks them, and errors carry TF
  Serving's canonical codes and messages (`ServingError`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

log = logging.getLogger("kerasface.serving")

# canonical error codes (google.rpc.Code == tensorflow.error.Code == grpc.StatusCode values)
CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}
CODE_NAMES = {v: k for k, v in CODES.items()}
# TF Serving's http_rest_api_util ToHTTPStatusCode
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
    "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """An error with a canonical code name ("NOT_FOUND", ...) and TF Serving's message."""

    def __init__(self, code: str, message: str):
        if code not in CODES:
            raise ValueError(f"unknown status code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def __str__(self) -> str:
        return self.message


def from_tf_error(exc: Exception) -> ServingError:
    """Map a tf.errors.OpError (whose codes are the canonical ones) to a ServingError."""
    code = getattr(exc, "error_code", None)
    message = getattr(exc, "message", None) or str(exc)
    name = CODE_NAMES.get(code, "INVALID_ARGUMENT" if isinstance(exc, (ValueError, TypeError)) else "INTERNAL")
    return ServingError(name, message.strip().splitlines()[0] if message.strip() else name)


# ----------------------------------------------------------------------------- config files


def read_model_config(path: str | os.PathLike):
    """Parse a text-format ModelServerConfig; errors name the file and line."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    text = Path(path).read_text()
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return config


def single_model_config(name: str, base_path: str):
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name = name
    entry.base_path = base_path
    entry.model_platform = "tensorflow"
    return config


def wanted_versions(entry, on_disk: Iterable[int]) -> list[int]:
    """The versions the model's version policy aspires to, among those on disk."""
    on_disk = sorted(set(on_disk))
    policy = entry.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return on_disk
    if which == "specific":
        return [v for v in on_disk if v in set(policy.specific.versions)]
    n = policy.latest.num_versions if which == "latest" and policy.latest.num_versions > 0 else 1
    return on_disk[-n:]


def list_versions(base: Path) -> list[int]:
    try:
        return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir())
    except FileNotFoundError:
        return []


# ----------------------------------------------------------------------------- signatures


_DTYPE_NAMES = {}


def dtype_name(enum_value: int) -> str:
    """TF Serving's spelling of a DataType in messages: float, string, int32, ..."""
    if enum_value not in _DTYPE_NAMES:
        import tensorflow as tf

        try:
            _DTYPE_NAMES[enum_value] = tf.dtypes.as_dtype(enum_value).name.replace("float32", "float").replace(
                "float64", "double")
        except TypeError:
            _DTYPE_NAMES[enum_value] = f"DT_{enum_value}"
    return _DTYPE_NAMES[enum_value]


@dataclass
class Signature:
    name: str
    method_name: str
    inputs: dict[str, tuple[int, list[int] | None]]  # alias -> (DataType enum, dims or None)
    outputs: dict[str, tuple[int, list[int] | None]]
    fn: Callable | None = None


def _dims(info) -> list[int] | None:
    return None if info.tensor_shape.unknown_rank else [int(d.size) for d in info.tensor_shape.dim]


class LoadedModel:
    """One loaded version: the SavedModel, its SignatureDefs, and a checked `run`."""

    def __init__(self, name: str, version: int, path: Path):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.name, self.version, self.path = name, version, Path(path)
        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString((self.path / "saved_model.pb").read_bytes())
        meta = next((mg for mg in sm.meta_graphs if "serve" in mg.meta_info_def.tags), sm.meta_graphs[0])
        self.signature_defs = dict(meta.signature_def)
        self.obj = tf.saved_model.load(str(self.path), tags=["serve"])
        self.signatures: dict[str, Signature] = {}
        for key, sig in self.signature_defs.items():
            if key == "__saved_model_init_op":
                continue
            self.signatures[key] = Signature(
                key, sig.method_name,
                {a: (i.dtype, _dims(i)) for a, i in sig.inputs.items()},
                {a: (i.dtype, _dims(i)) for a, i in sig.outputs.items()},
                self.obj.signatures.get(key) if hasattr(self.obj.signatures, "get") else self.obj.signatures[key])

    def signature(self, name: str) -> Signature:
        key = name or "serving_default"
        if key not in self.signatures:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{key}" not found.')
        return self.signatures[key]

    def check_inputs(self, sig: Signature, inputs: dict[str, np.ndarray], dtypes: dict[str, int]) -> None:
        """TF Serving's checks: input names, then dtype, then shape (INVALID_ARGUMENT)."""
        sent, required = set(inputs), set(sig.inputs)
        if sent != required:
            extra = ",".join(sorted(sent - required))
            missing = ",".join(sorted(required - sent))
            raise ServingError("INVALID_ARGUMENT",
                               f"Request inputs do not match required inputs for model `{self.name}`. "
                               f"Send extra: {{{extra}}}. Missing but required: {{{missing}}}.")
        for index, alias in enumerate(sorted(sig.inputs)):
            want_dtype, dims = sig.inputs[alias]
            got = dtypes[alias]
            if got != want_dtype:
                raise ServingError("INVALID_ARGUMENT", f"Expects arg[{index}] to be {dtype_name(want_dtype)} "
                                                       f"but {dtype_name(got)} is provided")
            shape = list(inputs[alias].shape)
            if dims is not None and (len(dims) != len(shape) or any(d >= 0 and d != s for d, s in zip(dims, shape))):
                want = "[" + ",".join("?" if d < 0 else str(d) for d in dims) + "]"
                raise ServingError("INVALID_ARGUMENT",
                                   f"input `{alias}` of signature `{sig.name}` has shape [{','.join(map(str, shape))}] "
                                   f"but the model expects {want}")

    def check_output_filter(self, sig: Signature, output_filter: Iterable[str]) -> list[str]:
        names = list(output_filter)
        for alias in names:
            if alias not in sig.outputs:
                raise ServingError("INVALID_ARGUMENT",
                                   f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                                   f"the set {{{','.join(sorted(sig.outputs))}}}.")
        return names or sorted(sig.outputs)

    def run(self, sig: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        try:
            tensors = {k: tf.constant(v) for k, v in inputs.items()}
            result = sig.fn(**tensors)
            return {k: v.numpy() for k, v in result.items()}
        except tf.errors.OpError as exc:
            raise from_tf_error(exc) from None
        except (ValueError, TypeError) as exc:
            raise ServingError("INVALID_ARGUMENT", str(exc).strip().splitlines()[0]) from None


# ----------------------------------------------------------------------------- manager

STATES = ("START", "LOADING", "AVAILABLE", "UNLOADING", "END")


@dataclass
class Servable:
    name: str
    version: int
    state: str = "START"
    error: ServingError | None = None
    model: LoadedModel | None = None
    failures: int = 0


@dataclass
class ModelEntry:
    config: object  # tensorflow.serving.ModelConfig
    base: Path
    versions: dict[int, Servable] = field(default_factory=dict)


class ModelManager:
    """Loads and unloads versions as the config and the folders say; thread-safe lookups."""

    def __init__(self, config, poll_seconds: float = 1.0, warmup: bool = True, max_load_retries: int = 5,
                 path_map: Callable[[str], Path] | None = None, on_unload: Callable[[str, int], None] | None = None):
        self._lock = threading.RLock()
        self._poll_lock = threading.Lock()
        self._models: dict[str, ModelEntry] = {}
        self.poll_seconds = poll_seconds
        self.warmup = warmup
        self.max_load_retries = max_load_retries
        self.path_map = path_map or (lambda p: Path(p))
        self.on_unload = on_unload
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.warmup_runner: Callable[[LoadedModel, object], None] | None = None
        self.set_config(config)

    # ------------------------------------------------------------------ config

    def set_config(self, config) -> None:
        if config.WhichOneof("config") != "model_config_list":
            raise ServingError("INVALID_ARGUMENT", "ServerModelConfig type not supported by HandleReloadConfigRequest."
                                                   " Only ModelConfigList is currently supported")
        seen = set()
        entries = {}
        for entry in config.model_config_list.config:
            if not entry.name:
                raise ServingError("INVALID_ARGUMENT", "Illegal to have a model config without a name")
            if entry.name in seen:
                raise ServingError("INVALID_ARGUMENT", f"Illegal to list model {entry.name} multiple times in config list")
            seen.add(entry.name)
            if entry.model_platform and entry.model_platform != "tensorflow":
                raise ServingError("INVALID_ARGUMENT", f"Model {entry.name}: platform {entry.model_platform} is not "
                                                       "supported; only tensorflow")
            base = self.path_map(entry.base_path)
            if not base.is_dir():
                raise ServingError("NOT_FOUND", f"Could not find base path {entry.base_path} for servable {entry.name}")
            entries[entry.name] = (entry, base)
        with self._lock:
            old = self._models
            self._models = {}
            for name, (entry, base) in entries.items():
                keep = old.pop(name, None)
                if keep is not None and keep.base == base:
                    keep.config = entry
                    self._models[name] = keep
                else:
                    if keep is not None:
                        old[name] = keep
                    self._models[name] = ModelEntry(entry, base)
        for entry in old.values():  # models no longer configured
            for servable in list(entry.versions.values()):
                self._unload(servable)
        self.config = config

    def reload(self, config) -> None:
        """HandleReloadConfigRequest: switch config, then load/unload until it is in effect."""
        self.set_config(config)
        self.poll()

    # ------------------------------------------------------------------ polling

    def start(self) -> None:
        self.poll()
        if self.poll_seconds and self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._loop, name="kerasface-serving-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        with self._lock:
            for entry in self._models.values():
                for servable in entry.versions.values():
                    if servable.model is not None:
                        servable.model = None
                        servable.state = "END"

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # pragma: no cover - keep serving whatever happens on disk
                log.exception("file system poll failed")

    def poll(self) -> None:
        with self._poll_lock:
            with self._lock:
                entries = list(self._models.values())
            for entry in entries:
                on_disk = list_versions(entry.base)
                wanted = wanted_versions(entry.config, on_disk)
                for version in wanted:
                    servable = entry.versions.get(version)
                    if servable is not None and servable.state != "END":
                        continue  # loading or available
                    if servable is not None and servable.error is not None and \
                            servable.failures >= self.max_load_retries:
                        continue  # gave up on this version (TF Serving's --max_num_load_retries)
                    self._load(entry, version, servable)
                # availability-preserving: drop a version only once an aspired one serves, so a
                # new version that fails to load leaves the old one in service
                serving = any(entry.versions[v].state == "AVAILABLE" for v in wanted if v in entry.versions)
                for version, servable in list(entry.versions.items()):
                    if version not in wanted and servable.state != "END" and (serving or version not in on_disk):
                        self._unload(servable)

    def _load(self, entry: ModelEntry, version: int, servable: Servable | None) -> None:
        name = entry.config.name
        servable = servable or Servable(name, version)
        with self._lock:
            entry.versions[version] = servable
            servable.state, servable.error = "LOADING", None
        path = entry.base / str(version)
        started = time.perf_counter()
        try:
            model = LoadedModel(name, version, path)
            if self.warmup and self.warmup_runner is not None:
                self.warmup_runner(model, path)
        except Exception as exc:  # a broken version must not take the server down
            err = exc if isinstance(exc, ServingError) else ServingError(
                "UNKNOWN", f"Failed to load servable {name} version {version}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
            with self._lock:
                servable.state, servable.error, servable.model = "END", err, None
                servable.failures += 1
            log.error("%s", err.message)
            return
        with self._lock:
            servable.model, servable.state = model, "AVAILABLE"
        log.info("Successfully loaded servable version {name: %s version: %d} in %.1f s", name, version,
                 time.perf_counter() - started)

    def _unload(self, servable: Servable) -> None:
        with self._lock:
            servable.state = "UNLOADING"
            servable.model = None
            servable.state = "END"
            servable.error = None
        if self.on_unload:
            self.on_unload(servable.name, servable.version)
        log.info("Unloaded servable version {name: %s version: %d}", servable.name, servable.version)

    # ------------------------------------------------------------------ lookups

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def _resolve_label(self, entry: ModelEntry, label: str) -> int:
        labels = dict(entry.config.version_labels)
        if label not in labels:
            raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
        return int(labels[label])

    def get(self, name: str, version: int | None = None, label: str | None = None) -> LoadedModel:
        with self._lock:
            entry = self._models.get(name)
            request = (f"Specific({name}, {version})" if version is not None else
                       f"Labeled({name}, {label})" if label else f"Latest({name})")
            if entry is None:
                raise ServingError("NOT_FOUND", f"Servable not found for request: {request}")
            if label:
                version = self._resolve_label(entry, label)
            if version is not None:
                s = entry.versions.get(version)
                if s is None or s.model is None or s.state != "AVAILABLE":
                    raise ServingError("NOT_FOUND", f"Servable not found for request: {request}")
                return s.model
            available = [s for v, s in sorted(entry.versions.items()) if s.state == "AVAILABLE" and s.model]
            if not available:
                raise ServingError("NOT_FOUND", f"Servable not found for request: {request}")
            return available[-1].model

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[Servable]:
        with self._lock:
            entry = self._models.get(name)
            if entry is None or not entry.versions:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
            if label:
                version = self._resolve_label(entry, label)
            if version is not None:
                if version not in entry.versions:
                    raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
                return [entry.versions[version]]
            return [entry.versions[v] for v in sorted(entry.versions)]
