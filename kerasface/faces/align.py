"""Five-point face alignment: a similarity transform onto a canonical template, in NumPy and in TF.

The five landmarks are, in this order, left eye, right eye, nose, left mouth corner, right mouth
corner, as (x, y) pixel coordinates where integer values are pixel centres (the convention of
OpenCV, MTCNN and `tf.raw_ops.ImageProjectiveTransformV3` alike). "Left" is the point on the
image's left, as in MTFL and MTCNN.

Templates
    `REFERENCE_112x96` is the SphereFace / CenterLoss template (Wen et al. 2016, used by wang_joint)
    for a 112-high, 96-wide crop. `template(size, zoom, centre)` scales it to any output size:
    the reference point `centre` (in 96x112 reference units) goes to the middle of the output,
    and one reference unit becomes `zoom * height / 112` output pixels. With the defaults, 112x96
    gives the SphereFace template exactly and 112x112 the ArcFace (insightface) template exactly.

Transforms
    `similarity_transform(src, dst)` is Umeyama's least-squares similarity (rotation, uniform scale,
    translation; no reflection) as a 2x3 matrix mapping src points onto dst points.
    `similarity_transform_tf` computes the same matrix with TF ops (closed form; in 2-D the
    Umeyama solution is exactly the least-squares fit of [[a, -b], [b, a]] + t).

Warps
    `align_np` (cv2.warpAffine, bilinear, zero border) and `align_tf`
    (`tf.raw_ops.ImageProjectiveTransformV3`, bilinear, constant zero fill) produce the same
    pixels to within rounding (tests check < 1 grey level on average). `align_tf` is pure TF, so
    it runs eagerly, inside `tf.data.Dataset.map` and inside an exported `tf.function` graph.

Anti-aliasing
    When the transform shrinks the face by more than 2x (a large face in a big photo), both
    versions first shrink the whole image with area averaging (cv2.INTER_AREA / tf.image.resize
    "area") so that the remaining warp scale lies in [0.5, 1); without it bilinear sampling
    aliases. Pass `antialias=False` to skip this step.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: SphereFace/CenterLoss 5-point template for a 112 (height) x 96 (width) crop, (x, y) pixels.
REFERENCE_112x96 = np.array(
    [
        [30.2946, 51.6963],  # left eye
        [65.5318, 51.5014],  # right eye
        [48.0252, 71.7366],  # nose tip
        [33.5493, 92.3655],  # left mouth corner
        [62.7299, 92.2041],  # right mouth corner
    ],
    np.float32,
)
REFERENCE_SIZE = (112, 96)  # (height, width)
REFERENCE_CENTRE = (48.0, 56.0)  # middle of the reference crop, (x, y)

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def template(
    size: tuple[int, int],
    zoom: float = 1.0,
    centre: tuple[float, float] = REFERENCE_CENTRE,
) -> np.ndarray:
    """The five template points (5, 2) float32 for an output of `size` = (height, width).

    zoom: 1 keeps the SphereFace framing; < 1 shows more around the face; > 1 zooms in.
    centre: the point of the 96x112 reference frame placed at the middle of the output (for
      example (48, 69) is the middle of the whole face, forehead to chin, and (48, 92) the mouth).
    """
    height, width = int(size[0]), int(size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"template size must be positive, got {size}")
    scale = zoom * height / REFERENCE_SIZE[0]
    offset = np.array([width / 2.0, height / 2.0], np.float64)
    points = (REFERENCE_112x96.astype(np.float64) - np.asarray(centre, np.float64)) * scale + offset
    return points.astype(np.float32)


# --------------------------------------------------------------------------------------------
# NumPy / OpenCV reference
# --------------------------------------------------------------------------------------------


def _as_points(points, name: str) -> np.ndarray:
    arr = np.asarray(points, np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 2:
        raise ValueError(f"{name} must be (N>=2, 2) x,y points, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return arr


def similarity_transform(src, dst) -> np.ndarray:
    """Umeyama (1991) least-squares similarity mapping src (N, 2) onto dst (N, 2): a (2, 3) float64.

    Reflections are excluded (det R = +1). Degenerate sources (all points equal) give a pure
    translation of the source centroid onto the destination centroid.
    """
    src = _as_points(src, "src")
    dst = _as_points(dst, "dst")
    if src.shape != dst.shape:
        raise ValueError(f"src {src.shape} and dst {dst.shape} must have the same shape")
    n = src.shape[0]
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / n
    cov = dst_c.T @ src_c / n
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var if src_var > 1e-12 else 1.0
    if src_var <= 1e-12:
        rotation = np.eye(2)
    matrix = np.zeros((2, 3), np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def transform_points(matrix, points) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (N, 2) points; float32 result."""
    m = np.asarray(matrix, np.float64)
    p = np.asarray(points, np.float64)
    return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)


