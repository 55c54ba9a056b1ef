"""custom: any registered architecture trained on your own labelled photos, with no code to write.

Run:    python -m kerasface.train --paper=custom --arch bknet --data photos/labels.csv
Tasks:  [--tasks smile,age] [--regression age] [--multilabel ethnicity]   (a CSV: every label column is a task)
Tree:   python -m kerasface.train --paper=custom --arch tcdcn --data photos/ --attribute smile
Other:  [--crop SCHEME] [--init RUN_OR_WEIGHTS] [--class-weights balanced] [--cropped yes] [--which-face largest]

The data (kerasface.data.csv_table, kerasface.data.folders): `--data` is a CSV/TSV file (or a folder
holding labels.csv) or a folder tree with one folder per class (`--attribute` names its label,
default "label"). It is converted on first use into `--records`/custom-<format>-<name>-<hash>/<crop>
(again when the table, the reader options or the face rule change), photos without landmarks
detected and aligned; rows and images that cannot be used are skipped and listed there.

The model: `--arch` is any registered architecture, at its builder's own input size and colour
(BKNet 48x48 gray, TCDCN 60x60, Cascade CNN 150x150, InceptionV3 299x299) with the crop and the
training schedule of ARCH_DEFAULTS below (printed at start; every value overridable with
`--set models.ARCH....`, e.g. `--set models.bknet.stages.0.epochs=10`). One task per label: class
labels get a classification head (softmax), real values (`--regression`) a regression head,
columns of `|`-separated values (`--multilabel`) a multilabel head (one sigmoid per value), and
`--tasks landmarks` adds the five-point head. `--init` starts from trained weights: a kerasface run
folder (its unit of the same architecture), a unit folder or a .keras file, copying every layer
whose name and shapes match (a head for a new task, or with another class count, stays freshly
initialised), or a weights file that the architecture's own loader reads (`weights=`, e.g.
VGG-Face or ImageNet files). `--class-weights balanced` weights each class's loss by
n / (classes * n_class) from the training counts (or give "1,3"); the class balance is printed at
start and written in the manifest and metrics.json.

No paper numbers: results.md shows the user's own validation and test results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kerasface.config import DataConfig, ModelConfig, PaperConfig, SourceConfig, StageConfig, TaskConfig
from kerasface.papers import register_paper

GENERIC_CROP = "vggface_224"  # an aligned whole face: any input size is resized from it


@dataclass(frozen=True)
class ArchDefaults:
    """How `custom` trains one architecture unless told otherwise."""

    crop: str = GENERIC_CROP
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str = ""
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "constant"
    batch_size: int = 64
    epochs: float = 20
    precise_bn_batches: int = 0  # batch-norm nets on short schedules (README: "precise BN")


# Settings measured on this project's recipes (canal_mtfl:cpu, sang_bknet:cpu): Adam, batch norm
# and precise BN train the from-scratch nets in a CPU budget where the papers' SGD does not.
ARCH_DEFAULTS = {
    "bknet": ArchDefaults(crop="bknet_48_gray", epochs=30, precise_bn_batches=10),
    "tcdcn": ArchDefaults(arch_kwargs={"batch_norm": True}, schedule="polynomial", epochs=20, precise_bn_batches=10),
    "tcdcn_single": ArchDefaults(arch_kwargs={"batch_norm": True}, schedule="polynomial", epochs=20,
                                 precise_bn_batches=10),
    "cascade_cnn": ArchDefaults(arch_kwargs={"batch_norm": True}, lr=1e-4, epochs=20, precise_bn_batches=20),
    "inception_v3": ArchDefaults(weights="imagenet", optimizer="rmsprop", lr=1e-3, batch_size=32, epochs=10),
}

OPTIONS = {
    "--arch": {"metavar": "ARCH", "help": "the architecture to train (any registered one)"},
    "--tasks": {"metavar": "A,B", "help": "the labels to learn (default: all; 'landmarks' adds the five points)"},
    "--init": {"metavar": "RUN_OR_WEIGHTS", "help": "start from a kerasface run, unit folder, .keras or weights file"},
    "--regression": {"metavar": "COL[,COL]", "help": "CSV label columns that are real values (regression)"},
    "--multilabel": {"metavar": "COL[,COL]", "help": "CSV label columns listing several values as a|b (multilabel)"},
    "--class-weights": {"metavar": "balanced|W,W", "help": "weight each class's loss (balanced: by its frequency)"},
    "--cropped": {"choices": ("auto", "yes", "no"), "help": "the photos are already face crops (no detection)"},
    "--which-face": {"choices": ("centre", "largest", "best"), "help": "which detected face a photo gives"},
}


def builder_input_shape(arch: str) -> tuple[int, int, int]:
    """The input shape an architecture's builder defaults to (its paper's)."""
    from kerasface.architectures import ARCHITECTURES

    default = inspect.signature(ARCHITECTURES.get(arch)).parameters["input_shape"].default
    return tuple(int(v) for v in default)


def data_format(data: str) -> str:
    """"csv" for a CSV/TSV file or a folder holding labels.csv, "folders" for a class-folder tree."""
    from kerasface.data.csv_table import LIST_NAMES

    path = Path(data)
    if path.is_dir() and not any((path / name).is_file() for name in LIST_NAMES):
        return "folders"
    return "csv"


def model_tasks(labels: dict, wanted: list[str], class_weights: str) -> tuple[TaskConfig, ...]:
    """One task per label (in `wanted` order, default all): classes -> classification, values ->
    regression, multilabel -> multilabel; "landmarks" -> the five points."""
    names = wanted or list(labels)
    tasks = []
    for name in names:
        if name == "landmarks":
            tasks.append(TaskConfig("landmarks", kind="landmarks", num_classes=10))
            continue
        if name not in labels:
            raise ValueError(f"--tasks {name}: the data has no label {name!r}; its labels: {', '.join(labels)}")
        label = labels[name]
        if label.type in ("class", "identity"):
            count = len(label.names) or label.count
            if count < 2:
                raise ValueError(f"label {name!r} has {count} class{'es' * (count != 1)} ({', '.join(label.names)}): "
                                 f"a classifier needs two or more (or name it in --regression)")
            tasks.append(TaskConfig(name, num_classes=count, class_weights=class_weights or ""))
        elif label.type == "value":
            tasks.append(TaskConfig(name, kind="regression", num_classes=label.width))
        else:
            tasks.append(TaskConfig(name, kind="multilabel", num_classes=label.width))
    if not tasks:
        raise ValueError("no task to train: the data has no labels")
    return tuple(tasks)


def init_source(init: str, arch: str) -> tuple[str, str]:
    """(init_from, weights) for --init: a run folder -> its unit of this architecture; a unit folder
    or .keras file -> init_from; any other file -> the architecture's weights loader."""
    path = Path(init)
    if not path.exists():
        raise FileNotFoundError(f"--init {init}: no such file or folder")
    if path.is_file() and path.suffix != ".keras":
        from kerasface.architectures import ARCHITECTURES

        if "weights" not in inspect.signature(ARCHITECTURES.get(arch)).parameters:
            raise ValueError(f"--init {init}: {arch} loads no weights files; give a kerasface run folder, a unit "
                             f"folder or a .keras file (weights files go to architectures that take weights=)")
        return "", str(path)
    if (path / "models").is_dir():
        import json

        units = [u.parent for u in sorted((path / "models").glob("*/unit.json"))
                 if json.loads(u.read_text()).get("arch") == arch and (u.parent / "model.keras").is_file()]
        if not units:
            raise FileNotFoundError(f"--init {init}: the run has no trained {arch} model (models/*/model.keras)")
        return str(units[0].resolve()), ""
    return str(path.resolve()), ""


