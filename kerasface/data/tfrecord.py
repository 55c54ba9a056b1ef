"""The TFRecord schema shared by every dataset, its sharded writer, and the manifest.

Record schema (version 1), one face per tf.train.Example:
  image/encoded    bytes   JPEG or PNG of the (cropped) face image
  image/format     bytes   b"jpeg" | b"png"
  image/height     int64   stored image height in pixels
  image/width      int64
  image/channels   int64   1 (grayscale) or 3 (RGB)
  image/source     bytes   path of the source image relative to the dataset root
  face/landmarks   float   10 values x1, y1, ..., x5, y5 in pixels of the stored image
                           (left eye, right eye, nose, left mouth corner, right mouth corner)
  label/<name>     int64   0-based class index per attribute; -1 = not labelled
The manifest lists the attributes and their class names, so readers never hard-code them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import tensorflow as tf

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
UNLABELLED = -1


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
    for name, value in labels.items():
        features[f"label/{name}"] = _ints([int(value)])
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def feature_spec(attributes: Iterable[str]) -> dict[str, tf.io.FixedLenFeature]:
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/source": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "face/landmarks": tf.io.FixedLenFeature([10], tf.float32, default_value=[0.0] * 10),
    }
    for name in attributes:
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
