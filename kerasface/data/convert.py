"""Convert a dataset on disk into sharded TFRecords plus manifest.json.

    python -m kerasface.data.convert --dataset mtfl --root PATH --out tfrecords/mtfl [--crop nose_centred_150]

Images are read, cropped by a named crop scheme (kerasface.faces.crops) and stored encoded, with
landmarks (in crop pixels) and every label, each split in a seeded random order (manifest
"order": "shuffled"; the readers list faces by class). A face without landmarks is detected (MTCNN) first.
Datasets whose images are already face crops (FER2013; the 64x64 GENKI-4K copy: `DatasetSpec.cropped`,
or `--cropped yes|no`) are stored whole at the scheme's size and colour, with NaN landmarks.
`--crop` and `--image-format` default to the dataset's own (`DatasetSpec.default_crop`,
`default_image_format`: PNG for FER2013, whose pixels are numbers, so they are stored losslessly). Work is spread over processes. A new conversion is
written into a hidden staging folder inside OUT (`.partial-<pid>/`, which no reader looks at) and
only published when complete: the old manifest goes, the new shards move into OUT by rename, old
shards it does not list go, and the new manifest.json comes last. Until then the previous
conversion in OUT stays complete and readable, so a failure or Ctrl-C loses nothing; other files in
OUT are left alone. An image that cannot be used (missing, corrupt, no face found, or any error
while cropping or encoding it) is skipped, counted and listed with its reason in the manifest and
the summary; `--strict` makes the first one fatal, with one line naming the file.

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
    try:
        image = face.image if face.image is not None else load_image(Path(job.root) / face.path)
        if job.cropped:  # the whole image is the face
            crop = face_crop_as(job.crop, image)
            encoded = encode(crop, job.image_format, job.quality)
            return Prepared(job.index, job.split, face.path, encoded, crop.shape, NO_LANDMARKS, face.labels)
        if image.ndim == 2 or image.shape[2] == 1:  # in-memory gray pixels: RGB, as load_image gives
            image = np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=2)
        if np.isnan(face.landmarks).any():  # a whole photo without annotations: detect the face
            from kerasface.faces.detect import detect_and_crop

            found = detect_and_crop(image, job.crop, rule="centre" if face.box is None else "box", box=face.box)
            if found is None:
                return Prepared(job.index, job.split, face.path, None, (0, 0, 0), face.landmarks, face.labels,
                                "no face found")
            crop, landmarks = found
        else:
            crop, landmarks = apply_crop(job.crop, image, face.landmarks, box=face.box)
        encoded = encode(crop, job.image_format, job.quality)
        return Prepared(job.index, job.split, face.path, encoded, crop.shape, landmarks, face.labels)
    except ImageError as exc:
        reason = str(exc).split(": ", 1)[-1]  # the message starts with the path, listed separately
    except Exception as exc:  # a crop or encoder failing on one image (ValueError, cv2.error, ...)
        reason = f"{type(exc).__name__}: {one_line(exc) or 'no message'}"
    return Prepared(job.index, job.split, face.path, None, (0, 0, 0), face.landmarks, face.labels, reason)


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
) -> dict:
    """Convert `dataset` at `root` into `out`; returns the manifest written there. `crop` and
    `image_format` default to the dataset's (`DatasetSpec.default_crop`, `default_image_format`);
    `cropped` (the images are already face crops) to what the dataset says of this root."""
    from tqdm import tqdm

    from kerasface.data.tfrecord import SCHEMA_VERSION, ShardedWriter, fold_ranks, make_example, sha256_file

    spec = DATASETS.get(dataset)
    crop = crop or spec.default_crop
    image_format = image_format or spec.default_image_format
    scheme = CROPS.get(crop)
    root_path = spec.resolve_root(root)
    cropped = spec.is_cropped(root_path) if cropped is None else bool(cropped)
    splits = spec.read_splits(root_path, val_fraction, seed)
    # Records go out in a seeded random order: readers list faces by class (FER2013's folders,
    # GENKI-4K's labels), and a class-sorted file defeats a training shuffle buffer smaller than it.
    order = np.random.default_rng(seed)
    splits = {name: [faces[i] for i in order.permutation(len(faces))] for name, faces in splits.items()}
    if limit:
        splits = {name: faces[:limit] for name, faces in splits.items()}
    out = Path(out)
    staging = out / f".partial-{os.getpid()}"  # the new conversion, until it is complete
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)

    jobs = [
        Job(i, split, str(root_path), face, crop, image_format, quality, cropped)
        for split, faces in splits.items()
        for i, face in enumerate(faces)
    ]
    workers = workers or min(os.cpu_count() or 1, 8)
    labels = spec.label_specs
    classes = {name: label.names for name, label in labels.items() if label.type == "class"}
    counts = {split: {name: dict.fromkeys(names, 0) for name, names in classes.items()} for split in splits}
    # k-fold cross-validation re-divides train + val: each of those records carries a stratified rank
    strata = next(iter(classes), None)
    pool = [(split, i) for split in ("train", "val") if split in splits for i in range(len(splits[split]))]
    ranks = dict(zip(pool, fold_ranks([splits[s][i] for s, i in pool], strata, seed)))
    skipped: list[dict] = []
    started = time.perf_counter()
    writers: dict[str, ShardedWriter] = {}
    try:
        for split, faces in splits.items():
            writers[split] = ShardedWriter(staging, split, max(1, min(shards, len(faces))))
        bar = tqdm(_run_jobs(jobs, workers), total=len(jobs), desc=f"convert {dataset}", unit="img",
                   disable=not progress, file=sys.stderr)
        for item in bar:
            if item.encoded is None:
                if strict:
                    raise RuntimeError(f"{root_path / item.source}: {item.error} (--strict)")
                skipped.append({"path": item.source, "split": item.split, "reason": item.error})
                bar.set_postfix(skipped=len(skipped))
                continue
            height, width, channels = item.shape
            writers[item.split].write(
                make_example(item.encoded, image_format, height, width, channels, item.source, item.landmarks,
                             item.labels, ranks.get((item.split, item.index)))
            )
            for name, value in item.labels.items():
                if name in classes and value >= 0:
                    counts[item.split][name][classes[name][value]] += 1
        files = {split: [p.name for p in writer.close()] for split, writer in writers.items()}
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "dataset": dataset,
            "crop": crop,
            "image_size": list(scheme.size) if scheme.size else None,
            "channels": 1 if scheme.grayscale else 3,
            "image_format": image_format,
            "cropped": cropped,
            "attributes": {name: list(names) for name, names in classes.items()},  # schema v1 readers
            "labels": {name: label.to_json() for name, label in labels.items()},
            "flip_permutations": {k: list(v) for k, v in spec.flip_permutations.items()},
            "val_fraction": val_fraction,
            "order": "shuffled",
            "fold_rank": {"splits": ["train", "val"], "stratified_by": strata},
            "seed": seed,
            "splits": {
                split: {"records": writers[split].records, "labels": counts[split], "files": files[split]}
                for split in splits
            },
            "skipped": skipped,
            "sources": {str(p.relative_to(root_path)): sha256_file(p) for p in spec.source_files(root_path)},
            "seconds": round(time.perf_counter() - started, 2),
        }
    except BaseException:
        for writer in writers.values():
            writer.abort()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(staging, out, manifest)
    return manifest


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
    staging.rmdir()


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
    args = parser.parse_args(argv)
    def body() -> None:
        manifest = convert(args.dataset, args.root, args.out, args.crop, args.val_fraction, args.seed, args.shards,
                           args.workers, args.image_format, args.quality, args.strict, limit=args.limit,
                           cropped={"auto": None, "yes": True, "no": False}[args.cropped])
        total = sum(s["records"] for s in manifest["splits"].values())
        per_split = ", ".join(f"{name}: {split['records']}" for name, split in manifest["splits"].items())
        print(f"wrote {total} records to {args.out} in {manifest['seconds']:.1f} s ({per_split}); "
              f"skipped {len(manifest['skipped'])}")
        for item in manifest["skipped"][:SHOWN_SKIPS]:
            print(f"  skipped {item['path']}: {item['reason']}")
        if len(manifest["skipped"]) > SHOWN_SKIPS:
            print(f"  ... and {len(manifest['skipped']) - SHOWN_SKIPS} more, every one listed under "
                  f"\"skipped\" in {Path(args.out) / 'manifest.json'}")

    return run_command(body, EXPECTED + (RuntimeError,))  # RuntimeError: a --strict failure

if __name__ == "__main__":
    sys.exit(main())
