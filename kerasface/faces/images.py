"""Robust image loading: any file Pillow reads becomes an RGB uint8 HxWx3 array, or one clear error.

- EXIF orientation is applied (a phone photo stored sideways comes out upright).
- Every mode becomes RGB uint8: grayscale and palette are expanded; 16-bit ("I;16*", "I") is
  scaled by 1/257 (65535 -> 255); float ("F") in [0, 1] is scaled by 255, otherwise clipped;
  CMYK (also Adobe's inverted CMYK JPEGs, which Pillow undoes) converts through Pillow;
  transparency (RGBA, LA, PA, P with a transparent colour) is composited on white.
- A missing, truncated, non-image or undecodable file raises `ImageError("<path>: <why>")`,
  a single line that names the file. Images above Pillow's decompression-bomb limit
  (`PIL.Image.MAX_IMAGE_PIXELS` x 2, about 179 Mpx) are refused the same way.

`expand_paths` turns command-line PATH arguments (files, folders, globs) into images and
`annotated_name` names their annotated copies, for every command that reads photos
(`python -m kerasface.faces`, `python -m kerasface.predict`).
"""

from __future__ import annotations

import glob
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable, NamedTuple, Union

import numpy as np

Source = Union[str, os.PathLike, bytes, BinaryIO]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
    | {".ppm", ".pgm", ".pbm", ".pnm"}
)


class ImageError(ValueError):
    """An image that cannot be read; the message is one line and starts with the file's name."""


def one_line(text) -> str:
    return " ".join(str(text).split())


def _describe(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    return getattr(source, "name", None) or "<stream>"


def load_image(source: Source) -> np.ndarray:
    """Read an image file (path, bytes or binary file object) as RGB uint8 (H, W, 3)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{name}: no such file")
        if path.is_dir():
            raise ImageError(f"{name}: is a directory, not an image")
        if path.stat().st_size == 0:
            raise ImageError(f"{name}: empty file")
        opener = path
    elif isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError(f"{name}: empty data")
        opener = io.BytesIO(source)
    else:
        opener = source
    try:
        with Image.open(opener) as im:
            im.load()
            try:
                im = ImageOps.exif_transpose(im) or im
            except Exception:  # a broken EXIF block must not lose an otherwise good image
                pass
            return pil_to_rgb(im)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (unknown format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image too large ({one_line(exc)})") from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        why = one_line(exc) or type(exc).__name__
        if "truncated" in why.lower() or isinstance(exc, EOFError):
            raise ImageError(f"{name}: truncated or corrupt image file ({why})") from None
        raise ImageError(f"{name}: cannot decode image ({why})") from None


def pil_to_rgb(im) -> np.ndarray:
    """Convert a loaded PIL image of any mode to RGB uint8 (H, W, 3)."""
    from PIL import Image

    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im)
        if arr.dtype != np.uint16 and arr.size and arr.max() <= 255 and mode == "I":
            gray = arr.astype(np.uint8)
        else:
            gray = np.clip(np.round(arr.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(im, np.float64)
        arr = np.nan_to_num(arr)
        if arr.size and arr.max() <= 1.0 and arr.min() >= 0.0:
            arr = arr * 255.0
        gray = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La")
    has_alpha = has_alpha or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8)


def to_rgb_uint8(image, name: str = "<array>") -> np.ndarray:
    """Normalise an in-memory array to RGB uint8 (H, W, 3).

    Accepts HxW, HxWx1 (gray), HxWx3 (RGB), HxWx4 (RGBA, composited on white); uint8, uint16
    (scaled by 1/257), bool, other integers (clipped) and floats (in [0, 1] scaled by 255,
    otherwise clipped to [0, 255]). A tf.Tensor is accepted too.
    """
    if hasattr(image, "numpy"):
        image = image.numpy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{name}: expected an HxW, HxWx1, HxWx3 or HxWx4 image, got {arr.shape}")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        f = np.nan_to_num(arr.astype(np.float64))
        if f.size and f.max() <= 1.0 and f.min() >= 0.0:
            f = f * 255.0
        arr = np.clip(np.round(f), 0, 255).astype(np.uint8)
    else:
        raise ImageError(f"{name}: unsupported pixel type {arr.dtype}")
    channels = arr.shape[2]
    if channels in (2, 4):  # gray+alpha / RGBA: composite on white
        colour = arr[..., :-1].astype(np.float32)
        alpha = arr[..., -1:].astype(np.float32) / 255.0
        arr = np.round(colour * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        channels -= 1
    if channels == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def find_images(paths: Iterable[Source], recursive: bool = True) -> list[Path]:
    """Expand paths: a file is kept as given (whatever its extension, so that a bad file named on
    the command line is reported); a folder contributes its files with an image extension
    (recursively, sorted). A path that does not exist is kept, so that reading it reports it."""
    found: list[Path] = []
    for p in paths:
        path = Path(os.fspath(p))
        if path.is_dir():
            walker = path.rglob("*") if recursive else path.glob("*")
            images = (f for f in walker if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            found.extend(sorted(images))
        else:
            found.append(path)
    return found


GLOB_CHARS = frozenset("*?[")


class FoundImage(NamedTuple):
    """One image named on a command line: the file, its name as reported, and its name relative
    to the PATH argument that found it (annotated copies and crops keep that folder structure)."""

    path: Path
    name: str
    rel: Path


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[FoundImage]:
    """PATH arguments -> images, in argument order: a file as given (whatever its extension); a
    folder's image files (recursive, sorted); a glob's matches ("photos/*.jpg", "photos/**/*.png",
    recursive; a pattern ending in "*" or "**" keeps image files only). A path that does not exist
    and matches nothing is kept, so that reading it reports it."""
    found: list[FoundImage] = []
    for arg in paths:
        text = os.fspath(arg)
        path = Path(text)
        if path.is_dir():
            found.extend(FoundImage(f, str(f), f.relative_to(path)) for f in find_images([path]))
        elif not path.exists() and GLOB_CHARS & set(text):
            wild_tail = path.name in ("*", "**")
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))
                       if Path(m).is_file() and (not wild_tail or Path(m).suffix.lower() in IMAGE_EXTENSIONS)]
            if not matches:
                found.append(FoundImage(path, text, Path(path.name)))
            fixed = Path(*_leading_fixed(path.parts))
            for m in matches:
                try:
                    rel = m.relative_to(fixed)
                except ValueError:
                    rel = Path(m.name)
                found.append(FoundImage(m, str(m), rel))
        else:
            found.append(FoundImage(path, text, Path(path.name)))
    return found


def _leading_fixed(parts: Iterable[str]) -> list[str]:
    """The folders of a glob before its first wildcard: matches are named relative to them."""
    parts = list(parts)
    fixed = []
    for part in parts[:-1]:
        if GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return fixed or ["."]


def annotated_name(rel: Path) -> Path:
    """Where the annotated copy of image `rel` goes: JPEG and PNG keep their name, any other
    format gets ".png" appended (save_image picks the format from the suffix)."""
    if rel.suffix.lower() in (".jpg", ".jpeg", ".png"):
        return rel
    return rel.with_name(rel.name + ".png")


def save_image(path: Source, image: np.ndarray, quality: int = 95) -> Path:
    """Write an RGB / gray uint8 image atomically (a temporary name in its folder, then rename)."""
    from PIL import Image

    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    im = Image.fromarray(arr.astype(np.uint8))
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}.get(
        path.suffix.lower(), "PNG"
    )
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            im.save(fh, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
