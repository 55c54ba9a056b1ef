"""FER2013 (Goodfellow et al., ICML 2013 representation-learning challenge) in the four forms users have.

The root folder holds one of them; the first found in this order is read:

1. `fer2013.csv`, header `emotion,pixels,Usage`: the original release.
2. `icml_face_data.csv`: the same columns with leading spaces in the names (`emotion, Usage, pixels`).
3. Kaggle's `train.csv` (`emotion,pixels`) and `test.csv` (`pixels` only). test.csv has no labels
   and does not say which rows are PublicTest and which PrivateTest: it becomes one split `test`
   whose emotion is unknown (-1), so it can be predicted on but not scored.
4. The image-folder release `train/<emotion>/Training_<id>.jpg` and `test/<emotion>/PublicTest_<id>.jpg`,
   `test/<emotion>/PrivateTest_<id>.jpg` (folders named by emotion in lower case; the split is the
   file-name prefix, whichever folder the file is in). Hidden files are ignored; any other name is
   an error.

CSV columns are found by name (stripped of spaces), in any order; values are stripped too; CRLF or
LF line ends, a trailing newline or none, quoted fields all read. `pixels` must be exactly 2,304
integers 0..255 (48x48 grayscale, row-major); a CSV face's pixels travel in
`FaceAnnotation.image` and its `path` is `<csv name>:<line>`.

Labels: `emotion`, a class label in FER2013's own index order: 0 angry, 1 disgust, 2 fear,
3 happy, 4 sad, 5 surprise, 6 neutral (the image folders are mapped to these indices).
Splits: `train` and `val` (a seeded `val_fraction` split of the Training rows, as MTFL's),
`public_test` (PublicTest), `private_test` (PrivateTest); Kaggle's form: `train`, `val`, `test`.

The images are already 48x48 grayscale face crops: no detection (`cropped`); the converter stores
them as PNG by default, so numbers given in a CSV are kept exactly and every form of the same data
gives the same stored images. The default crop `bknet_48_gray` (BKNet's 48x48 gray input) keeps
every pixel.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from kerasface.data import DATASETS, DatasetSpec, FaceAnnotation
from kerasface.data.common import NO_LANDMARKS, FormatError, find_root, finish_demo, seeded_split

ENV_VAR = "KERASFACE_FER2013"
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
LABELS = {"emotion": EMOTIONS}
SIZE = 48
USAGES = {"Training": "train", "PublicTest": "public_test", "PrivateTest": "private_test"}
# form -> the CSV files it reads and the columns each must have
CSV_FORMS = {
    "fer2013.csv": {"fer2013.csv": ("emotion", "pixels", "Usage")},
    "icml_face_data.csv": {"icml_face_data.csv": ("emotion", "pixels", "Usage")},
    "kaggle": {"train.csv": ("emotion", "pixels"), "test.csv": ("pixels",)},
}
FOLDER_FILE = re.compile(r"(Training|PublicTest|PrivateTest)_(\d+)\.(jpe?g|png)", re.IGNORECASE)


class FER2013FormatError(FormatError):
    """A FER2013 file (or an image-folder entry) does not have the expected form."""


def find_form(root: Path) -> str | None:
    """Which form of FER2013 `root` holds ("fer2013.csv", "icml_face_data.csv", "kaggle",
    "folders"), or None."""
    for form in ("fer2013.csv", "icml_face_data.csv"):
        if (root / form).is_file():
            return form
    if (root / "train.csv").is_file():
        return "kaggle"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "folders"
    return None


def resolve_root(root: str | os.PathLike | None) -> Path:
    return find_root(root, ENV_VAR, "FER2013", lambda p: p if find_form(p) else None,
                     "fer2013.csv, icml_face_data.csv, train.csv (+ test.csv) or the folders train/ and "
                     "test/ there", demo=True)


def parse_pixels(text: str, where: str) -> np.ndarray:
    """2,304 space-separated integers 0..255 -> uint8 (48, 48)."""
    digits = text.replace(" ", "")
    if digits.isascii() and digits.isdigit():  # the fast path: digits and spaces only
        values = np.fromstring(text, dtype=np.int64, sep=" ")
    else:
        fields = text.split()
        bad = next((v for v in fields if not (v.isascii() and v.isdigit())), None)
        if bad is not None:
            raise FER2013FormatError(f"{where}: pixels must be integers 0..255, got {bad!r}")
        values = np.array(fields, np.int64)
    if values.size != SIZE * SIZE:
        raise FER2013FormatError(f"{where}: expected {SIZE * SIZE} pixel values (48x48), got {values.size}")
    if values.max() > 255:
        raise FER2013FormatError(f"{where}: pixels must be integers 0..255, got {int(values.max())}")
    return values.astype(np.uint8).reshape(SIZE, SIZE)


def parse_emotion(text: str, where: str) -> int:
    if not (text.isdigit() and int(text) < len(EMOTIONS)):
        raise FER2013FormatError(f"{where}: emotion must be an integer in 0..{len(EMOTIONS) - 1}, got {text!r}")
    return int(text)


def read_csv(path: str | os.PathLike, columns: tuple[str, ...]) -> dict[str, list[FaceAnnotation]]:
    """One FER2013 CSV -> faces per Usage ("Training", ...; a file without a Usage column: its
    name's split, "Training" for train.csv and "Test" for test.csv). Blank lines are skipped; a
    malformed line raises FER2013FormatError naming `file:line`."""
    path = Path(path)
    faces: dict[str, list[FaceAnnotation]] = {}
    default_usage = "Test" if path.name == "test.csv" else "Training"
    with open(path, "r", encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle)
        header = [name.strip() for name in next(rows, [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise FER2013FormatError(f"{path}:1: expected a header with the columns {', '.join(columns)}, "
                                     f"got {','.join(header) or 'an empty line'}")
        at = {name: header.index(name) for name in columns}
        for row in rows:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            where = f"{path}:{rows.line_num}"
            if len(row) != len(header):
                raise FER2013FormatError(f"{where}: expected {len(header)} field{'s' * (len(header) > 1)} "
                                         f"({', '.join(header)}), got {len(row)}")
            usage = row[at["Usage"]].strip() if "Usage" in at else default_usage
            if "Usage" in at and usage not in USAGES:
                raise FER2013FormatError(f"{where}: Usage must be one of {', '.join(USAGES)}, got {usage!r}")
            emotion = parse_emotion(row[at["emotion"]].strip(), where) if "emotion" in at else -1
            image = parse_pixels(row[at["pixels"]].strip(), where)
            faces.setdefault(usage, []).append(
                FaceAnnotation(f"{path.name}:{rows.line_num}", NO_LANDMARKS, {"emotion": emotion}, rows.line_num,
                               image))
    return faces


def read_folders(root: str | os.PathLike) -> dict[str, list[FaceAnnotation]]:
    """The image-folder release -> faces per Usage (the file-name prefix), sorted by path."""
    root = Path(root)
    faces: dict[str, list[FaceAnnotation]] = {}
    for top in ("train", "test"):
        for folder in sorted((root / top).iterdir()):
            if folder.name.startswith("."):
                continue
            if not folder.is_dir() or folder.name not in EMOTIONS:
                raise FER2013FormatError(f"{folder}: expected an emotion folder ({', '.join(EMOTIONS)})")
            for file in sorted(folder.iterdir()):
                if file.name.startswith("."):
                    continue
                match = FOLDER_FILE.fullmatch(file.name)
                if not match or not file.is_file():
                    raise FER2013FormatError(f"{file}: expected an image named Training_<id>.jpg, "
                                             f"PublicTest_<id>.jpg or PrivateTest_<id>.jpg")
                faces.setdefault(match.group(1), []).append(
                    FaceAnnotation(file.relative_to(root).as_posix(), NO_LANDMARKS,
                                   {"emotion": EMOTIONS.index(folder.name)}))
    return faces


def read_splits(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> dict[str, list[FaceAnnotation]]:
    root = Path(root)
    form = find_form(root)
    if form is None:
        resolve_root(root)  # raises, saying what was expected
    if form == "folders":
        by_usage = read_folders(root)
    else:
        by_usage = {}
        for name, columns in CSV_FORMS[form].items():
            if (root / name).is_file():
                by_usage.update(read_csv(root / name, columns))
    train, val, _ = seeded_split(by_usage.get("Training", []), val_fraction, seed)
    splits = {"train": train, "val": val}
    if form == "kaggle":
        if "Test" in by_usage:
            splits["test"] = by_usage["Test"]
    else:
        splits["public_test"] = by_usage.get("PublicTest", [])
        splits["private_test"] = by_usage.get("PrivateTest", [])
    return splits


def source_files(root: Path) -> list[Path]:
    """The CSV files of a CSV form (hashed into the manifest); the image-folder form has none."""
    form = find_form(Path(root))
    if form in (None, "folders"):
        return []
    return [Path(root) / name for name in CSV_FORMS[form] if (Path(root) / name).is_file()]


# ----------------------------------------------------------------------------- demo


def write_demo(root: str | os.PathLike, seed: int = 0, per_emotion: tuple[int, int, int] = (36, 8, 8)) -> Path:
    """A SYNTHETIC FER2013 in the original CSV form (`fer2013.csv`, header emotion,pixels,Usage, LF
    ends): `per_emotion` = (Training, PublicTest, PrivateTest) faces of each of the 7 emotions,
    drawn by kerasface.data.synthetic.render_face with that expression (brows, eyes, mouth), nearly
    frontal, at 96x96 and area-averaged to 48x48 grayscale. Not real faces (DEMO_README.txt)."""
    from PIL import Image

    from kerasface.data.synthetic import render_face

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    plan = [(usage, emotion) for usage, count in zip(USAGES, per_emotion)
            for emotion in range(len(EMOTIONS)) for _ in range(count)]
    order = rng.permutation(len(plan))  # the real file's rows are not grouped by emotion
    lines = ["emotion,pixels,Usage"]
    for (usage, emotion), face_rng in zip([plan[i] for i in order], rng.spawn(len(plan))):
        image, _, _ = render_face(face_rng, (96, 96), iod=face_rng.uniform(30, 36),
                                  nose=(48 + face_rng.uniform(-3, 3), 52 + face_rng.uniform(-3, 3)),
                                  yaw=face_rng.uniform(-10, 10), roll=face_rng.uniform(-6, 6),
                                  expression=EMOTIONS[emotion])
        gray = np.asarray(Image.fromarray(image).convert("L").resize((SIZE, SIZE), Image.BOX))
        lines.append(f"{emotion},{' '.join(map(str, gray.ravel().tolist()))},{usage}")
    return finish_demo(root, "fer2013.csv", lines, "kerasface.data.fer2013.write_demo", seed,
                       "cartoon faces with the seven FER2013 expressions, in the original fer2013.csv format")


DATASETS.register("fer2013")(
    DatasetSpec(
        name="fer2013",
        env_var=ENV_VAR,
        labels=LABELS,
        resolve_root=resolve_root,
        read_splits=read_splits,
        source_files=source_files,
        write_demo=write_demo,
        cropped=True,
        default_crop="bknet_48_gray",
        default_image_format="png",
    )
)