def records_folder(records: str, dataset: str, root: Path) -> str:
    """Each user dataset converts into its own folder: its name and a hash of its full path."""
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.stem if root.is_file() else root.name) or "data"
    return str(Path(records) / f"custom-{dataset}-{name}-{digest}")


def configure(cfg: PaperConfig, args) -> PaperConfig:
    """The recipe for the user's --data and --arch (see the module docstring); prints its defaults."""
    from kerasface.architectures import ARCHITECTURES
    from kerasface.data import DATASETS

    if not args.data:
        raise ValueError("--paper=custom needs --data: your CSV/TSV file (or the folder holding labels.csv), "
                         "or a folder tree with one folder per class")
    if not args.arch:
        raise ValueError(f"--paper=custom needs --arch, one of: {', '.join(ARCHITECTURES.names())}")
    ARCHITECTURES.get(args.arch)  # an unknown name lists the known ones
    if len(args.crop) > 1:
        raise ValueError(f"--paper=custom trains on one crop, got --crop {' --crop '.join(args.crop)}")
    dataset = data_format(args.data)
    spec = DATASETS.get(dataset)
    root = spec.resolve_root(args.data)
    # the CSV reader's options (kerasface.data.csv_table.OPTIONS) given as flags of the same name
    options = {name: getattr(args, name) for name in ("regression", "multilabel") if getattr(args, name)}
    if dataset == "folders" and args.attribute:
        options["attribute"] = args.attribute[0]  # the tree's one label, so --attribute also selects it
    labels = spec.label_specs_for(root, options)
    wanted = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    tasks = model_tasks(labels, wanted, args.class_weights)
    arch = args.arch
    defaults = ARCH_DEFAULTS.get(arch, ArchDefaults())
    height, width, channels = builder_input_shape(arch)
    crop = args.crop[0] if args.crop else defaults.crop
    init_from, weights = init_source(args.init, arch) if args.init else ("", defaults.weights)
    stage = StageConfig(name="train", optimizer=defaults.optimizer, lr=defaults.lr, schedule=defaults.schedule,
                        batch_size=defaults.batch_size, epochs=defaults.epochs, eval_every=0,
                        precise_bn_batches=defaults.precise_bn_batches)
    model = ModelConfig(arch=arch, input_size=(height, width) if height != width else height, channels=channels,
                        arch_kwargs=dict(defaults.arch_kwargs), tasks=tasks, weights=weights, init_from=init_from,
                        stages=(stage,), description=f"{arch} on {root.name} ({', '.join(t.name for t in tasks)})")
    source = SourceConfig(dataset, str(root), options=options, cropped=args.cropped or "auto",
                          which_face=args.which_face or "centre")
    data = dataclasses.replace(cfg.data, dataset=dataset, root=str(root), crop=crop, sources=(source,),
                               tfrecords=records_folder(args.records, dataset, root))
    cfg = dataclasses.replace(cfg, data=data, crops=(crop,), models={arch: model})
    print_plan(cfg, labels)
    return cfg


