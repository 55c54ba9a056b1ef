"""Identity datasets stored as one folder per person: `--dataset identity_folders --root PATH`.

    CASIA-WebFace/0000045/001.jpg        (CASIA-WebFace: 10,575 identities, ~494k aligned 250x250 crops)
    CASIA-WebFace/0000045/002.jpg
    CASIA-WebFace/0000099/001.jpg        VGGFace2 (n000002/0001_01.jpg) and MS-Celeb-1M trees
    ...                                  (m.0107_f/...) have the same shape

Every folder under the root is one identity; the images in it (.jpg, .jpeg, .png, .bmp, .gif, .webp,
.tif; hidden files and other files are ignored, subfolders are searched) are that person. One
label, `identity` (LabelSpec type "identity"): the 0-based index of the folder among the root's
folders sorted by name; the label's names are the folder names, so index i is folder names[i].

Attributes (wang_joint): a file of per-image attribute labels beside the tree, as
`python -m kerasface.label_attributes` writes it (a header of attribute names, then
`<identity>/<image> 0 1 ...`; -1 = unknown), adds the label `attributes` (LabelSpec type
"multilabel", the header's names) to every image: its row, or all -1 (unknown: no loss) for an
image the file does not list. Reader option `attributes`: the file, relative to the root or
absolute; default `attributes.txt` in the root when it exists; `none` ignores it.

Landmarks: a file of five points per image, `landmarks.txt` in the root (SphereFace's
`casia_landmark.txt` layout: `<identity>/<image> [label] x1 y1 ... x5 y5`, left eye, right eye,
nose, left and right mouth corner, in pixels; the integer label column is optional and ignored;
format assumed from the public SphereFace list), or the file the reader option `landmarks` names
('none' ignores it). With one, the tree is photos to align, not crops: each listed image is cut
from its points by the crop scheme (no detection), an unlisted one is detected (MTCNN), as
wang_joint aligns CASIA-WebFace to 112x96.

Split (identity-level, as the identity networks of the papers hold out images of the training
identities): each identity keeps the reader option `val_per_identity` images (default 5), picked
by a seeded permutation, for validation and the rest for training; an identity with fewer than
2 x val_per_identity images goes all to training (every validation identity keeps at least as many
training images). `val_fraction` is not used; there is no test split (LFW, kerasface.data.lfw, is).

Without a landmark file the images are taken as face crops (`DatasetSpec.cropped`: CASIA-WebFace's
are roughly centred): the converter stores each whole image at the crop scheme's size; convert loose photos (a raw VGGFace2
copy) with `--cropped no` to detect and align them. An unreadable image is skipped, counted and
listed by the converter. For big trees convert with many shards (`--shards 256`): the conversion
is parallel and resumable (kerasface.data.convert), and training streams the shards
(DataConfig.cache_budget_mb keeps a big split out of memory).

Demo: `write_demo_identity_folders` draws synthetic people (the same person under varied pose,
expression and light) in this layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerasface.data import DATASETS, DatasetSpec, FaceAnnotation
from kerasface.data.common import NO_LANDMARKS, FormatError, find_root
from kerasface.data.own_data import IMAGE_SUFFIXES

ENV_VAR = "KERASFACE_IDENTITY_FOLDERS"
LABEL = "identity"
CASIA_IDENTITIES = 10575
# The label every tree has, before any tree is read (config checks): its names and count come from
# the tree itself (labels_of); the count here is CASIA-WebFace's.
# `attributes` only when the tree has an attribute file (its names then come from the file; here
# label_attributes' default seven, those of wang_joint)
LABELS = {LABEL: {"type": "identity", "count": CASIA_IDENTITIES},
          "attributes": {"type": "multilabel", "names": ("Narrow_Eyes", "Big_Nose", "Pointy_Nose", "Chubby",
                                                         "Double_Chin", "High_Cheekbones", "Male")}}
DEFAULT_VAL_PER_IDENTITY = 5
ATTRIBUTES_FILE = "attributes.txt"  # where kerasface.label_attributes writes them
LANDMARKS_FILE = "landmarks.txt"
OPTIONS = {"val_per_identity": f"validation images kept per identity (default {DEFAULT_VAL_PER_IDENTITY}); "
                               "identities with fewer than twice as many go all to training",
           "landmarks": "five points per image (SphereFace's casia_landmark.txt layout), relative to the root; "
                        "default landmarks.txt in the root when it exists, 'none' to ignore it",
           "attributes": f"per-image attribute labels (kerasface.label_attributes' file), relative to the root; "
                         f"default {ATTRIBUTES_FILE} in the root when it exists, 'none' to ignore it"}


class IdentityFoldersFormatError(FormatError):
    """A root without identity folders, or a bad reader option."""


def identity_folders(root: str | os.PathLike) -> list[Path]:
    """The identity folders under the root, sorted by name (hidden folders ignored)."""
    root = Path(root)
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    if not folders:
        raise IdentityFoldersFormatError(f"{root}: expected one folder per identity (e.g. 0000045/001.jpg); found none")
    return folders


def identity_images(folder: Path) -> list[Path]:
    """The images of one identity folder, sorted by path."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def identity_label(names) -> dict:
    """The `identity` LabelSpec (JSON form) of these identity names, in index order."""
    names = tuple(names)
    return {"type": "identity", "names": names, "count": len(names)}


