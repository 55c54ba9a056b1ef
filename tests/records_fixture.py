"""Write converted TFRecord folders directly (shards + manifest.json, schema v2), with any labels."""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from kerasface.data import FaceAnnotation
from kerasface.data.tfrecord import MANIFEST, LabelSpec, ShardedWriter, fold_ranks, make_example


def write_source(folder, labels: dict[str, LabelSpec], rows: dict[str, list[dict]], value: int, with_ranks=True,
                 images=None):
    """A converted folder written directly: each image is a flat grey of `value` (so a batch shows
    which source every sample came from) unless `images(split, i, row)` gives encoded 8x8 PNGs,
    and `rows[split]` holds each record's labels."""
    folder.mkdir(parents=True)
    flat = tf.io.encode_png(np.full((8, 8, 3), value, np.uint8)).numpy()
    marks = np.tile([[2.0, 3.0]], (5, 1))
    splits = {}
    for split, split_rows in rows.items():
        ranks = fold_ranks([FaceAnnotation("x", marks, r) for r in split_rows], next(iter(labels)), 0)
        writer = ShardedWriter(folder, split, 2)
        for i, (row, rank) in enumerate(zip(split_rows, ranks)):
            image = images(split, i, row) if images else flat
            writer.write(make_example(image, "png", 8, 8, 3, "x.png", marks, row,
                                      float(rank) if with_ranks and split in ("train", "val") else None))
        splits[split] = {"records": len(split_rows), "files": [p.name for p in writer.close()]}
    manifest = {"schema_version": 2, "dataset": folder.name, "labels": {k: v.to_json() for k, v in labels.items()},
                "attributes": {k: list(v.names) for k, v in labels.items() if v.type == "class"}, "splits": splits}
    if with_ranks:
        manifest["fold_rank"] = {"splits": ["train", "val"]}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


