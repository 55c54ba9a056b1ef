"""The TFRecord schema shared by every dataset, its sharded writer, and the manifest.

Record schema (version 2), one face per tf.train.Example:
  image/encoded    bytes   JPEG or PNG of the (cropped) face image
  image/format     bytes   b"jpeg" | b"png"
  image/height     int64   stored image height in pixels
  image/width      int64
  image/channels   int64   1 (grayscale) or 3 (RGB)
  image/source     bytes   path of the source image relative to the dataset root
  face/landmarks   float   10 values x1, y1, ..., x5, y5 in pixels of the stored image
                           (left eye, right eye, nose, left mouth corner, right mouth corner)
  split/fold_rank  float   train/val records: in [0, 1), stratified per class of the dataset's first
                           class label, so fold i of any k is floor(rank * k) == i (k-fold CV)
  label/<name>     by the label's type (manifest "labels": name -> {"type", "names", "count"}):
                   class       int64     0-based class index; -1 = not labelled
                   multilabel  int64 x N one 0/1 per attribute name; -1 = unknown
                   value       float x N real values (age, scores); NaN = unknown
                   identity    int64     0-based identity index; -1 = unknown ("count" identities)
Version 1 had class labels only, listed in the manifest's "attributes" (name -> class names);
v2 manifests keep that list too, and v1 folders are read as class labels.
The manifest lists the labels and their names, so readers never hard-code them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import tensorflow as tf

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
UNLABELLED = -1
LABEL_TYPES = ("class", "multilabel", "value", "identity")


@dataclass(frozen=True)
class LabelSpec:
    """What one `label/<name>` feature holds."""

    type: str = "class"
    names: tuple[str, ...] = ()  # class names; attribute names (multilabel); value names
    count: int = 0  # identity: the number of identities

    def __post_init__(self):
        if self.type not in LABEL_TYPES:
            raise ValueError(f"label type must be one of {', '.join(LABEL_TYPES)}, got {self.type!r}")

    @property
    def width(self) -> int:
        """Values per record: 1, or one per name for multilabel and value labels."""
        return len(self.names) if self.type in ("multilabel", "value") else 1

    def to_json(self) -> dict:
        return {"type": self.type, "names": list(self.names), **({"count": self.count} if self.count else {})}


def label_spec(value) -> LabelSpec:
    """A LabelSpec from a spec, its JSON form, or a bare tuple of class names (schema v1)."""
    if isinstance(value, LabelSpec):
        return value
    if isinstance(value, dict):
        return LabelSpec(value.get("type", "class"), tuple(value.get("names", ())), int(value.get("count", 0)))
    return LabelSpec("class", tuple(value))


def manifest_labels(manifest: Mapping) -> dict[str, LabelSpec]:
    """Every label of a conversion, v2 ("labels") or v1 ("attributes": class names only)."""
    if "labels" in manifest:
        return {name: label_spec(spec) for name, spec in manifest["labels"].items()}
    return {name: LabelSpec("class", tuple(names)) for name, names in manifest.get("attributes", {}).items()}


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values: Iterable[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def make_example(
    encoded: bytes,
    image_format: str,
    height: int,
    width: int,
    channels: int,
    source: str,
    landmarks: np.ndarray,
    labels: Mapping[str, int],
    fold_rank: float | None = None,
) -> bytes:
    features = {
        "image/encoded": _bytes(encoded),
        "image/format": _bytes(image_format.encode()),
        "image/height": _ints([height]),
        "image/width": _ints([width]),
        "image/channels": _ints([channels]),
        "image/source": _bytes(source.encode()),
        "face/landmarks": tf.train.Feature(
            float_list=tf.train.FloatList(value=np.asarray(landmarks, np.float32).reshape(-1).tolist())
        ),
    }
    if fold_rank is not None:
        features["split/fold_rank"] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(fold_rank)]))
    for name, value in labels.items():
        values = np.atleast_1d(np.asarray(value))
        if np.issubdtype(values.dtype, np.floating):
            features[f"label/{name}"] = tf.train.Feature(float_list=tf.train.FloatList(value=values.astype(np.float32).tolist()))
        else:
            features[f"label/{name}"] = _ints(int(v) for v in values)
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def feature_spec(labels: Mapping[str, LabelSpec] | Iterable[str]) -> dict[str, tf.io.FixedLenFeature]:
    """Parsing spec; `labels` maps names to LabelSpecs (a plain list of names = v1 class labels).
    A record without a label gets the type's "unknown" value."""
    if not isinstance(labels, Mapping):
        labels = {name: LabelSpec() for name in labels}
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/source": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "face/landmarks": tf.io.FixedLenFeature([10], tf.float32, default_value=[0.0] * 10),
    }
    for name, label in labels.items():
        label = label_spec(label)
        if label.type == "value":
            spec[f"label/{name}"] = tf.io.FixedLenFeature([label.width], tf.float32,
                                                          default_value=[float("nan")] * label.width)
        elif label.type == "multilabel":
            spec[f"label/{name}"] = tf.io.FixedLenFeature([label.width], tf.int64,
                                                          default_value=[UNLABELLED] * label.width)
        else:
            spec[f"label/{name}"] = tf.io.FixedLenFeature([], tf.int64, default_value=UNLABELLED)
    return spec


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


class ShardedWriter:
    """Writes records round-robin into `count` shards under temporary names.

    `close()` renames them to their final names; an interrupted run leaves only `*.partial` files,
    which no reader picks up.
    """

    def __init__(self, folder: str | os.PathLike, split: str, count: int):
        self.folder = Path(folder)
        self.paths = [self.folder / shard_name(split, i, count) for i in range(count)]
        self._writers = [tf.io.TFRecordWriter(str(p) + ".partial") for p in self.paths]
        self.records = 0

    def write(self, serialized: bytes) -> None:
        self._writers[self.records % len(self._writers)].write(serialized)
        self.records += 1

    def close(self) -> list[Path]:
        for writer, path in zip(self._writers, self.paths):
            writer.close()
            os.replace(str(path) + ".partial", path)
        return self.paths

    def abort(self) -> None:
        for writer, path in zip(self._writers, self.paths):
            writer.close()
            Path(str(path) + ".partial").unlink(missing_ok=True)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fold_ranks(faces, label: str | None, seed: int) -> np.ndarray:
    """One rank in [0, 1) per face: a seeded permutation within each class of `label`, spread evenly,
    so that floor(rank * k) splits every class into k near-equal folds for any k."""
    classes = np.array([int(np.ravel(f.labels.get(label, -1))[0]) if label else -1 for f in faces])
    ranks = np.zeros(len(faces), np.float64)
    rng = np.random.default_rng(seed)
    for value in np.unique(classes):
        members = np.flatnonzero(classes == value)
        order = rng.permutation(len(members))
        ranks[members[order]] = (np.arange(len(members)) + rng.uniform(0, 1)) / len(members)
    return np.minimum(ranks, np.nextafter(1.0, 0.0))
