"""What the two generic formats for a user's own photos share (kerasface.data.csv_table, .folders):
label names, class order, the train/val/test assignment and how an unusable entry is carried.

Class labels list their classes in sorted order (numerically when every value is a number, so
"2" < "10"), as `keras.utils.image_dataset_from_directory` orders its class folders. Splits: entries
that name their split (a `split` column, a `train/ val/ test/` level) keep it, and when none is
named `val` a seeded `val_fraction` of train becomes val; data that names no split at all is split
by one seeded permutation: TEST_FRACTION test, then `val_fraction` of the rest val, the others train
(kerasface.data.common.seeded_split).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from kerasface.data import FaceAnnotation
from kerasface.data.common import NO_LANDMARKS, seeded_split

TEST_FRACTION = 0.2
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def label_name(text: str) -> str:
    """A column or attribute name as a task name (a Python identifier: the model's head is named
    after it): spaces and punctuation become "_", a leading digit gets a "_" before it."""
    name = re.sub(r"\W+", "_", text.strip()).strip("_")
    if not name:
        raise ValueError(f"{text!r} cannot name a label: give it letters or digits")
    return f"_{name}" if name[0].isdigit() else name


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def class_names(values: Iterable[str]) -> tuple[str, ...]:
    """The distinct non-empty values, sorted (as numbers when all of them are numbers)."""
    distinct = {v for v in values if v != ""}
    if distinct and all(_number(v) is not None for v in distinct):
        return tuple(sorted(distinct, key=lambda v: (_number(v), v)))
    return tuple(sorted(distinct))


def split_name(text: str) -> str | None:
    """"train", "val" or "test" for a split's spelling (case-insensitive), else None."""
    return SPLIT_NAMES.get(text.strip().lower())


def unusable(where: str, reason: str, source: str = "") -> FaceAnnotation:
    """An entry the converter skips and lists, with `where` (file:line) and the reason."""
    return FaceAnnotation(source or where, NO_LANDMARKS, {}, listed_at=where, problem=reason)


def assign_splits(faces: Sequence[FaceAnnotation], named: Sequence[str | None], val_fraction: float, seed: int,
                  problems: Sequence[tuple[FaceAnnotation, str | None]] = ()) -> dict[str, list[FaceAnnotation]]:
    """{split: faces}: `named[i]` is face i's own split (None: the data names none, and then no face
    does). `problems` (unusable entries and the split they name, if any) join their split, or
    train, so the converter lists them; they never change the other faces' split."""
    if not any(named):
        train, val, test = seeded_split(list(faces), val_fraction, seed, TEST_FRACTION)
        splits = {"train": train, "val": val, "test": test}
    else:
        by = {"train": [], "val": [], "test": []}
        for face, split in zip(faces, named):
            by[split].append(face)
        if not by["val"]:
            by["train"], by["val"], _ = seeded_split(by["train"], val_fraction, seed)
        splits = {name: members for name, members in by.items() if members or name != "test"}
    for face, split in problems:
        splits.setdefault(split or "train", []).append(face)
    return splits
