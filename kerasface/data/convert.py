"""Convert a dataset on disk into sharded TFRecords plus manifest.json.

    python -m kerasface.data.convert --dataset mtfl --root PATH --out tfrecords/mtfl [--crop nose_centred_150]

Images are read, cropped by a named crop scheme (kerasface.faces.crops) and stored encoded, with
landmarks (in crop pixels) and every label, each split in a seeded random order (manifest
"order": "shuffled"; the readers list faces by class). A face without landmarks is detected (MTCNN) first.
Datasets whose images are already face crops (FER2013; the 64x64 GENKI-4K copy: `DatasetSpec.cropped`,
or `--cropped yes|no`) are stored whole at the scheme's size and colour, with NaN landmarks.
`--crop` and `--image-format` default to the dataset's own (`DatasetSpec.default_crop`,
`default_image_format`: PNG for FER2013, whose pixels are numbers, so they are stored losslessly). Work is spread over processes. A new conversion is
written into a hidden staging folder inside OUT (`.partial-<key>/`, which no reader looks at) and
only published when complete: the old manifest goes, the new shards move into OUT by rename, old
shards it does not list go, and the new manifest.json comes last. Until then the previous
conversion in OUT stays complete and readable, so a failure or Ctrl-C loses nothing; other files in
OUT are left alone.

Resuming: shard k of a split holds the split's faces k, k + n, k + 2n, ... (n shards), written one
shard at a time; a finished shard is renamed to its final name inside the staging folder, with a
small `<shard>.json` beside it (its records, skips and class counts). `<key>` is a digest of the
settings and of the faces to convert (paths, labels, landmarks, the list files' hashes), so rerunning
the same command after a failure, a --strict stop or Ctrl-C converts only the shards still missing
(the manifest's "resumed_shards" counts the others) and gives the same shards, byte for byte, as an
uninterrupted run; a conversion with other settings or data starts afresh and drops the stale
staging folder. An edited image file whose path is unchanged is not noticed. Big datasets (CASIA-
WebFace) convert with many shards (`--shards 256`) so that little is redone. An image that cannot be used (missing, corrupt, no face found, or any error
while cropping or encoding it) is skipped, counted and listed with its reason in the manifest and
the summary; `--strict` makes the first one fatal, with one line naming the file.

Generic formats (a user's CSV: `--dataset csv --root labels.csv`; a folder tree: `--dataset folders`)
read their labels from the data and take reader options (`--regression age`, `--attribute smile`:
each dataset's `DatasetSpec.options`, offered here as flags and checked against the dataset). A row
the reader cannot use is skipped and listed as `labels.csv:LINE: reason`, like an unreadable image.
A photo without landmarks is detected, and `--which-face` says which face when there are several
(centre, largest, best = the most confident); a face box given with the photo picks the face
closest to it instead. The manifest's "class_balance" gives each class label's training counts
and the majority / minority ratio.

This module's top level imports no TensorFlow so that worker processes start light.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kerasface.cli import EXPECTED, run_command
from kerasface.data import DATASETS, FaceAnnotation
from kerasface.data.common import NO_LANDMARKS
from kerasface.faces.crops import CROPS, apply_crop, face_crop_as
from kerasface.faces.images import ImageError, load_image, one_line


SHOWN_SKIPS = 20  # skipped images the command line lists; the manifest lists them all
DETECTIONS = ".detections"  # beside the converted folders: each photo's detected faces, for all its crops


@dataclass(frozen=True)
class Job:
    index: int
    split: str
    root: str
    face: FaceAnnotation
    crop: str
    image_format: str
    quality: int
    cropped: bool = False  # the image is already a face crop: stored whole, no landmarks
    rule: str = "centre"  # which detected face, when the face has no landmarks and no box
    detections: str = ""  # a folder remembering each photo's detected faces (faces.detect_faces_cached)


@dataclass(frozen=True)
class Prepared:
    index: int
    split: str
    source: str
    encoded: bytes | None
    shape: tuple[int, int, int]
    landmarks: np.ndarray
    labels: dict[str, int]
    error: str = ""
    listed_at: str = ""  # "labels.csv:12", for messages


def encode(image: np.ndarray, image_format: str, quality: int) -> bytes:
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    buffer = io.BytesIO()
    if image_format == "png":
        pil.save(buffer, format="PNG")
    else:
        pil.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def prepare(job: Job) -> Prepared:
    """Read, crop and encode one face; failures come back as a reason instead of an exception."""
    face = job.face
    if face.problem:  # an entry the reader could not use: listed like an unreadable image
        return Prepared(job.index, job.split, face.path, None, (0, 0, 0), face.landmarks, face.labels, face.problem,
                        face.listed_at)
    try:
        image = face.image if face.image is not None else load_image(Path(job.root) / face.path)
        if job.cropped:  # the whole image is the face
            crop = face_crop_as(job.crop, image)
            encoded = encode(crop, job.image_format, job.quality)
            return Prepared(job.index, job.split, face.path, encoded, crop.shape, NO_LANDMARKS, face.labels,
                            listed_at=face.listed_at)
        if image.ndim == 2 or image.shape[2] == 1:  # in-memory gray pixels: RGB, as load_image gives
            image = np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=2)
        if np.isnan(face.landmarks).any():  # a whole photo without annotations: detect the face
            from kerasface.faces.detect import detect_and_crop, detect_faces_cached

            # detected once per photo whatever the crop: the dataset's other crops read the cache
            source = Path(job.root) / face.path if face.image is None else None
            # a given face box picks the detected face nearest it (and frames box-based schemes)
            found = detect_and_crop(image, job.crop, rule="box" if face.box else job.rule, box=face.box,
                                    use_box=face.box is not None,
                                    faces=detect_faces_cached(image, source, job.detections))
            if found is None:
                return Prepared(job.index, job.split, face.path, None, (0, 0, 0), face.landmarks, face.labels,
                                "no face found", face.listed_at)
            crop, landmarks = found
        else:
            crop, landmarks = apply_crop(job.crop, image, face.landmarks, box=face.box)
        encoded = encode(crop, job.image_format, job.quality)
        return Prepared(job.index, job.split, face.path, encoded, crop.shape, landmarks, face.labels,
                        listed_at=face.listed_at)
    except ImageError as exc:
        reason = str(exc).split(": ", 1)[-1]  # the message starts with the path, listed separately
    except Exception as exc:  # a crop or encoder failing on one image (ValueError, cv2.error, ...)
        reason = f"{type(exc).__name__}: {one_line(exc) or 'no message'}"
    return Prepared(job.index, job.split, face.path, None, (0, 0, 0), face.landmarks, face.labels, reason,
                    face.listed_at)


def _run_jobs(jobs: list[Job], workers: int):
    if workers <= 1:
        yield from map(prepare, jobs)
        return
    # spawn: the parent may hold an initialised TensorFlow runtime, which must not be forked.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(prepare, jobs, chunksize=16)


def convert(
    dataset: str,
    root: str | None,
    out: str | os.PathLike,
    crop: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    shards: int = 4,
    workers: int = 0,
    image_format: str | None = None,
    quality: int = 95,
    strict: bool = False,
    progress: bool = True,
    limit: int = 0,
    cropped: bool | None = None,
    options: dict | None = None,
    which_face: str = "centre",
) -> dict:
    """Convert `dataset` at `root` into `out`; returns the manifest written there. `crop` and
    `image_format` default to the dataset's (`DatasetSpec.default_crop`, `default_image_format`);
    `cropped` (the images are already face crops) to what the dataset says of this root.
    `options`: the dataset's reader options (`DatasetSpec.options`, e.g. {"regression": "age"});
    `which_face`: the detection rule for photos without landmarks or box (centre, largest, all =
    the most confident)."""
    from tqdm import tqdm

    from kerasface.data.tfrecord import SCHEMA_VERSION, fold_ranks, make_example, sha256_file, shard_name

    spec = DATASETS.get(dataset)
    crop = crop or spec.default_crop
    image_format = image_format or spec.default_image_format
    scheme = CROPS.get(crop)
    root_path = spec.resolve_root(root)
    options = spec.check_options(options)
    # images are relative to the root folder, or to the folder of a root that is a file (a CSV)
    images = root_path if root_path.is_dir() else root_path.parent
    cropped = spec.is_cropped(root_path) if cropped is None else bool(cropped)
    splits = spec.splits(root_path, val_fraction, seed, options)
    if strict:  # a malformed entry fails before any image is read
        bad = next((f for faces in splits.values() for f in faces if f.problem), None)
        if bad is not None:
            raise RuntimeError(f"{bad.listed_at or bad.path}: {bad.problem} (--strict)")
    # Records go out in a seeded random order: readers list faces by class (FER2013's folders,
    # GENKI-4K's labels), and a class-sorted file defeats a training shuffle buffer smaller than it.
    order = np.random.default_rng(seed)
    splits = {name: [faces[i] for i in order.permutation(len(faces))] for name, faces in splits.items()}
    if limit:
        splits = {name: faces[:limit] for name, faces in splits.items()}
    out = Path(out)
    jobs = [
        Job(i, split, str(images), face, crop, image_format, quality, cropped, which_face,
            detections=str(out.parent / DETECTIONS))
        for split, faces in splits.items()
        for i, face in enumerate(faces)
    ]
    workers = workers or min(os.cpu_count() or 1, 8)
    labels = spec.label_specs_for(root_path, options)
    classes = {name: label.names for name, label in labels.items() if label.type == "class"}
    # k-fold cross-validation re-divides train + val: each of those records carries a stratified rank
    strata = next(iter(classes), None)
    pool = [(split, i) for split in ("train", "val") if split in splits for i in range(len(splits[split]))]
    ranks = dict(zip(pool, fold_ranks([splits[s][i] for s, i in pool], strata, seed)))
    sources = {str(p.relative_to(images)): sha256_file(p) for p in spec.source_files(root_path)}
    # Shard k of a split holds its faces k, k + n, k + 2n, ... (n shards); each finished shard is
    # kept in the staging folder, whose name is a digest of everything the records depend on, so
    # that a rerun of the same conversion finds it and converts only the shards still missing.
    counts_of = {split: max(1, min(shards, len(faces))) for split, faces in splits.items()}
    settings = {"dataset": dataset, "root": str(root_path.resolve()), "crop": crop, "image_format": image_format,
                "quality": quality, "cropped": cropped, "options": options, "which_face": which_face,
                "val_fraction": val_fraction, "seed": seed, "limit": limit, "shards": counts_of,
                "schema": SCHEMA_VERSION, "sources": sources, "labels": {k: v.to_json() for k, v in labels.items()}}
    key = _conversion_key(settings, jobs)
    staging = out / f"{STAGING_PREFIX}{key}"  # the new conversion, until it is complete
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{STAGING_PREFIX}*"):  # unfinished conversions with other settings or data
        if stale.is_dir() and stale != staging:
            shutil.rmtree(stale, ignore_errors=True)
    staging.mkdir(exist_ok=True)
    for leftover in staging.glob("*.partial"):  # the shard being written when the last run stopped
        leftover.unlink()
    plan: list[tuple[str, int, str, list[Job]]] = []  # (split, shard, file name, its jobs)
    buckets: dict[tuple[str, int], list[Job]] = {}
    for job in jobs:
        buckets.setdefault((job.split, job.index % counts_of[job.split]), []).append(job)
    for split in splits:
        n = counts_of[split]
        plan.extend((split, k, shard_name(split, k, n), buckets.get((split, k), [])) for k in range(n))
    todo = [entry for entry in plan if not _shard_done(staging, entry[2])]
    resumed = len(plan) - len(todo)
    started = time.perf_counter()
    queued = [job for entry in todo for job in entry[3]]
    writer = results = bar = None
    try:
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(queued), desc=f"convert {dataset}", unit="img",
                   disable=not progress, file=sys.stderr)
        if resumed and progress:
            bar.write(f"resuming: {resumed} of {len(plan)} shards already converted in {staging}")
        results = _run_jobs(queued, workers)
        skipped_now = 0
        for split, _, name, shard_jobs in todo:
            writer = tf_writer(staging / (name + ".partial"))
            done = {"records": 0, "skipped": [], "labels": {label: dict.fromkeys(names, 0) for label, names in classes.items()}}
            for _ in shard_jobs:
                item = next(results)
                bar.update(1)
                if item.encoded is None:
                    if strict:
                        where = f"{item.listed_at}: {item.source}" if item.listed_at else str(images / item.source)
                        raise RuntimeError(f"{where}: {item.error} (--strict)")
                    done["skipped"].append({"path": item.source, "split": item.split, "reason": item.error,
                                            **({"listed_at": item.listed_at} if item.listed_at else {}),
                                            "index": item.index})
                    skipped_now += 1
                    bar.set_postfix(skipped=skipped_now)
                    continue
                height, width, channels = item.shape
                writer.write(make_example(item.encoded, image_format, height, width, channels, item.source,
                                          item.landmarks, item.labels, ranks.get((item.split, item.index))))
                done["records"] += 1
                for label, value in item.labels.items():
                    if label in classes and value >= 0:
                        done["labels"][label][classes[label][value]] += 1
            writer.close()
            writer = None
            os.replace(staging / (name + ".partial"), staging / name)
            _write_small_json(staging / (name + SHARD_INFO), done)  # last: the shard is finished
        bar.close()
        split_info, skipped = {}, []
        for split in splits:
            entries = [_read_shard_info(staging, name) for s, _, name, _ in plan if s == split]
            per_class = {label: dict.fromkeys(names, 0) for label, names in classes.items()}
            for entry in entries:
                for label, per in entry["labels"].items():
                    for cls, n in per.items():
                        per_class[label][cls] += n
            split_info[split] = {"records": sum(e["records"] for e in entries), "labels": per_class,
                                 "files": [name for s, _, name, _ in plan if s == split]}
            skipped.extend(sorted((x for e in entries for x in e["skipped"]), key=lambda x: x["index"]))
        for item in skipped:
            item.pop("index", None)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "dataset": dataset,
            "crop": crop,
            "image_size": list(scheme.size) if scheme.size else None,
            "channels": 1 if scheme.grayscale else 3,
            "image_format": image_format,
            "cropped": cropped,
            "reader_options": options,
            "which_face": which_face,
            "attributes": {name: list(names) for name, names in classes.items()},  # schema v1 readers
            "labels": {name: label.to_json() for name, label in labels.items()},
            "flip_permutations": {k: list(v) for k, v in spec.flip_permutations.items()},
            "val_fraction": val_fraction,
            "order": "shuffled",
            "fold_rank": {"splits": ["train", "val"], "stratified_by": strata},
            "seed": seed,
            "splits": split_info,
            "class_balance": class_balance({name: per for name, per in split_info.get("train", {}).get("labels", {}).items()}),
            "skipped": skipped,
            "sources": sources,
            "resumed_shards": resumed,
            "seconds": round(time.perf_counter() - started, 2),
        }
    except BaseException:
        # finished shards stay in the staging folder (a rerun continues from them); the one being
        # written is removed
        if results is not None:
            results.close()  # stops the worker processes
        if bar is not None:
            bar.close()  # ends the bar's line before the error
        if writer is not None:
            writer.close()
        for leftover in staging.glob("*.partial"):
            leftover.unlink()
        raise
    _publish(staging, out, manifest)
    return manifest


STAGING_PREFIX = ".partial-"  # a conversion in progress inside OUT (hidden: no reader looks at it)
SHARD_INFO = ".json"  # beside each finished shard in the staging folder: its records, skips, counts


def tf_writer(path: Path):
    import tensorflow as tf

    return tf.io.TFRecordWriter(str(path))


def _conversion_key(settings: dict, jobs: list[Job]) -> str:
    """A digest of the settings and of every face to convert (path, split, position, labels,
    landmarks, problem): the same conversion, and only it, finds its staged shards again."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for job in jobs:
        f = job.face
        digest.update(repr((job.split, job.index, f.path, sorted((k, repr(v)) for k, v in f.labels.items()),
                            np.asarray(f.landmarks, np.float32).tobytes(), f.box, f.problem, f.listed_at,
                            f.image is not None)).encode())
    return digest.hexdigest()[:16]


