"""Model management for kerasface.serving: config files, version folders and policy, labels, loading.

Mirrors TensorFlow Serving's ServerCore over a folder in its layout:

- the model config is a text-format `ModelServerConfig` (tensorflow_serving.config), or one model
  from --model_name/--model_base_path; `model_version_policy` is `latest {num_versions}` (default
  latest 1), `all {}` or `specific {versions}`; `version_labels` map labels to versions;
- a version is any folder under the base path whose name parses as an integer, as TF Serving's
  strtoll-style parse reads it: `00000123` is version 123, `+7` is 7; other names are ignored;
- every `file_system_poll_wait_seconds` the base paths are listed again: new aspired versions are
  loaded first (warmed up from assets.extra/tf_serving_warmup_requests), then versions no longer
  aspired are unloaded, so a model stays available while it is upgraded;
- a base path that does not exist (yet) is reported on every poll and waited for, as TF Serving
  waits for it; a version that fails to load is retried `max_num_load_retries` times, then stays
  in END with its error.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from kerasface.serving.errors import ServingError, first_line
from kerasface.serving.protos import read_text_proto
from kerasface.serving.signatures import LoadedModel

__all__ = ["ModelManager", "ServingError", "LoadedModel", "read_model_config", "single_model_config",
           "wanted_versions", "list_versions"]

log = logging.getLogger("kerasface.serving")

# ----------------------------------------------------------------------------- config files


def read_model_config(path):
    """Parse a text-format ModelServerConfig (ServingError as TF Serving reports a bad file)."""
    from tensorflow_serving.config import model_server_config_pb2

    return read_text_proto(str(path), model_server_config_pb2.ModelServerConfig())


def single_model_config(name: str, base_path: str):
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name = name
    entry.base_path = base_path
    entry.model_platform = "tensorflow"
    return config


# ----------------------------------------------------------------------------- version folders

_VERSION_NAME = re.compile(r"\s*[+-]?\d+\s*")


def list_versions(base: Path) -> dict[int, Path]:
    """{version: folder} of the base path's integer-named folders (zero padding allowed)."""
    found: dict[int, Path] = {}
    try:
        children = sorted(base.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return found
    for child in children:
        if not _VERSION_NAME.fullmatch(child.name) or not child.is_dir():
            continue
        version = int(child.name)
        if version in found:
            log.warning("version %d of %s is in both %s and %s; serving the first", version, base,
                        found[version].name, child.name)
            continue
        found[version] = child
    return found


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


# ----------------------------------------------------------------------------- manager

STATES = ("START", "LOADING", "AVAILABLE", "UNLOADING", "END")


@dataclass
class Servable:
    name: str
    version: int
    state: str = "START"
    error: ServingError | None = None
    model: LoadedModel | None = None


@dataclass
class ModelEntry:
    config: object  # tensorflow.serving.ModelConfig
    base: Path
    versions: dict[int, Servable] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)  # in effect (checked) labels


@dataclass
class LoadOptions:
    """How versions are loaded: TF Serving's SessionBundleConfig and ServerCore options that apply here."""

    tags: tuple[str, ...] = ("serve",)
    session_config: object = None  # tf.compat.v1.ConfigProto
    max_load_retries: int = 5
    load_retry_interval_s: float = 60.0
    warmup: bool = True
    allow_labels_for_unavailable: bool = False


