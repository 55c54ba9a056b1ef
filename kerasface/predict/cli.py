"""The command line, `python -m kerasface.predict PATH... --model MODEL ...` (usage, output
schema and exit codes in the package docstring): arguments -> a Predictor -> JSON lines or CSV."""

from __future__ import annotations

import argparse
import csv
import io
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
    """JSON lines or CSV, one complete record per image, to stdout or to FILE.

    FILE is written under a temporary name beside it and renamed at the end: `close(keep=True)`
    (also after Ctrl-C) puts the records written so far in FILE, cut back to the last complete one,
    and `close(keep=False)` leaves no file at all.
    """

    def __init__(self, out: str | None, fmt: str, columns: list[str]):
        self.out = Path(out) if out else None
        self.tmp: Path | None = None
        self.fh = None  # the temporary file (binary, so that its complete length is known); None: stdout
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent)
            self.tmp = Path(tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result is an ordinary file
            self.fh = os.fdopen(fd, "wb")
        self.fmt = fmt
        self.columns = columns
        self.records = 0  # images whose record is complete in the output
        self._complete = 0  # bytes of the temporary file that hold complete records
        if fmt == "csv":
            header = io.StringIO()
            csv.DictWriter(header, fieldnames=columns).writeheader()
            self._emit(header.getvalue())

    def _format(self, result: ImageResult) -> str:
        """The image's whole record (all its CSV rows), so that it is written in one piece."""
        if self.fmt != "csv":
            return json.dumps(result.to_dict()) + "\n"
        text = io.StringIO()
        rows = csv.DictWriter(text, fieldnames=self.columns, extrasaction="ignore")
        for row in table_rows(result, self.columns):
            rows.writerow({k: ("" if v is None else v) for k, v in row.items()})
        return text.getvalue()

    def _emit(self, text: str) -> None:
        if self.fh is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        data = text.encode("utf-8")
        self.fh.write(data)
        self._complete += len(data)

    def write(self, result: ImageResult) -> None:
        self._emit(self._format(result))
        self.records += 1

    @property
    def target(self) -> str:
        return str(self.out) if self.out is not None else "stdout"

    def close(self, keep: bool = True) -> None:
        if self.fh is None:
            sys.stdout.flush()
            return
        try:
            if keep:
                self.fh.truncate(self._complete)  # a record that Ctrl-C cut short is not kept
            self.fh.close()
            if keep:
                os.replace(self.tmp, self.out)
        finally:
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
    p.add_argument("--out", metavar="FILE", help="write the output here (default: stdout); after Ctrl-C it "
                   "holds the complete records of the images finished by then")
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
    except KeyboardInterrupt:
        print("predict: interrupted while loading the models; nothing written", file=sys.stderr)
        return 130
    fmt = "csv" if args.format == "csv" else "jsonl"
    summary = Summary()
    t0 = time.perf_counter()
    writer = bar = None
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
        writer.close(keep=True)
    except KeyboardInterrupt:  # what was computed is kept: a long run stopped by Ctrl-C is not lost
        if bar is not None:
            bar.close()
        kept = "nothing written"
        if writer is not None:
            writer.close(keep=True)
            kept = f"{writer.records} image(s) written to {writer.target}"
        summary.seconds = time.perf_counter() - t0
        print(f"predict: interrupted; {kept} ({summary})", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        sys.stdout = open(os.devnull, "w")
        return 141
    except BaseException:
        if writer is not None:
            writer.close(keep=False)
        raise
    finally:
        predictor.close()
    note = " (stopped: --strict)" if stopped else ""
    print(f"predict: {summary}{note}", file=sys.stderr)
    return 1 if summary.failed else 0
