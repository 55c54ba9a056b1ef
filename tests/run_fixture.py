"""A tiny run folder trained by kerasface's own trainer, for the export/serving/predict tests.

Usable from tests (`import run_fixture`, the tests folder is on sys.path under pytest) and from
scripts (`benchmarks/bench_serving.py` loads it by path):

    RUN_DIR/config.json, metrics.json, results.md       as `kerasface.train` writes them
    RUN_DIR/models/UNIT/model.keras, unit.json, ...
    RUN_DIR/tfrecords/nose_centred_150/                  the records (schema v2, with manifest.json)

Two small functional models on the `nose_centred_150` crop (stored crops are 150x150 RGB JPEGs):
- `tiny_rgb-nose_centred_150-all`: 48x48x3, heads smile(2), gender(2), landmarks(10) and a
  training-only `smile__aux` output (which exports must drop);
- `tiny_gray-nose_centred_150-all`: 60x60x1, heads smile(2), gender(2), landmarks(10).
The images are noise with label-dependent bright regions (smile: lower or upper half, gender:
left or right half). Each model trains some heads at loss weight 0 (their heads stay at their
random initialisation), so that the export's default choice of the best validated head per
attribute is a real merge: smile and landmarks come from tiny_rgb, gender from tiny_gray.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

CROP = "nose_centred_150"
CROP_SIZE = 150
LABELS = {"smile": ["not_smiling", "smiling"], "gender": ["female", "male"]}
LANDMARK_LABELS = [f"{p}_{c}" for p in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right") for c in "xy"]

# (model key, input size, channels, has an aux output)
MODELS = {
    "tiny_rgb": (48, 3, True),
    "tiny_gray": (60, 1, False),
}
FIXTURE_ARCH = "fixture_tiny_conv"
LANDMARK_WEIGHT = 3.0
SPLITS = {"train": (64, 2), "val": (16, 1), "test": (32, 1)}  # images, shards


def unit_name(key: str) -> str:
    return f"{key}-{CROP}-all"


def make_image(rng: np.random.Generator, smile: int, gender: int, size: int = CROP_SIZE) -> np.ndarray:
    img = rng.integers(0, 140, size=(size, size, 3)).astype(np.int32)
    half = size // 2
    if smile:
        img[half:, :, :] += 100
    else:
        img[:half, :, :] += 100
    if gender:
        img[:, :half, :] += 60
    else:
        img[:, half:, :] += 60
    return np.clip(img, 0, 255).astype(np.uint8)


def make_landmarks(rng: np.random.Generator, size: int = CROP_SIZE) -> np.ndarray:
    base = np.array([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.38, 0.72], [0.62, 0.72]], np.float32)
    return ((base + rng.normal(0, 0.02, base.shape)) * size).astype(np.float32)


def encode(image: np.ndarray, fmt: str = "JPEG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    mode = "L" if image.ndim == 3 and image.shape[2] == 1 else "RGB"
    Image.fromarray(image[..., 0] if mode == "L" else image, mode).save(buf, format=fmt, quality=92)
    return buf.getvalue()


def build_fixture_model(input_shape, heads: dict[str, int], aux: bool = False):
    """The fixture's architecture: two strided convolutions, a coarse pool (the cues are spatial)."""
    import keras

    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.AveragePooling2D(4, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32, activation="relu", name="features")(x)
    outputs = {name: keras.layers.Dense(units, name=f"head_{name}")(x) for name, units in heads.items()}
    if aux:
        outputs["smile__aux"] = keras.layers.Dense(heads["smile"], name="head_smile_aux")(x)
    return keras.Model(inputs, outputs, name=f"tiny_{input_shape[0]}_{input_shape[-1]}")


def write_records(folder: Path, rng: np.random.Generator) -> None:
    """The splits of SPLITS as sharded TFRecords plus manifest.json (one unknown gender per split)."""
    from kerasface.config import write_json
    from kerasface.data.tfrecord import MANIFEST, SCHEMA_VERSION, LabelSpec, ShardedWriter, make_example

    folder.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, (count, shards) in SPLITS.items():
        writer = ShardedWriter(folder, split, shards)
        for i in range(count):
            smile, gender = int(rng.integers(0, 2)), int(rng.integers(0, 2))
            labels = {"smile": smile, "gender": -1 if i == 0 else gender}
            writer.write(make_example(encode(make_image(rng, smile, gender)), "jpeg", CROP_SIZE, CROP_SIZE, 3,
                                      f"{split}/{i}.jpg", make_landmarks(rng), labels))
        splits[split] = {"records": count, "files": [p.name for p in writer.close()]}
    labels = {name: LabelSpec("class", tuple(names)) for name, names in LABELS.items()}
    write_json(folder / MANIFEST, {
        "schema_version": SCHEMA_VERSION, "dataset": "fixture", "crop": CROP, "image_size": [CROP_SIZE, CROP_SIZE],
        "channels": 3, "image_format": "jpeg", "attributes": LABELS,
        "labels": {k: v.to_json() for k, v in labels.items()}, "splits": splits})


def fixture_paper(run: Path, steps: int):
    from kerasface.config import DataConfig, ModelConfig, PaperConfig, StageConfig, TaskConfig

    tasks = (TaskConfig("smile"), TaskConfig("gender"),
             TaskConfig("landmarks", kind="landmarks", num_classes=10, loss_weight=LANDMARK_WEIGHT))
    models = {}
    for key, (size, channels, aux) in MODELS.items():
        untrained = ("gender",) if key == "tiny_rgb" else ("smile", "landmarks")
        stage = StageConfig(optimizer="adam", lr=3e-3, batch_size=16, steps=steps, eval_every=steps,
                            loss_weights=tuple((name, 0.0) for name in untrained))
        models[key] = ModelConfig(arch=FIXTURE_ARCH, input_size=size, channels=channels, arch_kwargs={"aux": aux},
                                  tasks=tasks, stages=(stage,), description=f"fixture {size}x{size}x{channels}")
    data = DataConfig(dataset="fixture", tfrecords=str(run / "tfrecords"), deterministic=True, cache=False,
                      augment=None)
    return PaperConfig(name="fixture_paper", data=data, crops=(CROP,), models=models, demo=True)


def make_run(run_dir: str | os.PathLike, seed: int = 0, epochs: int = 20) -> Path:
    """Train the fixture's two models with kerasface.train into `run_dir` and return its path."""
    import tensorflow as tf

    from kerasface.architectures import ARCHITECTURES
    from kerasface.train import plan_units, train_paper

    if FIXTURE_ARCH not in ARCHITECTURES:
        ARCHITECTURES.register(FIXTURE_ARCH)(build_fixture_model)
    run = Path(run_dir)
    write_records(run / "tfrecords" / CROP, np.random.default_rng(seed))
    paper = fixture_paper(run, steps=epochs * SPLITS["train"][0] // 16)
    train_paper(paper, run, plan_units(paper), None, progress=False,
                strategy=tf.distribute.MirroredStrategy(["/cpu:0"]))
    return run


def cached_run(base: str | os.PathLike) -> Path:
    """The fixture run under `base/fixture_run`, built once (tests share it across modules)."""
    import shutil

    run = Path(base) / "fixture_run"
    done = run / ".complete"
    if not done.exists():
        if run.exists():
            shutil.rmtree(run)
        make_run(run)
        done.write_text("ok\n")
    return run


if __name__ == "__main__":
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "runs/fixture"
    print(make_run(target))
