"""ChaLearn LAP 2016 Faces of the World (FotW), smile and gender track: FORMAT ASSUMED.

The annotation files of this release could not be checked here, so the reader takes a column map
that users point at their copy. Without one it assumes this layout (the demo writes it):

    ROOT/train.csv  ROOT/val.csv  [ROOT/test.csv]     comma-separated, one header line
        image,x,y,width,height,smile,gender
        train/0001.jpg,34,50,120,131,smiling,female
    image paths relative to ROOT; the box (x, y, width, height, pixels) is the given face box;
    smile smiling / neutral / other, gender male / female / other (case-insensitive), or the codes
    smile 1 smiling, 0 neutral, 2 other and gender 0 male, 1 female, 2 other (also assumed).

A `fotw_columns.json` in ROOT replaces any part of that: {"files": {"train": ..., "val": ...,
"test": ...}, "delimiter": ",", "header": true, "image": "image", "box": ["x", "y", "width",
"height"] or null, "landmarks": null or 10 columns x1, y1, ..., x5, y5, "smile": "smile" or null,
"gender": "gender" or null, "values": {"smile": {"<text in the file>": "smiling" | "not_smiling" |
"other"}, "gender": {...: "male" | "female" | "other"}}}; without a header, columns are 0-based
indices. "other" labels are masked (-1: no loss, not counted). A face without landmarks is detected
at conversion (MTCNN), keeping the face closest to the given box (the paper's rule for training and
validation), or the one closest to the image centre when there is no box.

Labels: `smile` (smiling, not_smiling) and `gender` (male, female), MTFL's and CelebA's names.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from kerasface.data import DATASETS, DatasetSpec, FaceAnnotation
from kerasface.data.common import NO_LANDMARKS, FormatError, find_root, finish_demo

ENV_VAR = "KERASFACE_FOTW"
COLUMNS_FILE = "fotw_columns.json"
LABELS = {"smile": ("smiling", "not_smiling"), "gender": ("male", "female")}
DEFAULT_COLUMNS = {
    "files": {"train": "train.csv", "val": "val.csv", "test": "test.csv"},
    "delimiter": ",", "header": True, "image": "image", "box": ["x", "y", "width", "height"], "landmarks": None,
    "smile": "smile", "gender": "gender",
    "values": {
        "smile": {"smiling": "smiling", "smile": "smiling", "1": "smiling", "neutral": "not_smiling",
                  "not_smiling": "not_smiling", "0": "not_smiling", "other": "other", "2": "other"},
        "gender": {"male": "male", "m": "male", "0": "male", "female": "female", "f": "female", "1": "female",
                   "other": "other", "2": "other"},
    },
}


class FotWFormatError(FormatError):
    """A line of a FotW annotation file does not fit the column map."""


def column_map(root: Path) -> dict:
    """The default map updated by ROOT/fotw_columns.json (its top-level keys replace the defaults')."""
    columns = json.loads(json.dumps(DEFAULT_COLUMNS))
    path = root / COLUMNS_FILE
    if path.is_file():
        try:
            given = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise FotWFormatError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        unknown = set(given) - set(DEFAULT_COLUMNS)
        if unknown:
            raise FotWFormatError(f"{path}: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(DEFAULT_COLUMNS)}")
        columns.update(given)
    return columns


def _index(column, header: list[str] | None, where: str) -> int:
    if header is None:
        if not isinstance(column, int):
            raise FotWFormatError(f"{where}: without a header the column map needs 0-based indices, got {column!r}")
        return column
    if column not in header:
        raise FotWFormatError(f"{where}: no column {column!r} in the header ({', '.join(header)}); "
                              f"set the column map ({COLUMNS_FILE})")
    return header.index(column)


def read_file(path: str | os.PathLike, columns: dict) -> list[FaceAnnotation]:
    """One annotation file -> faces; a line that does not fit raises FotWFormatError naming file:line."""
    path = Path(path)
    with open(path, "r", encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(io.StringIO(handle.read()), delimiter=columns["delimiter"]))
    header = [h.strip() for h in rows[0]] if columns["header"] and rows else None
    first = 2 if header is not None else 1
    where = f"{path}:1"
    image = _index(columns["image"], header, where)
    box = [_index(c, header, where) for c in columns["box"]] if columns["box"] else None
    points = [_index(c, header, where) for c in columns["landmarks"]] if columns["landmarks"] else None
    tasks = {t: _index(columns[t], header, where) for t in LABELS if columns.get(t) is not None}
    faces = []
    for line_no, row in enumerate(rows[first - 1:], start=first):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{line_no}"
        try:
            cells = {i: row[i].strip() for i in [image, *(box or []), *(points or []), *tasks.values()]}
        except IndexError:
            raise FotWFormatError(f"{where}: {len(row)} fields, fewer than the column map needs") from None
        try:
            face_box = tuple(float(cells[i]) for i in box) if box else None
            marks = np.array([float(cells[i]) for i in points], np.float32).reshape(5, 2) if points else NO_LANDMARKS
        except ValueError:
            raise FotWFormatError(f"{where}: the box and landmark columns must be numbers") from None
        if face_box is not None and (face_box[2] <= 0 or face_box[3] <= 0):
            raise FotWFormatError(f"{where}: the box width and height must be positive, got {face_box[2:]}")
        labels = {}
        for task, i in tasks.items():
            value = columns["values"][task].get(cells[i].lower(), columns["values"][task].get(cells[i]))
            if value is None:
                known = ", ".join(sorted(columns["values"][task]))
                raise FotWFormatError(f"{where}: {task} {cells[i]!r} is none of {known} (the column map's values)")
            labels[task] = -1 if value == "other" else LABELS[task].index(value)
        faces.append(FaceAnnotation(cells[image].replace("\\", "/"), marks, labels, line_no, box=face_box))
    return faces


def read_splits(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> dict[str, list[FaceAnnotation]]:
    """The splits the column map names whose files exist (train and val at least)."""
    root = Path(root)
    columns = column_map(root)
    splits = {}
    for split, name in columns["files"].items():
        if (root / name).is_file():
            splits[split] = read_file(root / name, columns)
        elif split in ("train", "val"):
            raise FileNotFoundError(f"FotW: {root / name} is missing (the {split} annotations; see {COLUMNS_FILE})")
    return splits


def _locate(candidate: Path) -> Path | None:
    for folder in (candidate, candidate / "fotw", candidate / "FotW"):
        if (folder / COLUMNS_FILE).is_file() or (folder / DEFAULT_COLUMNS["files"]["train"]).is_file():
            return folder
    return None


def resolve_root(root: str | os.PathLike | None) -> Path:
    return find_root(root, ENV_VAR, "FotW", _locate, f"train.csv and val.csv there, or a {COLUMNS_FILE} naming your "
                     "files (the format is assumed: see kerasface.data.fotw)", demo=True)


def source_files(root: Path) -> list[Path]:
    columns = column_map(root)
    files = [root / name for name in columns["files"].values() if (root / name).is_file()]
    return files + ([root / COLUMNS_FILE] if (root / COLUMNS_FILE).is_file() else [])


# ----------------------------------------------------------------------------- demo


def write_demo(root: str | os.PathLike, seed: int = 0, count: int = 240) -> Path:
    """A SYNTHETIC FotW in the assumed layout: `count` 160x160 photos with one face at a random
    place and size (train 75%, val 25%), its box from the drawn face, smile and gender as drawn
    and 5% of each written "other" (masked). No landmarks: the converter detects the faces."""
    from PIL import Image

    from kerasface.data.synthetic import render_face

    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = {"train": [], "val": []}
    for i, face_rng in enumerate(rng.spawn(count)):
        split = "train" if i < 0.75 * count else "val"
        (root / split).mkdir(parents=True, exist_ok=True)
        rel = f"{split}/{i:05d}.jpg"
        iod = face_rng.uniform(32, 42)
        nose = (face_rng.uniform(0.35, 0.65) * 160, face_rng.uniform(0.4, 0.6) * 160)
        image, points, info = render_face(face_rng, (160, 160), iod=iod, nose=nose)
        Image.fromarray(image).save(root / (rel + ".tmp"), format="JPEG", quality=90)
        os.replace(root / (rel + ".tmp"), root / rel)
        left, top = points.min(axis=0) - (0.6 * iod, 1.0 * iod)
        right, bottom = points.max(axis=0) + (0.6 * iod, 0.9 * iod)
        smile = "other" if face_rng.random() < 0.05 else ("smiling" if info["smile"] == 1 else "neutral")
        gender = "other" if face_rng.random() < 0.05 else ("male" if info["gender"] == 1 else "female")
        rows[split].append(f"{rel},{left:.0f},{top:.0f},{right - left:.0f},{bottom - top:.0f},{smile},{gender}")
    header = "image,x,y,width,height,smile,gender"
    tmp = root / "train.csv.tmp"
    tmp.write_bytes(("\n".join([header] + rows["train"]) + "\n").encode("ascii"))
    os.replace(tmp, root / "train.csv")
    return finish_demo(root, "val.csv", [header] + rows["val"], "kerasface.data.fotw.write_demo", seed,
                       "cartoon faces in small photos with smile and gender as drawn, in the assumed FotW layout")


DATASETS.register("fotw")(
    DatasetSpec(
        name="fotw",
        env_var=ENV_VAR,
        labels=LABELS,
        resolve_root=resolve_root,
        read_splits=read_splits,
        source_files=source_files,
        write_demo=write_demo,
        default_crop="gnet_unaligned_face",
    )
)
