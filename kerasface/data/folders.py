"""A user's own photos sorted into one folder per class: `--dataset folders --root PATH --attribute NAME`.

    PATH/smiling/a.jpg            or     PATH/train/smiling/a.jpg
    PATH/smiling/b.png                   PATH/train/not_smiling/c.jpg
    PATH/not_smiling/c.jpg               PATH/val/...   PATH/test/...

As `keras.utils.image_dataset_from_directory` reads it: each folder under the root (or under each
split folder) is a class, its name the class name, the classes sorted by name; the images in it
and in its subfolders (.jpg, .jpeg, .png, .bmp, .gif, .webp, .tif) belong to it; hidden files and
other files are ignored. One label, named by the reader option `attribute` (default "label").

Splits: when the root's folders are all split names (train, val or validation, test), that level
is the split, and the classes are the union of every split's folders; otherwise a seeded split
(kerasface.data.own_data). Whole photos are detected and aligned by the converter; folders of face
crops convert with `--cropped yes`. An image that cannot be read or holds no face is skipped,
counted and listed by the converter like any other.
"""

from __future__ import annotations

import os
from pathlib import Path

from kerasface.data import DATASETS, DatasetSpec, FaceAnnotation
from kerasface.data.common import NO_LANDMARKS, FormatError, find_root
from kerasface.data.own_data import IMAGE_SUFFIXES, assign_splits, label_name, split_name

ENV_VAR = "KERASFACE_FOLDERS"
DEFAULT_ATTRIBUTE = "label"
OPTIONS = {"attribute": f"the label the class folders give, e.g. smile (default {DEFAULT_ATTRIBUTE!r})"}


class FoldersFormatError(FormatError):
    """A folder tree without class folders."""


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def split_folders(root: Path) -> dict[str | None, Path]:
    """{split: its folder} when the root's folders are split names, else {None: root}."""
    top = _subfolders(root)
    if top and all(split_name(p.name) for p in top):
        return {split_name(p.name): p for p in top}
    return {None: root}


def class_folders(root: Path) -> tuple[str, ...]:
    """The class names: the folder names under the root or under every split folder, sorted."""
    names = sorted({p.name for folder in split_folders(root).values() for p in _subfolders(folder)})
    if not names:
        raise FoldersFormatError(f"{root}: expected one folder per class (e.g. smiling/, not_smiling/), "
                                 f"optionally under train/, val/, test/; found none")
    return tuple(names)


def labels_of(root: Path, options: dict) -> dict:
    return {label_name(options.get("attribute") or DEFAULT_ATTRIBUTE): class_folders(root)}


def read_splits(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0,
                attribute: str = DEFAULT_ATTRIBUTE) -> dict[str, list[FaceAnnotation]]:
    root = Path(root)
    name = label_name(attribute or DEFAULT_ATTRIBUTE)
    classes = class_folders(root)
    faces, named = [], []
    for split, folder in split_folders(root).items():
        for class_folder in _subfolders(folder):
            for image in _images(class_folder):
                faces.append(FaceAnnotation(image.relative_to(root).as_posix(), NO_LANDMARKS,
                                            {name: classes.index(class_folder.name)}))
                named.append(split)
    return assign_splits(faces, named, val_fraction, seed)


def _locate(candidate: Path) -> Path | None:
    return candidate if candidate.is_dir() else None


def resolve_root(root: str | os.PathLike | None) -> Path:
    return find_root(root, ENV_VAR, "folder tree", _locate,
                     "a folder with one folder per class (optionally under train/, val/, test/)")


DATASETS.register("folders")(
    DatasetSpec(
        name="folders",
        env_var=ENV_VAR,
        labels={},
        resolve_root=resolve_root,
        read_splits=read_splits,
        source_files=lambda root: [],
        default_crop="vggface_224",
        labels_of=labels_of,
        options=OPTIONS,
    )
)
