"""Converter and input-pipeline throughput, printed as ratios against baselines run in the same command.

    python benchmarks/bench_pipeline.py [--root PATH_TO_MTFL] [--faces 3000]

- converter images/s with 1 and 2 processes (ratio 2 vs 1);
- training pipeline images/s (decode + resize + augment + shuffle + batch, cache off so every image
  is decoded each time) against a bare parallel decode-only loop over the same shards, and the
  ceiling that augmentation alone sets: augment_batch (warp + photometric) on one batch held in
  memory, nothing decoded. Where that ceiling is under the target, no pipeline order can meet it.
Uses the real MTFL when found ($KERASFACE_MTFL or --root), the synthetic demo data otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from kerasface.config import AugmentConfig, DataConfig
from kerasface.data.augment import augment_batch
from kerasface.data.pipeline import build_dataset, pipeline_options, read_manifest, split_files


def images_per_second(ds, images: int) -> float:
    it = iter(ds)
    next(it)  # warm-up: graph tracing, first file opens
    seen, start = 0, time.perf_counter()
    while seen < images:
        batch = next(it)
        seen += int((batch[0] if isinstance(batch, tuple) else batch).shape[0])
    return seen / (time.perf_counter() - start)


def augmentation_rate(size: int, images: int, config: AugmentConfig) -> float:
    """images/s of augment_batch alone, on one in-memory batch of 64."""
    batch = tf.random.stateless_uniform([64, size, size, 3], (0, 1), 0.0, 255.0)
    step = tf.function(lambda seed: augment_batch(batch, {}, seed, config)[0])
    step(tf.constant([0, 0], tf.int64)).numpy()  # trace
    batches = max(1, images // 64)
    start = time.perf_counter()
    for i in range(batches):
        step(tf.constant([i, 1], tf.int64)).numpy()
    return batches * 64 / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.environ.get("KERASFACE_MTFL", ""))
    parser.add_argument("--faces", type=int, default=3000, help="faces per split converted for the timing")
    parser.add_argument("--images", type=int, default=6000, help="images timed per pipeline")
    parser.add_argument("--size", type=int, nargs="+", default=[60, 150],
                        help="model input sizes to time (canal: TCDCN 60, Cascade CNN 150)")
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
    for workers in (1, 2):  # the command users run, so worker start-up is what they pay too
        out = work / f"records{workers}"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kerasface.data.convert", "--dataset", "mtfl", "--root", root,
                        "--out", str(out), "--workers", str(workers), "--shards", "8", "--limit", str(args.faces)],
                       check=True, capture_output=True)
        total = sum(s["records"] for s in read_manifest(out)["splits"].values())
        rates[workers] = total / (time.perf_counter() - start)
    print(f"converter ({total} faces, process start-up included): 1 process {rates[1]:.0f} img/s, "
          f"2 processes {rates[2]:.0f} img/s (x{rates[2] / rates[1]:.2f}; {os.cpu_count()} CPUs)")

    folder = work / "records2"
    files = split_files(folder, "train")
    autotune = tf.data.AUTOTUNE
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    decode_only = (tf.data.Dataset.from_tensor_slices(files)
                   .interleave(tf.data.TFRecordDataset, cycle_length=8, num_parallel_calls=autotune)
                   .map(lambda r: tf.io.decode_jpeg(tf.io.parse_single_example(r, spec)["image/encoded"], channels=3,
                                                    dct_method="INTEGER_ACCURATE"),  # the pipeline's decoder
                        num_parallel_calls=autotune)
                   .repeat().batch(64).prefetch(autotune)
                   .with_options(pipeline_options(deterministic=False)))  # the pipelines' options
    base = images_per_second(decode_only, args.images)
    print(f"decode-only loop over the train shards: {base:.0f} img/s (baseline)")
    for size in args.size:
        pipeline = build_dataset(DataConfig(cache=False), "train", image_size=(size, size), channels=3,
                                 batch_size=64, training=True, folder=folder)
        full = images_per_second(pipeline, args.images)
        cached = build_dataset(DataConfig(cache=True), "train", image_size=(size, size), channels=3,
                               batch_size=64, training=True, folder=folder)
        images_per_second(cached, args.faces)  # one pass fills the cache
        steady = images_per_second(cached, args.images)
        ceiling = augmentation_rate(size, args.images, AugmentConfig())
        upright = augmentation_rate(size, args.images, AugmentConfig(max_rotation=0.0))
        print(f"training pipeline at {size}x{size} (decode, resize, flip/rotate/scale/shift, photometric, "
              f"shuffle, batch 64): {full:.0f} img/s = {100 * full / base:.0f}% of decode-only (target >= 80%); "
              f"with the default in-memory cache: {steady:.0f} img/s = {100 * steady / base:.0f}%; "
              f"augmentation alone, nothing decoded: {ceiling:.0f} img/s = {100 * ceiling / base:.0f}% "
              f"(without rotation, crop_and_resize: {upright:.0f} img/s = {100 * upright / base:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