class ModelManager:
    """Loads and unloads versions as the config and the folders say; thread-safe lookups."""

    def __init__(self, config, poll_seconds: float = 1.0, options: LoadOptions | None = None,
                 path_map: Callable[[str], Path] | None = None):
        self._lock = threading.RLock()
        self._poll_lock = threading.Lock()
        self._models: dict[str, ModelEntry] = {}
        self.poll_seconds = poll_seconds
        self.options = options or LoadOptions()
        self.path_map = path_map or (lambda p: Path(p))
        self.on_unload: Callable[[str, int], None] | None = None
        self.warmup_runner: Callable[[LoadedModel, Path], None] | None = None
        self.on_load: Callable[[Path, bool], None] | None = None  # (version folder, succeeded)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.set_config(config)

    # ------------------------------------------------------------------ config

    def set_config(self, config, require_base_paths: bool = False) -> None:
        if config.WhichOneof("config") != "model_config_list":
            raise ServingError("INVALID_ARGUMENT", "ServerModelConfig type not supported by HandleReloadConfigRequest."
                                                   " Only ModelConfigList is currently supported")
        entries = {}
        for entry in config.model_config_list.config:
            if not entry.name:
                raise ServingError("INVALID_ARGUMENT", "Illegal to have a model config without a name")
            if entry.name in entries:
                raise ServingError("INVALID_ARGUMENT", f"Illegal to list model {entry.name} multiple times in config list")
            if entry.model_platform and entry.model_platform != "tensorflow":
                raise ServingError("INVALID_ARGUMENT", f"Model {entry.name}: platform {entry.model_platform} is not "
                                                       "supported; only tensorflow")
            base = self.path_map(entry.base_path)
            if require_base_paths and not base.is_dir():
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

    def apply_labels(self) -> None:
        """Put the config's version_labels in effect, as TF Serving checks them after loading.

        A label may only point at an AVAILABLE version; with allow_labels_for_unavailable, a label
        not yet assigned may point at any version. A refused label map leaves the old one in effect.
        """
        with self._lock:
            updates = {}
            for name, entry in self._models.items():
                labels = {k: int(v) for k, v in entry.config.version_labels.items()}
                for label, version in labels.items():
                    s = entry.versions.get(version)
                    available = s is not None and s.state == "AVAILABLE"
                    new_label = label not in entry.labels
                    if not available and not (self.options.allow_labels_for_unavailable and new_label):
                        raise ServingError("FAILED_PRECONDITION",
                                           f"Request to assign label to version {version} of model {name}, which "
                                           "is not currently available for inference")
                updates[name] = labels
            for name, labels in updates.items():
                self._models[name].labels = labels

    def reload(self, config) -> None:
        """HandleReloadConfigRequest: switch config, load/unload until it is in effect, then labels."""
        self.set_config(config, require_base_paths=True)
        self.poll()
        self.apply_labels()

    # ------------------------------------------------------------------ polling

    def start(self) -> None:
        """First poll, then (TF Serving's startup) wait until every model has served or failed once."""
        self.poll()
        if self.poll_seconds and self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._loop, name="kerasface-serving-poll", daemon=True)
            self._thread.start()
        while not self._stop.is_set() and not self._settled():
            self._stop.wait(max(self.poll_seconds, 0.1) if self.poll_seconds > 0 else 0.5)
        failed = [s for e in self._models.values() for s in e.versions.values() if s.error is not None]
        if failed:
            listed = "".join(f"{{{{name: {s.name} version: {s.version}}} due to error: {s.error.message}}}, "
                             for s in failed)
            raise ServingError("UNKNOWN", f"{len(failed)} servable(s) did not become available: {{{listed}}}")
        self.apply_labels()

    def _settled(self) -> bool:
        with self._lock:
            return all(e.versions and all(s.state in ("AVAILABLE", "END") for s in e.versions.values())
                       for e in self._models.values())

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        with self._lock:
            for entry in self._models.values():
                for servable in entry.versions.values():
                    if servable.model is not None:
                        servable.model.close()
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
                self._poll_model(entry)

    def _poll_model(self, entry: ModelEntry) -> None:
        name = entry.config.name
        if not entry.base.is_dir():
            log.error("FileSystemStoragePathSource encountered a filesystem access error: Could not find base "
                      "path %s for servable %s", entry.config.base_path, name)
            return
        on_disk = list_versions(entry.base)
        if not on_disk:
            log.warning("No versions of servable %s found under base path %s", name, entry.config.base_path)
        wanted = wanted_versions(entry.config, on_disk)
        for version in wanted:
            servable = entry.versions.get(version)
            if servable is not None and (servable.state != "END" or servable.error is not None):
                continue  # loading, available, or failed for good (TF Serving does not retry it later)
            self._load(entry, version, on_disk[version], servable)
        # availability-preserving: drop a version only once an aspired one serves, so a new
        # version that fails to load leaves the old one in service
        serving = any(entry.versions[v].state == "AVAILABLE" for v in wanted if v in entry.versions)
        for version, servable in list(entry.versions.items()):
            if version not in wanted and servable.state not in ("END",) and (serving or version not in on_disk):
                self._unload(servable)

    def _load(self, entry: ModelEntry, version: int, path: Path, servable: Servable | None) -> None:
        name = entry.config.name
        servable = servable or Servable(name, version)
        with self._lock:
            entry.versions[version] = servable
            servable.state, servable.error = "LOADING", None
        started = time.perf_counter()
        attempts = 1 + max(self.options.max_load_retries, 0)
        for attempt in range(attempts):
            try:
                model = LoadedModel(name, version, path, self.options.tags, self.options.session_config)
                if self.options.warmup and self.warmup_runner is not None:
                    self.warmup_runner(model, path)
                break
            except Exception as exc:  # a broken version must not take the server down
                reason = exc.message if isinstance(exc, ServingError) else first_line(str(exc), type(exc).__name__)
                err = ServingError("UNKNOWN", f"Failed to load servable {name} version {version}: {reason}")
                log.error("%s (attempt %d of %d)", err.message, attempt + 1, attempts)
                if attempt + 1 < attempts and not self._stop.wait(max(self.options.load_retry_interval_s, 0)):
                    continue
                with self._lock:
                    servable.state, servable.error, servable.model = "END", err, None
                if self.on_load:
                    self.on_load(path, False)
                return
        with self._lock:
            servable.model, servable.state = model, "AVAILABLE"
        if self.on_load:
            self.on_load(path, True)
        log.info("Successfully loaded servable version {name: %s version: %d} from %s in %.1f s", name, version,
                 path, time.perf_counter() - started)

    def _unload(self, servable: Servable) -> None:
        with self._lock:
            servable.state = "UNLOADING"
            model, servable.model = servable.model, None
            servable.state = "END"
            servable.error = None
        if self.on_unload:
            self.on_unload(servable.name, servable.version)
        del model  # its Session closes when the last in-flight request lets go of it
        log.info("Unloaded servable version {name: %s version: %d}", servable.name, servable.version)

    # ------------------------------------------------------------------ lookups

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    @staticmethod
    def _resolve_label(entry: ModelEntry, label: str) -> int:
        if label not in entry.labels:
            raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
        return entry.labels[label]

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