def _write_small_json(path: Path, payload: dict) -> None:
    import json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def _shard_done(staging: Path, name: str) -> bool:
    return (staging / name).is_file() and (staging / (name + SHARD_INFO)).is_file()


def _read_shard_info(staging: Path, name: str) -> dict:
    import json

    return json.loads((staging / (name + SHARD_INFO)).read_text())


def class_balance(counts: dict[str, dict[str, int]]) -> dict:
    """Per class label, from its training counts {class: n}: the counts, the majority and
    minority classes and their ratio (None when a class has no training face)."""
    balance = {}
    for name, per_class in counts.items():
        if not per_class:
            continue
        most, least = max(per_class, key=per_class.get), min(per_class, key=per_class.get)
        ratio = round(per_class[most] / per_class[least], 2) if per_class[least] else None
        balance[name] = {"counts": dict(per_class), "majority": most, "minority": least, "ratio": ratio}
    return balance


def describe_balance(balance: dict) -> list[str]:
    """One line per label: "smile: smiling 120, not_smiling 40 (3:1)"."""
    lines = []
    for name, entry in balance.items():
        counts = ", ".join(f"{k} {v}" for k, v in entry["counts"].items())
        ratio = "a class has no training face" if entry["ratio"] is None else f"{entry['ratio']:g}:1"
        lines.append(f"{name}: {counts} ({ratio})")
    return lines


