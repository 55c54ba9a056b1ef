"""Evaluation metrics against confusion matrices computed by hand."""

import numpy as np
import pytest

from kerasface.metrics import classification_report, confusion_matrix, landmark_report


def test_confusion_matrix_precision_recall_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2, -1, 2])
    predicted = np.array([0, 1, 0, 1, 2, 2, 0, 0])
    # true 0: predicted 0,1,0 -> [2, 1, 0]; true 1: 1,2 -> [0, 1, 1]; true 2: 2,0 -> [1, 0, 1]; -1 ignored
    assert confusion_matrix(labels, predicted, 3).tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 1]]
    report = classification_report(labels, predicted, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(4 / 7) and report["count"] == 7
    assert report["precision"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1 / 2})
    assert report["recall"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1 / 2})
    assert report["confusion_percent"][0] == pytest.approx([66.67, 33.33, 0.0])
    assert all(type(v) is float for v in report["precision"].values())


def test_class_never_predicted_has_zero_precision_not_nan():
    report = classification_report(np.array([0, 1]), np.array([0, 0]), ["x", "y"])
    assert report["precision"] == {"x": 0.5, "y": 0.0} and report["recall"] == {"x": 1.0, "y": 0.0}


def test_landmark_error_is_normalised_by_inter_ocular_distance():
    target = np.array([[10, 10, 30, 10, 20, 20, 12, 30, 28, 30]], np.float64) / 40.0  # eyes 20 px apart
    predicted = target.copy()
    predicted[0, 4] += 2 / 40.0  # nose off by 2 px in x -> 0.1 IOD on one of five points
    report = landmark_report(target, predicted, 40, 40)
    assert report["nme"] == pytest.approx(0.1 / 5)
    assert report["nme_per_point"]["nose"] == pytest.approx(0.1) and report["nme_per_point"]["left_eye"] == 0.0
    assert report["failure_rate_10pct"] == 0.0
