"""The tf.data input pipeline: sharded TFRecords -> (images, targets) batches.

    files (shuffled, sharded per worker) -> interleave -> parse + decode + resize (parallel)
      -> cache -> shuffle -> repeat -> batch -> augment (per batch, stateless) -> prefetch

Images come out float32 in [0, 255] at the model's input size (the model rescales itself);
targets are a dict: one int32 class index per attribute (-1 = unlabelled) and "landmarks" as
(B, 10) fractions of the image width/height. `preprocess_image` is the one decode-and-resize used
by training, evaluation and the exported serving graphs, so they all see identical pixels.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import tensorflow as tf

from kerasface.config import DataConfig
from kerasface.data.augment import augment_batch
from kerasface.data.tfrecord import MANIFEST, LabelSpec, feature_spec, manifest_labels


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


RESIZE = {"method": "bilinear", "antialias": False}


def to_model_input(image: tf.Tensor, size: Sequence[int], channels: int) -> tf.Tensor:
    """float32 image(s) [..., H, W, C] in [0, 255] -> the model's colour mode and size: grayscale by
    tf.image.rgb_to_grayscale (or gray to RGB), then tf.image.resize(bilinear, no antialias) unless
    already at `size`. The one colour-and-size step of training, the export graphs and predict."""
    image = tf.cast(image, tf.float32)
    if image.shape[-1] == 3 and channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    elif image.shape[-1] == 1 and channels == 3:
        image = tf.image.grayscale_to_rgb(image)
    size = tuple(int(v) for v in size)
    known = image.shape[-3:-1]
    if None not in known:
        return image if tuple(known) == size else tf.image.resize(image, size, **RESIZE)
    same = tf.reduce_all(tf.shape(image)[-3:-1] == tf.constant(size, tf.int32))
    return tf.cond(same, lambda: image, lambda: tf.image.resize(image, size, **RESIZE))


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG -> uint8 [H, W, 3]."""
    # JPEG with the accurate integer DCT, as libjpeg/Pillow decode by default, so that crops decoded
    # anywhere else (predict, clients) give the same pixels as training.
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
    )
    return tf.ensure_shape(image, [None, None, 3])


def preprocess_image(encoded: tf.Tensor, size: Sequence[int], channels: int) -> tf.Tensor:
    """Encoded JPEG/PNG -> float32 [H, W, channels] in [0, 255] at `size` (`to_model_input`)."""
    image = to_model_input(decode_rgb(encoded), size, channels)
    return tf.ensure_shape(image, [size[0], size[1], channels])


def parse_fn(labels: dict, size: Sequence[int], channels: int):
    """Serialized Example -> (image, targets): one target per label (int32 class, identity and
    multilabel; float32 value), and "landmarks" as (10,) fractions of the stored width/height."""
    spec = feature_spec(labels)

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        image = preprocess_image(ex["image/encoded"], size, channels)
        hw = tf.cast(tf.stack([ex["image/width"], ex["image/height"]]), tf.float32)
        landmarks = tf.reshape(tf.reshape(ex["face/landmarks"], [5, 2]) / hw, [10])
        targets = {name: ex[f"label/{name}"] if spec_.type == "value" else tf.cast(ex[f"label/{name}"], tf.int32)
                   for name, spec_ in labels.items()}
        targets["landmarks"] = landmarks
        return image, targets

    return parse


@dataclass(frozen=True)
class Source:
    """One converted data source of a training stream."""

    name: str
    folder: Path
    weight: float = 1.0  # sampling weight (DataConfig.mixing == "weights")
    tasks: tuple[str, ...] = ()  # the labels it provides to the model; empty: all of its labels


def as_sources(folder) -> list[Source]:
    """A folder (one source) or a sequence of Sources."""
    if isinstance(folder, (str, Path)):
        return [Source(read_manifest(folder).get("dataset", "data"), Path(folder))]
    return list(folder)


def union_labels(sources: Sequence[Source]) -> dict[str, LabelSpec]:
    """Every label the sources give the model (all of a source's labels, or its `tasks`); one name
    must mean the same label in every source that gives it."""
    labels: dict[str, LabelSpec] = {}
    for source in sources:
        for name, spec in manifest_labels(read_manifest(source.folder)).items():
            if source.tasks and name not in source.tasks:
                continue  # not given to the model (MTFL's smile beside GENKI-4K's)
            if name in labels and labels[name] != spec:
                raise ValueError(f"label {name!r} differs between sources ({source.folder}: {spec}, "
                                 f"elsewhere: {labels[name]}); rename one of them")
            labels[name] = spec
    return labels


