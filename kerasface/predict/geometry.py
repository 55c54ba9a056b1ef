"""Crop geometry and model inputs: each face is cut by the model's crop scheme, the affine map
back to image pixels is kept (so landmark outputs land on the photo), and crops become the float
input the model was trained on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 affine map taking src points to dst points (least squares; exact for crop maps)."""
    a = np.hstack([np.asarray(src, np.float64), np.ones((len(src), 1))])
    m, *_ = np.linalg.lstsq(a, np.asarray(dst, np.float64), rcond=None)
    return m.T  # 2x3


def invert_affine(m: np.ndarray) -> np.ndarray:
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


@dataclass
class Crop:
    """One face cut by one crop scheme."""

    pixels: np.ndarray  # uint8 H x W x C
    to_image: np.ndarray  # 2x3: crop pixels -> image pixels
    points: np.ndarray | None = None  # the five landmarks in crop pixels (a photo export reads them)


def cut_crop(image: np.ndarray, points: np.ndarray, scheme: str) -> Crop:
    """The face with detector landmarks `points` cut by crop `scheme`, with its map back."""
    from kerasface.faces.crops import apply_crop

    pixels, in_crop = apply_crop(scheme, image, points)
    forward = fit_affine(points, in_crop)
    return Crop(pixels, invert_affine(forward), in_crop)


def model_inputs(crops: Sequence[np.ndarray], size: tuple[int, int], channels: int) -> np.ndarray:
    """uint8 crops -> float32 [B, h, w, channels] in [0, 255], as the training pipeline makes them
    (`kerasface.data.pipeline.to_model_input`, the step after decoding)."""
    from kerasface.data.pipeline import to_model_input

    def convert(batch: np.ndarray) -> np.ndarray:
        return to_model_input(batch.astype(np.float32), size, channels).numpy()

    shapes = {c.shape for c in crops}
    if len(shapes) == 1:
        return convert(np.stack(crops))
    return np.concatenate([convert(c[None]) for c in crops])
