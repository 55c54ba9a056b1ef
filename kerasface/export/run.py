"""Read a training run folder and choose what to export from it.

A run folder (written by `kerasface.train`):

    RUN_DIR/config.json             {"kind": "PaperConfig", "config": {...}}
    RUN_DIR/metrics.json            {"models": {UNIT: {"val": {TASK: {...}}, "test": {TASK: {...}}}}}
    RUN_DIR/models/UNIT/model.keras the trained Keras model
    RUN_DIR/models/UNIT/unit.json   unit, model_key, arch, crop, input_size, channels, tasks, val, test

Selection (`select_heads`): an export answers each attribute with one model ("head"); all heads of
one export read the same input crop, so the heads are chosen within one crop scheme:

1. candidates: every unit of the run, or with `model` only the unit of that name or the units of
   that model key;
2. per crop scheme and attribute, the unit with the best validation score (accuracy, higher is
   better; landmarks: NME, lower is better); ties go to the unit answering more attributes (fewer
   models in the graph), then to the unit name;
3. the crop scheme covering the most attributes wins, then the one with the higher mean validation
   accuracy. Attributes only available under another crop are listed as `dropped`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kerasface.tasks import HEAD_KINDS, head_kind

# metric names where lower is better (landmark errors, losses)
LOWER_IS_BETTER = ("nme", "mean_error", "error", "mae", "mse", "failure_rate", "failure_rate_10pct", "loss")


class RunError(ValueError):
    """A run folder that cannot be exported; the message names the file and the field."""


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "classification" | "landmarks"
    labels: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.labels)


@dataclass
class Unit:
    name: str
    model_key: str
    arch: str
    crop: str
    input_size: tuple[int, int]  # (height, width)
    channels: int
    tasks: tuple[Task, ...]
    folder: Path
    val: dict[str, Any] = field(default_factory=dict)  # TASK -> number or metric dict
    test: dict[str, Any] = field(default_factory=dict)
    records: Path | None = None  # the TFRecords folder of the unit's crop (unit.json "records")
    sources: tuple[Path, ...] = ()  # every data source's folder (unit.json "sources"), records first

    @property
    def model_path(self) -> Path:
        return self.folder / "model.keras"

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"{self.folder / 'unit.json'}: unit {self.name} has no task {name!r}")

    def describe(self) -> dict:
        return {"unit": self.name, "model_key": self.model_key, "arch": self.arch, "crop": self.crop,
                "input_size": list(self.input_size), "channels": self.channels,
                "tasks": [t.name for t in self.tasks]}


@dataclass
class Run:
    folder: Path
    config: dict  # the raw config.json payload
    metrics: dict
    units: dict[str, Unit]

    @property
    def name(self) -> str:
        return str(self.config.get("config", {}).get("name") or self.folder.name)

    def held_out_split(self, crop: str | None = None) -> str:
        """"test", or "val" when no unit's data has a test split (an identity tree)."""
        try:
            self.records("test", crop)
            return "test"
        except RunError:
            return "val"

    def records(self, split: str, crop: str | None = None) -> list[str]:
        """Shards of `split` from the TFRecords folder a unit was trained on (unit.json "records"),
        preferring a unit of `crop`."""
        units = sorted(self.units.values(), key=lambda u: (crop is not None and u.crop != crop, u.name))
        for unit in units:
            # the first source with the split: an identity tree has no test split, its MTFL beside it has
            for recorded in dict.fromkeys(([unit.records] if unit.records else []) + list(unit.sources)):
                folder = recorded if recorded.is_absolute() or recorded.exists() else self.folder / recorded
                shards = sorted(str(p) for p in folder.glob(f"{split}-*.tfrecord"))
                if shards:
                    return shards
        raise RunError(f"{self.folder}: no {split!r} shards found in the units' TFRecords folders (unit.json \"records\")")


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise RunError(f"{path}: missing ({what})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None


def _config_classes(config: dict, model_key: str, task: str) -> int | None:
    """num_classes of `task` in config.json's models[model_key], when the run's config has it."""
    model = ((config or {}).get("config", {}).get("models") or {}).get(model_key) or {}
    for t in model.get("tasks") or ():
        if isinstance(t, dict) and t.get("name") == task and t.get("num_classes"):
            return int(t["num_classes"])
    return None


def _parse_unit(folder: Path, metrics: dict, config: dict | None = None) -> Unit:
    path = folder / "unit.json"
    data = _read_json(path, "written by kerasface.train for each trained model")
    missing = [k for k in ("unit", "crop", "input_size", "channels", "tasks") if k not in data]
    if missing:
        raise RunError(f"{path}: missing field(s) {', '.join(missing)}")
    size = data["input_size"]
    if isinstance(size, int):
        size = [size, size]
    if not (isinstance(size, (list, tuple)) and len(size) == 2):
        raise RunError(f"{path}: field input_size: expected [height, width], got {data['input_size']!r}")
    channels = int(data["channels"])
    if channels not in (1, 3):
        raise RunError(f"{path}: field channels: expected 1 or 3, got {channels}")
    tasks = []
    for i, t in enumerate(data["tasks"]):
        if not isinstance(t, dict) or "name" not in t:
            raise RunError(f"{path}: tasks[{i}]: expected an object with a name")
        kind = t.get("kind", "classification")
        if str(t["name"]).endswith("__aux"):
            continue  # training-only outputs are never exported
        if kind not in HEAD_KINDS:
            raise RunError(f"{path}: tasks[{i}] ({t['name']}): kind must be one of {', '.join(HEAD_KINDS.names())}, "
                           f"got {kind!r}")
        labels = head_kind(kind).output_labels(t.get("labels"))
        if not labels and not head_kind(kind).needs_features:
            # no names: number the outputs, sized from config.json
            count = _config_classes(config or {}, str(data.get("model_key") or ""), str(t["name"]))
            if not count:
                raise RunError(f"{path}: tasks[{i}] ({t['name']}): no labels, and config.json does not "
                               f"give the task's num_classes")
            labels = tuple(str(k) for k in range(count))
        tasks.append(Task(str(t["name"]), kind, labels))
    unit = str(data["unit"])
    run_metrics = metrics.get("models", {}).get(unit, {})
    val = dict(data.get("val") or {})
    test = dict(data.get("test") or {})
    # metrics.json holds the full metric dicts; prefer them over unit.json's bare numbers
    for split, target in (("val", val), ("test", test)):
        for task, value in (run_metrics.get(split) or {}).items():
            target[task] = value
    return Unit(
        name=unit,
        model_key=str(data.get("model_key") or unit.split("-")[0]),
        arch=str(data.get("arch", "")),
        crop=str(data["crop"]),
        input_size=(int(size[0]), int(size[1])),
        channels=channels,
        tasks=tuple(tasks),
        folder=folder,
        val=val,
        test=test,
        records=Path(data["records"]) if data.get("records") else None,
        sources=tuple(Path(e["folder"]) for e in data.get("sources") or () if e.get("folder")),
    )


def load_run(run_dir: str | Path) -> Run:
    folder = Path(run_dir)
    if not folder.is_dir():
        raise RunError(f"{folder}: no such run folder")
    config = _read_json(folder / "config.json", "the run's resolved config")
    metrics_path = folder / "metrics.json"
    metrics = _read_json(metrics_path, "validation/test metrics") if metrics_path.exists() else {"models": {}}
    models_dir = folder / "models"
    units: dict[str, Unit] = {}
    if models_dir.is_dir():
        for sub in sorted(models_dir.iterdir()):
            if (sub / "unit.json").is_file() and (sub / "model.keras").is_file():
                unit = _parse_unit(sub, metrics, config)
                units[unit.name] = unit
    if not units:
        raise RunError(f"{models_dir}: no trained model (expected models/UNIT/model.keras with unit.json)")
    return Run(folder, config, metrics, units)


# ----------------------------------------------------------------------------- selection


def score(unit: Unit, task: Task, split: str = "val") -> float:
    """A 'higher is better' number for `task` of `unit` on `split`; -inf when there is none."""
    value = (unit.val if split == "val" else unit.test).get(task.name)
    if isinstance(value, dict):
        if value.get("accuracy") is not None:
            return float(value["accuracy"])
        for key in LOWER_IS_BETTER:
            if value.get(key) is not None:
                return -float(value[key])
        return -math.inf
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        # errors (landmark NME >= 0) may be stored as -NME (the trainer's score)
        return -abs(float(value)) if head_kind(task.kind).pixel_coordinates else float(value)
    return -math.inf


def metric_summary(unit: Unit, task: Task, split: str) -> dict:
    value = (unit.val if split == "val" else unit.test).get(task.name)
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if head_kind(task.kind).pixel_coordinates:
            return {"nme": abs(float(value))}
        return {"accuracy": float(value)}
    return {}


@dataclass
class Selection:
    crop: str
    heads: dict[str, Unit]  # attribute -> unit answering it (insertion order = output order)
    rule: str
    dropped: dict[str, str] = field(default_factory=dict)  # attribute -> why
    notes: list[str] = field(default_factory=list)
    # attribute -> every unit whose outputs are averaged for it (a photo export's ensembles; the
    # head above is the first); attributes not listed are answered by their head alone
    members: dict[str, list[Unit]] = field(default_factory=dict)
    photo: bool = False  # the export takes the whole photo and its landmarks (kerasface.export.photo)

    def units_of(self, task: str) -> list[Unit]:
        return self.members.get(task) or [self.heads[task]]

    @property
    def units(self) -> list[Unit]:
        seen: dict[str, Unit] = {}
        for task in self.heads:
            for unit in self.units_of(task):
                seen.setdefault(unit.name, unit)
        return list(seen.values())

    def tasks_of(self, unit: Unit) -> list[Task]:
        return [unit.task(name) for name in self.heads if any(u.name == unit.name for u in self.units_of(name))]

    def describe(self) -> dict:
        return {
            "rule": self.rule,
            "crop": self.crop,
            "heads": {t: u.name for t, u in self.heads.items()},
            **({"ensembles": {t: [u.name for u in us] for t, us in self.members.items()}} if self.members else {}),
            "dropped": dict(self.dropped),
            "notes": list(self.notes),
        }


def select_heads(run: Run, model: str | None = None) -> Selection:
    """Choose one unit per attribute (see the module docstring)."""
    units = list(run.units.values())
    if model:
        units = [u for u in units if u.name == model or u.model_key == model]
        if not units:
            keys = sorted({u.model_key for u in run.units.values()})
            raise RunError(f"{run.folder}: --model {model!r} matches no trained model; units: "
                           f"{', '.join(run.units)}; model keys: {', '.join(keys)}")
    by_crop: dict[str, list[Unit]] = {}
    for u in units:
        by_crop.setdefault(u.crop, []).append(u)

    def best_for(crop_units: list[Unit]) -> dict[str, Unit]:
        order: list[str] = []
        for u in crop_units:
            for t in u.tasks:
                if t.name not in order:
                    order.append(t.name)
        chosen = {}
        for name in order:
            cands = [u for u in crop_units if any(t.name == name for t in u.tasks)]
            cands.sort(key=lambda u: (-score(u, u.task(name)), -len(u.tasks), u.name))
            chosen[name] = cands[0]
        return chosen

    options = []
    for crop, crop_units in by_crop.items():
        heads = best_for(crop_units)
        accs = [score(u, u.task(t)) for t, u in heads.items() if head_kind(u.task(t).kind).has_classes]
        accs = [a for a in accs if math.isfinite(a)]
        mean_acc = sum(accs) / len(accs) if accs else -math.inf
        options.append((len(heads), mean_acc, crop, heads))
    options.sort(key=lambda o: (-o[0], -o[1], o[2]))
    _, _, crop, heads = options[0]
    notes = []
    for task, unit in heads.items():
        rivals = [u for u in by_crop[crop] if any(t.name == task for t in u.tasks)]
        if len(rivals) > 1 and not math.isfinite(score(unit, unit.task(task))):
            notes.append(f"{task}: no validation score in unit.json or metrics.json; chose {unit.name} "
                         f"(most attributes, then name) among {len(rivals)} models")
    dropped = {}
    for _, _, other, other_heads in options[1:]:
        for t in other_heads:
            if t not in heads and t not in dropped:
                dropped[t] = f"only trained on crop {other!r}; the export reads crop {crop!r}"
    scope = f"model {model!r}" if model else "all models of the run"
    rule = (f"best validation score per attribute among {scope}, within one crop scheme "
            f"(most attributes, then highest mean accuracy); accuracy higher is better, landmark NME lower")
    return Selection(crop=crop, heads=heads, rule=rule, dropped=dropped, notes=notes)