def train_class_counts(sources: Sequence[Source], label: str) -> list[int]:
    """The training faces per class of `label`, summed over the sources that give it (manifest counts,
    in the label's class order; zeros when no manifest counts it)."""
    names = list(union_labels(sources)[label].names)
    counts = [0] * len(names)
    for source in sources:
        if source.tasks and label not in source.tasks:
            continue
        per_class = read_manifest(source.folder)["splits"].get("train", {}).get("labels", {}).get(label, {})
        for i, name in enumerate(names):
            counts[i] += int(per_class.get(name, 0))
    return counts


FOLD_POOL = ("train", "val")  # the splits k-fold cross-validation re-divides (and serves under these names)


def stored_splits(source: Source, split: str, folds: int) -> list[str]:
    """The converted splits that `split` reads from (k-fold: the whole train+val pool)."""
    have = read_manifest(source.folder)["splits"]
    names = [n for n in FOLD_POOL if n in have] if folds > 1 and split in FOLD_POOL else [split]
    return [n for n in names if n in have]


def split_of(split: str, sources: Sequence[Source], folds: int = 0) -> tuple[str, list[Source]]:
    """"SOURCE/SPLIT" picks one source's split; a plain split name means every source that has it."""
    name, _, rest = split.partition("/")
    if rest:
        chosen = [s for s in sources if s.name == name]
        if not chosen:
            raise KeyError(f"no data source {name!r}; sources: {', '.join(s.name for s in sources)}")
        split, sources = rest, chosen
    having = [s for s in sources if stored_splits(s, split, folds)]
    if not having:
        raise KeyError(f"no split {split!r} in {', '.join(str(s.folder) for s in sources)}")
    return split, having


def fits_cache(data: DataConfig, records: int, size: Sequence[int], channels: int) -> bool:
    """Whether the decoded split (float32 at the model's input size) may be kept in memory."""
    decoded = records * int(size[0]) * int(size[1]) * int(channels) * 4
    return data.cache and decoded <= data.cache_budget_mb * 2**20


def epoch_records(data: DataConfig, sources: Sequence[Source]) -> int:
    """Records in one training epoch: "balance" sees every source as often as the largest one."""
    counts = split_records(sources, "train", data.folds)
    if data.folds > 1:
        counts = [round(c * (data.folds - 1) / data.folds) for c in counts]
    return max(counts) * len(counts) if data.mixing == "balance" else sum(counts)


def split_records(sources: Sequence[Source], split: str, folds: int = 0) -> list[int]:
    """Records per source that `split` reads (before any k-fold filter)."""
    return [sum(read_manifest(s.folder)["splits"][n]["records"] for n in stored_splits(s, split, folds))
            for s in sources]


def _source_records(data: DataConfig, source: Source, split: str, training: bool, input_context, seed: int):
    """The serialized records of one source's split (k-fold: filtered by each record's fold rank)."""
    autotune = tf.data.AUTOTUNE
    manifest = read_manifest(source.folder)
    use_folds = data.folds > 1 and split in FOLD_POOL
    files = [f for n in stored_splits(source, split, data.folds) for f in split_files(source.folder, n)]
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
    if use_folds:
        if "fold_rank" not in manifest:
            raise ValueError(f"{source.folder}: converted without fold ranks; convert again for k-fold splits")
        k, i, want_val = data.folds, data.fold, split == "val"

        def in_split(serialized):
            rank = tf.io.parse_single_example(serialized, FOLD_RANK_SPEC)["split/fold_rank"]
            in_fold = tf.cast(tf.floor(rank * k), tf.int32) == i
            return in_fold if want_val else tf.logical_not(in_fold)

        ds = ds.filter(in_split)
    return ds


