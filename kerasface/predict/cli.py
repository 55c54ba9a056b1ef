"""The command line, `python -m kerasface.predict PATH... --model MODEL ...` (usage, output
schema and exit codes in the package docstring): arguments -> a Predictor -> JSON lines or CSV."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kerasface.predict.inputs import expand_inputs
from kerasface.predict.model import ModelError
from kerasface.predict.predictor import DEFAULT_BATCH_SIZE, Predictor, progress_bar
from kerasface.predict.results import ImageResult, Summary
from kerasface.predict.tables import table_columns, table_rows


class OutputWriter:
    """JSON lines or CSV to stdout or to a temporary file renamed to FILE at the end."""

    def __init__(self, out: str | None, fmt: str, columns: list[str]):
        self.out = Path(out) if out else None
        self.tmp: Path | None = None
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent)
            self.tmp = Path(tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result is an ordinary file
            self.fh = os.fdopen(fd, "w", newline="" if fmt == "csv" else None, encoding="utf-8")
        else:
            self.fh = sys.stdout
        self.fmt = fmt
        self.columns = columns
        if fmt == "csv":
            self.csv = csv.DictWriter(self.fh, fieldnames=columns, extrasaction="ignore")
            self.csv.writeheader()

    def write(self, result: ImageResult) -> None:
        if self.fmt == "csv":
            for row in table_rows(result, self.columns):
                self.csv.writerow({k: ("" if v is None else v) for k, v in row.items()})
        else:
            self.fh.write(json.dumps(result.to_dict()) + "\n")
        if self.out is None:
            self.fh.flush()

    def close(self, ok: bool = True) -> None:
        if self.out is None:
            self.fh.flush()
            return
        self.fh.close()
        if ok:
            os.replace(self.tmp, self.out)
        else:
            self.tmp.unlink(missing_ok=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kerasface.predict",
        description="Detect faces in photos and predict their attributes with exported kerasface models "
                    "(SavedModel, TFLite or a TF Serving endpoint).",
        epilog="Output schema, CSV columns and exit codes: see the kerasface.predict package docstring "
               "(kerasface/predict/__init__.py).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image file, folder (recursive) or glob")
    p.add_argument("--model", action="append", required=True, metavar="MODEL",
                   help="models/NAME (latest version) or a version folder, FILE.tflite, "
                        "grpc://host:port/NAME or http://host:port/NAME; repeat for several; ALIAS=MODEL names it")
    p.add_argument("--format", choices=("jsonl", "json", "csv"), default="jsonl",
                   help="jsonl: one JSON object per image (default); csv: one row per face")
    p.add_argument("--out", metavar="FILE", help="write the output here (default: stdout)")
    p.add_argument("--annotate", metavar="DIR", help="write annotated copies of the images here")
    p.add_argument("--face", default="all", choices=("all", "largest", "centre", "center"),
                   help="which faces to report: all (default), the largest, or the one closest to the centre")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"images per detection batch and faces per model call (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--models-dir", action="append", metavar="DIR",
                   help="where export.json of grpc:// / http:// models is looked up as DIR/NAME/<version>/ "
                        "(default: models)")
    p.add_argument("--min-face-size", type=float, help="smallest face in pixels (default 20)")
    p.add_argument("--threshold", type=float, help="minimum detector score (default 0.8)")
    p.add_argument("--max-side", type=int, help="detect on a copy shrunk to this longest side "
                   "(default 2000; 0 = never)")
    p.add_argument("--threads", type=int, help="TFLite interpreter threads (default: up to 4)")
    p.add_argument("--strict", action="store_true", help="stop at the first image that fails (exit 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    max_side: Any = "default" if args.max_side is None else args.max_side
    try:
        predictor = Predictor(args.model, face=args.face, batch_size=args.batch_size,
                              models_dirs=args.models_dir or ["models"], threads=args.threads,
                              min_face_size=args.min_face_size, threshold=args.threshold, max_side=max_side,
                              annotate_dir=args.annotate)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fmt = "csv" if args.format == "csv" else "jsonl"
    summary = Summary()
    t0 = time.perf_counter()
    writer = None
    stopped = False
    try:
        items = expand_inputs(args.paths)
        writer = OutputWriter(args.out, fmt, table_columns(predictor.models))
        bar = progress_bar(len(items), args.no_progress)
        for result in predictor.run(items):
            writer.write(result)
            summary.add(result)
            bar.update(1)
            if result.error is not None:
                bar.write(f"error: {result.error}", file=sys.stderr)
                if args.strict:
                    stopped = True
                    break
        bar.close()
        summary.seconds = time.perf_counter() - t0
        writer.close(ok=True)
    except KeyboardInterrupt:
        if writer is not None:
            writer.close(ok=False)
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        sys.stdout = open(os.devnull, "w")
        return 141
    finally:
        predictor.close()
    note = " (stopped: --strict)" if stopped else ""
    print(f"predict: {summary}{note}", file=sys.stderr)
    return 1 if summary.failed else 0
