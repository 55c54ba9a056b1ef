"""Head kinds: what an output of a model means, from its loss to what `predict` prints.

Every task of a model config names a kind (`TaskConfig.kind`); the trainer, the evaluation, the
exporters and predict ask the kind instead of testing names, so a new kind is one class here:

  classification  softmax logits over `num_classes`; `loss` = "softmax" (cross-entropy) or "svm"
                  (BKNet's squared-hinge multi-class SVM); label: a class index (-1 = unlabelled)
  multilabel      `num_classes` independent binary attributes in one sigmoid head (CelebA's 40);
                  label: a vector of 0/1, -1 where unknown; with `operating_fpr` also reported at
                  one threshold over all attributes (tpr at that fpr: flickr_depth's ethnicity)
  regression      `num_classes` real values (age; wang_joint's attribute scores), squared error;
                  label: a float vector, NaN where unknown (a 0/1 multilabel label is read as floats)
  attribute_scores
                  `num_classes` binary attributes regressed as 0/1 values with squared error
                  (wang_joint's MSE attribute head); label: a 0/1 vector, -1 where unknown;
                  reported as accuracy per attribute, a score >= 0.5 meaning present
  landmarks       the five points as 10 fractions of the input width/height, TCDCN's squared error
  embedding       an identity softmax trained like classification, whose normalised penultimate
                  features ("features" layer) are what gets exported and compared (verification)

Each kind owns: its masked TF loss, averaged over the GLOBAL batch (the same function computes the
validation loss), its batch accuracy for the progress bar, its validation score (higher is better),
its report for metrics.json, its export post-processing and how predict reads the exported output.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kerasface.registry import Registry

class HeadKind:
    """Base class; subclasses fill in the behaviour of one kind of output."""

    name = ""
    label_types: tuple[str, ...] = ()  # TFRecord label types this kind trains on (kerasface.data.tfrecord)
    losses: tuple[str, ...] = ("default",)
    # part of the unit's validation score; errors in the target's own units (landmarks, regression:
    # -NME, -MAE in years) cannot be averaged with accuracies, so they decide only when alone
    counts_in_score = True
    evaluator = ""  # its protocol in kerasface.evaluators.EVALUATORS
    has_classes = False  # exported with TF Serving Classify signatures and class labels
    pixel_coordinates = False  # trained as fractions of the input, exported in pixels
    needs_features = False  # exported from the model's "features" layer, not its head
    operating_point = False  # reports tpr/fpr at one threshold chosen for TaskConfig.operating_fpr

    # ---- training (TensorFlow)
    def loss(self, task, target, output, global_batch):
        raise NotImplementedError

    def batch_accuracy(self, task, target, output, global_batch):
        """A number for the progress bar, summed over replicas (None: nothing to show)."""
        return None

    # ---- evaluation (NumPy)
    def score(self, task, output: np.ndarray, target: np.ndarray) -> float:
        raise NotImplementedError

    def report(self, task, output: np.ndarray, target: np.ndarray, labels: Sequence[str],
               input_size: Sequence[int], reference: dict | None = None) -> dict:
        """The task's report for metrics.json. `reference`: its report on the validation split when
        this is another split, so that what is chosen on data (multilabel's operating threshold)
        is chosen on validation and only applied here."""
        from kerasface.evaluators import EVALUATORS

        return EVALUATORS.get(self.evaluator)(target, output, labels)

    # ---- export and predict
    def average(self, outputs: list[np.ndarray]) -> np.ndarray:
        """Several checkpoints' raw outputs -> one, as a checkpoint ensemble averages them."""
        return np.mean(outputs, axis=0)

    def summary(self, report: dict) -> str:
        """The report's headline for a results table cell."""
        return f"{100 * report['accuracy']:.1f}%"

    def detail(self, report: dict) -> str:
        return ""

    def export(self, output, features=None):
        """The exported tensor for this head (TensorFlow)."""
        return output

    def meaning(self, labels: Sequence[str]) -> str:
        return ""

    def label_names(self, task, names: Sequence[str]) -> list[str]:
        """The names of the outputs (class names, attribute names, value names) for unit.json."""
        return [str(n) for n in names]

    def output_labels(self, given) -> tuple[str, ...]:
        """One name per exported value, from unit.json's labels (empty: the exporter numbers them)."""
        return tuple(map(str, given or ()))

    def read(self, values: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
        """One face's exported output -> the JSON-safe fields predict reports."""
        return {"values": [float(v) for v in np.ravel(values)]}


HEAD_KINDS: Registry[HeadKind] = Registry("head kind")


def head_kind(name: str) -> HeadKind:
    return HEAD_KINDS.get(name)


def _register(cls):
    HEAD_KINDS.register(cls.name)(cls())
    return cls


def _accuracy(output: np.ndarray, target: np.ndarray) -> float:
    keep = target >= 0
    return float(np.mean(output[keep].argmax(-1) == target[keep])) if keep.any() else 0.0


def _attribute_accuracy(target, present, global_batch):
    """The mean share of known (>= 0) attributes answered right, summed over the replica's batch."""
    import tensorflow as tf

    target = tf.cast(target, tf.int32)
    known = tf.cast(target >= 0, tf.float32)
    hit = tf.cast(tf.cast(present, tf.int32) == target, tf.float32) * known
    per_example = tf.reduce_sum(hit, -1) / tf.maximum(tf.reduce_sum(known, -1), 1.0)
    return tf.reduce_sum(per_example) / global_batch


@_register
class Classification(HeadKind):
    name = "classification"
    evaluator = "classification"
    has_classes = True
    label_types = ("class", "identity")
    losses = ("softmax", "svm")

    def loss(self, task, target, output, global_batch):
        from kerasface.losses import masked_softmax_cross_entropy, masked_squared_hinge

        fn = masked_squared_hinge if task.loss == "svm" else masked_softmax_cross_entropy
        return fn(target, output, global_batch, class_weight_values(task))

    def batch_accuracy(self, task, target, output, global_batch):
        import tensorflow as tf

        hit = (tf.argmax(output, -1, output_type=tf.int32) == target) & (target >= 0)
        return tf.reduce_sum(tf.cast(hit, tf.float32)) / global_batch

    def score(self, task, output, target):
        return _accuracy(output, target)

    def average(self, outputs):
        # average the probabilities (BKNet's ensemble), returned as log-probabilities: same argmax
        probs = [np.exp(o - o.max(-1, keepdims=True)) for o in outputs]
        probs = np.mean([p / p.sum(-1, keepdims=True) for p in probs], axis=0)
        return np.log(np.maximum(probs, 1e-12))

    def detail(self, report):
        if "recall" not in report:
            return " / ".join(f"{k} {100 * v:.1f}%" for k, v in report.items() if k.startswith("top"))
        return "recall " + " / ".join(f"{k} {100 * v:.1f}" for k, v in report["recall"].items())

    def export(self, output, features=None):
        import tensorflow as tf

        return tf.nn.softmax(output, axis=-1)  # SVM scores too: one ordering, values in [0, 1]

    def meaning(self, labels):
        return "softmax probabilities, in the order of labels"

    def read(self, values, labels):
        probs = np.asarray(values, np.float64).ravel()
        best = int(probs.argmax())
        return {"label": str(labels[best]) if best < len(labels) else str(best),
                "score": float(probs[best]),
                "probabilities": {str(k): float(p) for k, p in zip(labels, probs)}}


@_register
class Multilabel(HeadKind):
    name = "multilabel"
    evaluator = "multilabel"
    label_types = ("multilabel",)
    operating_point = True

    def loss(self, task, target, output, global_batch):
        from kerasface.losses import masked_sigmoid_cross_entropy

        return masked_sigmoid_cross_entropy(target, output, global_batch)

    def batch_accuracy(self, task, target, output, global_batch):
        return _attribute_accuracy(target, output > 0, global_batch)

    def report(self, task, output, target, labels, input_size, reference=None):
        from kerasface.evaluators import EVALUATORS

        chosen = ((reference or {}).get("operating_point") or {}).get("threshold")
        return EVALUATORS.get(self.evaluator)(target, output, labels, task.operating_fpr, chosen)

    def score(self, task, output, target):
        return self.report(task, output, target, (), ())["mean_accuracy"]

    def average(self, outputs):
        probs = np.mean([1.0 / (1.0 + np.exp(-o)) for o in outputs], axis=0)
        probs = np.clip(probs, 1e-7, 1 - 1e-7)
        return np.log(probs / (1.0 - probs))  # back to logits: > 0 means present

    def summary(self, report):
        point = report.get("operating_point")
        at = f"; tpr {100 * point['tpr']:.1f}% at fpr {100 * point['fpr']:.1f}%" if point else ""
        return f"mean {100 * report['mean_accuracy']:.1f}%{at}"

    def detail(self, report):
        worst = sorted(report["per_attribute"].items(), key=lambda kv: kv[1])[:3]
        point = report.get("operating_point")
        at = (f"threshold {point['threshold']:.3g} ({point['chosen_on']}), {100 * point['no_label']:.2f}% "
              f"with no attribute; " if point and point["threshold"] is not None else "")
        return at + "lowest " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in worst)

    def export(self, output, features=None):
        import tensorflow as tf

        return tf.sigmoid(output)

    def meaning(self, labels):
        return "one sigmoid probability per attribute, in the order of labels"

    def read(self, values, labels):
        probs = np.asarray(values, np.float64).ravel()
        return {"probabilities": {str(k): float(p) for k, p in zip(labels, probs)},
                "present": [str(k) for k, p in zip(labels, probs) if p >= 0.5]}


@_register
class Regression(HeadKind):
    name = "regression"
    evaluator = "regression"
    label_types = ("value", "multilabel")
    counts_in_score = False

    def loss(self, task, target, output, global_batch):
        from kerasface.losses import masked_squared_error

        return masked_squared_error(target, output, global_batch)

    def score(self, task, output, target):
        return -self.report(task, output, target, (), ())["mae"]

    def summary(self, report):
        return f"MAE {report['mae']:.3g}"

    def detail(self, report):
        return f"RMSE {report['rmse']:.3g}"

    def meaning(self, labels):
        return "one real value per name in labels"

    def read(self, values, labels):
        vals = np.asarray(values, np.float64).ravel()
        return {"values": {str(k): float(v) for k, v in zip(labels, vals)}}


@_register
class AttributeScores(Regression):
    """Binary attributes learnt as regression targets (MSE on 0/1), judged as classifications."""

    name = "attribute_scores"
    evaluator = "attributes"
    label_types = ("multilabel",)
    counts_in_score = True

    def batch_accuracy(self, task, target, output, global_batch):
        return _attribute_accuracy(target, output >= 0.5, global_batch)

    # the Table 4 report: accuracy per attribute at 0.5 (HeadKind.report without a threshold)
    report = HeadKind.report
    score, summary, detail = Multilabel.score, Multilabel.summary, Multilabel.detail

    def meaning(self, labels):
        return "one score per attribute in the order of labels, trained towards 1 (present) and 0 (absent)"

    def read(self, values, labels):
        scores = np.asarray(values, np.float64).ravel()
        return {"values": {str(k): float(v) for k, v in zip(labels, scores)},
                "present": [str(k) for k, v in zip(labels, scores) if v >= 0.5]}


@_register
class Landmarks(HeadKind):
    name = "landmarks"
    evaluator = "landmarks"
    pixel_coordinates = True
    label_types = ("landmarks",)
    counts_in_score = False

    def loss(self, task, target, output, global_batch):
        from kerasface.losses import landmark_loss

        return landmark_loss(target, output, global_batch)

    def score(self, task, output, target):
        from kerasface.metrics import landmark_report

        return -landmark_report(target, output, 1.0, 1.0)["nme"]

    def report(self, task, output, target, labels, input_size, reference=None):
        from kerasface.evaluators import EVALUATORS

        return EVALUATORS.get(self.evaluator)(target, output, input_size)

    def summary(self, report):
        return f"NME {100 * report['nme']:.2f}%"

    def meaning(self, labels):
        return ("x1, y1, ..., x5, y5 in pixels of the input crop (left eye, right eye, nose, "
                "left and right mouth corners)")

    def label_names(self, task, names):
        from kerasface.faces.align import LANDMARK_NAMES

        return list(LANDMARK_NAMES)

    def output_labels(self, given):
        from kerasface.faces.align import LANDMARK_NAMES

        given = list(given or [])
        if len(given) == 10:
            return tuple(map(str, given))
        points = given if len(given) == 5 else list(LANDMARK_NAMES)
        return tuple(f"{p}_{c}" for p in points for c in "xy")


@_register
class Embedding(Classification):
    """Trained as an identity softmax; exported as the L2-normalised "features" vector."""

    name = "embedding"
    evaluator = "identity"
    losses = ("softmax",)
    has_classes = False  # the identities are the training target, not what is served
    needs_features = True

    def export(self, output, features=None):
        import tensorflow as tf

        if features is None:
            raise ValueError("an embedding head exports the model's 'features' layer, which is missing")
        return tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1)

    def meaning(self, labels):
        return "L2-normalised face embedding (compare with the dot product = cosine similarity)"

    def read(self, values, labels):
        return {"embedding": [float(v) for v in np.ravel(values)]}


