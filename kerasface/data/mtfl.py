"""MTFL (Zhang et al., ECCV 2014) list-file reader.

Parses `training.txt` / `testing.txt` exactly as distributed: CRLF line ends, a leading space on
every line but the first, a last line holding one space, backslash paths in training.txt, labels
coded 1/2 (pose 1..5) and landmarks as five x values followed by five y values.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerasface.data import DATASETS, DatasetSpec, FaceAnnotation
from kerasface.data.common import seeded_split

ENV_VAR = "KERASFACE_MTFL"
LIST_FILES = {"train": "training.txt", "test": "testing.txt"}

# Label names per attribute, in the dataset's own code order: index = code - 1.
LABELS: dict[str, tuple[str, ...]] = {
    "gender": ("male", "female"),
    "smile": ("smiling", "not_smiling"),
    "glasses": ("glasses", "no_glasses"),
    "pose": ("left_profile", "left", "frontal", "right", "right_profile"),
}
ATTRIBUTES = tuple(LABELS)


class MTFLFormatError(ValueError):
    """A line of an MTFL list file does not have the expected fields."""


def parse_line(text: str, source: str, line_no: int) -> FaceAnnotation | None:
    """Parse one list-file line; blank lines (the file's last one is a single space) give None."""
    fields = text.split()
    if not fields:
        return None
    where = f"{source}:{line_no}"
    if len(fields) != 15:
        raise MTFLFormatError(
            f"{where}: expected 15 fields (path, x1..x5, y1..y5, gender, smile, glasses, pose), got {len(fields)}"
        )
    try:
        coords = np.array([float(v) for v in fields[1:11]], np.float32)
    except ValueError:
        raise MTFLFormatError(f"{where}: expected 10 numeric landmark coordinates in fields 2-11") from None
    if not np.all(np.isfinite(coords)):
        raise MTFLFormatError(f"{where}: landmark coordinates must be finite numbers")
    labels: dict[str, int] = {}
    for name, raw in zip(ATTRIBUTES, fields[11:15]):
        top = len(LABELS[name])
        if not raw.isdigit() or not 1 <= int(raw) <= top:
            raise MTFLFormatError(f"{where}: {name} must be an integer in 1..{top}, got {raw!r}")
        labels[name] = int(raw) - 1
    landmarks = np.stack([coords[:5], coords[5:]], axis=1)  # five x values, then five y values
    return FaceAnnotation(fields[0].replace("\\", "/"), landmarks, labels, line_no)


def read_list(path: str | os.PathLike) -> list[FaceAnnotation]:
    """Read a whole list file; a malformed line raises MTFLFormatError naming `file:line`."""
    path = Path(path)
    faces = []
    with open(path, "r", encoding="utf-8", newline="") as handle:
        for line_no, text in enumerate(handle, start=1):
            face = parse_line(text, str(path), line_no)
            if face is not None:
                faces.append(face)
    return faces


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The MTFL folder from an explicit path or $KERASFACE_MTFL; a clear error when absent."""
    candidate = str(root) if root else os.environ.get(ENV_VAR, "")
    if candidate and (Path(candidate) / LIST_FILES["train"]).is_file():
        return Path(candidate)
    looked = candidate or f"(no --data/--root given and ${ENV_VAR} is not set)"
    raise FileNotFoundError(
        f"MTFL not found at {looked}: expected training.txt and testing.txt there. "
        f"Point --data (or ${ENV_VAR}) at your MTFL folder, or add --demo to run on the built-in demo data."
    )


def split_train_val(faces: list[FaceAnnotation], val_fraction: float, seed: int) -> tuple[list[FaceAnnotation], list[FaceAnnotation]]:
    """The seeded train/validation split of training.txt (the paper's 80/20)."""
    train, val, _ = seeded_split(faces, val_fraction, seed)
    return train, val


def read_splits(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> dict[str, list[FaceAnnotation]]:
    root = Path(root)
    train, val = split_train_val(read_list(root / LIST_FILES["train"]), val_fraction, seed)
    return {"train": train, "val": val, "test": read_list(root / LIST_FILES["test"])}


DATASETS.register("mtfl")(
    DatasetSpec(
        name="mtfl",
        env_var=ENV_VAR,
        labels=LABELS,
        resolve_root=resolve_root,
        read_splits=read_splits,
        source_files=lambda root: [Path(root) / name for name in LIST_FILES.values()],
        flip_permutations={"pose": (4, 3, 2, 1, 0)},
        write_demo=lambda root, seed: _write_demo(root, seed),
    )
)


def _write_demo(root: Path, seed: int) -> None:
    from kerasface.data.synthetic import write_demo_mtfl

    write_demo_mtfl(root, num_train=2000, num_test=400, seed=seed)
