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
    """Mean point error / inter-ocular distance (eye centres), over all faces and the five points."""
    scale = np.array([width, height], np.float64)
    target = np.asarray(target, np.float64).reshape(-1, 5, 2) * scale
    predicted = np.asarray(predicted, np.float64).reshape(-1, 5, 2) * scale
    inter_ocular = np.linalg.norm(target[:, 0] - target[:, 1], axis=-1)
    error = np.linalg.norm(predicted - target, axis=-1) / np.maximum(inter_ocular, 1e-6)[:, None]
    return {
        "nme": float(error.mean()),
        "nme_per_point": {name: float(v) for name, v in zip(LANDMARK_NAMES, error.mean(axis=0))},
        "failure_rate_10pct": float((error.mean(axis=1) > 0.1).mean()),
        "count": int(target.shape[0]),
    }
