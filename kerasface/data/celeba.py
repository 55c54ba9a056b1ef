"""CelebA (Liu et al., ICCV 2015): 202,599 faces of 10,177 identities with 40 binary attributes.

Files, in the root or in its `Anno/` and `Eval/` folders (the release's layout):
    list_attr_celeba.txt              count line; the 40 names; `000001.jpg -1  1  1 -1 ...` (-1/1,
                                      padded by a variable number of spaces)
    list_landmarks_align_celeba.txt   count; header; `000001.jpg 69  109  106  113 ...` (x, y
                                      interleaved: left eye, right eye, nose, left and right mouth)
    list_landmarks_celeba.txt         the same for the in-the-wild images
    list_bbox_celeba.txt              count; `image_id x_1 y_1 width height`; the in-the-wild boxes
    list_eval_partition.txt           `000001.jpg 0`: 0 train, 1 val, 2 test (no count, no header)
    identity_CelebA.txt               `000001.jpg 2880`: the identity, 1-based (no count, no header)
Line ends may be CRLF or LF; fields are split on any whitespace. A malformed line, a count that
does not match the lines, or an image missing from one of the lists is an error naming file:line.

Images: `img_align_celeba/` (178x218, aligned; its landmarks list) when present, else `img_celeba/`
(the in-the-wild photos, with the wild landmarks and the boxes), in the root or in `Img/`.

Labels: `attributes`, one multilabel of the 40 names (1 = present, 0 = absent) for a sigmoid head;
`gender` (male, female) and `smile` (smiling, not_smiling) copied from Male and Smiling with the
class names of MTFL and FotW, so one-attribute models and the FotW step share them; `identity`
(0-based, 10,177 identities). Splits: the official list_eval_partition.txt (val_fraction is unused).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerasface.data import DATASETS, DatasetSpec, FaceAnnotation
from kerasface.data.common import FormatError, find_root, finish_demo

ENV_VAR = "KERASFACE_CELEBA"
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
IDENTITIES = 10177
LABELS = {
    "attributes": {"type": "multilabel", "names": ATTRIBUTES},
    "gender": ("male", "female"),
    "smile": ("smiling", "not_smiling"),
    "identity": {"type": "identity", "count": IDENTITIES},
}
FILES = {
    "attr": "list_attr_celeba.txt",
    "landmarks_align": "list_landmarks_align_celeba.txt",
    "landmarks_wild": "list_landmarks_celeba.txt",
    "bbox": "list_bbox_celeba.txt",
    "partition": "list_eval_partition.txt",
    "identity": "identity_CelebA.txt",
}
SPLITS = {"0": "train", "1": "val", "2": "test"}
ALIGNED, WILD = "img_align_celeba", "img_celeba"


class CelebAFormatError(FormatError):
    """A line of a CelebA list file does not have the expected form."""


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, fields) of every non-blank line; CRLF or LF."""
    with open(path, "r", encoding="utf-8", newline="") as handle:
        text = handle.read()
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_table(path: str | os.PathLike, values: int, counted: bool, header: tuple[str, ...] | None = None,
               kind=int) -> dict[str, tuple[int, tuple]]:
    """image name -> (line number, its `values` fields converted by `kind`). `counted`: the file
    starts with the count of rows and a header line (checked against `header` when given)."""
    path = Path(path)
    lines = _lines(path)
    rows = lines
    if counted:
        if len(lines) < 2 or len(lines[0][1]) != 1 or not lines[0][1][0].isdigit():
            raise CelebAFormatError(f"{path}:1: expected the number of images on the first line")
        count, (header_no, names), rows = int(lines[0][1][0]), lines[1], lines[2:]
        if header is not None and tuple(names) != header:
            raise CelebAFormatError(f"{path}:{header_no}: expected the header {' '.join(header[:3])} ... "
                                    f"({len(header)} names), got {len(names)} names starting {' '.join(names[:3])}")
        if count != len(rows):
            raise CelebAFormatError(f"{path}:1: the file says {count} images but lists {len(rows)}")
    table = {}
    for line_no, fields in rows:
        where = f"{path}:{line_no}"
        if len(fields) != values + 1:
            raise CelebAFormatError(f"{where}: expected an image name and {values} values, got {len(fields)} fields")
        if fields[0] in table:
            raise CelebAFormatError(f"{where}: {fields[0]} is listed twice (first on line {table[fields[0]][0]})")
        try:
            table[fields[0]] = (line_no, tuple(kind(v) for v in fields[1:]))
        except ValueError:
            raise CelebAFormatError(f"{where}: expected {values} {kind.__name__} values after the image name, "
                                    f"got {' '.join(fields[1:])!r}") from None
    return table


