"""Face detection, alignment and crop costs, beside mtcnn's own `detect_faces` in the same run.

    python benchmarks/bench_faces.py [--repeats 5] [--batch 8] [--crops 50]

Photos: skimage's astronaut pasted on a grey canvas, 640x480 and 1920x1080. For each size:
  mtcnn loop      `MTCNN().detect_faces(uint8 image)`, one call per image (as users call it)
  ours, 1 by 1    `kerasface.faces.detect_faces(image)`
  ours, batch     `kerasface.faces.detect_faces_batch([image] * batch)`, per image
ratios are ours / mtcnn loop (below 1 = faster). Then alignment + crop per face for every crop
scheme (`apply_crop`, NumPy/OpenCV) and `align_tf` (eager, and a tf.function on a batch).
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def _photo(width: int, height: int) -> np.ndarray:
    import cv2
    import skimage.data

    astronaut = skimage.data.astronaut()
    side = min(512, height)
    face = astronaut
    if side != 512:
        face = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 118, np.uint8)
    top, left = (height - side) // 2, (width - side) // 2
    canvas[top : top + side, left : left + side] = face
    return canvas


def _time(fn, repeats: int) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crops", type=int, default=50, help="crops per scheme to time")
    args = parser.parse_args(argv)

    import tensorflow as tf
    from mtcnn import MTCNN

    from kerasface.faces import (
        CROPS,
        align_tf,
        apply_crop,
        detect_faces,
        detect_faces_batch,
        get_detector,
        template,
    )

    device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, device {device}")
    raw = MTCNN(device="CPU:0")
    get_detector()

    print("\nDetection, ms per image (median of", args.repeats, "runs; batch of", args.batch, ")")
    print(
        f"{'photo':>10s} {'mtcnn loop':>11s} {'ours 1by1':>10s} {'ours batch':>11s} "
        f"{'1by1/mtcnn':>11s} {'batch/mtcnn':>12s} {'faces':>6s}"
    )
    face = None
    for width, height in ((640, 480), (1920, 1080)):
        photo = _photo(width, height)
        batch = [photo] * args.batch
        t_raw = _time(lambda: raw.detect_faces(photo), args.repeats)
        t_one = _time(lambda: detect_faces(photo), args.repeats)
        t_batch = _time(
            lambda: detect_faces_batch(batch, batch_size=args.batch), max(1, args.repeats // 2)
        ) / args.batch
        faces = detect_faces(photo)
        if width == 640:
            face = (photo, faces[0])
        print(
            f"{width}x{height:<5d} {t_raw * 1e3:11.1f} {t_one * 1e3:10.1f} {t_batch * 1e3:11.1f} "
            f"{t_one / t_raw:11.2f} {t_batch / t_raw:12.2f} {len(faces):6d}"
        )
    t_det = _time(lambda: detect_faces(face[0]), args.repeats)

    photo, f = face
    print(
        f"\nAlignment + crop, ms per face (640x480 photo; {args.crops} crops each); "
        f"ratio = crop / detection ({t_det * 1e3:.1f} ms)"
    )
    print(f"{'scheme':>28s} {'size':>8s} {'ms/face':>8s} {'ratio':>7s}")
    for name in CROPS.names():
        scheme = CROPS.get(name)
        t0 = time.perf_counter()
        for _ in range(args.crops):
            apply_crop(name, photo, f.points)
        per = (time.perf_counter() - t0) / args.crops
        size = "source" if scheme.size is None else f"{scheme.size[0]}x{scheme.size[1]}"
        print(f"{name:>28s} {size:>8s} {per * 1e3:8.3f} {per / t_det:7.4f}")

    dst = template((112, 96))
    t_eager = _time(lambda: align_tf(photo, f.points, (112, 96), dst), args.repeats)
    images = tf.constant(np.stack([photo] * 32))
    marks = tf.constant(np.stack([f.points] * 32))
    graph = tf.function(lambda i, m: align_tf(i, m, (112, 96), dst))
    t_graph = _time(lambda: graph(images, marks)[0].numpy(), args.repeats) / 32
    for label, t in (("align_tf 112x96 eager", t_eager), ("align_tf 112x96 graph b32", t_graph)):
        print(f"{label:>28s} {'112x96':>8s} {t * 1e3:8.3f} {t / t_det:7.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
