"""IMDB-WIKI (Rothe et al., 2015): `imdb_crop/imdb.mat` and `wiki_crop/wiki.mat`, registered as the
datasets `imdb` and `wiki`.

Each .mat holds one variable (`imdb` / `wiki`), a 1x1 struct whose fields are 1xN arrays, read
with `scipy.io.loadmat(p)[db][0, 0][field][0]`: `dob` (MATLAB datenum of the birth date),
`photo_taken` (year), `full_path` (cell of paths relative to the .mat's folder), `gender` (0 female,
1 male, NaN unknown), `face_score` (-inf: no face found), `second_face_score` (NaN: no second face),
and `name`, `face_location` (imdb adds `celeb_names`, `celeb_id`), which are not used.

Age = photo year minus birth year, less one if born in July or later (the birth date is
`datetime.fromordinal(int(dob) - 366)`). The usual filter keeps an entry only when face_score >= 1,
second_face_score is NaN, 0 <= age <= 100 and gender is known; a birth date that is no date (a
datenum below 367) fails the age test. Entries that fail are not read (they are not counted as
skipped images); a field of the wrong shape, a path that is not a string or a gender other than
0, 1 or NaN is an error naming the file and the entry (1-based, as MATLAB counts).

Root: the folder holding the .mat (wiki_crop/, with the numbered image folders), or the folder
above it. Labels: `gender`, a class label with MTFL's names and order ("male", "female"), so the
two are one label: index = 1 - the file's code; `age`, a value label (years).
Splits (the dataset has none): one seeded permutation; its first 12% is `test` (BKNet's sizes:
Wiki 30,000 train / ~4,200 test, IMDB 150,000 / ~20,000), then `val_fraction` of the rest is `val`,
the others `train`. The images are crops with a margin around the face, of any size: the
converter detects the face in each (MTCNN).
"""

from __future__ import annotations

import math
import os
from datetime import date
from pathlib import Path

import numpy as np

from kerasface.data import DATASETS, DatasetSpec, FaceAnnotation
from kerasface.data.common import NO_LANDMARKS, FormatError, find_root, seeded_split

ENV_VARS = {"imdb": "KERASFACE_IMDB", "wiki": "KERASFACE_WIKI"}
# (a value label in its JSON form: kerasface.data.tfrecord, which imports TensorFlow, stays unloaded)
LABELS = {"gender": ("male", "female"), "age": {"type": "value", "names": ("age",)}}
FIELDS = ("dob", "photo_taken", "full_path", "gender", "face_score", "second_face_score")
TEST_FRACTION = 0.12
MIN_FACE_SCORE = 1.0
AGES = (0, 100)


class IMDBWikiFormatError(FormatError):
    """An IMDB-WIKI .mat file does not have the expected structure."""


def age_at_photo(dob: float, photo_taken: float) -> int | None:
    """Photo year minus birth year, less one if born in July or later; None without a valid date."""
    if not (math.isfinite(dob) and math.isfinite(photo_taken)) or int(dob) - 366 < 1:
        return None
    try:
        born = date.fromordinal(int(dob) - 366)
    except (ValueError, OverflowError):
        return None
    return int(photo_taken) - born.year - (1 if born.month >= 7 else 0)


def _fields(path: Path, db: str) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as exc:  # noqa: BLE001  (a file that is no .mat: MatReadError, ValueError, IndexError, ...)
        raise IMDBWikiFormatError(f"{path}: not a MATLAB .mat file scipy can read ({type(exc).__name__}: {exc})") from None
    if db not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise IMDBWikiFormatError(f"{path}: expected a variable {db!r}, found: {found}")
    struct = mat[db]
    if struct.dtype.names is None or struct.shape != (1, 1):
        raise IMDBWikiFormatError(f"{path}: expected {db} to be a 1x1 struct, got a {struct.dtype} array "
                                  f"of shape {struct.shape}")
    record = struct[0, 0]
    fields = {}
    for name in FIELDS:
        if name not in struct.dtype.names:
            raise IMDBWikiFormatError(f"{path}: {db} has no field {name!r} (fields: {', '.join(struct.dtype.names)})")
        value = record[name]
        if value.ndim != 2 or value.shape[0] != 1:
            raise IMDBWikiFormatError(f"{path}: expected {db}.{name} to be 1xN, got shape {value.shape}")
        fields[name] = value[0]
    counts = {name: len(value) for name, value in fields.items()}
    if len(set(counts.values())) != 1:
        raise IMDBWikiFormatError(f"{path}: expected every field to have one entry per face, got "
                                  + ", ".join(f"{db}.{k} {v}" for k, v in counts.items()))
    for name in FIELDS:
        if name != "full_path":
            try:
                fields[name] = fields[name].astype(np.float64)
            except (TypeError, ValueError):
                raise IMDBWikiFormatError(f"{path}: expected {db}.{name} to hold numbers") from None
    return fields


def _path_of(entry, where: str) -> str:
    value = entry[0] if isinstance(entry, np.ndarray) and entry.size == 1 else entry
    if not isinstance(value, str) or not value:
        raise IMDBWikiFormatError(f"{where}: expected full_path to be a non-empty string, got {entry!r}")
    return value


def read_mat(path: str | os.PathLike, db: str) -> list[FaceAnnotation]:
    """The entries of `db` (imdb or wiki) that pass the usual filter, as faces (line = entry, 1-based)."""
    path = Path(path)
    f = _fields(path, db)
    faces = []
    for i in range(len(f["full_path"])):
        where = f"{path}: entry {i + 1} of {db}"
        rel = _path_of(f["full_path"][i], where)
        gender = f["gender"][i]
        if not (np.isnan(gender) or gender in (0.0, 1.0)):
            raise IMDBWikiFormatError(f"{where}: gender must be 0, 1 or NaN, got {float(gender)!r}")
        age = age_at_photo(f["dob"][i], f["photo_taken"][i])
        keep = (f["face_score"][i] >= MIN_FACE_SCORE and np.isnan(f["second_face_score"][i])
                and not np.isnan(gender) and age is not None and AGES[0] <= age <= AGES[1])
        if keep:
            faces.append(FaceAnnotation(rel, NO_LANDMARKS, {"gender": 1 - int(gender), "age": (float(age),)}, i + 1))
    return faces


def _spec(db: str) -> DatasetSpec:
    mat = f"{db}.mat"

    def locate(candidate: Path) -> Path | None:
        return next((p for p in (candidate, candidate / f"{db}_crop") if (p / mat).is_file()), None)

    def resolve_root(root: str | os.PathLike | None) -> Path:
        return find_root(root, ENV_VARS[db], db.upper() if db == "imdb" else "Wiki", locate,
                         f"{mat} there (or in {db}_crop/ there) with the image folders beside it")

    def read_splits(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0):
        train, val, test = seeded_split(read_mat(Path(root) / mat, db), val_fraction, seed, TEST_FRACTION)
        return {"train": train, "val": val, "test": test}

    return DatasetSpec(name=db, env_var=ENV_VARS[db], labels=LABELS, resolve_root=resolve_root,
                       read_splits=read_splits, source_files=lambda root: [Path(root) / mat],
                       default_crop="bknet_48_gray")


for _db in ENV_VARS:
    DATASETS.register(_db)(_spec(_db))
