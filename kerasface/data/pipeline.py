"""The tf.data input pipeline: sharded TFRecords -> (images, targets) batches.

    files (shuffled, sharded per worker) -> interleave -> parse + decode + resize (parallel)
      -> cache -> shuffle -> repeat -> batch -> augment (per batch, stateless) -> prefetch

Images come out float32 in [0, 255] at the model's input size (the model rescales itself);
targets are a dict: one int32 class index per attribute (-1 = unlabelled) and "landmarks" as
(B, 10) fractions of the image width/height. `preprocess_image` is the one decode-and-resize used
by training, evaluation and the exported serving graphs, so they all see identical pixels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import tensorflow as tf

from kerasface.config import DataConfig
from kerasface.data.augment import augment_batch
from kerasface.data.tfrecord import MANIFEST, feature_spec


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; convert the dataset first (python -m kerasface.data.convert)")
    return json.loads(path.read_text())


def split_files(folder: str | Path, split: str) -> list[str]:
    manifest = read_manifest(folder)
    if split not in manifest["splits"]:
        raise KeyError(f"{folder}: no split {split!r}; splits: {', '.join(manifest['splits'])}")
    files = [str(Path(folder) / name) for name in manifest["splits"][split]["files"]]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: listed in {Path(folder) / MANIFEST} but missing")
    return files


def preprocess_image(encoded: tf.Tensor, size: Sequence[int], channels: int) -> tf.Tensor:
    """Encoded JPEG/PNG -> float32 [H, W, channels] in [0, 255] at `size` (bilinear)."""
    # JPEG with the accurate integer DCT, as libjpeg/Pillow decode by default, so that crops decoded
    # anywhere else (predict, clients) give the same pixels as training.
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
    )
    image = tf.cast(image, tf.float32)
    if channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    same_size = tf.reduce_all(tf.shape(image)[:2] == tf.constant(size, tf.int32))
    image = tf.cond(same_size, lambda: image,
                    lambda: tf.image.resize(image, size, method="bilinear", antialias=False))
    return tf.ensure_shape(image, [size[0], size[1], channels])


def parse_fn(attributes: Sequence[str], size: Sequence[int], channels: int):
    spec = feature_spec(attributes)

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        image = preprocess_image(ex["image/encoded"], size, channels)
        hw = tf.cast(tf.stack([ex["image/width"], ex["image/height"]]), tf.float32)
        landmarks = tf.reshape(tf.reshape(ex["face/landmarks"], [5, 2]) / hw, [10])
        targets = {name: tf.cast(ex[f"label/{name}"], tf.int32) for name in attributes}
        targets["landmarks"] = landmarks
        return image, targets

    return parse


def build_dataset(
    data: DataConfig,
    split: str,
    *,
    image_size: Sequence[int],
    channels: int,
    batch_size: int,
    training: bool,
    folder: str | Path,
    input_context: tf.distribute.InputContext | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of (images, targets) for `split`; training adds shuffle, repeat and augmentation.

    With `input_context` (from `strategy.distribute_datasets_from_function`) each input pipeline
    reads its own subset of files (or of records, when there are fewer files than pipelines) and
    `batch_size` is the per-replica batch.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    attributes = list(manifest["attributes"])
    files = split_files(folder, split)
    size = tuple(int(s) for s in image_size)
    autotune = tf.data.AUTOTUNE

    ds = tf.data.Dataset.from_tensor_slices(files)
    shard_records = False
    if input_context and input_context.num_input_pipelines > 1:
        if len(files) >= input_context.num_input_pipelines:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        else:
            shard_records = True
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8), num_parallel_calls=autotune,
                       deterministic=data.deterministic or not training)
    if shard_records:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    ds = ds.map(parse_fn(attributes, size, channels), num_parallel_calls=autotune,
                deterministic=data.deterministic or not training)
    if data.cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(data.shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=autotune)
    if training and data.augment is not None:
        flip_permutations = {k: tuple(v) for k, v in manifest.get("flip_permutations", {}).items()}
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: augment_batch(batch[0], batch[1], s, data.augment, flip_permutations),
            num_parallel_calls=autotune, deterministic=data.deterministic)
    options = tf.data.Options()
    options.deterministic = data.deterministic or not training
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(autotune)
