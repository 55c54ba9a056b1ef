"""Dataset readers, TFRecord conversion, the tf.data pipeline and the demo dataset.

Each dataset module registers a `DatasetSpec` in DATASETS: how to find it, how to read its splits,
its label names, and which list files identify its version (hashed into the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kerasface.registry import Registry


@dataclass(frozen=True)
class FaceAnnotation:
    path: str  # image path relative to the dataset root, forward slashes
    landmarks: np.ndarray  # (5, 2) float32 (x, y) pixels; NaN when the dataset has none
    # label name -> 0-based class or identity index (int), 0/1/-1 per attribute (tuple of ints),
    # or real values (tuple of floats), as the dataset's LabelSpec says
    labels: dict[str, Any]
    line: int = 0  # 1-based line in the list file, for error messages
    # The pixels, when the dataset keeps them in a file beside the labels (FER2013's CSV): uint8
    # HxW, HxWx1 or HxWx3; the converter uses them instead of reading `path`, which then names the
    # source for messages and `image/source` (e.g. "fer2013.csv:123").
    image: np.ndarray | None = None
    # The dataset's face box (x, y, width, height) in image pixels, when it gives one (CelebA's
    # in-the-wild list_bbox, FotW): box-framed crop schemes use it, and a face detected on an image
    # without landmarks is the one closest to it.
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    env_var: str
    labels: dict[str, Any]  # label name -> LabelSpec, or a tuple of class names
    resolve_root: Callable[[str | None], Path]
    read_splits: Callable[[Path, float, int], dict[str, list[FaceAnnotation]]]
    source_files: Callable[[Path], list[Path]]
    # Horizontal flip swaps some classes (head pose left <-> right): class index permutations.
    flip_permutations: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # write_demo(root, seed): renders a synthetic copy in the dataset's own format (--demo)
    write_demo: Callable[[Path, int], None] | None = None
    # Whether the images are already face crops (True, False, or a test of the root folder): the
    # converter then stores each whole image at the crop scheme's size and colour, with NaN
    # landmarks, instead of detecting (no landmarks given) or cropping (landmarks given) a face.
    cropped: bool | Callable[[Path], bool] = False
    default_crop: str = "nose_centred_150"  # the converter's --crop when none is given
    default_image_format: str = "jpeg"  # the converter's --image-format when none is given

    def is_cropped(self, root: Path) -> bool:
        return bool(self.cropped(root) if callable(self.cropped) else self.cropped)

    @property
    def label_specs(self) -> dict:
        from kerasface.data.tfrecord import label_spec

        return {name: label_spec(value) for name, value in self.labels.items()}


DATASETS: Registry[DatasetSpec] = Registry("dataset")

from kerasface.data import celeba, fer2013, fotw, genki4k, imdb_wiki, mtfl  # noqa: E402,F401  (registration)