def reader_flags(parser: argparse.ArgumentParser) -> list[str]:
    """Add every registered dataset's reader options as --NAME flags; returns the option names."""
    names = []
    for dataset in DATASETS.names():
        for name, text in DATASETS.get(dataset).options.items():
            if name not in names:
                parser.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"{text} [{dataset}]")
                names.append(name)
    return names


WHICH_FACE = {"centre": "centre", "largest": "largest", "best": "all"}  # --which-face -> detect rule
CROPPED = {"auto": None, "yes": True, "no": False}  # --cropped -> convert(cropped=...)


def _publish(staging: Path, out: Path, manifest: dict) -> None:
    """Replace the conversion in `out` by the complete one in `staging`: renames only, so the
    folder is without a manifest (unfinished, never read) for as long as a few renames take."""
    from kerasface.config import write_json
    from kerasface.data.tfrecord import MANIFEST

    new = {name for split in manifest["splits"].values() for name in split["files"]}
    (out / MANIFEST).unlink(missing_ok=True)
    for name in new:
        os.replace(staging / name, out / name)
    for old in list(out.glob("*.tfrecord")) + list(out.glob("*.partial")):
        if old.name not in new:  # shards of the old conversion the new one does not have
            old.unlink()
    write_json(out / MANIFEST, manifest)
    shutil.rmtree(staging)  # what is left there: the shards' notes (SHARD_INFO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kerasface.data.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS.names())}")
    parser.add_argument("--root", help="dataset folder (default: the dataset's environment variable, e.g. $KERASFACE_MTFL)")
    parser.add_argument("--out", required=True, help="output folder for shards and manifest.json")
    parser.add_argument("--crop", help=f"crop scheme (default: the dataset's, e.g. nose_centred_150 for mtfl): "
                                       f"{', '.join(CROPS.names())}")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split and of the records' order")
    parser.add_argument("--shards", type=int, default=4, help="shards per split")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: CPU count, at most 8)")
    parser.add_argument("--image-format", choices=("jpeg", "png"),
                        help="stored image format (default: the dataset's: png for fer2013, else jpeg)")
    parser.add_argument("--cropped", choices=("auto", "yes", "no"), default="auto",
                        help="the images are already face crops, stored whole without detection "
                             "(auto: as the dataset says, e.g. genki4k when every image is at most 64x64)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality")
    parser.add_argument("--strict", action="store_true", help="fail on the first missing or corrupt image")
    parser.add_argument("--limit", type=int, default=0, help="convert at most N faces per split (smoke tests)")
    parser.add_argument("--which-face", choices=tuple(WHICH_FACE), default="centre",
                        help="photos without landmarks or a box: the face nearest the centre, the largest, "
                             "or the most confident detection")
    option_names = reader_flags(parser)
    args = parser.parse_args(argv)
    def body() -> None:
        manifest = convert(args.dataset, args.root, args.out, args.crop, args.val_fraction, args.seed, args.shards,
                           args.workers, args.image_format, args.quality, args.strict, limit=args.limit,
                           cropped=CROPPED[args.cropped],
                           options={name: getattr(args, name) for name in option_names},
                           which_face=WHICH_FACE[args.which_face])
        total = sum(s["records"] for s in manifest["splits"].values())
        per_split = ", ".join(f"{name}: {split['records']}" for name, split in manifest["splits"].items())
        print(f"wrote {total} records to {args.out} in {manifest['seconds']:.1f} s ({per_split}); "
              f"skipped {len(manifest['skipped'])}")
        for item in manifest["skipped"][:SHOWN_SKIPS]:
            where = item.get("listed_at", "")
            named = f"{where} ({item['path']})" if where and where != item["path"] else item["path"]
            print(f"  skipped {named}: {item['reason']}")
        for line in describe_balance(manifest["class_balance"]):
            print(f"  class balance (train) {line}")
        if len(manifest["skipped"]) > SHOWN_SKIPS:
            print(f"  ... and {len(manifest['skipped']) - SHOWN_SKIPS} more, every one listed under "
                  f"\"skipped\" in {Path(args.out) / 'manifest.json'}")

    return run_command(body, EXPECTED + (RuntimeError,))  # RuntimeError: a --strict failure

if __name__ == "__main__":
    sys.exit(main())
