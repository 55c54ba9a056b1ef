"""Batch augmentation with landmarks that follow the pixels.

One random similarity transform per image (flip, rotation, scale, shift) is applied with a single
`ImageProjectiveTransformV3` call per batch (or, when no rotation is asked, one
`tf.image.crop_and_resize`: the same samples at 2.3x the rate, benchmarks/bench_pipeline.py), and
the same transform moves the landmarks. A flip also swaps left/right landmark identities and the
classes named in `flip_permutations` (head pose).
Randomness is stateless, drawn from an explicit seed, so a pipeline is reproducible when asked.
"""

from __future__ import annotations

import math
from typing import Mapping

import tensorflow as tf

from kerasface.config import AugmentConfig

# left eye <-> right eye, left mouth corner <-> right mouth corner
FLIPPED_LANDMARK_ORDER = (1, 0, 2, 4, 3)


def random_params(batch: int, cfg: AugmentConfig, seed: tf.Tensor) -> dict[str, tf.Tensor]:
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=7)

    def uniform(i, low, high):
        return tf.random.stateless_uniform([batch], seeds[i], low, high)

    flip = uniform(0, 0.0, 1.0) < 0.5 if cfg.flip else tf.zeros([batch], tf.bool)
    return {
        "flip": flip,
        "angle": uniform(1, -cfg.max_rotation, cfg.max_rotation + 1e-9) * (math.pi / 180.0),
        "scale": uniform(2, cfg.min_scale, cfg.max_scale + 1e-9),
        "shift_x": uniform(3, -cfg.max_shift, cfg.max_shift + 1e-9),
        "shift_y": uniform(4, -cfg.max_shift, cfg.max_shift + 1e-9),
        "brightness": uniform(5, -cfg.brightness, cfg.brightness + 1e-9) * 255.0,
        "contrast": uniform(6, 1.0 - cfg.contrast, 1.0 + cfg.contrast + 1e-9),
    }


def transform_landmarks(landmarks: tf.Tensor, params: Mapping[str, tf.Tensor], height: int, width: int) -> tf.Tensor:
    """Move normalised (B, 10) landmarks through the forward transform, then reorder flipped ones."""
    size = tf.constant([width, height], tf.float32)
    points = tf.reshape(landmarks, [-1, 5, 2]) * size  # continuous pixel coordinates
    centre = size / 2.0
    flip = params["flip"][:, None]
    points = tf.stack([tf.where(flip, width - points[..., 0], points[..., 0]), points[..., 1]], axis=-1)
    cos, sin = tf.cos(params["angle"])[:, None], tf.sin(params["angle"])[:, None]
    rel = points - centre
    scale = params["scale"][:, None]
    moved_x = scale * (cos * rel[..., 0] - sin * rel[..., 1]) + centre[0] + params["shift_x"][:, None] * width
    moved_y = scale * (sin * rel[..., 0] + cos * rel[..., 1]) + centre[1] + params["shift_y"][:, None] * height
    moved = tf.stack([moved_x, moved_y], axis=-1) / size
    reordered = tf.gather(moved, FLIPPED_LANDMARK_ORDER, axis=1)
    moved = tf.where(params["flip"][:, None, None], reordered, moved)
    return tf.reshape(moved, [-1, 10])


def inverse_transforms(params: Mapping[str, tf.Tensor], height: int, width: int) -> tf.Tensor:
    """(B, 8) projective transforms mapping output pixel indices to input pixel indices."""
    cos, sin, scale = tf.cos(params["angle"]), tf.sin(params["angle"]), params["scale"]
    cx, cy = width / 2.0, height / 2.0
    tx, ty = params["shift_x"] * width, params["shift_y"] * height
    # u = A q + b with A = R^T / s and b = c - A (c + t), in continuous coordinates.
    a00, a01, a10, a11 = cos / scale, sin / scale, -sin / scale, cos / scale
    b0 = cx - (a00 * (cx + tx) + a01 * (cy + ty))
    b1 = cy - (a10 * (cx + tx) + a11 * (cy + ty))
    flip = params["flip"]
    a00, a01 = tf.where(flip, -a00, a00), tf.where(flip, -a01, a01)
    b0 = tf.where(flip, width - b0, b0)
    # Indices: q = index + 0.5 on the output side, index = u - 0.5 on the input side.
    off0 = b0 + 0.5 * (a00 + a01) - 0.5
    off1 = b1 + 0.5 * (a10 + a11) - 0.5
    zeros = tf.zeros_like(a00)
    return tf.stack([a00, a01, off0, a10, a11, off1, zeros, zeros], axis=1)


def axis_aligned_boxes(transforms: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """The crop_and_resize boxes that sample what rotation-free `transforms` (inverse_transforms) do.

    With an output as tall as its input (H rows), crop_and_resize reads input row
    (y1 + i * (y2 - y1) / (H - 1)) * (H - 1) for output row i, the transform a11 * i + off1: so
    y1 = off1 / (H - 1) and y2 = y1 + a11; likewise x (a flip gives x1 > x2, a mirrored crop).
    """
    a00, off0, a11, off1 = transforms[:, 0], transforms[:, 2], transforms[:, 4], transforms[:, 5]
    x1, y1 = off0 / (width - 1), off1 / (height - 1)
    return tf.stack([y1, x1, y1 + a11, x1 + a00], axis=1)


def augment_batch(
    images: tf.Tensor,
    targets: dict[str, tf.Tensor],
    seed: tf.Tensor,
    cfg: AugmentConfig,
    flip_permutations: Mapping[str, tuple[int, ...]] | None = None,
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Augment a float32 [B, H, W, C] batch in [0, 255] and its targets."""
    height, width = int(images.shape[1]), int(images.shape[2])
    params = random_params(tf.shape(images)[0], cfg, seed)
    transforms = inverse_transforms(params, height, width)
    if cfg.max_rotation == 0:
        # Samples that fall outside the image by less than a pixel read 0 here and are blended with
        # the edge pixel by the projective warp: the two differ on the outermost pixels only.
        images = tf.image.crop_and_resize(images, axis_aligned_boxes(transforms, height, width),
                                          tf.range(tf.shape(images)[0]), [height, width])
    else:
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=transforms,
            output_shape=tf.constant([height, width], tf.int32),
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    contrast = params["contrast"][:, None, None, None]
    images = (images - mean) * contrast + mean + params["brightness"][:, None, None, None]
    images = tf.clip_by_value(images, 0.0, 255.0)
    targets = dict(targets)
    if "landmarks" in targets:
        targets["landmarks"] = transform_landmarks(targets["landmarks"], params, height, width)
    for name, permutation in (flip_permutations or {}).items():
        if name in targets:
            labels = targets[name]
            swapped = tf.gather(tf.constant(permutation, labels.dtype), tf.maximum(labels, 0))
            targets[name] = tf.where(params["flip"] & (labels >= 0), swapped, labels)
    return images, targets
