"""Write tiny FER2013, GENKI-4K and IMDB-WIKI copies in their real on-disk formats, with known
pixels and labels, and read converted records back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from kerasface.data.fer2013 import EMOTIONS

USAGES = ("Training", "PublicTest", "PrivateTest")


def fer_rows(per_usage=(8, 3, 3), seed=0) -> list[tuple[int, np.ndarray, str]]:
    """(emotion, 48x48 uint8 pixels, Usage) rows; pixels span 0..255, every emotion appears."""
    rng = np.random.default_rng(seed)
    rows = []
    for usage, count in zip(USAGES, per_usage):
        for i in range(count):
            pixels = rng.integers(0, 256, (48, 48), dtype=np.uint8)
            pixels[0, :2] = (0, 255)
            rows.append(((len(rows) * 3) % len(EMOTIONS), pixels, usage))
    return rows


def pixel_text(pixels: np.ndarray) -> str:
    return " ".join(str(v) for v in pixels.ravel().tolist())


def write_fer_csv(root: Path, rows, form: str = "fer2013", newline: str = "\n", trailing: bool = True,
                  quote: bool = False) -> list[Path]:
    """One of the CSV forms: "fer2013" (fer2013.csv, emotion,pixels,Usage), "icml"
    (icml_face_data.csv, header `emotion, Usage, pixels`), "kaggle" (train.csv emotion,pixels with
    the Training rows + test.csv pixels with the others). Returns the files written."""
    root.mkdir(parents=True, exist_ok=True)
    q = (lambda text: f'"{text}"') if quote else (lambda text: text)
    if form == "fer2013":
        files = {"fer2013.csv": ["emotion,pixels,Usage"] + [f"{e},{q(pixel_text(p))},{u}" for e, p, u in rows]}
    elif form == "icml":
        files = {"icml_face_data.csv": ["emotion, Usage, pixels"] + [f"{e},{u},{q(pixel_text(p))}" for e, p, u in rows]}
    elif form == "kaggle":
        files = {"train.csv": ["emotion,pixels"] + [f"{e},{q(pixel_text(p))}" for e, p, u in rows if u == "Training"],
                 "test.csv": ["pixels"] + [q(pixel_text(p)) for e, p, u in rows if u != "Training"]}
    else:
        raise ValueError(form)
    paths = []
    for name, lines in files.items():
        (root / name).write_bytes((newline.join(lines) + (newline if trailing else "")).encode("ascii"))
        paths.append(root / name)
    return paths


def write_fer_folders(root: Path, rows, ext: str = "png") -> dict[str, tuple[int, np.ndarray]]:
    """The image-folder release: train/<emotion>/Training_<id>.<ext>, test/<emotion>/PublicTest_<id>
    and PrivateTest_<id>; returns {relative path: (emotion, pixels)}."""
    truth = {}
    for i, (emotion, pixels, usage) in enumerate(rows):
        rel = f"{'train' if usage == 'Training' else 'test'}/{EMOTIONS[emotion]}/{usage}_{1000 + 37 * i}.{ext}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / rel)
        truth[rel] = (emotion, pixels)
    return truth


def write_genki(root: Path, lines: list[str], size=(64, 64), newline: str = "\n", trailing: bool = True,
                seed: int = 0) -> dict[str, np.ndarray]:
    """labels.txt holding `lines` (joined by `newline`, one more at the end when `trailing`) and one
    JPEG files/fileNNNN.jpg of `size` (w, h) per line; returns {relative path: its decoded RGB pixels}."""
    rng = np.random.default_rng(seed)
    (root / "files").mkdir(parents=True, exist_ok=True)
    (root / "labels.txt").write_bytes((newline.join(lines) + (newline if trailing else "")).encode("ascii"))
    images = {}
    for n in range(1, len(lines) + 1):
        rel = f"files/file{n:04d}.jpg"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / rel, quality=95)
        images[rel] = np.asarray(Image.open(root / rel).convert("RGB"))
    return images


def mat_struct(entries: list[dict], imdb: bool = False) -> dict:
    """The IMDB-WIKI struct as scipy.io.savemat writes MATLAB's: every field a 1xN row (numbers as
    double, strings and boxes as cells), imdb adding celeb_names (1xM cell) and celeb_id."""
    def row(values):
        return np.array([values], dtype=np.float64)

    def cell(values):
        out = np.empty((1, len(values)), dtype=object)
        for i, v in enumerate(values):
            out[0, i] = v
        return out

    struct = {
        "dob": row([e["dob"] for e in entries]),
        "photo_taken": row([e["photo_taken"] for e in entries]),
        "full_path": cell([e["full_path"] for e in entries]),
        "gender": row([e["gender"] for e in entries]),
        "name": cell([e.get("name", "Some Name") for e in entries]),
        "face_location": cell([np.array([[10.0, 12.0, 90.0, 95.0]]) for _ in entries]),
        "face_score": row([e["face_score"] for e in entries]),
        "second_face_score": row([e["second_face_score"] for e in entries]),
    }
    if imdb:
        struct["celeb_names"] = cell(["A", "B"])
        struct["celeb_id"] = row([1 + i % 2 for i in range(len(entries))])
    return struct


def read_converted(folder: Path) -> tuple[dict, dict[str, list[dict]]]:
    """manifest, {split: [{"source", "image" (HxWxC as stored), "landmarks", labels...}]}."""
    import tensorflow as tf

    from kerasface.data.tfrecord import feature_spec, manifest_labels

    manifest = json.loads((folder / "manifest.json").read_text())
    labels = manifest_labels(manifest)
    spec = feature_spec(labels)
    out = {}
    for split, info in manifest["splits"].items():
        records = []
        for name in info["files"]:
            for raw in tf.data.TFRecordDataset(str(folder / name)):
                ex = tf.io.parse_single_example(raw, spec)
                record = {"source": ex["image/source"].numpy().decode(),
                          "image": tf.io.decode_image(ex["image/encoded"]).numpy(),
                          "landmarks": ex["face/landmarks"].numpy()}
                for label, label_spec in labels.items():
                    value = ex[f"label/{label}"].numpy()
                    record[label] = tuple(value.tolist()) if label_spec.type == "value" else int(value)
                records.append(record)
        out[split] = records
    return manifest, out
