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
    # The face box (x, y, width, height) in image pixels when the dataset gives one: it picks the
    # detected face (rule "box") and frames the box-based crop schemes.
    box: tuple[float, float, float, float] | None = None
    # "labels.csv:12": the list file and line that name this face, shown beside any skip reason.
    listed_at: str = ""
    # An entry the reader could not use (a malformed CSV row): the reason. The converter skips and
    # lists it like an unreadable image (fatal under --strict), so one bad row never stops a job.
    problem: str = ""


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
    # Generic formats (a user's CSV, a folder tree) have data-dependent labels: labels_of(root,
    # options) reads them from the data (`labels` is then empty). `options` are the reader's own
    # options (name -> help), offered by the converter's command line as --NAME and passed to
    # read_splits and labels_of as keyword arguments / a dict.
    labels_of: Callable[[Path, dict], dict[str, Any]] | None = None
    options: dict[str, str] = field(default_factory=dict)

    def is_cropped(self, root: Path) -> bool:
        return bool(self.cropped(root) if callable(self.cropped) else self.cropped)

    @property
    def label_specs(self) -> dict:
        """The labels of a dataset whose labels are fixed (empty for data-dependent ones: label_specs_for)."""
        from kerasface.data.tfrecord import label_spec

        return {name: label_spec(value) for name, value in self.labels.items()}

    def check_options(self, options: dict | None) -> dict:
        """The reader options given (None values dropped), or an error naming one it does not take."""
        options = {k: v for k, v in (options or {}).items() if v is not None}
        for name in options:
            if name not in self.options:
                takes = ", ".join(f"--{o.replace('_', '-')}" for o in self.options) or "none"
                raise ValueError(f"dataset {self.name} takes no option --{name.replace('_', '-')} (its options: {takes})")
        return options

    def label_specs_for(self, root: Path, options: dict | None = None) -> dict:
        """The labels of this dataset at `root` (with these reader options)."""
        from kerasface.data.tfrecord import label_spec

        if self.labels_of is None:
            return self.label_specs
        labels = self.labels_of(Path(root), self.check_options(options))
        return {name: label_spec(value) for name, value in labels.items()}

    def splits(self, root: Path, val_fraction: float, seed: int, options: dict | None = None) -> dict:
        """read_splits with the reader options (checked; none for the fixed-format readers)."""
        return self.read_splits(root, val_fraction, seed, **self.check_options(options))


DATASETS: Registry[DatasetSpec] = Registry("dataset")

from kerasface.data import (celeba, csv_table, ethnicity_csv, fer2013, folders, fotw, genki4k,  # noqa: E402,F401
                             identity_folders, imdb_wiki, lfw, mtfl)  # (registration)
