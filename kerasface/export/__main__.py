"""python -m kerasface.export {saved-model,tflite,parity} RUN_DIR ... (see kerasface.export)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from kerasface.cli import run_command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kerasface.export",
                                     description="Export a trained run for TF Serving and TFLite.")
    sub = parser.add_subparsers(dest="command", required=True)

    sm = sub.add_parser("saved-model", help="SavedModel in TF Serving's layout: OUT/NAME/<version>/")
    sm.add_argument("run_dir", metavar="RUN_DIR")
    sm.add_argument("--name", required=True, help="model name (the folder under --out, the name clients use)")
    sm.add_argument("--version", type=int, help="version folder (default: next integer after existing ones)")
    sm.add_argument("--out", default="models", help="models folder (default: models)")
    sm.add_argument("--model", metavar="KEY", help="export this unit or model key (default: best per attribute)")
    sm.add_argument("--no-verify", action="store_true", help="skip reloading the SavedModel to compare with Keras")
    sm.add_argument("--photo", action="store_true",
                    help="one SavedModel over models of different crops: the photo and its five landmarks in, "
                         "each crop cut in the graph, the run's ensembles averaged (kerasface.export.photo)")
    sm.add_argument("--tasks", metavar="A,B", help="--photo: the attributes it answers (default: the recipe's "
                                                   "photo_tasks)")

    tl = sub.add_parser("tflite", help="convert the float signature to .tflite, then print the parity report")
    tl.add_argument("run_dir", metavar="RUN_DIR")
    tl.add_argument("--quant", choices=("none", "fp16", "dynamic", "int8"), default="none")
    tl.add_argument("--out", metavar="FILE", help="output file (default: models/<run>[-<model>]-<quant>.tflite)")
    tl.add_argument("--model", metavar="KEY", help="convert this unit or model key (default: best per attribute)")
    tl.add_argument("--io", choices=("float32", "uint8", "int8"), default="float32",
                    help="input/output tensor type (default float32: [0, 255] floats in, probabilities and "
                         "pixels out); uint8/int8 (only with --quant int8): integer tensors for integer-only "
                         "accelerators and camera pipelines, their scale and zero point in FILE.json")
    tl.add_argument("--samples", type=int, default=128, help="int8 calibration images from the train split")
    tl.add_argument("--no-parity", action="store_true", help="skip the parity report")
    tl.add_argument("--max-images", type=int, help="parity: use at most this many test images")

    pa = sub.add_parser("parity", help="LiteRT vs Keras on the run's test split")
    pa.add_argument("run_dir", metavar="RUN_DIR")
    pa.add_argument("--tflite", required=True, metavar="FILE")
    pa.add_argument("--model", metavar="KEY", help="when FILE has no .json beside it: which model it holds")
    pa.add_argument("--max-images", type=int, help="use at most this many test images")
    pa.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def _notes(selection) -> None:
    for task, why in selection.dropped.items():
        _log(f"note: {task} not exported: {why}")
    for note in selection.notes:
        _log(f"note: {note}")


def saved_model(run, selection, name: str, out, version: int | None = None, verify: bool = True,
                graph=None) -> Path:
    """The saved-model command on a loaded run: export, then print its one JSON line."""
    from kerasface.export.saved_model import export_saved_model

    _notes(selection)
    path = export_saved_model(run, selection, name, out, version, verify=verify, log=_log, graph=graph)
    print(json.dumps({"saved_model": str(path), "version": int(path.name),
                      "heads": {t: u.name for t, u in selection.heads.items()}}))
    return path


def tflite(run, selection, quant: str, out: Path, samples: int = 128, io: str = "float32", parity: bool = True,
           max_images: int | None = None, graph=None) -> Path:
    """The tflite command on a loaded run: convert, write the parity report, print its JSON line.
    `graph`: a serving graph shared between conversions (its float SavedModel written once)."""
    from kerasface.export.tflite import attach_parity, export_tflite, format_parity, parity_report, sidecar_path

    _notes(selection)
    path = export_tflite(run, selection, quant, out, samples=samples, log=_log, io=io, graph=graph)
    _log(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB) and {sidecar_path(path)}")
    if parity:
        report = parity_report(run, path, max_images=max_images)
        attach_parity(path, report)
        print(format_parity(report))
    print(json.dumps({"tflite": str(path), "json": str(sidecar_path(path))}))
    return path


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kerasface.export.run import load_run, select_heads

    def body() -> None:
        if args.command == "tflite":
            from kerasface.export.litert_io import check_io

            check_io(args.quant, args.io)  # before loading anything
        run = load_run(args.run_dir)
        if args.command == "saved-model":
            if args.photo:
                from kerasface.export.photo import select_photo_heads

                selection = select_photo_heads(run, args.tasks.split(",") if args.tasks else None)
            else:
                selection = select_heads(run, args.model)
            saved_model(run, selection, args.name, args.out, args.version, verify=not args.no_verify)
        elif args.command == "tflite":
            from kerasface.export.tflite import default_tflite_path

            out = Path(args.out) if args.out else default_tflite_path(run, args.quant, args.model, args.io)
            tflite(run, select_heads(run, args.model), args.quant, out, args.samples, args.io,
                   parity=not args.no_parity, max_images=args.max_images)
        elif args.command == "parity":
            from kerasface.export.tflite import format_parity, parity_report

            report = parity_report(run, args.tflite, model=args.model, max_images=args.max_images)
            print(json.dumps(report, indent=2) if args.json else format_parity(report))

    return run_command(body)  # RunError is a ValueError


if __name__ == "__main__":
    sys.exit(main())
