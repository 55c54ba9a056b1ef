"""A user's own labelled photos as a CSV (or TSV) table: `--dataset csv --root PATH/labels.csv`.

    image,smile,age,split
    photos/ann.jpg,smiling,31,train
    photos/bob.jpg,not_smiling,,test
    /data/extra/carl.png,smiling,45,

One header row, then one face per row. Columns are found by name (case-insensitive, spaces
around names and cells ignored); the delimiter is a comma, a tab (`.tsv`, or a header with tabs)
or a semicolon; a UTF-8 byte-order mark (Excel) is ignored.

- The image: the first column named image, path, file, filename, image_path or img; a path
  relative to the CSV's folder, or absolute.
- Optional face box: box_x, box_y, box_width, box_height (pixels). With a box, the detected face
  closest to it is taken (rule "box"), and box-based crop schemes frame it.
- Optional five landmarks: left_eye_x, left_eye_y, right_eye_x, right_eye_y, nose_x, nose_y,
  mouth_left_x, mouth_left_y, mouth_right_x, mouth_right_y (pixels, "left" = the image's left).
  With them the face is cropped from the points, without detection; a row with them empty is
  detected.
- Optional split: train, val (or validation) or test per row. Without the column: a seeded split
  (kerasface.data.own_data).
- Every other column is a label, and each label becomes a task named after the column. Text
  (or numbers, by default) become classes, sorted (kerasface.data.own_data.class_names), names
  kept in the manifest; the columns named by the reader option `regression` ("age" or
  "age,score") become regression targets (real values), and those named by `multilabel`
  ("ethnicity") multi-label targets: a cell lists the values that apply, separated by `|`
  (`white|south-asian`), the label's attribute names being every value of the column, sorted; a
  face gets 1 for the values its cell lists and 0 for the others. An empty cell is unknown:
  masked in the loss.

A row that cannot be used (a wrong number of fields, no image path, a box, landmark or
regression cell that is not a number, a multi-label cell with an empty value (`white||black`) or,
where the names are fixed (`read_table(names=...)`), an unknown one, an unknown split) is not
fatal: it comes back as an
unusable FaceAnnotation naming `labels.csv:LINE` and the reason, which the converter skips, counts
and lists (fatal under --strict). A header without an image column, or with some of the box or
landmark columns but not all, is a FormatError: the whole table is unusable.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasface.data import DATASETS, DatasetSpec, FaceAnnotation
from kerasface.data.common import NO_LANDMARKS, FormatError, find_root
from kerasface.data.own_data import assign_splits, class_names, label_name, split_name, unusable
from kerasface.faces.align import LANDMARK_NAMES

ENV_VAR = "KERASFACE_CSV"
LIST_NAMES = ("labels.csv", "labels.tsv")  # looked for when --root is a folder
IMAGE_COLUMNS = ("image", "path", "file", "filename", "image_path", "img")
BOX_COLUMNS = ("box_x", "box_y", "box_width", "box_height")
LANDMARK_COLUMNS = tuple(f"{point}_{axis}" for point in LANDMARK_NAMES for axis in "xy")
SPLIT_COLUMN = "split"
OPTIONS = {"regression": "label columns that are real values (regression targets), comma-separated, e.g. age",
           "multilabel": "label columns whose cells list several values separated by | (multi-label targets), "
                         "comma-separated, e.g. ethnicity"}
SEPARATOR = "|"  # between the values of a multi-label cell


class CSVFormatError(FormatError):
    """The header of a user's CSV does not say where the images are, or names half a box."""


@dataclass
class Table:
    """A parsed table: its labels (LabelSpec JSON forms), usable faces, each face's own split (or
    None), and the unusable rows with the split they name."""

    labels: dict = field(default_factory=dict)
    faces: list[FaceAnnotation] = field(default_factory=list)
    named: list[str | None] = field(default_factory=list)
    problems: list[tuple[FaceAnnotation, str | None]] = field(default_factory=list)


