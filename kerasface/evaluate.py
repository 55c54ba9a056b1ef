"""`python -m kerasface.evaluate RUN_DIR`: metrics, tables beside the paper's numbers, and plots.

For every trained model of a run: accuracy, per-class precision and recall and confusion matrices
(JSON and PNG) on the validation and test splits, landmark error for landmark heads; then
metrics.json and results.md for the whole run, with the paper's reported accuracy beside ours.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from kerasface.config import PaperConfig, TaskConfig, fold_data, read_config, target_key, write_json
from kerasface.data.pipeline import manifest_labels, read_manifest, split_of, union_labels
from kerasface.data.convert import describe_balance
from kerasface.grids import write_grids
from kerasface.inference import ensemble_functions, inference_fn, predict_dataset, records_folder, split_dataset


def unit_task(task: dict) -> TaskConfig:
    """The TaskConfig of a task entry of unit.json (what evaluation needs of it)."""
    return TaskConfig(task["name"], kind=task["kind"], num_classes=len(task.get("labels") or []) or 2,
                      label=task.get("label", ""), operating_fpr=task.get("operating_fpr", 0.0))


def task_reports(outputs: dict, targets: dict, tasks: list[dict], input_size, reference: dict | None = None) -> dict:
    """One report per task of a unit.json, by its head kind. `reference`: the reports of the
    validation split when this split is another (HeadKind.report)."""
    from kerasface.tasks import head_kind

    reports = {}
    for task in tasks:
        cfg = unit_task(task)
        if target_key(cfg) not in targets:  # none of the split's sources labels it
            reports[cfg.name] = {"count": 0}
            continue
        reports[cfg.name] = head_kind(cfg.kind).report(cfg, outputs[cfg.name], targets[target_key(cfg)],
                                                       task.get("labels") or [], input_size,
                                                       (reference or {}).get(cfg.name))
    return reports


def reference_split(split: str, splits: list[str]) -> str | None:
    """The validation split whose choices `split` applies (multilabel's operating threshold): "val"
    of the same source(s), when it is evaluated before `split`; None for val itself (it chooses)."""
    owner, _, _ = split.rpartition("/")
    val = f"{owner}/val" if owner else "val"
    return val if val in splits[:splits.index(split)] else None


def evaluation_splits(sources: list[dict]) -> list[str]:
    """Every split but the training one, in the manifests' order (val first). With several data
    sources: each split name over all the sources that have it (a task is scored on the samples
    labelled for it), then each source's splits on their own ("fer2013/public_test")."""
    own = {s["name"]: [n for n in read_manifest(s["folder"])["splits"] if n != "train"] for s in sources}
    names = list(dict.fromkeys(n for splits in own.values() for n in splits))
    if len(sources) > 1:
        names += [f"{name}/{n}" for name, splits in own.items() for n in splits]
    return names


def unit_sources(unit_dir: Path, record: dict) -> list:
    """The unit's data sources (unit.json "sources"; older runs: the one "records" folder)."""
    from kerasface.data.pipeline import Source

    entries = record.get("sources") or [{"name": "data", "folder": record["records"]}]
    return [Source(e["name"], records_folder(unit_dir, e["folder"]), e.get("weight", 1.0), tuple(e.get("tasks", ())))
            for e in entries]


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure under a temporary name, then rename (never a half-written PNG)."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def plot_confusion(report: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    percent = np.array(report["confusion_percent"])
    labels = report["labels"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(labels), 1.0 + 0.9 * len(labels)), dpi=100)
    ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{percent[i, j]:.1f}%\n({report['confusion'][i][j]})", ha="center", va="center",
                    fontsize=8, color="white" if percent[i, j] > 50 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {100 * report['accuracy']:.1f}%", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def plot_history(history: list[dict], path: Path) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = [h.get("global_step", h["step"]) for h in history]  # stages end to end
    for key in sorted(k for k in history[0] if k.startswith("val_loss_")):
        ax.plot(steps, [h.get(key, np.nan) for h in history], label=key[len("val_loss_"):])
    starts = {}
    for h, x in zip(history, steps):
        starts.setdefault(h["stage"], x)
    for x in list(starts.values())[1:]:
        ax.axvline(x, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("step (all stages)")
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def headline(report: dict) -> float:
    """One 'higher is better' number of a report (accuracy, or minus the error)."""
    return report["accuracy"] if "accuracy" in report else -report["nme"] if "nme" in report else -report["mae"]


def evaluate_unit(forward, unit_dir: Path, cfg: PaperConfig, ensemble=None) -> dict:
    """Evaluate one trained model, as its `inference_fn`, on every evaluation split; updates its
    unit.json and writes plots. `ensemble`: inference functions of several checkpoints, whose
    outputs are averaged by each head kind (probabilities for classification) and reported as
    SPLIT_ensemble."""
    from kerasface.tasks import head_kind

    unit_dir = Path(unit_dir)
    record = json.loads((unit_dir / "unit.json").read_text())
    names = [t["name"] for t in record["tasks"]]
    kinds = {t["name"]: head_kind(t["kind"]) for t in record["tasks"]}
    sources = unit_sources(unit_dir, record)
    data = fold_data(cfg.data, record.get("fold"))
    splits = evaluation_splits([{"name": s.name, "folder": s.folder} for s in sources])
    # only the sources that label one of the unit's tasks are run (the split names stay those of
    # every source, so the run's table lines up): flickr_depth's gender branch skips FER2013
    wanted = {target_key(unit_task(t)) for t in record["tasks"]}
    labelling = [s for s in sources if wanted & set(s.tasks or manifest_labels(read_manifest(s.folder)))]
    forwards = [forward, *(ensemble or ())]
    size, channels = record["input_size"], record["channels"]
    parts = {}  # (source, split name) -> (outputs of each forward, targets in the labelling sources' layout)

    def predict(name: str, chosen: list) -> tuple[list[dict], dict]:
        """Outputs (one dict per forward) and targets of split `name` over `chosen`: their parts end to
        end, as build_dataset concatenates them. Each part is predicted once, so "fer2013/val" reuses
        what "val" predicted; targets keep the labels of `chosen` (and the non-label "landmarks")."""
        _, having = split_of(name, chosen, data.folds)
        for s in having:
            if (s.name, name) not in parts:
                ds = split_dataset(data, labelling, size, channels, f"{s.name}/{name}")
                parts[s.name, name] = predict_dataset(forwards, ds, names)
        hidden = set(union_labels(labelling)) - set(union_labels(chosen))
        runs = [{k: np.concatenate([parts[s.name, name][0][i][k] for s in having]) for k in names}
                for i in range(len(forwards))]
        first = parts[having[0].name, name][1]
        targets = {k: np.concatenate([parts[s.name, name][1][k] for s in having]) for k in first if k not in hidden}
        return runs, targets

    saved, not_run = {}, []
    for split in splits:
        owner, _, name = split.rpartition("/")
        chosen = [s for s in labelling if (s.name == owner if owner else name in read_manifest(s.folder)["splits"])]
        if not chosen:
            record[f"{split}_metrics"] = {t: {"count": 0} for t in names}
            if ensemble:
                record[f"{split}_ensemble_metrics"] = record[f"{split}_metrics"]
            record[split] = {}
            not_run.append(split)  # no predictions saved: ensembles skip it
            continue
        (outputs, *runs), targets = predict(name, chosen)
        saved.update({f"{split}|output|{k}": v for k, v in outputs.items()})
        saved.update({f"{split}|target|{k}": v for k, v in targets.items()})
        reference = reference_split(split, splits)
        reports = task_reports(outputs, targets, record["tasks"], size,
                               record.get(f"{reference}_metrics") if reference else None)
        record[f"{split}_metrics"] = reports
        record[split] = {k: headline(v) for k, v in reports.items() if v.get("count", 1)}
        if ensemble:
            averaged = {k: kinds[k].average([r[k] for r in runs]) for k in names}
            record[f"{split}_ensemble_metrics"] = task_reports(
                averaged, targets, record["tasks"], size,
                record.get(f"{reference}_ensemble_metrics") if reference else None)
            record["ensemble_size"] = len(ensemble)
        if split.rpartition("/")[2] == "test" or split == splits[-1]:
            for name, report in reports.items():
                if "confusion" in report:
                    plot_confusion(report, f"{record['unit']} — {name} ({split})", unit_dir / f"confusion_{split.rpartition('/')[0] + '_' if '/' in split else ''}{name}.png")
    record["evaluated"], record["not_run"] = splits, not_run
    save_predictions(unit_dir / PREDICTIONS, saved)
    plot_history(record.get("history", []), unit_dir / "curves.png")
    write_json(unit_dir / "unit.json", record)
    return record


PREDICTIONS = "predictions.npz"  # every evaluated split's raw outputs and targets (cross-model ensembles)


def save_predictions(path: Path, arrays: dict) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_predictions(path: Path, split: str) -> tuple[dict, dict]:
    """(outputs, targets) of one split from a unit's predictions.npz."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (written by kerasface.evaluate; evaluate the unit again)")
    with np.load(path) as data:
        found = {tuple(key.split("|", 2)): data[key] for key in data.files}
    return ({k: v for (s, what, k), v in found.items() if s == split and what == "output"},
            {k: v for (s, what, k), v in found.items() if s == split and what == "target"})


def reported_for(cfg: PaperConfig, model_key: str, attribute: str, crop: str):
    """The paper's number(s) for a row: one Reported, or a ReportedList (one per split)."""
    for key in (f"{model_key}/{attribute}/{crop}", f"{model_key}/{attribute}/*"):
        if key in cfg.reported:
            entry = cfg.reported[key]
            return ReportedList([Reported.of(e) for e in entry]) if isinstance(entry, (list, tuple)) else Reported.of(entry)
    return None


@dataclasses.dataclass(frozen=True)
class Reported:
    """A paper's number: a plain fraction, or {"value", "std", "metric", "split"} in a recipe."""

    value: float
    std: float | None = None
    metric: str = "accuracy"
    split: str = "test"

    @classmethod
    def of(cls, entry) -> "Reported":
        return cls(float(entry)) if isinstance(entry, (int, float)) else cls(**entry)

    def __str__(self) -> str:
        std = f" +- {100 * self.std:.2f}" if self.std is not None else ""
        number = f"{100 * self.value:.2f}{std}%" if std else f"{100 * self.value:.1f}%"
        # another metric than the row's accuracy says which (flickr_depth's "tpr at fpr 1.03%")
        number = number if self.metric == "accuracy" else f"{number} {self.metric}"
        return number if self.split == "test" else f"{self.split} {number}"


class ReportedList(list):
    """Several of a paper's numbers for one row (FER2013's public and private test)."""

    def __str__(self) -> str:
        return "; ".join(map(str, self))


def evaluated_splits(record: dict) -> list[str]:
    return record.get("evaluated") or (["val", "test"] if "test_metrics" in record else [])


def _cell(kind, report: dict | None) -> str:
    return kind.summary(report) if report and report.get("count", 1) else "—"


def _cv_cell(reports: list[dict]) -> str:
    """mean +- std over the folds' reports of one task and split."""
    reports = [r for r in reports if r and r.get("count", 1)]
    if not reports:
        return "—"
    for key, label, scale in (("accuracy", "", 100), ("nme", "NME ", 100), ("mae", "MAE ", 1)):
        if key in reports[0]:
            values = scale * np.array([r[key] for r in reports], np.float64)
            unit = "%" if scale == 100 else ""
            return f"{label}{values.mean():.2f} +- {values.std():.2f}{unit} ({len(values)} folds)"
    return "—"


def run_class_balance(run_dir: Path) -> dict:
    """{source: its manifest's class_balance} over the run's trained units (older manifests have none)."""
    balance = {}
    for unit_json in sorted((run_dir / "models").glob("*/unit.json")):
        for source in json.loads(unit_json.read_text()).get("sources", []):
            try:
                found = read_manifest(source["folder"]).get("class_balance")
            except FileNotFoundError:
                continue
            if found and source["name"] not in balance:
                balance[source["name"]] = found
    return balance


def _detail(kind, record: dict, splits: list[str], suffix: str, name: str) -> str:
    """The head kind's detail (e.g. recall per class) on the last split that labels `name`: with
    several sources a task is labelled only in its own source's splits."""
    for split in reversed(splits):
        metrics = record[f"{split}{suffix}_metrics"].get(name)
        if metrics and metrics.get("count", 1):
            return kind.detail(metrics) + ("" if split == splits[-1] else f" ({split})")
    return ""


def evaluate_ensembles(run_dir: Path, cfg: PaperConfig, records: list[dict],
                       columns: list[str]) -> tuple[dict, list[tuple]]:
    """The config's cross-model ensembles (PaperConfig.ensembles) from the members' saved
    predictions: ({name: {split: report}}, results.md rows). The members were converted from the
    same faces in the same seeded order, one crop each, so their splits line up record for record;
    identical targets confirm it (a mismatch is an error naming the units)."""
    from kerasface.tasks import head_kind

    results, rows = {}, []
    for name, (task_name, members) in cfg.ensembles.items():
        chosen = []
        for member in members:
            found = [r for r in records if r["model_key"] == member and r.get("fold") is None
                     and any(t["name"] == task_name for t in r["tasks"]) and evaluated_splits(r)]
            if len(found) != 1:
                chosen = []
                rows.append((f"ensemble {name}", "—", task_name, *["—"] * (len(columns) - 1),
                             f"not evaluated: model {member!r} has {len(found)} evaluated units for {task_name} "
                             f"(needs exactly one)", "—", ""))
                break
            chosen.append(found[0])
        if not chosen:
            continue
        task = next(t for t in chosen[0]["tasks"] if t["name"] == task_name)
        task_cfg = unit_task(task)
        kind = head_kind(task_cfg.kind)
        splits = [s for s in evaluated_splits(chosen[0])
                  if all(s in evaluated_splits(r) and s not in r.get("not_run", ()) for r in chosen)]
        results[name] = {"task": task_name, "members": [r["unit"] for r in chosen]}
        for split in splits:
            loaded = [load_predictions(run_dir / "models" / r["unit"] / PREDICTIONS, split) for r in chosen]
            key = target_key(task_cfg)
            first = loaded[0][1][key]
            for record, (_, targets) in zip(chosen[1:], loaded[1:]):
                if targets[key].shape != first.shape or not np.array_equal(targets[key], first):
                    raise ValueError(f"ensemble {name}: {record['unit']} and {chosen[0]['unit']} were not evaluated "
                                     f"on the same {split} faces in the same order; convert their crops from the "
                                     f"same dataset and seed")
            averaged = kind.average([outputs[task_name] for outputs, _ in loaded])
            reference = reference_split(split, splits)
            results[name][split] = kind.report(task_cfg, averaged, first, task.get("labels") or [],
                                               chosen[0]["input_size"], results[name].get(reference))
        paper = reported_for(cfg, name, task_name, "*")
        crops = " + ".join(r["crop"] for r in chosen)
        rows.append((f"ensemble {name}", crops, f"{task_name} (mean of {', '.join(r['model_key'] for r in chosen)})",
                     *[_cell(kind, results[name].get(split)) for split in columns],
                     str(paper) if paper is not None else "—", kind.detail(results[name][splits[-1]]) if splits else ""))
    return results, rows


def write_reports(run_dir: Path) -> dict:
    """metrics.json and results.md for every evaluated model of the run; prints the table.

    One column per evaluation split (the paper's number beside the last), each task's cell written
    by its head kind; a checkpoint ensemble gets its own row; the units of a k-fold
    cross-validation are summarised as one row of mean +- std (each fold stays in metrics.json).
    """
    from kerasface.tasks import head_kind

    run_dir = Path(run_dir)
    cfg = read_config(run_dir / "config.json")
    metrics = {"paper": cfg.name, "demo": cfg.demo, "models": {}, "cross_validation": {}}
    rows, split_names, folds, records = [], [], {}, []
    for unit_json in sorted((run_dir / "models").glob("*/unit.json")):
        record = json.loads(unit_json.read_text())
        records.append(record)
        splits = evaluated_splits(record)
        if not splits:
            continue
        split_names = split_names or splits
        entry = {"model_key": record["model_key"], "arch": record["arch"], "crop": record["crop"],
                 "fold": record.get("fold"), **{split: record[f"{split}_metrics"] for split in splits},
                 "train_seconds": record.get("train_seconds")}
        if record.get("ensemble_size"):
            entry["ensemble"] = {"size": record["ensemble_size"],
                                 **{split: record[f"{split}_ensemble_metrics"] for split in splits}}
        metrics["models"][record["unit"]] = entry
        if record.get("fold") is not None:
            folds.setdefault(record["unit"].rsplit("-fold", 1)[0], []).append(record)
            continue
        for task in record["tasks"]:
            kind, name = head_kind(task["kind"]), task["name"]
            paper = reported_for(cfg, record["model_key"], name, record["crop"])
            variants = [("", "")] + ([("_ensemble", f" (ensemble of {record['ensemble_size']})")]
                                     if record.get("ensemble_size") else [])
            for suffix, label in variants:
                cells = [_cell(kind, record[f"{split}{suffix}_metrics"].get(name)) for split in splits]
                rows.append((record["model_key"], record["crop"], name + label, *cells,
                             str(paper) if paper is not None else "—", _detail(kind, record, splits, suffix, name)))
    for group, fold_records in sorted(folds.items()):
        first = fold_records[0]
        summary = {}
        variants = [("", "")] + ([("_ensemble", f", ensemble of {first['ensemble_size']}")]
                                 if first.get("ensemble_size") else [])
        for task in first["tasks"]:
            name = task["name"]
            paper = reported_for(cfg, first["model_key"], name, first["crop"])
            for suffix, label in variants:
                cells = [_cv_cell([r.get(f"{split}{suffix}_metrics", {}).get(name) for r in fold_records])
                         for split in split_names]
                summary[name + suffix] = {split: [headline(r[f"{split}{suffix}_metrics"][name]) for r in fold_records
                                                  if r.get(f"{split}{suffix}_metrics", {}).get(name, {}).get("count", 1)]
                                          for split in split_names}
                rows.append((first["model_key"], first["crop"], f"{name} ({len(fold_records)}-fold{label})", *cells,
                             str(paper) if paper is not None else "—", ""))
        metrics["cross_validation"][group] = summary
    split_names = split_names or ["val", "test"]
    metrics["ensembles"], ensemble_rows = evaluate_ensembles(run_dir, cfg, records, split_names)
    rows += ensemble_rows
    skipped_path = run_dir / "skipped.json"
    skipped = json.loads(skipped_path.read_text()) if skipped_path.exists() else {}
    for unit_name, reason in sorted(skipped.items()):
        model_key, crop, attribute = unit_name.rsplit("-fold", 1)[0].rsplit("-", 2)
        paper = reported_for(cfg, model_key, attribute, crop)
        rows.append((model_key, crop, attribute, *["—"] * (len(split_names) - 1),
                     f"not trained: {reason.split('. ')[0]}", str(paper) if paper is not None else "—", ""))
    metrics["skipped"] = skipped
    metrics["class_balance"] = run_class_balance(run_dir)
    metrics["grids"], grids_text = write_grids(cfg, records, run_dir)
    from kerasface.protocols import protocol_lines

    metrics["protocols"], protocols_text = protocol_lines(cfg, run_dir)  # written by kerasface.train
    grids_text += protocols_text
    write_json(run_dir / "metrics.json", metrics)
    # several sources: the table shows each source's splits (the pooled ones stay in metrics.json)
    shown = [i for i, n in enumerate(split_names) if "/" in n] or list(range(len(split_names)))
    rows = [row[:3] + tuple(row[3 + i] for i in shown) + row[3 + len(split_names):] for row in rows]
    split_names = [split_names[i] for i in shown]
    last = split_names[-1]
    header = ("model", "crop", "attribute", *split_names[:-1], f"{last} (ours)", "paper", f"{last} detail")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if grids_text:
        lines += ["", grids_text]
    note = ("\n\nDemo run on synthetic faces: these numbers prove the pipeline learns, nothing about real faces; "
            "the paper column is for the real data.\n" if cfg.demo else "\n")
    balance = [f"- {source} {line}" for source, labels in metrics["class_balance"].items()
               for line in describe_balance(labels)]
    if balance:
        note += "\nClass balance (training faces per class, majority:minority):\n\n" + "\n".join(balance) + "\n"
    table = f"# {cfg.name}: results ({'demo data' if cfg.demo else last + ' split'})\n\n" + "\n".join(lines) + note
    tmp = run_dir / "results.md.tmp"
    tmp.write_text(table)
    tmp.replace(run_dir / "results.md")
    print("\n" + table)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kerasface.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run folder written by kerasface.train")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="weights to evaluate: the best validation checkpoint (default) or the last one")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "config.json").is_file():
        print(f"error: {run_dir}/config.json not found: not a kerasface run folder", file=sys.stderr)
        return 2
    import tensorflow as tf

    from kerasface.architectures import build_model

    cfg = read_config(run_dir / "config.json")
    for unit_json in sorted((run_dir / "models").glob("*/unit.json")):
        record = json.loads(unit_json.read_text())
        unit_dir = unit_json.parent
        model_cfg = cfg.models[record["model_key"]]
        names = {t["name"] for t in record["tasks"]}
        model = build_model(dataclasses.replace(model_cfg, weights="",
                                                tasks=tuple(t for t in model_cfg.tasks if t.name in names)))
        if args.checkpoint == "best" and (unit_dir / "best.weights.h5").exists():
            model.load_weights(unit_dir / "best.weights.h5")
        else:
            last = tf.train.latest_checkpoint(str(max((unit_dir / "checkpoints").glob("stage*"))))
            tf.train.Checkpoint(model=model).restore(last).expect_partial()
        print(f"evaluating {record['unit']}", file=sys.stderr)
        model_cfg = dataclasses.replace(model_cfg, tasks=tuple(t for t in model_cfg.tasks if t.name in names))
        evaluate_unit(inference_fn(model), unit_dir, cfg, ensemble=ensemble_functions(model_cfg, unit_dir))
    write_reports(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
