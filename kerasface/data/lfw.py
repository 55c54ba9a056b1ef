"""Labeled Faces in the Wild (Huang et al., 2007): 13,233 photos of 5,749 people, and the pairs
protocol of face verification.

Files (DATA_FORMATS.md, LFW verification):
    ROOT/pairs.txt                 header `10\\t300` (folds, pairs per class per fold), then per fold
                                   300 matched lines `name\\tn1\\tn2` and 300 mismatched lines
                                   `name1\\tn1\\tname2\\tn2` (told apart by their field count)
    ROOT/people.txt                optional: a count line, then `name\\tcount` lines; or the number
                                   of folds, then per fold a count line and its `name\\tcount` lines
    ROOT/lfw/<name>/<name>_NNNN.jpg   the images (NNNN 4-digit, 1-based); the images may also lie
                                   directly in ROOT (ROOT/<name>/<name>_NNNN.jpg)
Fields are tab-separated (any whitespace is accepted), ends CRLF or LF, blank lines ignored. The
dev files (pairsDevTrain.txt: a one-number header, one fold) read the same way. A malformed line,
a count that does not match, or lines missing or left over raise LFWFormatError naming file:line.

As a dataset for the converter (`--dataset lfw`): every image under the image folder, label
`identity` (type "identity", the sorted person names), all in the "test" split: LFW is an
evaluation set. Its 250x250 photos are detected and aligned (not crops). The verification
protocol is `python -m kerasface.verify` (kerasface.verify).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerasface.data import DATASETS, DatasetSpec, FaceAnnotation
from kerasface.data.common import NO_LANDMARKS, FormatError, find_root
from kerasface.data.identity_folders import identity_label, save_jpeg

ENV_VAR = "KERASFACE_LFW"
PAIRS, PEOPLE, IMAGES = "pairs.txt", "people.txt", "lfw"
LABEL = "identity"
PEOPLE_COUNT = 5749
# before a copy is read (config checks); a copy's names and count come from its folders (labels_of)
LABELS = {LABEL: {"type": "identity", "count": PEOPLE_COUNT}}
_IMAGE_NAME = re.compile(r"^(?P<name>.+)_(?P<number>\d{4})\.jpg$")


class LFWFormatError(FormatError):
    """A line of pairs.txt or people.txt does not have the expected form."""


@dataclass(frozen=True)
class Pair:
    """One pair of the protocol: image n1 of name1 and image n2 of name2 (1-based numbers)."""

    name1: str
    n1: int
    name2: str
    n2: int
    line: int = 0  # 1-based line in pairs.txt

    @property
    def same(self) -> bool:
        return self.name1 == self.name2

    @property
    def images(self) -> tuple[str, str]:
        """The two image paths relative to the image folder: name/name_NNNN.jpg."""
        return image_path(self.name1, self.n1), image_path(self.name2, self.n2)


def image_path(name: str, number: int) -> str:
    return f"{name}/{name}_{number:04d}.jpg"


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, fields) of the non-blank lines; CRLF or LF."""
    with open(path, "r", encoding="utf-8", newline="") as handle:
        text = handle.read()
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _count(field: str, where: str, what: str) -> int:
    if not field.isdigit() or int(field) < 1:
        raise LFWFormatError(f"{where}: expected {what} (a whole number >= 1), got {field!r}")
    return int(field)


