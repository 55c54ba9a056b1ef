"""Every head kind through loss, gradient step, score, report, export and predict's reading, and
the evaluators' protocols on cases whose answers are known."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.config import TaskConfig
from kerasface.evaluators import EVALUATORS, identification, tar_at_far, verification
from kerasface.tasks import HEAD_KINDS, head_kind, validate_task

RNG = np.random.default_rng(0)


def targets_for(kind: str, n: int, units: int):
    """Labels of each kind with some unknown entries (the masked ones)."""
    if kind in ("classification", "embedding"):
        labels = RNG.integers(0, units, n).astype(np.int32)
        labels[:2] = -1
    elif kind in ("multilabel", "attribute_scores"):
        labels = RNG.integers(0, 2, (n, units)).astype(np.int32)
        labels[0, :] = -1
    elif kind == "regression":
        labels = RNG.normal(size=(n, units)).astype(np.float32)
        labels[0, 0] = np.nan
    else:  # landmarks
        labels = RNG.uniform(0.2, 0.8, (n, 10)).astype(np.float32)
    return labels


UNITS = {"classification": 3, "multilabel": 4, "attribute_scores": 4, "regression": 2, "landmarks": 10, "embedding": 6}


@pytest.mark.parametrize("kind_name", HEAD_KINDS.names())
def test_every_head_kind_trains_scores_reports_exports_and_reads(kind_name):
    assert set(UNITS) == set(HEAD_KINDS.names()), "a new head kind needs its UNITS and targets_for entry"
    kind, units = head_kind(kind_name), UNITS[kind_name]
    task = TaskConfig("t", kind=kind_name, num_classes=units)
    validate_task(task, "models.x.tasks.0")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    features = keras.layers.Dense(8, name="features")(inputs)
    model = keras.Model(inputs, {"t": keras.layers.Dense(units, name="head_t")(features), "features": features})
    x = tf.constant(RNG.normal(size=(16, 5)), tf.float32)
    y = tf.constant(targets_for(kind_name, 16, units))
    optimizer = keras.optimizers.Adam(0.05)
    losses = []
    for _ in range(30):
        with tf.GradientTape() as tape:
            loss = kind.loss(task, y, model(x)["t"], 16)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses[::10]
    out = model(x)
    score = kind.score(task, out["t"].numpy(), y.numpy())
    assert np.isfinite(score)
    labels = [f"n{i}" for i in range(units)]
    report = kind.report(task, out["t"].numpy(), y.numpy(), labels, (48, 48))
    json.dumps(report)  # JSON-safe
    assert isinstance(kind.summary(report), str) and isinstance(kind.detail(report), str)
    exported = kind.export(out["t"], out["features"]).numpy()
    reading = kind.read(exported[0], labels)
    json.dumps(reading)
    if kind_name == "embedding":
        assert exported.shape == (16, 8)
        np.testing.assert_allclose(np.linalg.norm(exported, axis=-1), 1.0, rtol=1e-5)
    else:
        assert exported.shape == (16, units)
    if kind_name == "attribute_scores":  # 30 steps towards the 0/1 targets: well above chance (0.5)
        assert score >= 0.7 and set(reading["values"]) == set(labels), score
    if kind_name == "classification":
        np.testing.assert_allclose(exported.sum(-1), 1.0, rtol=1e-5)
        assert reading["label"] in labels and set(reading["probabilities"]) == set(labels)


# every kind whose labels can be unknown (a face always has its five points)
MASKABLE = [name for name in HEAD_KINDS.names() if "landmarks" not in head_kind(name).label_types]


@pytest.mark.parametrize("kind_name", MASKABLE)
def test_unknown_labels_contribute_no_loss_but_count_in_the_batch(kind_name):
    kind, units = head_kind(kind_name), UNITS[kind_name]
    task = TaskConfig("t", kind=kind_name, num_classes=units)
    logits = tf.constant(RNG.normal(size=(4, units)), tf.float32)
    labels = targets_for(kind_name, 4, units)
    unknown = np.full_like(labels, np.nan if labels.dtype.kind == "f" else -1)
    assert float(kind.loss(task, tf.constant(unknown), logits, 4)) == 0.0
    half = labels.copy()
    half[2:] = unknown[2:]
    full_first_two = float(kind.loss(task, tf.constant(labels[:2]), logits[:2], 4))
    assert float(kind.loss(task, tf.constant(half), logits, 4)) == pytest.approx(full_first_two, rel=1e-6)


def test_svm_loss_is_the_squared_hinge_and_config_errors_name_the_field():
    task = TaskConfig("smile", loss="svm")
    scores = tf.constant([[1.0, 2.5, 0.0]])
    # label 0: sum over j != 0 of max(0, s_j - s_0 + 1)^2 = 2.5^2 + 0^2
    assert float(head_kind("classification").loss(task, tf.constant([0]), scores, 1)) == pytest.approx(6.25)
    with pytest.raises(ValueError, match=r"models.m.tasks.1.kind: unknown head kind 'softmaxx'"):
        validate_task(TaskConfig("x", kind="softmaxx"), "models.m.tasks.1")
    with pytest.raises(ValueError, match=r"models.m.tasks.0.loss: classification takes loss softmax or svm"):
        validate_task(TaskConfig("x", loss="hinge"), "models.m.tasks.0")


def test_many_classes_get_top_k_instead_of_a_confusion_matrix():
    scores = np.eye(200)[np.arange(100)] + 0.01 * RNG.random((100, 200))
    labels = np.arange(100)
    labels[:10] = (labels[:10] + 1) % 200  # 10 wrong at top-1
    report = EVALUATORS.get("classification")(labels, scores)
    assert "confusion" not in report and report["top1"] == pytest.approx(0.9)
    small = EVALUATORS.get("classification")(np.array([0, 1, 1]), np.eye(2)[[0, 1, 0]], ["a", "b"])
    assert small["confusion"] == [[1, 0], [1, 1]]


def test_verification_chooses_thresholds_on_nine_folds():
    rng = np.random.default_rng(1)
    n = 600
    same = np.arange(n) % 2 == 0
    first = rng.normal(size=(n, 16))
    noise = np.where(same[:, None], 0.3, 3.0)  # same pairs are close, different pairs far
    second = first + noise * rng.normal(size=(n, 16))
    result = verification(first, second, same)
    assert len(result["fold_accuracy"]) == 10 and result["accuracy"] > 0.97
    assert result["std"] == pytest.approx(np.std(result["fold_accuracy"]))
    assert result["auc"] > 0.99
    # a perfectly separable case is 100% in every fold; a random one is near 50%
    assert verification(first, first, np.ones(n, bool))["accuracy"] == 1.0
    chance = verification(rng.normal(size=(n, 16)), rng.normal(size=(n, 16)), same)
    assert 0.4 < chance["accuracy"] < 0.6 and 0.4 < chance["auc"] < 0.6


def test_identification_cmc_and_tar_at_far_on_a_known_gallery():
    gallery = np.eye(4)  # identities 0..3 along the axes
    probes = np.array([[1.0, 0.1, 0, 0], [0, 1.0, 0.9, 0], [0, 0.2, 1.0, 0]])
    # distractor 0 lies closer to probe 1 than its own identity (1) does
    distractors = np.array([[0, 1.0, 1.0, 0], [0, 0, 0, 1.0]])
    result = identification(probes, np.array([0, 1, 2]), gallery, np.arange(4), distractors, ranks=(1, 2))
    assert result["cmc"] == {"1": pytest.approx(2 / 3), "2": 1.0}
    genuine, impostor = np.array([0.9, 0.8, 0.3]), np.array([0.95, 0.5, 0.4, 0.1])
    tar = tar_at_far(genuine, impostor, (0.25, 0.5))
    assert tar["0.25"]["tar"] == pytest.approx(2 / 3)  # threshold 0.5: one impostor of four above it
    assert tar["0.5"]["tar"] == pytest.approx(2 / 3)  # threshold 0.4


def test_results_detail_comes_from_the_last_split_that_labels_the_task():
    """With several sources a task is labelled only in its own source's splits: the table's detail
    column names that split instead of showing the recalls of a split without labels."""
    from kerasface.evaluate import _detail
    from kerasface.tasks import head_kind

    kind = head_kind("classification")
    labelled = {"count": 4, "accuracy": 0.75, "recall": {"smiling": 1.0, "not_smiling": 0.5}}
    record = {"genki4k/test_metrics": {"smile": labelled},
              "mtfl/test_metrics": {"smile": {"count": 0, "accuracy": 0.0, "recall": {"smiling": 0.0, "not_smiling": 0.0}}}}
    splits = ["genki4k/test", "mtfl/test"]
    assert _detail(kind, record, splits, "", "smile") == kind.detail(labelled) + " (genki4k/test)"
    assert _detail(kind, {**record, "mtfl/test_metrics": {"smile": labelled}}, splits, "", "smile") == kind.detail(labelled)
    assert _detail(kind, record, splits, "", "gender") == ""
