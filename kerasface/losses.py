"""Masked multi-task losses, each averaged over the GLOBAL batch.

Under tf.distribute every replica sums its own examples and divides by the global batch size, so
the gradients that the optimizer all-reduces (sums) equal those of one big batch. Examples with
label -1 (not labelled for that task) contribute nothing, but still count in the denominator, as in
BKNet's masked loss (sum over the batch of alpha * loss, divided by N).
"""

from __future__ import annotations

import tensorflow as tf


def _class_mask(labels: tf.Tensor, class_weights) -> tf.Tensor:
    """1 per labelled example (0 for -1), times its class's weight when `class_weights` are given."""
    mask = tf.cast(labels >= 0, tf.float32)
    if class_weights is None:
        return mask
    return mask * tf.gather(tf.constant(class_weights, tf.float32), tf.maximum(labels, 0))


def masked_softmax_cross_entropy(labels: tf.Tensor, logits: tf.Tensor, global_batch: int,
                                 class_weights=None) -> tf.Tensor:
    labels = tf.cast(labels, tf.int32)
    mask = _class_mask(labels, class_weights)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.maximum(labels, 0), logits=tf.cast(logits, tf.float32)
    )
    return tf.reduce_sum(per_example * mask) / global_batch


def masked_squared_hinge(labels: tf.Tensor, logits: tf.Tensor, global_batch: int, class_weights=None) -> tf.Tensor:
    """Multi-class SVM loss of BKNet: sum over j != y of max(0, s_j - s_y + 1)^2."""
    labels = tf.cast(labels, tf.int32)
    mask = _class_mask(labels, class_weights)
    logits = tf.cast(logits, tf.float32)
    onehot = tf.one_hot(tf.maximum(labels, 0), tf.shape(logits)[-1])
    true_score = tf.reduce_sum(logits * onehot, axis=-1, keepdims=True)
    margins = tf.square(tf.nn.relu(logits - true_score + 1.0)) * (1.0 - onehot)
    return tf.reduce_sum(tf.reduce_sum(margins, axis=-1) * mask) / global_batch


def landmark_loss(target: tf.Tensor, predicted: tf.Tensor, global_batch: int) -> tf.Tensor:
    """Half the squared Euclidean error over the 10 normalised coordinates (TCDCN's regression loss).
    NaN coordinates (faces without landmarks: face-crop datasets, or mixed sources) are unknown:
    they add nothing, and no gradient."""
    target = tf.cast(target, tf.float32)
    known = tf.math.is_finite(target)
    error = tf.where(known, tf.cast(predicted, tf.float32) - tf.where(known, target, 0.0), 0.0)
    return 0.5 * tf.reduce_sum(tf.square(error)) / global_batch


def masked_sigmoid_cross_entropy(labels: tf.Tensor, logits: tf.Tensor, global_batch: int) -> tf.Tensor:
    """Multi-label: binary cross-entropy per attribute, summed over the known (>= 0) attributes."""
    labels = tf.cast(labels, tf.int32)
    mask = tf.cast(labels >= 0, tf.float32)
    per_label = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(tf.maximum(labels, 0), tf.float32), logits=tf.cast(logits, tf.float32)
    )
    return tf.reduce_sum(per_label * mask) / global_batch


def masked_squared_error(target: tf.Tensor, predicted: tf.Tensor, global_batch: int) -> tf.Tensor:
    """Regression: squared error summed over the known values (NaN, or -1 in a 0/1 label, is unknown)."""
    if target.dtype.is_integer:  # a multilabel 0/1 vector used as regression targets (wang_joint)
        known = target >= 0
        target = tf.cast(target, tf.float32)
    else:
        target = tf.cast(target, tf.float32)
        known = tf.math.is_finite(target)
    error = tf.where(known, tf.cast(predicted, tf.float32) - tf.where(known, target, 0.0), 0.0)
    return tf.reduce_sum(tf.square(error)) / global_batch
