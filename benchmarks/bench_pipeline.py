"""Converter and input-pipeline throughput, printed as ratios against baselines run in the same command.

    python benchmarks/bench_pipeline.py [--root PATH_TO_MTFL] [--faces 3000]

- converter images/s with 1 and 2 processes (ratio 2 vs 1);
- training pipeline images/s (decode + resize + augment + shuffle + batch, cache off so every image
  is decoded each time) against a bare parallel decode-only loop over the same shards.
Uses the real MTFL when found ($KERASFACE_MTFL or --root), the synthetic demo data otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from kerasface.config import DataConfig
from kerasface.data.convert import convert
from kerasface.data.pipeline import build_dataset, split_files


def images_per_second(ds, images: int) -> float:
    it = iter(ds)
    next(it)  # warm-up: graph tracing, first file opens
    seen, start = 0, time.perf_counter()
    while seen < images:
        batch = next(it)
        seen += int((batch[0] if isinstance(batch, tuple) else batch).shape[0])
    return seen / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.environ.get("KERASFACE_MTFL", ""))
    parser.add_argument("--faces", type=int, default=3000, help="faces per split converted for the timing")
    parser.add_argument("--images", type=int, default=6000, help="images timed per pipeline")
    parser.add_argument("--size", type=int, default=150, help="model input size of the timed pipeline")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kf-bench-"))
    root = args.root
    if not (root and (Path(root) / "training.txt").is_file()):
        from kerasface.data.synthetic import write_demo_mtfl

        root = str(write_demo_mtfl(work / "demo", num_train=1000, num_test=300, seed=0))
        print(f"real MTFL not found; using the synthetic demo data ({root})")
    else:
        print(f"MTFL at {root}")

    rates = {}
    for workers in (1, 2):
        start = time.perf_counter()
        manifest = convert("mtfl", root, work / f"records{workers}", workers=workers, shards=8, progress=False,
                           limit=args.faces)
        total = sum(s["records"] for s in manifest["splits"].values())
        rates[workers] = total / (time.perf_counter() - start)
    print(f"converter: 1 process {rates[1]:.0f} img/s, 2 processes {rates[2]:.0f} img/s "
          f"(x{rates[2] / rates[1]:.2f}; {os.cpu_count()} CPUs)")

    folder = work / "records2"
    files = split_files(folder, "train")
    autotune = tf.data.AUTOTUNE
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    decode_only = (tf.data.Dataset.from_tensor_slices(files)
                   .interleave(tf.data.TFRecordDataset, cycle_length=8, num_parallel_calls=autotune)
                   .map(lambda r: tf.io.decode_image(tf.io.parse_single_example(r, spec)["image/encoded"], channels=3,
                                                     expand_animations=False), num_parallel_calls=autotune)
                   .repeat().batch(64).prefetch(autotune))
    data = DataConfig(cache=False, deterministic=False)
    pipeline = build_dataset(data, "train", image_size=(args.size, args.size), channels=3, batch_size=64,
                             training=True, folder=folder)
    base = images_per_second(decode_only, args.images)
    full = images_per_second(pipeline, args.images)
    print(f"decode-only loop: {base:.0f} img/s")
    print(f"training pipeline ({args.size}x{args.size}, augment, batch 64): {full:.0f} img/s "
          f"= {100 * full / base:.0f}% of decode-only (target >= 80%)")
    cached = build_dataset(DataConfig(cache=True), "train", image_size=(args.size, args.size), channels=3,
                           batch_size=64, training=True, folder=folder)
    images_per_second(cached, len(files) and args.faces)  # fill the cache
    print(f"training pipeline with cache (steady state): {images_per_second(cached, args.images):.0f} img/s "
          f"= {100 * images_per_second(cached, args.images) / base:.0f}% of decode-only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