def read_pairs(path: str | os.PathLike) -> list[list[Pair]]:
    """pairs.txt -> one list of pairs per fold, each fold its matched pairs then its mismatched ones."""
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise LFWFormatError(f"{path}:1: empty file; expected the header 'folds<TAB>pairs per fold' (e.g. 10\t300)")
    header_no, header = lines[0]
    where = f"{path}:{header_no}"
    if len(header) == 2:
        folds, per_class = _count(header[0], where, "the number of folds"), _count(header[1], where, "the pairs per class")
    elif len(header) == 1:  # pairsDevTrain.txt / pairsDevTest.txt: one fold
        folds, per_class = 1, _count(header[0], where, "the pairs per class")
    else:
        raise LFWFormatError(f"{where}: expected the header 'folds<TAB>pairs per fold' (e.g. 10\t300), "
                             f"got {len(header)} fields")
    rows = lines[1:]
    expected = folds * 2 * per_class
    out: list[list[Pair]] = []
    for k in range(folds):
        fold = []
        for j in range(2 * per_class):
            at = k * 2 * per_class + j
            if at >= len(rows):
                last = lines[-1][0]
                raise LFWFormatError(f"{path}:{last + 1}: the file ends after {len(rows)} pairs; the header "
                                     f"({header_no}) says {folds} folds of {per_class} matched and {per_class} "
                                     f"mismatched pairs = {expected}")
            line_no, fields = rows[at]
            where = f"{path}:{line_no}"
            matched = j < per_class
            place = f"{'matched' if matched else 'mismatched'} pair {j % per_class + 1} of fold {k + 1}"
            if matched and len(fields) != 3:
                raise LFWFormatError(f"{where}: expected a matched pair 'name<TAB>n1<TAB>n2' ({place}), "
                                     f"got {len(fields)} fields")
            if not matched and len(fields) != 4:
                raise LFWFormatError(f"{where}: expected a mismatched pair 'name1<TAB>n1<TAB>name2<TAB>n2' "
                                     f"({place}), got {len(fields)} fields")
            if matched:
                name1, n1, n2 = fields
                name2 = name1
            else:
                name1, n1, name2, n2 = fields
                if name1 == name2:
                    raise LFWFormatError(f"{where}: a mismatched pair names one person twice ({name1}) ({place})")
            fold.append(Pair(name1, _count(n1, where, "an image number"), name2, _count(n2, where, "an image number"),
                             line_no))
        out.append(fold)
    if len(rows) > expected:
        raise LFWFormatError(f"{path}:{rows[expected][0]}: more lines than the header ({header_no}) says: "
                             f"{folds} folds x {2 * per_class} pairs = {expected}, found {len(rows)}")
    return out


def read_people(path: str | os.PathLike) -> list[list[tuple[str, int]]]:
    """people.txt -> one list of (name, image count) per fold (one fold when the file has none)."""
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise LFWFormatError(f"{path}:1: empty file; expected a count on the first line")
    first_no, first = lines[0]
    if len(first) != 1:
        raise LFWFormatError(f"{path}:{first_no}: expected a count (people, or folds) alone on the first line, "
                             f"got {len(first)} fields")
    number = _count(first[0], f"{path}:{first_no}", "a count")
    folded = len(lines) > 1 and len(lines[1][1]) == 1
    folds, at = [], 1
    for k in range(number if folded else 1):
        if folded:
            if at >= len(lines):
                raise LFWFormatError(f"{path}:{lines[-1][0] + 1}: the file ends before fold {k + 1} of {number}")
            count_no, fields = lines[at]
            if len(fields) != 1:
                raise LFWFormatError(f"{path}:{count_no}: expected the number of people of fold {k + 1}, "
                                     f"got {len(fields)} fields")
            count, at = _count(fields[0], f"{path}:{count_no}", f"the number of people of fold {k + 1}"), at + 1
        else:
            count = number
        fold = []
        for _ in range(count):
            if at >= len(lines):
                raise LFWFormatError(f"{path}:{lines[-1][0] + 1}: the file ends after {len(fold)} of the "
                                     f"{count} people{f' of fold {k + 1}' if folded else ''}")
            line_no, fields = lines[at]
            at += 1
            if len(fields) != 2:
                raise LFWFormatError(f"{path}:{line_no}: expected 'name<TAB>count', got {len(fields)} fields")
            fold.append((fields[0], _count(fields[1], f"{path}:{line_no}", "an image count")))
        folds.append(fold)
    if at < len(lines):
        raise LFWFormatError(f"{path}:{lines[at][0]}: more lines than the counts say")
    return folds


def image_folder(root: str | os.PathLike) -> Path:
    """Where the person folders are: ROOT/lfw/ when it exists, else ROOT."""
    root = Path(root)
    return root / IMAGES if (root / IMAGES).is_dir() else root


def people_images(root: str | os.PathLike) -> dict[str, list[str]]:
    """person name -> their image paths relative to the image folder (name/name_NNNN.jpg), sorted."""
    folder = image_folder(root)
    people = {}
    for person in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(f"{person.name}/{f.name}" for f in person.iterdir()
                        if f.is_file() and (m := _IMAGE_NAME.match(f.name)) and m["name"] == person.name)
        if images:
            people[person.name] = images
    return people


def labels_of(root: Path, options: dict) -> dict:
    return {LABEL: identity_label(people_images(root))}


