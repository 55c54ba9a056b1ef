"""Evaluation metrics as plain JSON-safe numbers: accuracy, per-class precision and recall,
confusion matrices (counts and % of each true class), and landmark error normalised by the
inter-ocular distance."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kerasface.faces.align import LANDMARK_NAMES


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class; unlabelled (-1) examples are ignored."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    keep = labels >= 0
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels[keep], predicted[keep]), 1)
    return matrix


def classification_report(labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str]) -> dict:
    matrix = confusion_matrix(labels, predicted, len(class_names))
    total = int(matrix.sum())
    correct = int(np.trace(matrix))
    per_true = matrix.sum(axis=1)
    per_pred = matrix.sum(axis=0)
    precision = {name: float(matrix[i, i] / per_pred[i]) if per_pred[i] else 0.0 for i, name in enumerate(class_names)}
    recall = {name: float(matrix[i, i] / per_true[i]) if per_true[i] else 0.0 for i, name in enumerate(class_names)}
    percent = np.where(per_true[:, None] > 0, 100.0 * matrix / np.maximum(per_true[:, None], 1), 0.0)
    return {
        "accuracy": correct / total if total else 0.0,
        "count": total,
        "precision": precision,
        "recall": recall,
        "labels": list(class_names),
        "confusion": matrix.tolist(),
        "confusion_percent": np.round(percent, 2).tolist(),
    }


def landmark_report(target: np.ndarray, predicted: np.ndarray, width: float, height: float) -> dict:
    """Mean point error / inter-ocular distance (eye centres), over all faces and the five points;
    faces without landmarks (any NaN) are left out."""
    scale = np.array([width, height], np.float64)
    target = np.asarray(target, np.float64).reshape(-1, 5, 2) * scale
    predicted = np.asarray(predicted, np.float64).reshape(-1, 5, 2) * scale
    known = np.isfinite(target).all(axis=(1, 2))
    target, predicted = target[known], predicted[known]
    if not known.any():  # as the other reports do without labels: zeros, count 0
        return {"nme": 0.0, "nme_per_point": dict.fromkeys(LANDMARK_NAMES, 0.0), "failure_rate_10pct": 0.0, "count": 0}
    inter_ocular = np.linalg.norm(target[:, 0] - target[:, 1], axis=-1)
    error = np.linalg.norm(predicted - target, axis=-1) / np.maximum(inter_ocular, 1e-6)[:, None]
    return {
        "nme": float(error.mean()),
        "nme_per_point": {name: float(v) for name, v in zip(LANDMARK_NAMES, error.mean(axis=0))},
        "failure_rate_10pct": float((error.mean(axis=1) > 0.1).mean()),
        "count": int(target.shape[0]),
    }


def topk_report(labels: np.ndarray, scores: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict:
    """Top-k accuracy for tasks with many classes (identities), where a confusion matrix is useless."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    keep = labels >= 0
    labels, scores = labels[keep], scores[keep]
    order = np.argsort(-scores, axis=-1)
    report = {f"top{k}": float(np.mean((order[:, :k] == labels[:, None]).any(-1))) if len(labels) else 0.0
              for k in ks}
    report["accuracy"] = report.get("top1", 0.0)
    report["count"] = int(len(labels))
    return report


def multilabel_report(labels: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> dict:
    """Accuracy per attribute over the known (>= 0) labels, and their mean."""
    labels, predicted = np.asarray(labels), np.asarray(predicted).astype(np.int64)
    per = {}
    for i, name in enumerate(names):
        keep = labels[:, i] >= 0
        per[name] = float(np.mean(predicted[keep, i] == labels[keep, i])) if keep.any() else 0.0
    mean = float(np.mean(list(per.values()))) if per else 0.0
    return {"mean_accuracy": mean, "accuracy": mean, "per_attribute": per, "count": int(labels.shape[0])}


def regression_report(target: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> dict:
    """Mean absolute and root-mean-square error per value over the known targets."""
    target = np.asarray(target)
    # NaN is unknown; so is -1 in a 0/1 multilabel label read as regression targets
    known = (target >= 0) if np.issubdtype(target.dtype, np.integer) else np.isfinite(target)
    target = target.astype(np.float64).reshape(len(target), -1)
    known = known.reshape(target.shape)
    predicted = np.asarray(predicted, np.float64).reshape(len(predicted), -1)
    err = np.where(known, predicted - np.where(known, target, 0.0), 0.0)
    count = np.maximum(known.sum(0), 1)
    mae = np.abs(err).sum(0) / count
    rmse = np.sqrt((err ** 2).sum(0) / count)
    return {"mae": float(np.abs(err).sum() / max(known.sum(), 1)),
            "rmse": float(np.sqrt((err ** 2).sum() / max(known.sum(), 1))),
            "per_value": {name: {"mae": float(a), "rmse": float(r)} for name, a, r in zip(names, mae, rmse)},
            "count": int(target.shape[0])}