def _delimiter(path: Path, header: str) -> str:
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    counts = {d: header.count(d) for d in (",", "\t", ";")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _numbers(cells: list[str], what: str) -> tuple[np.ndarray | None, str]:
    """All empty -> (None, ""); all numbers -> (array, ""); else (None, the reason)."""
    if all(c == "" for c in cells):
        return None, ""
    try:
        values = np.array([float(c) for c in cells], np.float32)
    except ValueError:
        return None, f"{what} must be numbers, got {', '.join(repr(c) for c in cells)}"
    if not np.isfinite(values).all():
        return None, f"{what} must be finite numbers"
    return values, ""


def _columns(header: list[str], where: str) -> tuple[int, list[int] | None, list[int] | None, int | None, dict]:
    """(image column, box columns, landmark columns, split column, {label name: column})."""
    lower = [name.lower() for name in header]
    image = next((lower.index(c) for c in IMAGE_COLUMNS if c in lower), None)
    if image is None:
        raise CSVFormatError(f"{where}: expected a header with an image column ({', '.join(IMAGE_COLUMNS)}), "
                             f"got {','.join(header) or 'an empty line'}")
    groups = []
    for names, what in ((BOX_COLUMNS, "face box"), (LANDMARK_COLUMNS, "landmark")):
        present = [c for c in names if c in lower]
        if present and len(present) != len(names):
            missing = [c for c in names if c not in lower]
            raise CSVFormatError(f"{where}: {what} columns must all be there ({', '.join(names)}); "
                                 f"missing {', '.join(missing)}")
        groups.append([lower.index(c) for c in names] if present else None)
    split = lower.index(SPLIT_COLUMN) if SPLIT_COLUMN in lower else None
    used = {image, split, *(groups[0] or ()), *(groups[1] or ())}
    labels: dict[str, int] = {}
    for i, name in enumerate(header):
        if i in used or lower[i] in IMAGE_COLUMNS:
            continue
        try:
            key = label_name(name)
        except ValueError as exc:
            raise CSVFormatError(f"{where}: column {i + 1}: {exc}") from None
        if key in labels:
            raise CSVFormatError(f"{where}: two columns name the label {key!r}")
        labels[key] = i
    if not labels:
        raise CSVFormatError(f"{where}: no label columns: every column but the image, box, landmark and split "
                             f"ones is a label, e.g. image,smile")
    return image, groups[0], groups[1], split, labels


def _option_columns(option: str, given: str, label_cols: dict, where: str) -> list[str]:
    """The label columns a reader option names ("age,score"), each checked against the header."""
    names = [label_name(n) for n in given.split(",") if n.strip()] if given else []
    for name in names:
        if name not in label_cols:
            raise CSVFormatError(f"{where}: --{option} {name}: no label column {name!r} "
                                 f"(label columns: {', '.join(label_cols)})")
    return names


def _values(cell: str) -> list[str]:
    """The values a multi-label cell lists ("" for an empty one between separators)."""
    return [value.strip() for value in cell.split(SEPARATOR)]


def read_table(path: str | os.PathLike, regression: str = "", multilabel: str = "",
               names: dict[str, tuple[str, ...]] | None = None) -> Table:
    """Parse the CSV at `path` (see the module docstring). `names`: fixed attribute names of
    multi-label columns (a dataset whose head has a known width: flickr_depth's ethnicity), where
    a value outside them makes the row unusable; other columns take the values they hold."""
    path = Path(path)
    with open(path, "r", encoding="utf-8-sig", newline="") as handle:
        text = handle.read()
    first = text.splitlines()[0] if text else ""
    rows = csv.reader(text.splitlines(), delimiter=_delimiter(path, first))
    header = [name.strip() for name in next(rows, [])]
    image_col, box_cols, point_cols, split_col, label_cols = _columns(header, f"{path}:1")
    wanted = _option_columns("regression", regression, label_cols, f"{path}:1")
    several = _option_columns("multilabel", multilabel, label_cols, f"{path}:1")
    if set(wanted) & set(several):
        raise CSVFormatError(f"{path}:1: {', '.join(sorted(set(wanted) & set(several)))}: named by both "
                             f"--regression and --multilabel")
    table = Table()
    parsed = []  # (line, where, cells, split) of the rows whose layout is right
    for row in rows:
        line = rows.line_num
        where = f"{path.name}:{line}"
        if not row or all(not cell.strip() for cell in row):
            continue  # blank lines (and a trailing one) are not rows
        cells = [cell.strip() for cell in row]
        split = split_name(cells[split_col]) if split_col is not None and len(cells) == len(header) else None
        if len(cells) != len(header):
            table.problems.append((unusable(where, f"expected {len(header)} fields ({','.join(header)}), "
                                                   f"got {len(cells)}"), None))
        elif not cells[image_col]:
            table.problems.append((unusable(where, "no image path"), split))
        elif split_col is not None and cells[split_col] and split is None:
            table.problems.append((unusable(where, f"split must be train, val or test, got {cells[split_col]!r}",
                                            cells[image_col]), None))
        else:
            parsed.append((line, where, cells, split))
    classes = {key: class_names(cells[col] for _, _, cells, _ in parsed)
               for key, col in label_cols.items() if key not in wanted and key not in several}
    attributes = {key: tuple((names or {}).get(key) or
                             class_names(v for _, _, cells, _ in parsed for v in _values(cells[label_cols[key]])))
                  for key in several}
    table.labels = {key: ({"type": "value", "names": (key,)} if key in wanted else
                          {"type": "multilabel", "names": attributes[key]} if key in several else classes[key])
                    for key in label_cols}
    for line, where, cells, split in parsed:
        image = cells[image_col].replace("\\", "/")
        box, reason = _numbers([cells[i] for i in box_cols], "box_x, box_y, box_width, box_height") \
            if box_cols else (None, "")
        points, reason = (_numbers([cells[i] for i in point_cols], "landmarks") if point_cols and not reason
                          else (None, reason))
        labels = {}
        for key, col in label_cols.items():
            if key in wanted:
                value = float("nan") if cells[col] == "" else _float(cells[col])
                if value is None:
                    reason = reason or f"{key} must be a number (it is a regression target), got {cells[col]!r}"
                labels[key] = (value,)
            elif key in several:
                listed = set(_values(cells[col])) if cells[col] else set()
                unknown = sorted(listed - set(attributes[key]))
                if "" in listed:
                    reason = reason or (f"{key}: an empty value in {cells[col]!r} (values are separated by "
                                        f"{SEPARATOR}, e.g. white{SEPARATOR}south-asian)")
                elif unknown:
                    reason = reason or (f"{key}: {', '.join(map(repr, unknown))} is not one of "
                                        f"{', '.join(attributes[key])}")
                # all -1 when the cell is empty: unknown, masked in the loss
                labels[key] = tuple((int(n in listed) if listed else -1) for n in attributes[key])
            else:
                labels[key] = classes[key].index(cells[col]) if cells[col] else -1
        if box is not None and (box[2] <= 0 or box[3] <= 0):
            reason = reason or "box_width and box_height must be positive"
        if reason:
            table.problems.append((unusable(where, reason, image), split))
            continue
        table.faces.append(FaceAnnotation(
            image, NO_LANDMARKS if points is None else points.reshape(5, 2), labels, line,
            box=None if box is None else tuple(float(v) for v in box), listed_at=where))
        table.named.append(split)
    if split_col is not None and table.faces and not all(table.named):
        # a split column with empty cells: those faces would silently join train; say so instead
        for i, face in enumerate(table.faces):
            if table.named[i] is None:
                table.problems.append((unusable(face.listed_at, "no split given (the table has a split column)",
                                                face.path), None))
        keep = [i for i, split in enumerate(table.named) if split]
        table.faces, table.named = [table.faces[i] for i in keep], [table.named[i] for i in keep]
    return table


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _locate(candidate: Path) -> Path | None:
    if candidate.is_file():
        return candidate
    return next((candidate / name for name in LIST_NAMES if (candidate / name).is_file()), None)


def resolve_root(root: str | os.PathLike | None, env_var: str = ENV_VAR, what: str = "CSV table") -> Path:
    """The table from `root` or $env_var (a dataset in this format with its own variable passes it)."""
    return find_root(root, env_var, what, _locate, f"a CSV/TSV file, or a folder holding {' or '.join(LIST_NAMES)}")


def labels_of(root: Path, options: dict) -> dict:
    return read_table(root, **options).labels


def read_splits(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0, regression: str = "",
                multilabel: str = "", names: dict[str, tuple[str, ...]] | None = None) -> dict[str, list[FaceAnnotation]]:
    table = read_table(root, regression, multilabel, names)
    return assign_splits(table.faces, table.named, val_fraction, seed, table.problems)


DATASETS.register("csv")(
    DatasetSpec(
        name="csv",
        env_var=ENV_VAR,
        labels={},
        resolve_root=resolve_root,
        read_splits=read_splits,
        source_files=lambda root: [Path(root)],
        default_crop="vggface_224",
        labels_of=labels_of,
        options=OPTIONS,
    )
)