def class_weight_values(task) -> tuple[float, ...] | None:
    """The per-class loss weights of a task ("1,3" -> (1.0, 3.0)); None when it has none."""
    if not task.class_weights:
        return None
    if task.class_weights == "balanced":
        raise ValueError(f"task {task.name}: class_weights 'balanced' must be resolved from the training counts "
                         f"first (balanced_class_weights)")
    return tuple(float(v) for v in task.class_weights.split(","))


def balanced_class_weights(counts) -> str:
    """sklearn's "balanced" weights n / (classes * n_c) for class counts (a class without faces: 0),
    as the comma-separated text TaskConfig.class_weights holds."""
    counts = np.asarray(counts, np.float64)
    total, classes = counts.sum(), len(counts)
    weights = np.where(counts > 0, total / (classes * np.maximum(counts, 1)), 0.0)
    return ",".join(f"{w:.6g}" for w in weights)


def validate_task(task, where: str) -> None:
    """A config error naming the field, before any training starts."""
    kind = HEAD_KINDS.get(task.kind) if task.kind in HEAD_KINDS else None
    if kind is None:
        raise ValueError(f"{where}.kind: unknown head kind {task.kind!r}; known: {', '.join(HEAD_KINDS.names())}")
    if task.loss and task.loss not in kind.losses:
        raise ValueError(f"{where}.loss: {task.kind} takes loss {' or '.join(kind.losses)}, got {task.loss!r}")
    from_data = "class" in kind.label_types  # 0 classes: as many as the data has (the trainer counts them)
    if task.num_classes < (0 if from_data else 1):
        raise ValueError(f"{where}.num_classes: expected a positive number of outputs"
                         f"{' (or 0: as many classes as the data has)' if from_data else ''}, got {task.num_classes}")
    if task.class_weights and task.class_weights != "balanced":
        if not kind.has_classes:
            raise ValueError(f"{where}.class_weights: only classification tasks weight classes ({task.kind} has none)")
        try:
            values = class_weight_values(task)
        except ValueError:
            values = None
        if values is None or len(values) != task.num_classes or min(values) < 0:
            raise ValueError(f"{where}.class_weights: expected 'balanced' or {task.num_classes} non-negative "
                             f"comma-separated numbers, got {task.class_weights!r}")
    elif task.class_weights and not kind.has_classes:
        raise ValueError(f"{where}.class_weights: only classification tasks weight classes ({task.kind} has none)")
    if not 0.0 <= task.operating_fpr < 1.0:
        raise ValueError(f"{where}.operating_fpr: expected a false-positive rate in [0, 1) (0: none reported), "
                         f"got {task.operating_fpr}")
    if task.operating_fpr and not kind.operating_point:
        raise ValueError(f"{where}.operating_fpr: {task.kind} reports no operating point (multilabel heads do)")