def read_attributes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """list_attr_celeba.txt -> image -> 40 values 0/1 (the file's -1 -> 0)."""
    table = read_table(path, len(ATTRIBUTES), counted=True, header=ATTRIBUTES)
    out = {}
    for name, (line_no, values) in table.items():
        if any(v not in (-1, 1) for v in values):
            raise CelebAFormatError(f"{path}:{line_no}: attribute values must be -1 or 1, got "
                                    f"{sorted(set(values) - {-1, 1})}")
        out[name] = tuple(int(v > 0) for v in values)
    return out


def _find(root: Path, name: str) -> Path:
    for folder in (root, root / "Anno", root / "Eval"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"CelebA: {name} not found in {root} (nor in its Anno/ or Eval/ folders)")


def image_folder(root: Path) -> tuple[str, bool]:
    """The image folder relative to the root and whether it holds the aligned images."""
    for folder in ("", "Img/"):
        for name, aligned in ((ALIGNED, True), (WILD, False)):
            if (root / folder / name).is_dir():
                return folder + name, aligned
    return ALIGNED, True  # reported per image by the converter


def read_faces(root: str | os.PathLike) -> dict[str, list[FaceAnnotation]]:
    """Every face of the partition file by split, joined by image name with the other lists."""
    root = Path(root)
    folder, aligned = image_folder(root)
    attrs = read_attributes(_find(root, FILES["attr"]))
    points_file = _find(root, FILES["landmarks_align" if aligned else "landmarks_wild"])
    points = read_table(points_file, 10, counted=True, kind=float)
    boxes = {} if aligned else read_table(_find(root, FILES["bbox"]), 4, counted=True, kind=float)
    partition_file, identity_file = _find(root, FILES["partition"]), _find(root, FILES["identity"])
    partition = read_table(partition_file, 1, counted=False, kind=str)
    identities = read_table(identity_file, 1, counted=False)
    splits: dict[str, list[FaceAnnotation]] = {name: [] for name in SPLITS.values()}
    for name, (line_no, (code,)) in partition.items():
        if code not in SPLITS:
            raise CelebAFormatError(f"{partition_file}:{line_no}: expected 0, 1 or 2 (train, val, test), got {code!r}")
        for table, path in ((attrs, FILES["attr"]), (points, points_file.name), (identities, identity_file.name)) + (
                () if aligned else ((boxes, FILES["bbox"]),)):
            if name not in table:
                raise CelebAFormatError(f"{partition_file}:{line_no}: {name} is not in {path}")
        id_line, (identity,) = identities[name]
        if not 1 <= identity <= IDENTITIES:
            raise CelebAFormatError(f"{identity_file}:{id_line}: identity must be in 1..{IDENTITIES}, got {identity}")
        values = attrs[name]
        labels = {"attributes": values, "gender": 1 - values[ATTRIBUTES.index("Male")],
                  "smile": 1 - values[ATTRIBUTES.index("Smiling")], "identity": identity - 1}
        landmarks = np.asarray(points[name][1], np.float32).reshape(5, 2)
        box = None if aligned else tuple(float(v) for v in boxes[name][1])
        splits[SPLITS[code]].append(FaceAnnotation(f"{folder}/{name}", landmarks, labels, line_no, box=box))
    return splits


def _locate(candidate: Path) -> Path | None:
    for folder in (candidate, candidate / "celeba", candidate / "CelebA"):
        if any((sub / FILES["attr"]).is_file() for sub in (folder, folder / "Anno")):
            return folder
    return None


def resolve_root(root: str | os.PathLike | None) -> Path:
    return find_root(root, ENV_VAR, "CelebA", _locate,
                     f"{FILES['attr']} and the other lists there (or in Anno/, Eval/), images in img_align_celeba/",
                     demo=True)


