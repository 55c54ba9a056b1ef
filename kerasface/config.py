"""Frozen dataclass configs, `--set a.b=c` overrides, and config.json round trips.

A paper recipe returns one `PaperConfig`; everything a run does is read from it, and the resolved
config is written as `config.json` beside every output so a run can be re-created exactly.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SourceConfig:
    """One dataset of a training stream that mixes several (BKNet: GENKI-4K, FER2013, a gender set)."""

    dataset: str
    root: str = ""  # raw dataset folder; empty -> the dataset's environment variable
    crop: str = ""  # crop applied at conversion; empty -> the unit's crop
    tasks: tuple[str, ...] = ()  # the labels it gives the model; empty -> all of its labels
    weight: float = 1.0  # sampling weight when DataConfig.mixing == "weights"
    # How it is converted (kerasface.data.convert): the reader's options (a user's CSV:
    # {"regression": "age"}), whether the images are face crops (auto, yes, no) and which detected
    # face a photo without landmarks gives (centre, largest, best).
    options: dict[str, str] = field(default_factory=dict)
    cropped: str = "auto"
    which_face: str = "centre"
    # the dataset's synthetic demo copy even outside --demo: flickr_depth:real_here trains its
    # trunk on demo identities (no identity set of real faces here) beside real attribute data
    synthetic: bool = False


@dataclass(frozen=True)
class AugmentConfig:
    """Random geometric and photometric changes applied to training images (landmarks follow)."""

    flip: bool = True  # horizontal flip; left/right landmarks and pose labels are swapped too
    max_shift: float = 0.05  # translation, as a fraction of the image side
    min_scale: float = 0.95
    max_scale: float = 1.05
    max_rotation: float = 10.0  # degrees
    brightness: float = 0.1  # max delta, on a 0..1 scale
    contrast: float = 0.1  # max relative change


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mtfl"
    root: str = ""  # raw dataset folder; empty -> the dataset's environment variable
    tfrecords: str = ""  # converted shards; empty -> tfrecords/<dataset>-<crop>
    crop: str = "nose_centred_150"  # crop applied at conversion (kerasface.faces.crops)
    val_fraction: float = 0.2
    split_seed: int = 0
    num_shards: int = 4  # shards per split written by the converter
    shuffle_buffer: int = 4096
    cache: bool = True  # keep decoded, resized images in memory, when they fit cache_budget_mb
    cache_budget_mb: int = 4096  # CASIA-WebFace at 112x96 is ~60 GB decoded: read from disk instead
    deterministic: bool = False
    # Several sources in one stream; empty -> the one source `dataset` / `root` above.
    sources: tuple[SourceConfig, ...] = ()
    mixing: str = "balance"  # balance (each source equally often), weights, size
    folds: int = 0  # k > 1: k-fold cross-validation over train+val; `fold` is the held-out one
    fold: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # "grpc://HOST:PORT" of a tf.data service dispatcher (kerasface.data.service): the training
    # streams are then decoded, augmented and batched on its workers, not on the training host
    service: str = ""


@dataclass(frozen=True)
class TaskConfig:
    """One output head; its kind (kerasface.tasks.HEAD_KINDS) says what the output means."""

    name: str  # "gender", "smile", "glasses", "pose", "landmarks", "identity", ...
    kind: str = "classification"  # classification, multilabel, regression, landmarks, embedding
    num_classes: int = 2  # outputs: classes (0: as many as the data has), binary attributes, values (landmarks: 10)
    loss: str = ""  # classification: "softmax" (default) or "svm" (squared-hinge multi-class SVM)
    label: str = ""  # the record label it learns from (default: `name`; landmarks: the face's points)
    loss_weight: float = 1.0
    # Task-wise early stopping (TCDCN): stop training this head when its validation loss has not
    # improved for this many evaluations. 0 keeps it training to the end.
    early_stop_patience: int = 0
    # Classification: weight each class's loss, against class imbalance: "" (none), "balanced"
    # (n / (classes * n_class) from the training counts in the manifests) or one weight per class
    # ("1,3"). The trainer resolves "balanced" into numbers before training.
    class_weights: str = ""
    # Multilabel: also report the operating point at this false-positive rate (0 = none): one
    # threshold over every attribute's probability, chosen on validation (kerasface.metrics.operating_point)
    operating_fpr: float = 0.0


@dataclass(frozen=True)
class StageConfig:
    """One training stage; fine-tuning recipes chain several (new layers first, then all)."""

    name: str = "train"
    # "all", "new_layers" (the heads), or comma-separated items: globs over layer names,
    # "from:NAME" (that layer and every later one) and "top:N" (the N weighted layers nearest the output).
    trainable: str = "all"
    optimizer: str = "sgd"  # sgd, rmsprop, adam, adamw
    lr: float = 0.01
    schedule: str = "constant"  # constant, step, exponential, polynomial
    decay_steps: int = 0  # exponential / polynomial
    decay_rate: float = 0.1  # exponential factor, or the factor applied at each step boundary
    boundaries: tuple[int, ...] = ()  # step schedule
    end_lr: float = 0.0  # polynomial
    power: float = 1.0  # polynomial
    staircase: bool = False  # exponential: decay in whole steps of decay_steps
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    steps: int = 0  # optimizer steps; 0 -> derived from `epochs`
    epochs: float = 0.0
    eval_every: int = 200  # steps between validations; 0 = once per epoch
    # optimizer steps per call of the compiled step function: >1 saves the per-call Python and
    # dispatch cost where a step is short (small models, GPUs); logs and evaluations still fall
    # on their own steps (a call never crosses one)
    steps_per_call: int = 1
    # compile each replica's step with XLA (forward, backward and optimizer update fused): on a
    # CPU from no gain (Cascade CNN's big convolutions) to 1.7x (BKNet) per step, for seconds more
    # tracing (benchmarks/bench_train.py prints both loops); one replica only
    jit_compile: bool = False
    # (glob over layer names, multiplier) pairs: Caffe-style per-layer learning rates.
    lr_multipliers: tuple[tuple[str, float], ...] = ()
    # Train only the new head on features of the frozen backbone computed once and cached.
    bottleneck: bool = False
    # "Precise BN": before each validation, replace the BatchNormalization moving statistics by
    # the mean of this many training batches' statistics (0 = off). The exponential average lags
    # behind weights that move fast, as in short from-scratch schedules.
    precise_bn_batches: int = 0
    # Keep the checkpoints of the last N evaluations (a checkpoint ensemble averages them).
    keep_checkpoints: int = 2
    # (task name, loss weight) for this stage only, e.g. wang_joint's attributes at 0, then 0.1
    loss_weights: tuple[tuple[str, float], ...] = ()
    # this stage's training data; empty -> the paper's `data` sources
    sources: tuple[SourceConfig, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    input_size: int | tuple[int, int]  # one side (square) or (height, width), e.g. (112, 96)
    channels: int = 3
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[TaskConfig, ...] = ()
    # True: each classification task is trained as its own single-task model (canal's setting).
    separate_tasks: bool = False
    weights: str = ""  # "" random init, "imagenet", or a path to a weights file
    # Start from another model's trained weights, by layer name (layers whose shapes differ, such
    # as new heads, keep their fresh initialisation): a model key of the same paper trained earlier
    # in the run (gnet_snet's step-to-step handoff), or a path to a unit folder / .keras file.
    init_from: str = ""
    # With init_from: this layer and every later one (StageConfig.trainable's "from:" order) keep
    # their fresh initialisation: flickr_depth re-initialises the layers above a branch point.
    reinit_from: str = ""
    # Also evaluate the average of the last N evaluation checkpoints of the last stage (BKNet's
    # ensemble of the last 10 epochs: eval_every = one epoch, keep_checkpoints >= N).
    ensemble: int = 0
    crops: tuple[str, ...] = ()  # train on only these of the paper's crops (empty: all of them)
    stages: tuple[StageConfig, ...] = (StageConfig(),)
    description: str = ""

    @property
    def input_hw(self) -> tuple[int, int]:
        size = self.input_size
        return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))


@dataclass(frozen=True)
class PaperConfig:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    crops: tuple[str, ...] = ("nose_centred_150",)  # crops compared; each is its own conversion
    models: dict[str, ModelConfig] = field(default_factory=dict)
    # "model/attribute/crop" -> the paper's number: a fraction, or {"value", "std", "metric", "split"}
    reported: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    mixed_precision: bool = False
    demo: bool = False  # trains on the built-in synthetic demo data
    # Cross-model ensembles evaluated after training: name -> (task, model keys). Each member model
    # answers `task` on its own crop; their outputs are averaged by the task's head kind
    # (probabilities for classification): gnet_snet's smile = SNet1 (scheme 1) + SNet2 (scheme 5).
    ensembles: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # The attributes of the run's photo export (kerasface.export.photo: the photo and its landmarks
    # in, each model's crop cut in the graph, ensembles averaged); empty: no photo export.
    photo_tasks: tuple[str, ...] = ()
    # Results laid out as the paper's tables (kerasface.grids): title -> {model key: (row, column)},
    # e.g. flickr_depth's Table 3, accuracy per branch point and attribute.
    grids: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    # One production model assembled after training (kerasface.branching): task -> candidate model
    # keys, each trained from the same trunk (init_from) and re-initialised from its own branch
    # point (reinit_from); the candidate best on validation gives the task's branch.
    branches: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Face-recognition protocols run on the embedding after training (kerasface.protocols): name
    # ("lfw", "megaface") -> options ({"faces": "crops"}), on each of `protocol_models` (empty: the
    # embedding the run's export picks): flickr_depth's LFW, wang_joint's MegaFace and LFW.
    protocols: dict[str, dict[str, str]] = field(default_factory=dict)
    protocol_models: tuple[str, ...] = ()
    # The model key `kerasface.train --export` deploys alone (wang_joint's Full-Model: embedding and
    # attributes in one pass); empty: the best model per attribute (branching recipes: production).
    deploy: str = ""
    variant: str = ""  # the named variant of the recipe ("" = the paper's settings)


# ----------------------------------------------------------------------------- overrides


def _parse_value(raw: str, current: Any) -> Any:
    """Parse a `--set` value in the type of the value it replaces."""
    if isinstance(current, bool):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    if isinstance(current, int):
        return int(float(raw)) if raw.strip().lstrip("-").replace(".", "", 1).isdigit() else int(raw)
    if isinstance(current, float):
        return float(raw)
    if isinstance(current, str):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def override(obj: Any, path: str, raw: str) -> Any:
    """Return a copy of `obj` with the dotted `path` set to `raw` (parsed in the old value's type).

    Paths go through dataclass fields, dict keys and tuple indices:
    `models.tcdcn_multitask.stages.0.lr=0.001`, `data.augment.flip=false`.
    """
    head, _, rest = path.partition(".")
    if dataclasses.is_dataclass(obj):
        names = [f.name for f in dataclasses.fields(obj)]
        if head not in names:
            raise KeyError(f"--set {path}: {type(obj).__name__} has no field {head!r}; fields: {', '.join(names)}")
        current = getattr(obj, head)
        new = override(current, rest, raw) if rest else _parse_value(raw, current)
        return dataclasses.replace(obj, **{head: new})
    if isinstance(obj, dict):
        if rest:
            if head not in obj:
                raise KeyError(f"--set {path}: no key {head!r}; keys: {', '.join(map(str, obj))}")
            return {**obj, head: override(obj[head], rest, raw)}
        return {**obj, head: _parse_value(raw, obj.get(head))}
    if isinstance(obj, tuple):
        try:
            index = int(head)
            current = obj[index]
        except (ValueError, IndexError):
            raise KeyError(f"--set {path}: {head!r} is not an index of a tuple of {len(obj)}") from None
        new = override(current, rest, raw) if rest else _parse_value(raw, current)
        return obj[:index] + (new,) + obj[index + 1 :]
    raise KeyError(f"--set {path}: cannot descend into {type(obj).__name__}")


def apply_overrides(cfg: Any, assignments: list[str] | tuple[str, ...]) -> Any:
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        cfg = override(cfg, key.strip(), value)
    return cfg


# ----------------------------------------------------------------------------- json


def to_dict(cfg: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: Any, data: Any) -> Any:
    """Rebuild a (nested) config dataclass from `to_dict` output."""
    if data is None:
        return None  # an optional section switched off, e.g. data.augment = None
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        kwargs = {f.name: from_dict(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data}
        return cls(**kwargs)
    origin = typing.get_origin(cls)
    args = typing.get_args(cls)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_dict(args[0], v) for v in data)
        return tuple(from_dict(a, v) for a, v in zip(args, data))
    if origin is dict:
        return {k: from_dict(args[1], v) for k, v in data.items()}
    if origin in (typing.Union, types.UnionType):
        tuples = [a for a in args if typing.get_origin(a) is tuple]
        return from_dict(tuples[0], data) if tuples and isinstance(data, list) else data  # (112, 96) from [112, 96]
    return data


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_config(cfg: Any, folder: str | os.PathLike, name: str = "config.json") -> Path:
    path = Path(folder) / name
    write_json(path, {"kind": type(cfg).__name__, "config": to_dict(cfg)})
    return path


def data_sources(data: DataConfig) -> tuple[SourceConfig, ...]:
    """The sources of a data config; without `sources`, its own dataset is the one source."""
    return data.sources or (SourceConfig(data.dataset, data.root),)


def fold_data(data: DataConfig, fold: int | None) -> DataConfig:
    """`data` with `fold` as the held-out fold of its k-fold split (None: `data` itself)."""
    return data if fold is None else dataclasses.replace(data, fold=fold)


def target_key(task: TaskConfig) -> str:
    """The key of the pipeline's targets dict that `task` learns from."""
    return task.label or task.name


def validate(cfg: PaperConfig) -> PaperConfig:
    """Check names against the registries before any training: a bad value fails with its field."""
    from kerasface.architectures import ARCHITECTURES
    from kerasface.optim import OPTIMIZERS, SCHEDULES
    from kerasface.tasks import validate_task

    for key, model in cfg.models.items():
        where = f"models.{key}"
        if model.arch not in ARCHITECTURES:
            raise ValueError(f"{where}.arch: unknown architecture {model.arch!r}; known: {', '.join(ARCHITECTURES.names())}")
        if not model.tasks:
            raise ValueError(f"{where}.tasks: a model needs at least one task")
        for i, task in enumerate(model.tasks):
            validate_task(task, f"{where}.tasks.{i}")
        names = [s.name for s in model.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}.stages: stage names must be unique (each keeps its own history and "
                             f"checkpoints), got {names}")
        for i, stage in enumerate(model.stages):
            if stage.optimizer not in OPTIMIZERS:
                raise ValueError(f"{where}.stages.{i}.optimizer: unknown optimizer {stage.optimizer!r}; "
                                 f"known: {', '.join(OPTIMIZERS)}")
            if stage.schedule not in SCHEDULES:
                raise ValueError(f"{where}.stages.{i}.schedule: unknown schedule {stage.schedule!r}; "
                                 f"known: {', '.join(SCHEDULES)}")
            if not (stage.steps or stage.epochs):
                raise ValueError(f"{where}.stages.{i}: set steps or epochs")
            task_names = {t.name for t in model.tasks}
            for name, _ in stage.loss_weights:
                if name not in task_names:
                    raise ValueError(f"{where}.stages.{i}.loss_weights: no task {name!r}; tasks: {', '.join(task_names)}")
        if model.ensemble and model.stages[-1].keep_checkpoints < model.ensemble:
            raise ValueError(f"{where}.ensemble: averages the last {model.ensemble} checkpoints but the last stage "
                             f"keeps {model.stages[-1].keep_checkpoints} (set its keep_checkpoints)")
        if model.reinit_from and not model.init_from:
            raise ValueError(f"{where}.reinit_from: {model.reinit_from!r} needs init_from (the weights below it)")
        keys = list(cfg.models)
        if model.init_from in cfg.models and keys.index(model.init_from) >= keys.index(key):
            raise ValueError(f"{where}.init_from: {model.init_from!r} must come before {key!r} in models "
                             "(models train in that order)")
    for name, (task, members) in cfg.ensembles.items():
        if len(members) < 2:
            raise ValueError(f"ensembles.{name}: needs at least two model keys, got {list(members)}")
        for member in members:
            model = cfg.models.get(member)
            if model is None:
                raise ValueError(f"ensembles.{name}: no model {member!r}; models: {', '.join(cfg.models)}")
            if task not in {t.name for t in model.tasks}:
                raise ValueError(f"ensembles.{name}: model {member!r} has no task {task!r}")
    trunks = {}
    for task, candidates in cfg.branches.items():
        for member in candidates:
            model = cfg.models.get(member)
            if model is None:
                raise ValueError(f"branches.{task}: no model {member!r}; models: {', '.join(cfg.models)}")
            if task not in {t.name for t in model.tasks} or not model.init_from:
                raise ValueError(f"branches.{task}: model {member!r} must have task {task!r} and start from the "
                                 f"trunk (init_from)")
            trunks.setdefault(model.init_from, member)
    if len(trunks) > 1:
        raise ValueError(f"branches: every candidate must start from one trunk; got {', '.join(trunks)}")
    from kerasface.protocols import PROTOCOLS

    for name in cfg.protocols:
        if name not in PROTOCOLS:
            raise ValueError(f"protocols: unknown protocol {name!r}; known: {', '.join(PROTOCOLS.names())}")
    for member in cfg.protocol_models + ((cfg.deploy,) if cfg.deploy else ()):
        if member not in cfg.models:
            raise ValueError(f"protocol_models / deploy: no model {member!r}; models: {', '.join(cfg.models)}")
    for title, cells in cfg.grids.items():
        for member in cells:
            if member not in cfg.models:
                raise ValueError(f"grids.{title}: no model {member!r}; models: {', '.join(cfg.models)}")
    return cfg


def read_config(path: str | os.PathLike) -> Any:
    payload = json.loads(Path(path).read_text())
    kinds = {c.__name__: c for c in (PaperConfig, ModelConfig, DataConfig, StageConfig, TaskConfig, SourceConfig)}
    return from_dict(kinds[payload["kind"]], payload["config"])
