"""Command line: detect faces, write annotated images and crops.

    python -m kerasface.faces detect PATH... [--annotate DIR] [--crop SCHEME --out DIR]
                                           [--rule all|centre|largest] [--min-face-size N]
                                           [--threshold T] [--max-side N] [--no-progress]
    python -m kerasface.faces schemes       # the registered crop schemes

PATH is an image file, a folder (searched recursively for image files) or a glob ("photos/*.jpg";
quote it so that the shell leaves it alone). One JSON object per image is printed on its own line
to stdout:

    {"path": "...", "width": W, "height": H, "faces": [{"box": [x, y, w, h], "score": s,
     "landmarks": {"left_eye": [x, y], "right_eye": ..., "nose": ..., "mouth_left": ...,
     "mouth_right": ...}}, ...]}

An image that cannot be read gets {"path": "...", "error": "..."} and a one-line message on
stderr; the run goes on and exits with status 1. An image without faces has "faces": [].
--annotate DIR writes each image with boxes and landmarks drawn (the folder structure below each
PATH is kept); --crop SCHEME --out DIR writes one PNG per face chosen by --rule
(<name>_<k>.png, k = the face's index in "faces") and adds "crop": path to that face.
A progress bar (rate, ETA) goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from kerasface.faces.images import ImageError, annotated_name, expand_paths


def _build_parser() -> argparse.ArgumentParser:
    from kerasface.faces.detect import (
        DEFAULT_MAX_SIDE,
        DEFAULT_MIN_FACE_SIZE,
        DEFAULT_SCORE_THRESHOLD,
    )

    parser = argparse.ArgumentParser(
        prog="python -m kerasface.faces", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    det = sub.add_parser("detect", help="detect faces in images or folders; a JSON line each")
    det.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursive) or globs")
    det.add_argument("--annotate", metavar="DIR", help="write copies with boxes and landmarks here")
    det.add_argument("--crop", metavar="SCHEME", help="crop scheme for --out (see `schemes`)")
    det.add_argument("--out", metavar="DIR", help="write face crops here (needs --crop)")
    det.add_argument("--rule", default="all", choices=["all", "centre", "center", "largest"],
                     help="which faces to crop (default: all)")
    det.add_argument("--min-face-size", type=float, default=DEFAULT_MIN_FACE_SIZE,
                     help=f"smallest face in pixels (default {DEFAULT_MIN_FACE_SIZE})")
    det.add_argument("--threshold", type=float, default=DEFAULT_SCORE_THRESHOLD,
                     help=f"minimum face score (default {DEFAULT_SCORE_THRESHOLD})")
    det.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                     help="detect on a copy shrunk to this longest side "
                     f"(default {DEFAULT_MAX_SIDE}; 0 = never)")
    det.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("schemes", help="list the registered crop schemes")
    return parser


def _schemes() -> int:
    from kerasface.faces.crops import CROPS

    for name in CROPS.names():
        s = CROPS.get(name)
        size = "source" if s.size is None else f"{s.size[0]}x{s.size[1]}"
        mode = "gray" if s.grayscale else "rgb"
        first = s.description.split("\n")[0]
        print(f"{name:28s} {size:>8s} {mode:4s}  {first}")
    return 0


def _detect(args) -> int:
    from tqdm import tqdm

    from kerasface.faces.crops import CROPS
    from kerasface.faces.detect import crop_face, detect_faces, draw_faces, select_faces
    from kerasface.faces.images import load_image, save_image

    if args.crop:
        CROPS.get(args.crop)  # unknown scheme: KeyError listing the known ones
    items = expand_paths(args.paths)
    annotate = Path(args.annotate) if args.annotate else None
    out = Path(args.out) if args.out else None
    n_faces = n_failed = 0
    bar = tqdm(
        items, desc="faces", unit="img", file=sys.stderr, disable=args.no_progress,
        dynamic_ncols=True,
    )
    for path, _, rel in bar:
        record: dict = {"path": str(path)}
        try:
            image = load_image(path)
            faces = detect_faces(
                image,
                min_face_size=args.min_face_size,
                score_threshold=args.threshold,
                max_side=args.max_side or None,
            )
            record.update(width=int(image.shape[1]), height=int(image.shape[0]))
            record["faces"] = [f.to_dict() for f in faces]
            if annotate is not None:
                save_image(annotate / annotated_name(rel), draw_faces(image, faces), quality=92)
            if out is not None:
                chosen = {id(f) for f in select_faces(faces, args.rule, image_shape=image.shape)}
                for k, face in enumerate(faces):
                    if id(face) not in chosen:
                        continue
                    crop, _ = crop_face(image, face, args.crop)
                    target = out / rel.parent / f"{rel.stem}_{k}.png"
                    save_image(target, crop)
                    record["faces"][k]["crop"] = str(target)
            n_faces += len(faces)
        except Exception as exc:  # one bad image never stops a folder run
            n_failed += 1
            msg = str(exc)
            if not isinstance(exc, ImageError):
                msg = f"{path}: {type(exc).__name__}: {exc}"
            msg = " ".join(msg.split())
            record = {"path": str(path), "error": msg}
            tqdm.write(f"error: {msg}", file=sys.stderr)
        print(json.dumps(record), flush=True)
    bar.close()
    print(
        f"{len(items)} image(s), {n_faces} face(s), {n_failed} failed",
        file=sys.stderr,
    )
    return 1 if n_failed else 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "schemes":
        return _schemes()
    if args.out and not args.crop:
        parser.error("--out needs --crop SCHEME")
    if args.crop and not args.out:
        parser.error("--crop needs --out DIR")
    try:
        return _detect(args)
    except KeyError as exc:  # unknown crop scheme
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