def transform_scale(matrix) -> float:
    """The uniform scale of a similarity matrix (output pixels per input pixel)."""
    m = np.asarray(matrix, np.float64)
    return float(math.sqrt(abs(np.linalg.det(m[:, :2]))))


def _antialias_factor(scale: float) -> float:
    """Pre-shrink factor so that the remaining warp scale is >= 0.5 (1.0 = no pre-shrink)."""
    return 1.0 if scale >= 0.5 else 2.0 * scale


def _shrunk_size(height: int, width: int, factor: float) -> tuple[int, int]:
    return max(1, int(round(height * factor))), max(1, int(round(width * factor)))


def _after_shrink(matrix: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """The matrix that, applied to the image shrunk by (fx, fy), equals `matrix` on the original.

    Area shrinking maps pixel centres as p' = (p + 0.5) * f - 0.5, so p = (p' + 0.5) / f - 0.5.
    """
    m = np.asarray(matrix, np.float64)
    lin = m[:, :2] @ np.diag([1.0 / fx, 1.0 / fy])
    shift = m[:, :2] @ np.array([0.5 / fx - 0.5, 0.5 / fy - 0.5]) + m[:, 2]
    return np.concatenate([lin, shift[:, None]], axis=1)


def warp_affine_np(
    image: np.ndarray, matrix, size: tuple[int, int], antialias: bool = True
) -> np.ndarray:
    """Output pixel q takes the bilinear sample of `image` at matrix^-1 q; outside is zero.

    matrix: (2, 3), image pixels -> output pixels. size: (height, width). With `antialias`, a
    matrix that shrinks by more than 2x first shrinks the image by area averaging.
    """
    import cv2

    height, width = int(size[0]), int(size[1])
    image = np.asarray(image)
    matrix = np.asarray(matrix, np.float64)
    work = image
    if antialias:
        factor = _antialias_factor(transform_scale(matrix))
        if factor < 1.0:
            h, w = _shrunk_size(image.shape[0], image.shape[1], factor)
            work = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            matrix = _after_shrink(matrix, w / image.shape[1], h / image.shape[0])
    out = cv2.warpAffine(
        work,
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    if out.ndim == 2 and image.ndim == 3:
        out = out[..., None]
    return out


def align_np(
    image: np.ndarray,
    landmarks,
    size: tuple[int, int],
    dst: np.ndarray | None = None,
    antialias: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp `image` so that `landmarks` land on `dst` (default `template(size)`).

    image: HxW or HxWxC array (any dtype cv2 accepts; uint8 in practice).
    Returns (aligned image of shape `size` (+ channels), landmarks in aligned pixels (5, 2)).
    Pixels from outside the image are zero.
    """
    height, width = int(size[0]), int(size[1])
    dst = template((height, width)) if dst is None else np.asarray(dst, np.float32)
    src = np.asarray(landmarks, np.float32)
    matrix = similarity_transform(src, dst)
    return warp_affine_np(image, matrix, (height, width), antialias), transform_points(matrix, src)


# --------------------------------------------------------------------------------------------
# TensorFlow (tf.data, exported graphs)
# --------------------------------------------------------------------------------------------


def similarity_transform_tf(src, dst):
    """TF version of `similarity_transform`: src, dst (..., N, 2) -> (..., 2, 3) float32.

    Closed form of the least-squares similarity; equal to Umeyama's solution (no reflection).
    """
    import tensorflow as tf

    src = tf.cast(src, tf.float32)
    dst = tf.cast(dst, tf.float32)
    src_mean = tf.reduce_mean(src, axis=-2, keepdims=True)
    dst_mean = tf.reduce_mean(dst, axis=-2, keepdims=True)
    sc, dc = src - src_mean, dst - dst_mean
    sx, sy = sc[..., 0], sc[..., 1]
    dx, dy = dc[..., 0], dc[..., 1]
    norm = tf.reduce_sum(sx * sx + sy * sy, axis=-1)
    safe = norm > 1e-12
    denom = tf.where(safe, norm, tf.ones_like(norm))
    a = tf.where(safe, tf.reduce_sum(sx * dx + sy * dy, axis=-1) / denom, tf.ones_like(norm))
    b = tf.where(safe, tf.reduce_sum(sx * dy - sy * dx, axis=-1) / denom, tf.zeros_like(norm))
    mx, my = src_mean[..., 0, 0], src_mean[..., 0, 1]
    tx = dst_mean[..., 0, 0] - (a * mx - b * my)
    ty = dst_mean[..., 0, 1] - (b * mx + a * my)
    row0 = tf.stack([a, -b, tx], axis=-1)
    row1 = tf.stack([b, a, ty], axis=-1)
    return tf.stack([row0, row1], axis=-2)


def _inverse_projective(matrix):
    """(2, 3) affine image->output  ->  (8,) output->input, as ImageProjectiveTransformV3 wants."""
    import tensorflow as tf

    a, b, tx = matrix[0, 0], matrix[0, 1], matrix[0, 2]
    c, d, ty = matrix[1, 0], matrix[1, 1], matrix[1, 2]
    det = a * d - b * c
    det = tf.where(tf.abs(det) > 1e-20, det, tf.ones_like(det))
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    itx = -(ia * tx + ib * ty)
    ity = -(ic * tx + id_ * ty)
    zero = tf.zeros_like(a)
    return tf.stack([ia, ib, itx, ic, id_, ity, zero, zero])


def warp_affine_tf(image, matrix, size: tuple[int, int], antialias: bool = True):
    """TF twin of `warp_affine_np` for one HxWxC image and a (2, 3) matrix; float32 result."""
    import tensorflow as tf

    height, width = int(size[0]), int(size[1])
    img = tf.cast(image, tf.float32)
    matrix = tf.cast(matrix, tf.float32)
    if antialias:
        scale = tf.sqrt(tf.abs(matrix[0, 0] * matrix[1, 1] - matrix[0, 1] * matrix[1, 0]))
        shape = tf.shape(img)
        h_in, w_in = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)

        def shrink():
            factor = 2.0 * scale
            h = tf.maximum(1, tf.cast(tf.round(h_in * factor), tf.int32))
            w = tf.maximum(1, tf.cast(tf.round(w_in * factor), tf.int32))
            small = tf.image.resize(img, tf.stack([h, w]), method="area")
            fx, fy = tf.cast(w, tf.float32) / w_in, tf.cast(h, tf.float32) / h_in
            lin = matrix[:, :2] * tf.stack([1.0 / fx, 1.0 / fy])[None, :]
            half = tf.stack([0.5 / fx - 0.5, 0.5 / fy - 0.5])
            shift = tf.linalg.matvec(matrix[:, :2], half) + matrix[:, 2]
            return small, tf.concat([lin, shift[:, None]], axis=1)

        def keep():
            return img, matrix

        img, matrix = tf.cond(scale < 0.5, shrink, keep)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=img[None],
        transforms=_inverse_projective(matrix)[None],
        output_shape=tf.constant([height, width], tf.int32),
        fill_value=tf.constant(0.0, tf.float32),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]


def _align_one_tf(image, landmarks, size, dst, antialias: bool):
    import tensorflow as tf

    image = tf.convert_to_tensor(image)
    in_dtype = image.dtype
    src = tf.cast(landmarks, tf.float32)
    matrix = similarity_transform_tf(src, dst)
    out = warp_affine_tf(image, matrix, size, antialias)
    if in_dtype.is_integer:
        out = tf.cast(tf.clip_by_value(tf.round(out), in_dtype.min, in_dtype.max), in_dtype)
    elif in_dtype != tf.float32:
        out = tf.cast(out, in_dtype)
    points = tf.linalg.matvec(matrix[:, :2], src) + matrix[:, 2]
    return out, points


def align_tf(image, landmarks, size: tuple[int, int], dst=None, antialias: bool = True):
    """TF twin of `align_np`: image HxWxC or NxHxWxC, landmarks (5, 2) or (N, 5, 2).

    Returns (aligned (…, height, width, C) in the input dtype (integers are rounded),
    landmarks in aligned pixels (…, 5, 2) float32). Works eagerly, in tf.data and in graphs;
    `size` must be Python ints.
    """
    import tensorflow as tf

    height, width = int(size[0]), int(size[1])
    dst = template((height, width)) if dst is None else np.asarray(dst, np.float32)
    dst_t = tf.constant(dst, tf.float32)
    image = tf.convert_to_tensor(image)
    landmarks = tf.convert_to_tensor(landmarks)
    if image.shape.rank == 3:
        return _align_one_tf(image, landmarks, (height, width), dst_t, antialias)
    if image.shape.rank != 4:
        raise ValueError(f"align_tf wants an HxWxC or NxHxWxC image, got rank {image.shape.rank}")
    return tf.map_fn(
        lambda args: _align_one_tf(args[0], args[1], (height, width), dst_t, antialias),
        (image, landmarks),
        fn_output_signature=(
            tf.TensorSpec([height, width, image.shape[-1]], image.dtype),
            tf.TensorSpec([None, 2], tf.float32),
        ),
    )


def eye_distance(landmarks: Sequence) -> float:
    """Distance between the two eye landmarks (the usual normaliser for landmark errors)."""
    p = np.asarray(landmarks, np.float64)
    return float(np.hypot(*(p[1] - p[0])))
