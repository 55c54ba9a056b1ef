"""GENKI-4K (MPLab, UC San Diego): `labels.txt` and `files/file0001.jpg ... file4000.jpg`.

Line N of `labels.txt` belongs to `files/fileNNNN.jpg` (four digits at least): `smile yaw pitch
roll`, smile 1 or 0, the head pose in radians, no header. The real file has LF ends and a trailing
newline; CRLF ends and blank lines at the end are read too, but a blank line before the last
label would shift every later line onto the wrong file, so it is an error, as is any line that is
not four numbers with smile 0 or 1.

Root: the folder holding labels.txt and files/, or the folder above it holding `genki4k/`.

Labels: `smile`, a class label with the names and order of MTFL's smile ("smiling",
"not_smiling"), so the two datasets' smile labels are one label: index = 1 - the file's code.
`pose`, a value label (yaw, pitch, roll) in radians as given.
Splits (GENKI-4K has none): one seeded permutation; its first 25% (1,000 of 4,000, the paper's
test size) is `test`, then `val_fraction` of the remaining 3,000 is `val` (600 at 0.2), the rest
`train` (2,400). The test split does not change with `val_fraction`.

The original images are whole photos: the converter detects the face (MTCNN). Copies made of face
crops (such as 64x64 third-party crops) are recognised automatically: when every listed image is at
most 64x64 pixels the dataset counts as cropped, and each image is stored whole at the crop
scheme's size and colour (`python -m kerasface.data.convert --cropped yes|no` overrides this).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from kerasface.data import DATASETS, DatasetSpec, FaceAnnotation
from kerasface.data.common import NO_LANDMARKS, FormatError, find_root, finish_demo, seeded_split

ENV_VAR = "KERASFACE_GENKI4K"
# (a value label in its JSON form: kerasface.data.tfrecord, which imports TensorFlow, stays unloaded)
LABELS = {"smile": ("smiling", "not_smiling"), "pose": {"type": "value", "names": ("yaw", "pitch", "roll")}}
TEST_FRACTION = 0.25
CROP_MAX_SIDE = 64  # images no larger than this are taken for face crops


class GENKI4KFormatError(FormatError):
    """A line of GENKI-4K's labels.txt does not have the expected form."""


def image_name(line_no: int) -> str:
    return f"files/file{line_no:04d}.jpg"


def parse_line(text: str, where: str) -> tuple[int, tuple[float, float, float]]:
    fields = text.split()
    if len(fields) != 4:
        raise GENKI4KFormatError(f"{where}: expected 4 fields (smile yaw pitch roll), got {len(fields)}")
    if fields[0] not in ("0", "1"):
        raise GENKI4KFormatError(f"{where}: smile must be 1 or 0, got {fields[0]!r}")
    try:
        angles = tuple(float(v) for v in fields[1:])
    except ValueError:
        raise GENKI4KFormatError(f"{where}: yaw, pitch and roll must be numbers (radians), got "
                                 f"{' '.join(fields[1:])!r}") from None
    if not all(math.isfinite(a) for a in angles):
        raise GENKI4KFormatError(f"{where}: yaw, pitch and roll must be finite numbers")
    return int(fields[0]), angles


def read_labels(path: str | os.PathLike) -> list[FaceAnnotation]:
    """labels.txt -> one face per line, line N naming files/fileNNNN.jpg."""
    path = Path(path)
    with open(path, "r", encoding="utf-8", newline="") as handle:
        lines = handle.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    faces = []
    for line_no, text in enumerate(lines, start=1):
        where = f"{path}:{line_no}"
        if not text.strip():
            raise GENKI4KFormatError(f"{where}: blank line: every line up to the last labels the file of "
                                     f"its number ({image_name(line_no)})")
        smile, angles = parse_line(text, where)
        faces.append(FaceAnnotation(image_name(line_no), NO_LANDMARKS, {"smile": 1 - smile, "pose": angles},
                                    line_no))
    return faces


def _locate(candidate: Path) -> Path | None:
    for folder in (candidate, candidate / "genki4k"):
        if (folder / "labels.txt").is_file():
            return folder
    return None


def resolve_root(root: str | os.PathLike | None) -> Path:
    return find_root(root, ENV_VAR, "GENKI-4K", _locate, "labels.txt and files/ there (or in genki4k/ there)",
                     demo=True)


def images_are_crops(root: str | os.PathLike) -> bool:
    """True when every image labels.txt names (that exists) is at most 64x64: a copy of face
    crops rather than the original photos. Reads only the image headers."""
    from PIL import Image

    root = Path(root)
    sizes = []
    for line_no in range(1, len(read_labels(root / "labels.txt")) + 1):
        path = root / image_name(line_no)
        try:
            with Image.open(path) as im:
                sizes.append(im.size)
        except (OSError, ValueError):  # missing or unreadable: the converter reports it
            continue
    return bool(sizes) and max(max(size) for size in sizes) <= CROP_MAX_SIDE


def read_splits(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> dict[str, list[FaceAnnotation]]:
    train, val, test = seeded_split(read_labels(Path(root) / "labels.txt"), val_fraction, seed, TEST_FRACTION)
    return {"train": train, "val": val, "test": test}


# ----------------------------------------------------------------------------- demo


def write_demo(root: str | os.PathLike, seed: int = 0, count: int = 400) -> Path:
    """A SYNTHETIC GENKI-4K: `count` 64x64 colour face crops framed like the third-party copy's (the
    face fills the image: eyes at about 36% of the height, the mouth at 78%), half of them smiling, drawn by kerasface.data.synthetic.render_face with the smile forced, and
    labels.txt lines `smile yaw pitch roll` in GENKI's format (LF ends, trailing newline). Yaw (within
    +-20 degrees; negative turns the face to the image left) and roll are the drawn head's, in
    radians; the renderer has no pitch, so pitch is 0. Not real faces
    (DEMO_README.txt)."""
    from PIL import Image

    from kerasface.data.synthetic import render_face

    root = Path(root)
    (root / "files").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    smiles = rng.permutation(np.arange(count) % 2)
    lines = []
    for line_no, (smile, face_rng) in enumerate(zip(smiles, rng.spawn(count)), start=1):
        image, _, info = render_face(face_rng, (64, 64), labels={"smile": 1 if smile else 2},
                                     iod=face_rng.uniform(23, 28), yaw=face_rng.uniform(-20, 20),
                                     nose=(32 + face_rng.uniform(-2, 2), 38 + face_rng.uniform(-2, 2)))
        path = root / image_name(line_no)
        Image.fromarray(image).save(path.with_suffix(".tmp"), format="JPEG", quality=90)
        os.replace(path.with_suffix(".tmp"), path)
        yaw, roll = math.radians(info["yaw_deg"]), math.radians(info["roll_deg"])
        lines.append(f"{int(smile)} {yaw:.6f} {0.0:.6f} {roll:.6f}")
    return finish_demo(root, "labels.txt", lines, "kerasface.data.genki4k.write_demo", seed,
                       "cartoon faces, smiling or not, as 64x64 crops in the GENKI-4K format")


DATASETS.register("genki4k")(
    DatasetSpec(
        name="genki4k",
        env_var=ENV_VAR,
        labels=LABELS,
        resolve_root=resolve_root,
        read_splits=read_splits,
        source_files=lambda root: [Path(root) / "labels.txt"],
        write_demo=write_demo,
        cropped=images_are_crops,
        default_crop="bknet_48_gray",
    )
)
