"""Identity datasets stored as one folder per person: `--dataset identity_folders --root PATH`.

    CASIA-WebFace/0000045/001.jpg        (CASIA-WebFace: 10,575 identities, ~494k aligned 250x250 crops)
    CASIA-WebFace/0000045/002.jpg
    CASIA-WebFace/0000099/001.jpg        VGGFace2 (n000002/0001_01.jpg) and MS-Celeb-1M trees
    ...                                  (m.0107_f/...) have the same shape

Every folder under the root is one identity; the images in it (.jpg, .jpeg, .png, .bmp, .gif, .webp,
.tif; hidden files and other files are ignored, subfolders are searched) are that person. One
label, `identity` (LabelSpec type "identity"): the 0-based index of the folder among the root's
folders sorted by name; the label's names are the folder names, so index i is folder names[i].

Split (identity-level, as the identity networks of the papers hold out images of the training
identities): each identity keeps the reader option `val_per_identity` images (default 5), picked
by a seeded permutation, for validation and the rest for training; an identity with fewer than
2 x val_per_identity images goes all to training (every validation identity keeps at least as many
training images). `val_fraction` is not used; there is no test split (LFW, kerasface.data.lfw, is).

The images are taken as face crops (`DatasetSpec.cropped`: CASIA-WebFace's are aligned): the
converter stores each whole image at the crop scheme's size; convert loose photos (a raw VGGFace2
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
LABELS = {LABEL: {"type": "identity", "count": CASIA_IDENTITIES}}
DEFAULT_VAL_PER_IDENTITY = 5
OPTIONS = {"val_per_identity": f"validation images kept per identity (default {DEFAULT_VAL_PER_IDENTITY}); "
                               "identities with fewer than twice as many go all to training"}


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


def labels_of(root: Path, options: dict) -> dict:
    return {LABEL: identity_label(p.name for p in identity_folders(root))}


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
                val_per_identity=DEFAULT_VAL_PER_IDENTITY) -> dict[str, list[FaceAnnotation]]:
    """{"train": faces, "val": faces}: every image of every identity folder (see the module notes)."""
    root = Path(root)
    keep = _val_per_identity(DEFAULT_VAL_PER_IDENTITY if val_per_identity is None else val_per_identity)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[FaceAnnotation]] = {"train": [], "val": []}
    for index, folder in enumerate(identity_folders(root)):
        images = identity_images(folder)
        train, val = split_identity(len(images), keep, rng)
        for split, members in (("train", train), ("val", val)):
            splits[split].extend(FaceAnnotation(images[i].relative_to(root).as_posix(), NO_LANDMARKS, {LABEL: index})
                                 for i in members)
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


def write_demo_identity_folders(root: str | os.PathLike, num_identities: int = 40, per_identity: int = 12,
                                size: int = 112, seed: int = 0) -> Path:
    """A SYNTHETIC CASIA-WebFace: `num_identities` people, `per_identity` aligned size x size crops
    each (`<root>/<7-digit id>/<nnn>.jpg`, as CASIA names them), each person drawn from one fixed
    set of face parameters under varied yaw (within +-30 degrees), roll, expression and light.
    The crops are aligned as the `vggface_224` scheme frames a detected face (so that a model trained
    on them sees LFW photos cut by that scheme alike): inter-ocular distance 0.25 of the width, eyes
    near 0.39 of the height, the nose tip at (0.5, 0.55), a little jitter. Not real faces
    (DEMO_README.txt says so)."""
    from kerasface.data.common import finish_demo

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    people = rng.integers(0, 2**31, num_identities)
    ids = sorted(set((rng.choice(10**6, num_identities, replace=False) * 7 + 45).tolist()))  # CASIA-like ids
    lines = []
    for person, identity_id in zip(people, ids):
        folder = f"{identity_id:07d}"
        for n, photo_rng in enumerate(np.random.default_rng([seed, int(person)]).spawn(per_identity), start=1):
            jitter = photo_rng.uniform(-0.02, 0.02, 2) * size
            image, _, _ = person_photo(int(person), photo_rng, (size, size), iod=0.25 * size * photo_rng.uniform(0.95, 1.05),
                                       nose=(0.5 * size + jitter[0], 0.55 * size + jitter[1]))
            save_jpeg(root / folder / f"{n:03d}.jpg", image)
        lines.append(f"{folder}\t{per_identity}")
    return finish_demo(root, "DEMO_IDENTITIES.txt", lines, "kerasface.data.identity_folders.write_demo_identity_folders",
                       seed, "synthetic people, each under varied pose, expression and light")


DATASETS.register("identity_folders")(
    DatasetSpec(
        name="identity_folders",
        env_var=ENV_VAR,
        labels=LABELS,
        resolve_root=resolve_root,
        read_splits=read_splits,
        source_files=lambda root: [],
        write_demo=lambda root, seed=0: write_demo_identity_folders(root, seed=seed),
        cropped=True,
        default_crop="vggface_224",
        labels_of=labels_of,
        options=OPTIONS,
    )
)