def sidecar_file(root: Path, option: str | None, default: str, flag: str) -> Path | None:
    """The label file beside the tree that a reader option names (None: none)."""
    if option == "none":
        return None
    path = Path(root) / (option or default)  # an absolute option replaces the root
    if option and not path.is_file():
        raise IdentityFoldersFormatError(f"{path}: --{flag} names no file")
    return path if path.is_file() else None


def attributes_file(root: Path, option: str | None = None) -> Path | None:
    return sidecar_file(root, option, ATTRIBUTES_FILE, "attributes")


def read_landmarks(root: Path, option: str | None = None) -> dict[str, np.ndarray]:
    """{relative image path: (5, 2) points} of the tree's landmark file ({} without one)."""
    path = sidecar_file(root, option, LANDMARKS_FILE, "landmarks")
    points = {}
    for n, line in enumerate(path.read_text().splitlines() if path else (), start=1):
        fields = line.split()
        if not fields:
            continue
        numbers = fields[2:] if len(fields) == 12 else fields[1:]
        try:
            values = np.array([float(v) for v in numbers], np.float32)
        except ValueError:
            values = np.zeros(0)
        if len(fields) not in (11, 12) or not np.isfinite(values).all():
            raise IdentityFoldersFormatError(f"{path}:{n}: expected a path, an optional label and 10 coordinates, "
                                             f"got {line!r}")
        points[fields[0]] = values.reshape(5, 2)
    return points


def is_cropped(root: Path) -> bool:
    """Crops unless the tree has landmarks to align them by (the converter's --cropped overrides)."""
    return not (Path(root) / LANDMARKS_FILE).is_file()


def read_attributes(root: Path, option: str | None = None) -> tuple[tuple[str, ...], dict[str, tuple[int, ...]]]:
    """(attribute names, {relative image path: values}) of the tree's attribute file; ((), {}) without one."""
    from kerasface.label_attributes import read_labels

    path = attributes_file(root, option)
    return read_labels(path) if path is not None else ((), {})


def labels_of(root: Path, options: dict) -> dict:
    labels = {LABEL: identity_label(p.name for p in identity_folders(root))}
    names, _ = read_attributes(root, options.get("attributes"))
    if names:
        labels["attributes"] = {"type": "multilabel", "names": names}
    return labels


