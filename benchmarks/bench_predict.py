"""End-to-end `kerasface.predict` cost per photo: decode, detect, crop, every attribute.

    python benchmarks/bench_predict.py [--photos 200] [--batch-sizes 1,32] [--repeats 2] [--run RUN_DIR]
                                       [--json out.json]

Photos: N JPEGs of about 640x480 (random sizes 600..680 x 440..520, a random smooth background),
each with one to three faces pasted in: skimage's astronaut (scaled to 200..400 px) and faces of
skimage's lfw_subset (25x25, scaled up to 80..160 px); written to a temporary folder.
Models: the default deployable of a run (without --run, tests/run_fixture.py's fabricated run:
two small conv nets on the nose_centred_150 crop, merged into one 3-attribute export), exported
as a SavedModel and as an fp32 .tflite.

For each batch size (images per detection batch and faces per model call) the folder goes through
  detect only    kerasface.predict.Predictor with no model: decode + MTCNN (the floor)
  SavedModel     decode + detect + crop + all attributes (serving_default)
  TFLite         the same through LiteRT
and the table gives ms per photo, photos/s and the ratio to "detect only" at the same batch size
(1.00 = the attributes cost nothing beside detection). Each configuration first runs 2 photos to
warm up (model loading and tracing are not counted), and one untimed detection pass over the
folder comes first (MTCNN builds graphs per image size; its cost is printed); the configurations of one batch size run in
turn --repeats times and the fastest pass of each counts, since a shared machine drifts.
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_fixture_module  # noqa: E402

import numpy as np  # noqa: E402


def make_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` ~640x480 JPEGs with astronaut / lfw_subset faces pasted on random backgrounds."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    astronaut = Image.fromarray(skimage.data.astronaut())
    lfw = skimage.data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        w, h = int(rng.integers(600, 681)), int(rng.integers(440, 521))
        low = rng.uniform(40, 200, (3, 3, 3)).astype(np.uint8)  # smooth random background
        canvas = Image.fromarray(low).resize((w, h), Image.BICUBIC)
        noise = rng.normal(0, 6, (h, w, 3))
        canvas = Image.fromarray(np.clip(np.asarray(canvas) + noise, 0, 255).astype(np.uint8))
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 0.4:
                side = int(rng.integers(200, 401))
                face = astronaut.resize((side, side), Image.BILINEAR)
            else:
                side = int(rng.integers(80, 161))
                gray = (lfw[int(rng.integers(0, len(lfw)))] * 255).astype(np.uint8)
                face = Image.fromarray(gray).convert("RGB").resize((side, side), Image.BICUBIC)
            x, y = int(rng.integers(0, max(1, w - side))), int(rng.integers(0, max(1, h - side)))
            canvas.paste(face, (x, y))
        path = folder / f"photo_{i:04d}.jpg"
        canvas.save(path, quality=90)
        paths.append(path)
    return paths


def measure(predict, models, paths: list[Path], batch_size: int) -> dict:
    predictor = predict.Predictor(models, batch_size=batch_size)  # the models stay open: reused
    list(predictor.run([str(p) for p in paths[:2]]))  # warm-up: tracing, first MTCNN call
    predictor.detect_seconds = 0.0
    t0 = time.perf_counter()
    faces = failed = 0
    for r in predictor.run([str(p) for p in paths]):
        faces += len(r.faces)
        failed += r.error is not None
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "ms_per_photo": 1e3 * seconds / len(paths), "photos_per_s": len(paths) / seconds,
            "faces": faces, "failed": failed, "detect_share": predictor.detect_seconds / seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=200, help="photos in the folder (default 200)")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated (default 1,32)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="passes per configuration, interleaved; the fastest counts (default 2)")
    parser.add_argument("--run", help="a training run folder (default: build the tiny fixture run)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    import tensorflow as tf

    from kerasface import predict
    from kerasface.export.run import load_run, select_heads
    from kerasface.export.saved_model import export_saved_model
    from kerasface.export.tflite import export_tflite

    work = Path(tempfile.mkdtemp(prefix="kerasface-bench-predict-"))
    t0 = time.perf_counter()
    paths = make_photos(work / "photos", args.photos)
    made = time.perf_counter() - t0
    run_dir = Path(args.run) if args.run else load_fixture_module().make_run(work / "run")
    run = load_run(run_dir)
    selection = select_heads(run)
    quiet = lambda *a, **k: None  # noqa: E731
    sm_dir = export_saved_model(run, selection, "bench", work / "models", verify=False, log=quiet)
    tfl = export_tflite(run, selection, "none", work / "models" / "bench.tflite", log=quiet)
    models = {"SavedModel": predict.load_models([str(sm_dir)]),
              "TFLite": predict.load_models([str(tfl)])}
    info = models["SavedModel"][0].info
    print(f"{len(paths)} photos (~640x480 JPEG, made in {made:.1f} s) in {work / 'photos'}; "
          f"models: {info.crop} crop, input {info.input_size[0]}x{info.input_size[1]}x{info.channels}, "
          f"outputs {', '.join(o.name for o in info.outputs)}; {os.cpu_count()} CPU(s), TF {tf.__version__}")

    # MTCNN builds its graphs per image size, so the first pass over photos of many sizes is slow:
    # it is reported on its own, and every timed configuration then runs warm.
    cold = measure(predict, [], paths, batch_sizes[0])
    print(f"cold first pass (detect only, batch {batch_sizes[0]}): {cold['ms_per_photo']:.1f} ms/photo")
    rows = []
    configs = {"detect only": [], **models}
    for batch in batch_sizes:
        best: dict[str, dict] = {}
        for _ in range(max(1, args.repeats)):  # interleaved, so drifting machine load hits all alike
            for name, loaded in configs.items():
                m = measure(predict, loaded, paths, batch)
                if name not in best or m["seconds"] < best[name]["seconds"]:
                    best[name] = m
        for name in configs:
            ratio = best[name]["seconds"] / best["detect only"]["seconds"]
            rows.append({"config": name, "batch": batch, **best[name], "ratio": ratio})

    print(f"\n{'config':<13}{'batch':>6}{'ms/photo':>11}{'photos/s':>10}{'vs detect':>11}"
          f"{'detect %':>10}{'faces':>7}{'failed':>8}")
    for r in rows:
        print(f"{r['config']:<13}{r['batch']:>6}{r['ms_per_photo']:>11.1f}{r['photos_per_s']:>10.2f}"
              f"{r['ratio']:>10.2f}x{100 * r['detect_share']:>9.0f}%{r['faces']:>7}{r['failed']:>8}")
    print("\nvs detect: end-to-end time / detection-alone time at the same batch size; detect %: share "
          "of the run spent in MTCNN (the rest: decoding, cropping, model calls, bookkeeping).")
    if args.json:
        Path(args.json).write_text(json.dumps({"photos": len(paths), "cold": cold, "rows": rows}, indent=2) + "\n")
    for loaded in models.values():
        for m in loaded:
            m.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