def build_dataset(
    data: DataConfig,
    split: str,
    *,
    image_size: Sequence[int],
    channels: int,
    batch_size: int,
    training: bool,
    folder,
    input_context: tf.distribute.InputContext | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of (images, targets) for `split`; training adds shuffle, repeat and augmentation.

    `folder` is one converted folder or a sequence of `Source`s. Several sources are mixed into one
    training stream by `data.mixing` ("balance": each source equally often, i.e. the smaller ones
    duplicated, as BKNet; "weights": by Source.weight; "size": in proportion to their records);
    every sample carries every label of every source, unknown where its source lacks it. For
    evaluation a plain split name concatenates the sources that have it, "SOURCE/SPLIT" reads one.
    With `data.folds` = k > 1, "train" and "val" are fold `data.fold` of a k-fold split of the
    sources' train+val records (stratified by the converter's per-class fold ranks).

    With `input_context` (from `strategy.distribute_datasets_from_function`) each input pipeline
    reads its own subset of files (or of records, when there are fewer files than pipelines) and
    `batch_size` is the per-replica batch.
    """
    sources = as_sources(folder)
    labels = union_labels(sources)
    remote = bool(data.service) and training
    if remote:
        # The service's workers each run the whole stream (ShardingPolicy.OFF: the stream repeats
        # forever, so nothing is lost by not splitting it); seeded shuffles would make every
        # worker send the same batches, so the service's streams shuffle unseeded, as TF advises.
        data, seed = dataclasses.replace(data, deterministic=False, cache=False), None
    split, chosen = split_of(split, sources, data.folds)
    size = tuple(int(s) for s in image_size)
    autotune = tf.data.AUTOTUNE
    parse = parse_fn(labels, size, channels)
    counts = split_records(chosen, split, data.folds)
    cache = fits_cache(data, sum(counts), size, channels)
    streams = []
    for index, source in enumerate(chosen):
        ds = _source_records(data, source, split, training, input_context, _offset(seed, index))
        shuffle = dict(buffer_size=data.shuffle_buffer, seed=_offset(seed, index), reshuffle_each_iteration=True)
        if training and not cache:
            # the buffer holds encoded records (kilobytes), not decoded float32 images (270 kB at 150x150)
            ds = ds.shuffle(**shuffle).repeat()
        ds = ds.map(_masked(parse, source, labels), num_parallel_calls=autotune,
                    deterministic=data.deterministic or not training)
        if cache:
            ds = ds.cache()
            if training:
                ds = ds.shuffle(**shuffle).repeat()
        streams.append(ds)
    if len(streams) == 1:
        ds = streams[0]
    elif training:
        weights = {"balance": [1.0] * len(chosen), "weights": [s.weight for s in chosen],
                   "size": [float(max(c, 1)) for c in counts]}
        if data.mixing not in weights:
            raise ValueError(f"data.mixing: expected balance, weights or size, got {data.mixing!r}")
        ds = tf.data.Dataset.sample_from_datasets(streams, weights=weights[data.mixing], seed=seed,
                                                  stop_on_empty_dataset=False)
    else:
        ds = streams[0]
        for other in streams[1:]:
            ds = ds.concatenate(other)
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=autotune)
    if training and data.augment is not None:
        flip_permutations = {}
        for source in chosen:
            flip_permutations.update({k: tuple(v) for k, v in read_manifest(source.folder).get("flip_permutations", {}).items()})
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: augment_batch(batch[0], batch[1], s, data.augment, flip_permutations),
            num_parallel_calls=autotune, deterministic=data.deterministic)
    ds = ds.with_options(pipeline_options(data.deterministic or not training))
    if remote:
        ds = ds.apply(tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.OFF, service=data.service))
    return ds.prefetch(autotune)


def pipeline_options(deterministic: bool) -> tf.data.Options:
    """The options of every kerasface input pipeline.

    No autotuning thread: in TensorFlow 2.21, deleting an iterator (a training stage's, at its end)
    can block the deleting thread, GIL held, until the autotuner's sleep ends, up to 60 s. Its
    wake-up on cancellation checks `IsCancelled()` before the CancellationManager sets it, and
    sleeps again. Measured: 2 of 6 iterators deleted after 25 s of training stalled 16 and 56 s
    with autotuning, 0 of 8 without, at the same images/s (`AUTOTUNE` parallelism then means
    the core count, and prefetch buffers grow by TensorFlow's legacy autotuner).
    """
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = False
    # each input pipeline reads its own files (build_dataset's input_context), not auto-sharded ones
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def _offset(seed: int | None, index: int) -> int | None:
    return None if seed is None else seed + index


FOLD_RANK_SPEC = {"split/fold_rank": tf.io.FixedLenFeature([], tf.float32, default_value=0.0)}


def _masked(parse, source: Source, labels: dict):
    """`parse`, with the labels this source does not provide to the model set to unknown."""
    own = set(manifest_labels(read_manifest(source.folder)))
    if source.tasks:
        own &= set(source.tasks)
    hidden = [name for name in labels if name not in own]
    if not hidden:
        return parse

    def parse_and_mask(serialized):
        image, targets = parse(serialized)
        for name in hidden:
            unknown = float("nan") if labels[name].type == "value" else -1
            targets[name] = tf.fill(tf.shape(targets[name]), tf.constant(unknown, targets[name].dtype))
        return image, targets

    return parse_and_mask
