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

from kerasface.config import PaperConfig, read_config, write_json


def inference_fn(model):
    """`model` in inference mode as one compiled function that runs on the calling device.

    Not `predict_on_batch`: a model built under a MirroredStrategy scope runs the whole batch on every
    replica there and returns the copies concatenated (2N rows for N images on two GPUs).
    """
    import tensorflow as tf

    return tf.function(lambda images: model(images, training=False), reduce_retracing=True)


def predict_split(forward, data, records, input_size, channels, task_names, split, batch_size=128):
    """Outputs of `forward` (see `inference_fn`) and targets over a whole split, as NumPy arrays."""
    from kerasface.data.pipeline import build_dataset

    outputs, targets = {}, {}
    ds = build_dataset(data, split, image_size=input_size, channels=channels, batch_size=batch_size,
                       training=False, folder=records)
    for images, target in ds:
        out = forward(images)
        for name in task_names:
            outputs.setdefault(name, []).append(np.asarray(out[name], np.float32))
        for name, value in target.items():
            targets.setdefault(name, []).append(value.numpy())
    return {k: np.concatenate(v) for k, v in outputs.items()}, {k: np.concatenate(v) for k, v in targets.items()}


def task_reports(outputs: dict, targets: dict, tasks: list[dict], input_size) -> dict:
    from kerasface.metrics import classification_report, landmark_report

    reports = {}
    for task in tasks:
        name = task["name"]
        if task["kind"] == "landmarks":
            reports[name] = landmark_report(targets["landmarks"], outputs[name], input_size[1], input_size[0])
        else:
            reports[name] = classification_report(targets[name], outputs[name].argmax(-1), task["labels"])
    return reports


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
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def plot_history(history: list[dict], path: Path) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = [h["step"] for h in history]
    for key in sorted(k for k in history[0] if k.startswith("val_loss_")):
        ax.plot(steps, [h.get(key, np.nan) for h in history], label=key[len("val_loss_"):])
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evaluate_unit(forward, unit_dir: Path, cfg: PaperConfig) -> dict:
    """Evaluate one trained model, as its `inference_fn`, on val and test; updates its unit.json and
    writes plots."""
    unit_dir = Path(unit_dir)
    record = json.loads((unit_dir / "unit.json").read_text())
    names = [t["name"] for t in record["tasks"]]
    for split in ("val", "test"):
        outputs, targets = predict_split(forward, cfg.data, record["records"], record["input_size"], record["channels"],
                                         names, split)
        reports = task_reports(outputs, targets, record["tasks"], record["input_size"])
        record[f"{split}_metrics"] = reports
        record[split] = {k: (v["accuracy"] if "accuracy" in v else -v["nme"]) for k, v in reports.items()}
        if split == "test":
            for name, report in reports.items():
                if "confusion" in report:
                    plot_confusion(report, f"{record['unit']} — {name} ({split})", unit_dir / f"confusion_{name}.png")
    plot_history(record.get("history", []), unit_dir / "curves.png")
    write_json(unit_dir / "unit.json", record)
    return record


def reported_for(cfg: PaperConfig, model_key: str, attribute: str, crop: str) -> float | None:
    for key in (f"{model_key}/{attribute}/{crop}", f"{model_key}/{attribute}/*"):
        if key in cfg.reported:
            return cfg.reported[key]
    return None


def write_reports(run_dir: Path) -> dict:
    """metrics.json and results.md for every evaluated model of the run; prints the table."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir / "config.json")
    metrics = {"paper": cfg.name, "demo": cfg.demo, "models": {}}
    rows = []
    for unit_json in sorted((run_dir / "models").glob("*/unit.json")):
        record = json.loads(unit_json.read_text())
        if "test_metrics" not in record:
            continue
        metrics["models"][record["unit"]] = {
            "model_key": record["model_key"], "arch": record["arch"], "crop": record["crop"],
            "val": record["val_metrics"], "test": record["test_metrics"],
            "train_seconds": record.get("train_seconds"),
        }
        for task in record["tasks"]:
            name = task["name"]
            val, test = record["val_metrics"][name], record["test_metrics"][name]
            if task["kind"] == "landmarks":
                rows.append((record["model_key"], record["crop"], name, f"NME {100 * val['nme']:.2f}%",
                             f"NME {100 * test['nme']:.2f}%", "", ""))
                continue
            paper = reported_for(cfg, record["model_key"], name, record["crop"])
            recall = " / ".join(f"{k} {100 * v:.1f}" for k, v in test["recall"].items())
            rows.append((record["model_key"], record["crop"], name, f"{100 * val['accuracy']:.1f}%",
                         f"{100 * test['accuracy']:.1f}%", f"{100 * paper:.1f}%" if paper is not None else "—", recall))
    skipped_path = run_dir / "skipped.json"
    skipped = json.loads(skipped_path.read_text()) if skipped_path.exists() else {}
    for unit_name, reason in sorted(skipped.items()):
        model_key, crop, attribute = unit_name.rsplit("-", 2)
        paper = reported_for(cfg, model_key, attribute, crop)
        rows.append((model_key, crop, attribute, "—", f"not trained: {reason.split('. ')[0]}",
                     f"{100 * paper:.1f}%" if paper is not None else "—", ""))
    metrics["skipped"] = skipped
    write_json(run_dir / "metrics.json", metrics)
    header = ("model", "crop", "attribute", "val", "test (ours)", "test (paper)", "test recall per class")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    note = ("\n\nDemo run on synthetic faces: these numbers prove the pipeline learns, nothing about real faces; "
            "the paper column is for the real AFLW test set.\n" if cfg.demo else "\n")
    table = f"# {cfg.name}: results ({'demo data' if cfg.demo else 'test split'})\n\n" + "\n".join(lines) + note
    (run_dir / "results.md").write_text(table)
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

    from kerasface.train import build_model

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
        evaluate_unit(inference_fn(model), unit_dir, cfg)
    write_reports(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
