"""Face detection with MTCNN (the `mtcnn` package: weights ship in the wheel, nothing downloads).

`detect_faces(image)` -> list[Face]; `detect_faces_batch(images)` -> one list per image.
A `Face` has `box` (x, y, width, height), `score` and five `landmarks` (x, y) named
left_eye, right_eye, nose, mouth_left, mouth_right ("left" = on the image's left, as MTFL and
MTCNN name them); `Face.to_dict()` is JSON-safe (plain floats).

Which face: `select_faces(faces, rule, ...)` / `pick_face(...)` with rule
  "all"      every face, best score first;
  "centre"   the face whose box centre is closest to the image centre (GNet/SNet at test time);
  "largest"  the face with the largest box area;
  "box"      the face closest to a given box: highest IoU, ties (e.g. no overlap) broken by the
             distance between centres (GNet/SNet training and validation, with the dataset's box).

`detect_and_crop(image, scheme, rule, box)` is what converters and `predict` call: detect, pick one
face, crop it with a registered crop scheme, return (crop, landmarks in crop) or None.
`draw_faces(image, faces)` draws boxes, landmarks and scores (the CLI's --annotate).

Behaviour at the edges
- One MTCNN detector per process, created on first use (and again after a fork).
- Images whose longer side exceeds `max_side` (default 2000) are shrunk (area averaging) for
  detection and the results mapped back to the original pixels, so a 6000x6000 photo costs about
  what a 2000x2000 one does; the smallest face found there is then
  max(min_face_size, 20 * longest side / max_side) pixels.
- The image pyramid is MTCNN's own (first level 12 / min_face_size, factor 0.709) but stops at
  the last level whose shorter side still holds P-Net's 12-pixel window: `mtcnn` 1.0 counts its
  levels from the image size alone, so a large `min_face_size` sent levels of a few pixels into
  P-Net, which Keras >= 3.15 rejects ("empty output"). An image too small for the first level
  (shorter side below max(12, min_face_size) * 12 / 12) has no face: [].
- Boxes are clipped to the image, landmarks are not (an occluded chin can lie outside).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kerasface.faces.align import LANDMARK_NAMES
from kerasface.faces.images import ImageError, load_image, to_rgb_uint8

DEFAULT_MIN_FACE_SIZE = 20
DEFAULT_SCORE_THRESHOLD = 0.8  # MTCNN's ONet threshold: the final score
DEFAULT_STAGE_THRESHOLDS = (0.6, 0.7)  # PNet, RNet proposal thresholds (MTCNN's defaults)
DEFAULT_MAX_SIDE = 2000
MTCNN_MIN_WINDOW = 12
RULES = ("all", "centre", "largest", "box")


@dataclass(frozen=True)
class Face:
    """One detected face. Coordinates are pixels of the image it was found in (pixel centres at
    integer positions)."""

    box: tuple[float, float, float, float]  # x, y, width, height
    score: float
    landmarks: tuple[tuple[float, float], ...]  # 5 x (x, y), in LANDMARK_NAMES order

    @property
    def points(self) -> np.ndarray:
        """Landmarks as a (5, 2) float32 array, the form the crop schemes take."""
        return np.asarray(self.landmarks, np.float32).reshape(5, 2)

    @property
    def box_xyxy(self) -> tuple[float, float, float, float]:
        x, y, w, h = self.box
        return (x, y, x + w, y + h)

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return (x + w / 2.0, y + h / 2.0)

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])

    def to_dict(self, decimals: int = 2) -> dict[str, Any]:
        """{"box": [x, y, w, h], "score": s, "landmarks": {"left_eye": [x, y], ...}}."""
        r = lambda v: round(float(v), decimals)  # noqa: E731
        return {
            "box": [r(v) for v in self.box],
            "score": round(float(self.score), 6),
            "landmarks": {
                name: [r(x), r(y)] for name, (x, y) in zip(LANDMARK_NAMES, self.landmarks)
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Face":
        marks = data["landmarks"]
        if isinstance(marks, dict):
            marks = [marks[name] for name in LANDMARK_NAMES]
        return cls(
            box=tuple(float(v) for v in data["box"]),
            score=float(data["score"]),
            landmarks=tuple((float(x), float(y)) for x, y in marks),
        )


# ----------------------------------------------------------------------------------------------
# The detector (one per process, created lazily)
# ----------------------------------------------------------------------------------------------

_detector = None
_detector_pid: int | None = None
_lock = threading.Lock()
PYRAMID_FACTOR = 0.709  # MTCNN's scale step between pyramid levels


def pyramid_scales(height: int, width: int, min_face_size: float) -> np.ndarray:
    """Scales of MTCNN's image pyramid: 12/min_face_size * 0.709**k for every k whose level keeps
    a shorter side of at least 12 pixels (P-Net's window). Empty when the image is too small."""
    first = MTCNN_MIN_WINDOW / float(min_face_size)
    shorter = float(min(height, width))
    if shorter * first < MTCNN_MIN_WINDOW:
        return np.empty((0,), np.float64)
    count = int(math.floor(math.log(MTCNN_MIN_WINDOW / (shorter * first)) / math.log(PYRAMID_FACTOR)))
    scales = first * PYRAMID_FACTOR ** np.arange(count + 1)
    # floating point at the boundary: keep only levels MTCNN's resize makes >= 12 pixels
    return scales[np.floor(shorter * scales + 1e-9) >= MTCNN_MIN_WINDOW]


def _pnet_stage_class():
    """mtcnn's P-Net stage with `pyramid_scales` instead of mtcnn's level count (see the module
    docstring); everything after the pyramid is mtcnn's own code."""
    from mtcnn.stages import StagePNet
    from mtcnn.utils import bboxes as mb
    from mtcnn.utils.images import scale_images

    class PyramidPNet(StagePNet):
        def __call__(self, images_normalized, images_oshapes, min_face_size=20, threshold_pnet=0.6,
                     nms_pnet1=0.5, nms_pnet2=0.7, **kwargs):
            height, width = images_normalized.shape[1:3]  # the batch is padded to one size
            boxes = []
            for scale in pyramid_scales(height, width, min_face_size):
                level = scale_images(images_normalized, float(scale))
                offsets, scores = self._model(level)
                found = mb.generate_bounding_box(offsets, scores, threshold_pnet)
                found = mb.upscale_bboxes(found, np.asarray([scale] * images_normalized.shape[0]))
                boxes.append(mb.smart_nms_from_bboxes(found, threshold=nms_pnet1, method="union",
                                                      initial_sort=False))
            merged = np.concatenate(boxes, axis=0) if boxes else np.empty((0, 6))
            merged = mb.smart_nms_from_bboxes(merged, threshold=nms_pnet2, method="union",
                                              initial_sort=True)
            return mb.resize_to_square(merged)

    return PyramidPNet


def _default_device() -> str:
    import tensorflow as tf

    return "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"


def get_detector():
    """The process's MTCNN instance (created on first call; a forked child makes its own)."""
    global _detector, _detector_pid
    with _lock:
        if _detector is None or _detector_pid != os.getpid():
            from mtcnn import MTCNN
            from mtcnn.stages import StageONet, StageRNet

            stages = [_pnet_stage_class(), StageRNet, StageONet]
            _detector = MTCNN(stages=stages, device=_default_device())
            _detector_pid = os.getpid()
        return _detector


def _as_image(image, name: str | None = None) -> np.ndarray:
    if isinstance(image, (str, os.PathLike, bytes, bytearray)):
        return load_image(image)
    return to_rgb_uint8(image, name or "<array>")


def _prepare(image: np.ndarray, min_face_size: float, max_side: int | None):
    """(float32 array to detect on, (sx, sy) original -> detection pixels, min face size there)."""
    h, w = image.shape[:2]
    scale = 1.0
    work = image
    if max_side and max(h, w) > max_side:
        import cv2

        scale = max_side / float(max(h, w))
        size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
        work = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        scale_x, scale_y = size[0] / w, size[1] / h
    else:
        scale_x = scale_y = 1.0
    mfs = float(min_face_size) * scale if scale < 1.0 else float(min_face_size)
    if scale < 1.0:
        mfs = max(mfs, float(DEFAULT_MIN_FACE_SIZE))
    return work.astype(np.float32), (scale_x, scale_y), mfs


def _rows_to_faces(rows: np.ndarray, scale_xy, shape_hw) -> list[Face]:
    """MTCNN numpy rows [id, x1, y1, x2, y2, score, lx*5, ly*5] (detection pixels) -> Faces."""
    sx, sy = scale_xy
    h, w = shape_hw
    faces = []
    for row in rows:
        # detection pixel centre q -> original p: p + 0.5 = (q + 0.5) / s  (area shrink convention)
        x1, x2 = (row[1] + 0.5) / sx - 0.5, (row[3] + 0.5) / sx - 0.5
        y1, y2 = (row[2] + 0.5) / sy - 0.5, (row[4] + 0.5) / sy - 0.5
        x1, x2 = min(max(x1, 0.0), w - 1.0), min(max(x2, 0.0), w - 1.0)
        y1, y2 = min(max(y1, 0.0), h - 1.0), min(max(y2, 0.0), h - 1.0)
        lx = (row[6:11] + 0.5) / sx - 0.5
        ly = (row[11:16] + 0.5) / sy - 0.5
        faces.append(
            Face(
                box=(float(x1), float(y1), float(x2 - x1), float(y2 - y1)),
                score=float(row[5]),
                landmarks=tuple((float(a), float(b)) for a, b in zip(lx, ly)),
            )
        )
    faces.sort(key=lambda f: -f.score)
    return faces


def _run_mtcnn(
    arrays: list[np.ndarray], min_face_size: float, score_threshold: float, stage_thresholds
):
    """Run MTCNN on same-size float32 arrays; returns its numpy rows."""
    detector = get_detector()
    kwargs = dict(
        min_face_size=min_face_size,
        threshold_pnet=float(stage_thresholds[0]),
        threshold_rnet=float(stage_thresholds[1]),
        threshold_onet=float(score_threshold),
    )
    # postprocess=False: we pad ourselves (bottom/right, so no offsets) and clip to each image,
    # which sidesteps mtcnn's per-image offset bookkeeping.
    rows = detector.detect_faces(
        arrays if len(arrays) > 1 else arrays[0],
        output_type="numpy",
        box_format="xyxy",
        postprocess=False,
        **kwargs,
    )
    rows = np.asarray(rows, np.float64)
    return rows.reshape(-1, 16) if rows.size else np.empty((0, 16))


def detect_faces(
    image,
    min_face_size: float = DEFAULT_MIN_FACE_SIZE,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    stage_thresholds: tuple[float, float] = DEFAULT_STAGE_THRESHOLDS,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> list[Face]:
    """Faces in one image (path, bytes, or any array `to_rgb_uint8` accepts), best first."""
    return detect_faces_batch(
        [image],
        min_face_size=min_face_size,
        score_threshold=score_threshold,
        stage_thresholds=stage_thresholds,
        max_side=max_side,
    )[0]


def detect_faces_cached(image: np.ndarray, source: Path | None, cache_dir: str | os.PathLike | None,
                        **detect_kwargs) -> list[Face]:
    """`detect_faces` of an image read from the file `source`, remembered in `cache_dir` (one JSON
    per file, keyed by its path, size, mtime and the detector settings): converting one dataset at
    several crops, or again after a change, detects each photo once. No cache_dir or source: no
    cache. A cache entry that cannot be read is detected again."""
    if not cache_dir or source is None:
        return detect_faces(image, **detect_kwargs)
    stat = Path(source).stat()
    key = f"{Path(source).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{sorted(detect_kwargs.items())}"
    file = Path(cache_dir) / f"{hashlib.sha1(key.encode()).hexdigest()}.json"
    try:
        return [Face(tuple(f["box"]), float(f["score"]), tuple(tuple(p) for p in f["landmarks"]))
                for f in json.loads(file.read_text())]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    faces = detect_faces(image, **detect_kwargs)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp")  # workers write side by side, then rename
    tmp.write_text(json.dumps([{"box": list(map(float, f.box)), "score": float(f.score),
                                "landmarks": [list(map(float, p)) for p in f.landmarks]} for f in faces]))
    tmp.replace(file)
    return faces


def detect_faces_batch(
    images: Sequence,
    min_face_size: float = DEFAULT_MIN_FACE_SIZE,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    stage_thresholds: tuple[float, float] = DEFAULT_STAGE_THRESHOLDS,
    max_side: int | None = DEFAULT_MAX_SIDE,
    batch_size: int = 8,
) -> list[list[Face]]:
    """Faces in each of several images, one list per image (same order).

    Images go through MTCNN `batch_size` at a time, padded (bottom/right, black) to the largest
    image of their group; images of one size batch best. Results equal `detect_faces` one by one
    up to the effect of that padding (none for same-size images).
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    prepared = []
    for i, image in enumerate(images):
        rgb = _as_image(image, f"image {i}")
        work, scale, mfs = _prepare(rgb, min_face_size, max_side)
        prepared.append((rgb.shape[:2], work, scale, mfs))
    results: list[list[Face]] = [[] for _ in prepared]
    # group by effective minimum face size (it is one argument per MTCNN call)
    groups: dict[float, list[int]] = {}
    for i, (_, work, _, mfs) in enumerate(prepared):
        if not len(pyramid_scales(*work.shape[:2], mfs)):
            continue  # no face of at least min_face_size fits P-Net's window
        groups.setdefault(round(mfs, 6), []).append(i)
    for mfs, idx in groups.items():
        for start in range(0, len(idx), max(1, batch_size)):
            chunk = idx[start : start + max(1, batch_size)]
            arrays = [prepared[i][1] for i in chunk]
            hmax = max(a.shape[0] for a in arrays)
            wmax = max(a.shape[1] for a in arrays)
            if len(arrays) > 1:
                arrays = [
                    np.pad(a, ((0, hmax - a.shape[0]), (0, wmax - a.shape[1]), (0, 0)))
                    for a in arrays
                ]
            rows = _run_mtcnn(arrays, mfs, score_threshold, stage_thresholds)
            for j, i in enumerate(chunk):
                shape, work, scale, _ = prepared[i]
                mine = rows[rows[:, 0] == j] if len(rows) else rows
                # drop boxes lying wholly in the padding
                wh, ww = work.shape[:2]
                if len(mine):
                    mine = mine[(mine[:, 1] < ww) & (mine[:, 2] < wh)]
                    mine = mine.copy()
                    mine[:, 3] = np.minimum(mine[:, 3], ww - 1)
                    mine[:, 4] = np.minimum(mine[:, 4], wh - 1)
                results[i] = _rows_to_faces(mine, scale, shape)
    return results


# ----------------------------------------------------------------------------------------------
# Which face
# ----------------------------------------------------------------------------------------------


def _iou(a, b) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    ix = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _normalise_rule(rule: str) -> str:
    rule = {"center": "centre", "closest_to_box": "box", "nearest_box": "box"}.get(rule, rule)
    if rule not in RULES:
        raise ValueError(f"unknown face rule {rule!r}; known: {', '.join(RULES)}")
    return rule


def select_faces(
    faces: Sequence[Face], rule: str = "all", image_shape=None, box=None
) -> list[Face]:
    """Faces chosen by `rule` (see the module docstring): all of them, or a list of at most one.

    image_shape: (height, width, ...) of the image, needed by "centre".
    box: (x, y, width, height), needed by "box".
    """
    rule = _normalise_rule(rule)
    faces = list(faces)
    if rule == "all":
        return sorted(faces, key=lambda f: -f.score)
    if not faces:
        return []
    if rule == "centre":
        if image_shape is None:
            raise ValueError("rule 'centre' needs the image shape")
        cy, cx = (image_shape[0] - 1) / 2.0, (image_shape[1] - 1) / 2.0

        def off_centre(f: Face):
            return (math.hypot(f.centre[0] - cx, f.centre[1] - cy), -f.score)

        return [min(faces, key=off_centre)]
    if rule == "largest":
        return [max(faces, key=lambda f: (f.area, f.score))]
    if box is None:
        raise ValueError("rule 'box' needs box=(x, y, width, height)")
    bx, by, bw, bh = (float(v) for v in box)
    bc = (bx + bw / 2.0, by + bh / 2.0)

    def distance(f: Face):
        gap = math.hypot(f.centre[0] - bc[0], f.centre[1] - bc[1])
        return (-_iou(f.box, (bx, by, bw, bh)), gap)

    return [min(faces, key=distance)]


def pick_face(
    faces: Sequence[Face], rule: str = "centre", image_shape=None, box=None
) -> Face | None:
    """The one face `rule` picks ("all" means the best-scoring one), or None when there is none."""
    chosen = select_faces(faces, rule, image_shape=image_shape, box=box)
    return chosen[0] if chosen else None


# ----------------------------------------------------------------------------------------------
# Detect + crop, the one entry point converters and predict share
# ----------------------------------------------------------------------------------------------


def crop_face(image: np.ndarray, face: Face, scheme: str, use_box: bool = False):
    """Crop one detected face with a registered scheme -> (crop, landmarks in crop pixels).

    By default the crop is defined by the five landmarks only, exactly as for datasets that come
    with annotated landmarks, so training and inference crops agree whichever path made them.
    use_box=True frames box-based schemes by the detector's box instead.
    """
    from kerasface.faces.crops import apply_crop

    return apply_crop(scheme, image, face.points, box=face.box if use_box else None)


def detect_and_crop(
    image,
    scheme: str,
    rule: str = "centre",
    box=None,
    *,
    use_box: bool = False,
    return_face: bool = False,
    faces: Sequence[Face] | None = None,
    **detect_kwargs,
):
    """Detect faces, pick one by `rule` (see `select_faces`), crop it by `scheme`.

    image: a path, encoded bytes or an array (RGB uint8 or anything `to_rgb_uint8` takes).
    box: (x, y, width, height) for rule="box" (the dataset's given face box).
    detect_kwargs: min_face_size, score_threshold, stage_thresholds, max_side.
    faces: the image's faces when already detected (detect_faces_cached); no detection then.
    Returns (crop, landmarks_in_crop) — plus the picked `Face` when return_face=True — or None
    when no face is found. Unreadable files raise `ImageError` naming the file.
    """
    from kerasface.faces.crops import CROPS

    CROPS.get(scheme)  # fail fast on an unknown scheme, before the costly detection
    rule = _normalise_rule(rule)
    rgb = _as_image(image)
    faces = detect_faces(rgb, **detect_kwargs) if faces is None else faces
    face = pick_face(faces, rule, image_shape=rgb.shape, box=box)
    if face is None:
        return None
    crop, points = crop_face(rgb, face, scheme, use_box=use_box)
    return (crop, points, face) if return_face else (crop, points)


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------

#: RGB colour per landmark: left eye, right eye, nose, mouth left, mouth right.
LANDMARK_COLOURS = ((255, 64, 64), (64, 160, 255), (255, 220, 0), (255, 64, 255), (0, 220, 220))


def draw_faces(
    image: np.ndarray, faces: Sequence[Face], labels: Sequence[str] | None = None
) -> np.ndarray:
    """A copy of `image` (RGB uint8) with each face's box (green), its five landmarks (one colour
    each, see LANDMARK_COLOURS) and a label (default: the score) drawn on it."""
    import cv2

    out = np.ascontiguousarray(to_rgb_uint8(image).copy())
    h, w = out.shape[:2]
    thick = max(1, int(round(max(h, w) / 400)))
    for k, face in enumerate(faces):
        x0, y0, x1, y1 = (int(round(v)) for v in face.box_xyxy)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 0), thick, cv2.LINE_AA)
        radius = max(2, int(round(max(face.box[2], face.box[3]) / 40)))
        for (px, py), colour in zip(face.landmarks, LANDMARK_COLOURS):
            cv2.circle(out, (int(round(px)), int(round(py))), radius, colour, -1, cv2.LINE_AA)
        text = labels[k] if labels is not None else f"{face.score:.3f}"
        scale = max(0.4, thick * 0.45)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y0 - 4 if y0 - th - base - 4 >= 0 else min(h - 1, y1 + th + 4)
        cv2.rectangle(out, (x0, ty - th - base // 2), (x0 + tw, ty + base // 2), (0, 0, 0), -1)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(out, text, (x0, ty), font, scale, (0, 255, 0), thick, cv2.LINE_AA)
    return out


__all__ = [
    "LANDMARK_COLOURS",
    "draw_faces",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_MIN_FACE_SIZE",
    "DEFAULT_SCORE_THRESHOLD",
    "DEFAULT_STAGE_THRESHOLDS",
    "Face",
    "ImageError",
    "RULES",
    "crop_face",
    "detect_and_crop",
    "detect_faces",
    "detect_faces_batch",
    "get_detector",
    "pick_face",
    "select_faces",
]