def source_files(root: Path) -> list[Path]:
    aligned = image_folder(root)[1]
    keys = ["attr", "partition", "identity"] + (["landmarks_align"] if aligned else ["landmarks_wild", "bbox"])
    return [_find(root, FILES[k]) for k in keys]


# ----------------------------------------------------------------------------- demo


def demo_attributes(info: dict) -> tuple[int, ...]:
    """The 40 CelebA values of a synthetic face: those its drawing decides (sex, smile, glasses,
    open mouth, beard kinds, baldness, bangs) as drawn; every other attribute is absent (the
    renderer never draws a hat, a necklace, grey hair ...), so -1."""
    beard = info.get("beard", "none")
    drawn = {
        "Male": info["gender"] == 1, "Smiling": info["smile"] == 1, "Eyeglasses": info["glasses"] == 1,
        "Mouth_Slightly_Open": info.get("mouth") == "open", "No_Beard": beard == "none",
        "5_o_Clock_Shadow": beard == "stubble", "Mustache": beard == "moustache", "Goatee": beard == "goatee",
        "Bald": info.get("hair") == "bald", "Bangs": bool(info.get("bangs")),
    }
    return tuple(1 if drawn.get(name, False) else -1 for name in ATTRIBUTES)


def write_demo(root: str | os.PathLike, seed: int = 0, count: int = 600) -> Path:
    """A SYNTHETIC CelebA: `count` aligned 178x218 faces in img_align_celeba/ (eyes level at y~112,
    as CelebA's alignment puts them) and the six list files in their real layout and quirks: count
    lines, header lines, -1/1 values padded by variable spaces, CRLF ends on the attribute list.
    Every face is its own identity; partition 70/15/15. The wild-image box list describes each
    face's box in its aligned image (the demo ships no in-the-wild photos). Not real faces."""
    from PIL import Image

    from kerasface.data.synthetic import render_face

    root = Path(root)
    (root / ALIGNED).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    attr, marks, boxes, partition, identity = [], [], [], [], []
    for i, face_rng in enumerate(rng.spawn(count), start=1):
        name = f"{i:06d}.jpg"
        image, points, info = render_face(face_rng, (218, 178), iod=face_rng.uniform(36, 44), roll=0.0,
                                          yaw=face_rng.uniform(-12, 12),
                                          nose=(89 + face_rng.uniform(-3, 3), 132 + face_rng.uniform(-3, 3)))
        path = root / ALIGNED / name
        Image.fromarray(image).save(path.with_suffix(".tmp"), format="JPEG", quality=90)
        os.replace(path.with_suffix(".tmp"), path)
        values = demo_attributes(info)
        attr.append(name + "".join(f" {v:2d}" if k % 3 else f" {v}" for k, v in enumerate(values)))
        xy = np.rint(points).astype(int)
        marks.append(name + "".join(f" {v:4d}" for v in xy.reshape(-1)))
        left, top = xy.min(axis=0) - (30, 45)
        right, bottom = xy.max(axis=0) + (30, 35)
        boxes.append(f"{name} {left:4d} {top:4d} {right - left:4d} {bottom - top:4d}")
        partition.append(f"{name} {0 if i <= 0.7 * count else 1 if i <= 0.85 * count else 2}")
        identity.append(f"{name} {i}")

    def write(key, lines, newline="\n"):
        tmp = root / (FILES[key] + ".tmp")
        tmp.write_bytes((newline.join(lines) + newline).encode("ascii"))
        os.replace(tmp, root / FILES[key])

    write("attr", [str(count), " ".join(ATTRIBUTES) + " "] + attr, "\r\n")
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    write("landmarks_align", [str(count), header] + marks)
    write("bbox", [str(count), "image_id x_1 y_1 width height"] + boxes)
    write("identity", identity)
    return finish_demo(root, FILES["partition"], partition, "kerasface.data.celeba.write_demo", seed,
                       "aligned cartoon faces with the CelebA attributes the drawing decides")


DATASETS.register("celeba")(
    DatasetSpec(
        name="celeba",
        env_var=ENV_VAR,
        labels=LABELS,
        resolve_root=resolve_root,
        read_splits=lambda root, val_fraction=0.2, seed=0: read_faces(root),
        source_files=source_files,
        write_demo=write_demo,
        default_crop="gnet_aligned_face",
    )
)