def _val_per_identity(value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise IdentityFoldersFormatError(f"--val-per-identity: expected a whole number >= 0, got {value!r}")
    return number


def split_identity(count: int, keep: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(train, val) indices of one identity's `count` images: `keep` seeded ones for validation
    when count >= 2 * keep, else none; both in ascending order."""
    if keep <= 0 or count < 2 * keep:
        return list(range(count)), []
    val = set(rng.permutation(count)[:keep].tolist())
    return [i for i in range(count) if i not in val], sorted(val)


def read_splits(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0,
                val_per_identity=DEFAULT_VAL_PER_IDENTITY, attributes: str | None = None,
                landmarks: str | None = None) -> dict[str, list[FaceAnnotation]]:
    """{"train": faces, "val": faces}: every image of every identity folder (see the module notes)."""
    root = Path(root)
    keep = _val_per_identity(DEFAULT_VAL_PER_IDENTITY if val_per_identity is None else val_per_identity)
    names, rows = read_attributes(root, attributes)
    unknown = (-1,) * len(names)
    points = read_landmarks(root, landmarks)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[FaceAnnotation]] = {"train": [], "val": []}
    for index, folder in enumerate(identity_folders(root)):
        images = identity_images(folder)
        train, val = split_identity(len(images), keep, rng)
        for split, members in (("train", train), ("val", val)):
            for i in members:
                rel = images[i].relative_to(root).as_posix()
                labels = {LABEL: index, **({"attributes": rows.get(rel, unknown)} if names else {})}
                splits[split].append(FaceAnnotation(rel, points.get(rel, NO_LANDMARKS), labels))
    return splits


def _locate(candidate: Path) -> Path | None:
    for folder in (candidate / "CASIA-WebFace", candidate):  # the release folder inside, else the tree itself
        if folder.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
            return folder
    return None


def resolve_root(root: str | os.PathLike | None) -> Path:
    return find_root(root, ENV_VAR, "identity folder tree", _locate,
                     "a folder with one folder per identity (CASIA-WebFace/<id>/<nnn>.jpg)", demo=True)


# ----------------------------------------------------------------------------- demo


def person_photo(person: int | tuple[int, ...], rng: np.random.Generator, size: tuple[int, int], iod: float,
                 nose: tuple[float, float], max_yaw: float = 30.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """One photo of the synthetic person `person` (a seed that fixes the face, render_face's
    `identity`): a random yaw in [-max_yaw, max_yaw], roll, expression (EXPRESSIONS) and light."""
    from kerasface.data.synthetic import EXPRESSIONS, render_face

    expression = str(rng.choice(list(EXPRESSIONS)))
    return render_face(rng, size, identity=person, expression=expression, iod=iod, nose=nose,
                       yaw=float(rng.uniform(-max_yaw, max_yaw)), roll=float(np.clip(rng.normal(0, 5), -12, 12)))


def save_jpeg(path: Path, image: np.ndarray, quality: int = 92) -> None:
    """A JPEG written under a temporary name and renamed."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(image).save(tmp, format="JPEG", quality=quality)
    os.replace(tmp, path)


# wang_joint's seven attributes (CelebA names); the renderer decides five of them per person
DEMO_ATTRIBUTES = LABELS["attributes"]["names"]


def demo_attributes(traits: dict) -> tuple[int, ...]:
    """DEMO_ATTRIBUTES of a synthetic person (synthetic.person_traits), true to the drawing: narrow
    eyes, a wide nose, a small nose tip, a wide head (each about the top or bottom quarter of the
    renderer's range) and the sex; a double chin and high cheekbones are never drawn: -1, unknown."""
    return (int(traits["eye_h"] < 0.062), int(traits["ala_x"] > 0.13), int(traits["tip_r"] < 0.11),
            int(traits["W"] > 1.17), -1, -1, int(traits["gender"] == 1))


def write_demo_identity_folders(root: str | os.PathLike, num_identities: int = 40, per_identity: int = 12,
                                size: int = 112, seed: int = 0, attributes: bool = True,
                                landmarks: bool = True) -> Path:
    """A SYNTHETIC CASIA-WebFace: `num_identities` people, `per_identity` aligned size x size crops
    each (`<root>/<7-digit id>/<nnn>.jpg`, as CASIA names them), each person drawn from one fixed
    set of face parameters under varied yaw (within +-30 degrees), roll, expression and light.
    The crops are aligned as the `vggface_224` scheme frames a detected face (so that a model trained
    on them sees LFW photos cut by that scheme alike): inter-ocular distance 0.25 of the width, eyes
    near 0.39 of the height, the nose tip at (0.5, 0.55), a little jitter. Not real faces
    (DEMO_README.txt says so). With `attributes`, ROOT/attributes.txt gives every image its
    person's DEMO_ATTRIBUTES (one label per identity, as label_attributes' majority vote makes them);
    with `landmarks`, ROOT/landmarks.txt the drawn five points of every image (the converter then
    aligns each crop scheme from them, as for a real tree with SphereFace's list)."""
    from kerasface.data.common import finish_demo
    from kerasface.data.synthetic import person_traits

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    people = rng.integers(0, 2**31, num_identities)
    ids = sorted(set((rng.choice(10**6, num_identities, replace=False) * 7 + 45).tolist()))  # CASIA-like ids
    lines, attribute_rows, landmark_lines = [], [], []
    for identity_index, (person, identity_id) in enumerate(zip(people, ids)):
        folder = f"{identity_id:07d}"
        for n, photo_rng in enumerate(np.random.default_rng([seed, int(person)]).spawn(per_identity), start=1):
            jitter = photo_rng.uniform(-0.02, 0.02, 2) * size
            image, points, _ = person_photo(int(person), photo_rng, (size, size),
                                            iod=0.25 * size * photo_rng.uniform(0.95, 1.05),
                                            nose=(0.5 * size + jitter[0], 0.55 * size + jitter[1]))
            save_jpeg(root / folder / f"{n:03d}.jpg", image)
            landmark_lines.append(f"{folder}/{n:03d}.jpg {identity_index} " + " ".join(f"{v:.2f}" for v in points.ravel()))
        lines.append(f"{folder}\t{per_identity}")
        attribute_rows += [(f"{folder}/{n:03d}.jpg", demo_attributes(person_traits(int(person))))
                           for n in range(1, per_identity + 1)]
    if attributes:
        from kerasface.label_attributes import write_labels

        write_labels(root / ATTRIBUTES_FILE, DEMO_ATTRIBUTES, attribute_rows)
    if landmarks:  # the drawn points, as SphereFace lists CASIA-WebFace's
        tmp = root / f"{LANDMARKS_FILE}.tmp"
        tmp.write_text("\n".join(landmark_lines) + "\n")
        os.replace(tmp, root / LANDMARKS_FILE)
    return finish_demo(root, "DEMO_IDENTITIES.txt", lines, "kerasface.data.identity_folders.write_demo_identity_folders",
                       seed, "synthetic people, each under varied pose, expression and light")


DATASETS.register("identity_folders")(
    DatasetSpec(
        name="identity_folders",
        env_var=ENV_VAR,
        labels=LABELS,
        resolve_root=resolve_root,
        read_splits=read_splits,
        source_files=lambda root: [p for p in (attributes_file(root), sidecar_file(root, None, LANDMARKS_FILE, "")) if p],
        write_demo=lambda root, seed=0: write_demo_identity_folders(root, seed=seed),
        cropped=is_cropped,
        default_crop="vggface_224",
        labels_of=labels_of,
        options=OPTIONS,
    )
)