def print_plan(cfg: PaperConfig, labels: dict) -> None:
    (key, model), = cfg.models.items()
    stage = model.stages[0]
    h, w = model.input_hw
    shown = []
    for task in model.tasks:
        names = labels[task.name].names if task.name in labels else ()
        shown.append(f"{task.name} ({task.kind}" + (f": {', '.join(names)}" if task.kind == "classification" else "")
                     + (f", class weights {task.class_weights}" if task.class_weights else "") + ")")
    start = model.init_from or model.weights or "random"
    lines = [
        f"custom (defaults before --set; each stage prints its final plan): {cfg.data.dataset} data "
        f"{cfg.data.root} -> records {cfg.data.tfrecords}/{cfg.data.crop}",
        f"  model {key}: input {h}x{w}x{model.channels}, crop {cfg.data.crop}, kwargs {model.arch_kwargs}, "
        f"init {start}",
        f"  tasks: {'; '.join(shown)}",
        f"  stage {stage.name}: {stage.optimizer} lr {stage.lr:g} {stage.schedule}, batch {stage.batch_size}, "
        f"{stage.epochs:g} epochs, precise BN {stage.precise_bn_batches} batches, augment {cfg.data.augment}",
        f"  change any of these with --set, e.g. --set models.{key}.stages.0.epochs=5 "
        f"--set models.{key}.input_size=64 --set data.augment.flip=false",
    ]
    print("\n".join(lines), file=sys.stderr)


def custom() -> PaperConfig:
    """The recipe before its options: no model yet (configure adds it from --arch and --data)."""
    return PaperConfig(name="custom", data=DataConfig(dataset="csv", crop=GENERIC_CROP), crops=(GENERIC_CROP,))


register_paper("custom", options=OPTIONS, configure=configure)(custom)
