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


def fpr_threshold(scores: np.ndarray, positive: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold (score >= threshold means present) whose false-positive rate over these
    scores is <= target_fpr. Candidates are the scores themselves: scores tied at a value are all in
    or all out. When even the highest score lets too many negatives through, the threshold is the
    next float above the highest score: nothing is predicted."""
    order = np.argsort(-scores, kind="stable")
    ranked, negative = scores[order], ~positive[order]
    last = np.r_[ranked[1:] != ranked[:-1], True]  # the last pair of each run of equal scores
    # the false-positive rate at each distinct score taken as the threshold, highest score first:
    # it only grows as the threshold falls, so the allowed thresholds are a prefix of this list
    rate = np.cumsum(negative)[last] / max(int(negative.sum()), 1)
    allowed = np.flatnonzero(rate <= target_fpr)
    return float(ranked[last][allowed[-1]]) if len(allowed) else float(np.nextafter(ranked[0], np.inf))


def operating_point(labels: np.ndarray, probabilities: np.ndarray, target_fpr: float,
                    threshold: float | None = None) -> dict:
    """True and false positive rates of a multilabel head at one threshold over all its attributes
    (micro: every (sample, attribute) pair with a known 0/1 label counts once; -1 = unknown is left
    out). Without `threshold` it is chosen on these pairs (fpr_threshold: the lowest whose
    false-positive rate is <= target_fpr); with one (chosen on the validation split) it is applied.
    `no_label`: the fraction of samples with at least one known label that get no attribute at all
    (a sample's prediction is every attribute whose probability reaches the threshold, known label
    or not: what a user of the model would see)."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, np.float64)
    known = labels >= 0
    scores, positive = probabilities[known], labels[known] == 1
    chosen_here = threshold is None
    if chosen_here and len(scores):
        threshold = fpr_threshold(scores, positive, target_fpr)
    predicted = probabilities >= threshold if threshold is not None else np.zeros(labels.shape, bool)
    hit = predicted[known]
    positives, negatives = int(positive.sum()), int((~positive).sum())
    true_pos, false_pos = int((hit & positive).sum()), int((hit & ~positive).sum())
    labelled = known.reshape(len(labels), -1).any(-1)
    without = labelled & ~predicted.reshape(len(labels), -1).any(-1)
    return {"threshold": threshold, "chosen_on": "this split" if chosen_here else "validation split",
            "tpr": true_pos / max(positives, 1), "fpr": false_pos / max(negatives, 1),
            "target_fpr": float(target_fpr), "no_label": int(without.sum()) / max(int(labelled.sum()), 1),
            "positives": positives, "negatives": negatives, "true_positives": true_pos,
            "false_positives": false_pos, "samples": int(labelled.sum()), "samples_without_label": int(without.sum())}


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