def read_splits(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> dict[str, list[FaceAnnotation]]:
    """{"test": every image}, labelled by the person's index among the sorted names."""
    root = Path(root)
    prefix = image_folder(root).relative_to(root).as_posix()
    faces = []
    for index, (name, images) in enumerate(people_images(root).items()):
        faces.extend(FaceAnnotation(f"{prefix}/{rel}" if prefix != "." else rel, NO_LANDMARKS, {LABEL: index})
                     for rel in images)
    return {"test": faces}


def _locate(candidate: Path) -> Path | None:
    for folder in (candidate, candidate / "LFW", candidate / "lfw"):
        if (folder / PAIRS).is_file() or (folder / IMAGES).is_dir():
            return folder
    return None


def resolve_root(root: str | os.PathLike | None) -> Path:
    return find_root(root, ENV_VAR, "LFW", _locate, f"{PAIRS} and the images in {IMAGES}/<name>/<name>_NNNN.jpg",
                     demo=True)


def source_files(root: Path) -> list[Path]:
    return [root / name for name in (PAIRS, PEOPLE) if (root / name).is_file()]


# ----------------------------------------------------------------------------- demo


def write_demo_lfw(root: str | os.PathLike, num_identities: int = 20, per_identity: int = 3, pairs_per_fold: int = 3,
                   size: int = 250, seed: int = 0, folds: int = 10) -> Path:
    """A SYNTHETIC LFW: `num_identities` people (Person_NNN), `per_identity` size x size photos each in
    lfw/<name>/<name>_NNNN.jpg (face near the centre, as LFW's 250x250 photos; yaw within +-30,
    varied roll, expression, light and background), pairs.txt with `folds` folds of
    `pairs_per_fold` matched and mismatched pairs, and people.txt with the same folds. As in LFW,
    the folds hold disjoint people (person i in fold i mod folds); needs at least 2 people per fold.
    Not real faces (DEMO_README.txt says so)."""
    from kerasface.data.common import finish_demo
    from kerasface.data.identity_folders import person_photo

    if num_identities < 2 * folds or per_identity < 2:
        raise ValueError(f"write_demo_lfw: needs at least {2 * folds} identities ({folds} folds x 2) and 2 photos "
                         f"each, got {num_identities} and {per_identity}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    people = rng.integers(0, 2**31, num_identities)
    names = [f"Person_{i + 1:03d}" for i in range(num_identities)]
    for name, person in zip(names, people):
        for n, photo_rng in enumerate(np.random.default_rng([seed, int(person)]).spawn(per_identity), start=1):
            jitter = photo_rng.uniform(-0.03, 0.03, 2) * size
            image, _, _ = person_photo(int(person), photo_rng, (size, size), iod=0.17 * size * photo_rng.uniform(0.9, 1.1),
                                       nose=(0.5 * size + jitter[0], 0.53 * size + jitter[1]))
            save_jpeg(root / IMAGES / image_path(name, n), image)
    members = [[names[i] for i in range(k, num_identities, folds)] for k in range(folds)]
    pairs = [f"{folds}\t{pairs_per_fold}"]
    for fold in members:
        for _ in range(pairs_per_fold):
            name = fold[int(rng.integers(len(fold)))]
            n1, n2 = sorted(rng.choice(per_identity, 2, replace=False) + 1)
            pairs.append(f"{name}\t{n1}\t{n2}")
        for _ in range(pairs_per_fold):
            a, b = rng.choice(len(fold), 2, replace=False)
            pairs.append(f"{fold[a]}\t{rng.integers(per_identity) + 1}\t{fold[b]}\t{rng.integers(per_identity) + 1}")
    people_lines = [str(folds)]
    for fold in members:
        people_lines += [str(len(fold))] + [f"{name}\t{per_identity}" for name in fold]
    tmp = root / (PEOPLE + ".tmp")
    tmp.write_bytes(("\n".join(people_lines) + "\n").encode("ascii"))
    os.replace(tmp, root / PEOPLE)
    return finish_demo(root, PAIRS, pairs, "kerasface.data.lfw.write_demo_lfw", seed,
                       "synthetic people, each under varied pose, expression and light, with LFW's pairs protocol")


DATASETS.register("lfw")(
    DatasetSpec(
        name="lfw",
        env_var=ENV_VAR,
        labels=LABELS,
        resolve_root=resolve_root,
        read_splits=read_splits,
        source_files=source_files,
        write_demo=lambda root, seed=0: write_demo_lfw(root, seed=seed),
        cropped=False,
        default_crop="vggface_224",
        labels_of=labels_of,
    )
)
