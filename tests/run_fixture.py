"""Fabricate a tiny trained run folder, as kerasface.train writes it, for export/serving tests.

Usable from tests (`import run_fixture`, the tests folder is on sys.path under pytest) and from
scripts (`benchmarks/bench_serving.py` loads it by path). Nothing here depends on the trainer:

    RUN_DIR/config.json            {"kind": "PaperConfig", "config": {...}}
    RUN_DIR/metrics.json           {"models": {UNIT: {"val": {...}, "test": {...}}}}
    RUN_DIR/models/UNIT/model.keras, unit.json
    RUN_DIR/tfrecords/<split>-0000N-of-0000M.tfrecord

Two small functional models on the `nose_centred_150` crop (stored crops are 150x150 RGB JPEGs):
- `tiny_rgb-nose_centred_150-all`: 48x48x3, heads smile(2), gender(2), landmarks(10) and a
  training-only `smile__aux` output (which exports must drop);
- `tiny_gray-nose_centred_150-all`: 60x60x1, heads smile(2), gender(2), landmarks(10).
The images are noise with a label-dependent bright region (smile: lower half, gender: left half)
and the models are fitted for a few epochs, so their outputs depend on the input and int8 parity
is meaningful. The validation numbers in metrics.json are fixed so that the default deployable
is a real merge: smile and landmarks come from tiny_rgb, gender from tiny_gray.
"""

from __future__ import annotations

import io
import json
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
# Fixed validation/test numbers: smile+landmarks best in tiny_rgb, gender best in tiny_gray.
VAL = {
    "tiny_rgb": {"smile": 0.91, "gender": 0.62, "landmarks_nme": 0.08},
    "tiny_gray": {"smile": 0.74, "gender": 0.83, "landmarks_nme": 0.11},
}
TEST = {
    "tiny_rgb": {"smile": 0.89, "gender": 0.60, "landmarks_nme": 0.09},
    "tiny_gray": {"smile": 0.72, "gender": 0.81, "landmarks_nme": 0.12},
}
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
        img[:, :half, 0] += 60
    else:
        img[:, half:, 2] += 60
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


def make_example(encoded: bytes, height: int, width: int, landmarks: np.ndarray, labels: dict[str, int]):
    import tensorflow as tf

    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[height])),
        "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[width])),
        "face/landmarks": tf.train.Feature(float_list=tf.train.FloatList(value=landmarks.reshape(-1).tolist())),
    }
    for task, value in labels.items():
        feature[f"label/{task}"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def build_model(input_size: int, channels: int, aux: bool, seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.AveragePooling2D(4, name="pool")(x)  # keeps a coarse layout (the labels are spatial)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32, activation="relu", name="features")(x)
    outputs = {
        "smile": keras.layers.Dense(2, name="head_smile")(x),
        "gender": keras.layers.Dense(2, name="head_gender")(x),
        "landmarks": keras.layers.Dense(10, name="head_landmarks")(x),
    }
    if aux:
        outputs["smile__aux"] = keras.layers.Dense(2, name="head_smile_aux")(x)
    return keras.Model(inputs, outputs, name=f"tiny_{input_size}_{channels}")


def _prepare(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    import tensorflow as tf

    x = tf.convert_to_tensor(images, tf.float32)
    if channels == 1:
        x = tf.image.rgb_to_grayscale(x)
    return tf.image.resize(x, (size, size), method="bilinear", antialias=False).numpy()


def make_run(run_dir: str | os.PathLike, seed: int = 0, epochs: int = 20) -> Path:
    """Write a complete fake run into `run_dir` and return its path."""
    import keras
    import tensorflow as tf

    run = Path(run_dir)
    (run / "tfrecords").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    data: dict[str, dict[str, np.ndarray]] = {}
    shards: dict[str, list[str]] = {}
    for split, (count, num_shards) in SPLITS.items():
        smiles = rng.integers(0, 2, count)
        genders = rng.integers(0, 2, count)
        images = np.stack([make_image(rng, s, g) for s, g in zip(smiles, genders)])
        marks = np.stack([make_landmarks(rng) for _ in range(count)])
        # One unknown label per split, as real datasets have (-1 = unknown).
        genders_stored = genders.copy()
        genders_stored[0] = -1
        decoded = []
        paths = []
        for shard in range(num_shards):
            path = run / "tfrecords" / f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"
            with tf.io.TFRecordWriter(str(path)) as writer:
                for i in range(shard, count, num_shards):
                    data_bytes = encode(images[i])
                    decoded.append((i, tf.io.decode_jpeg(data_bytes).numpy()))
                    ex = make_example(data_bytes, CROP_SIZE, CROP_SIZE, marks[i],
                                      {"smile": smiles[i], "gender": genders_stored[i]})
                    writer.write(ex.SerializeToString())
            paths.append(str(path.resolve()))
        decoded.sort(key=lambda t: t[0])
        data[split] = {"images": np.stack([d for _, d in decoded]), "smile": smiles,
                       "gender": genders, "landmarks": marks}
        shards[split] = paths

    config = {
        "name": "fixture_paper",
        "data": {"dataset": "synthetic", "crop": CROP, "val_fraction": 0.2},
        "crops": [CROP],
        "models": {
            key: {"arch": "tiny_conv", "input_size": size, "channels": ch, "arch_kwargs": {},
                  "tasks": [{"name": "smile", "kind": "classification", "num_classes": 2},
                            {"name": "gender", "kind": "classification", "num_classes": 2},
                            {"name": "landmarks", "kind": "landmarks", "num_classes": 10}]}
            for key, (size, ch, _) in MODELS.items()
        },
        "reported": {},
        "seed": seed,
        "mixed_precision": False,
        "demo": True,
    }
    (run / "config.json").write_text(json.dumps({"kind": "PaperConfig", "config": config}, indent=2))

    metrics = {"models": {}}
    for index, (key, (size, channels, aux)) in enumerate(MODELS.items()):
        unit = unit_name(key)
        model = build_model(size, channels, aux, seed + index)
        losses = {"smile": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  "gender": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  "landmarks": keras.losses.MeanSquaredError()}
        if aux:
            losses["smile__aux"] = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        weights = {k: (LANDMARK_WEIGHT if k == "landmarks" else 1.0) for k in losses}
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=losses, loss_weights=weights)
        train = data["train"]
        x = _prepare(train["images"], size, channels)
        y = {"smile": train["smile"], "gender": train["gender"],
             "landmarks": (train["landmarks"] / CROP_SIZE).reshape(len(x), 10)}
        if aux:
            y["smile__aux"] = train["smile"]
        model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=True)
        folder = run / "models" / unit
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / "model.keras")
        val = {"smile": VAL[key]["smile"], "gender": VAL[key]["gender"]}
        test = {"smile": TEST[key]["smile"], "gender": TEST[key]["gender"]}
        unit_json = {
            "unit": unit, "model_key": key, "arch": "tiny_conv", "crop": CROP,
            "input_size": [size, size], "channels": channels,
            "tasks": [{"name": "smile", "kind": "classification", "labels": LABELS["smile"]},
                      {"name": "gender", "kind": "classification", "labels": LABELS["gender"]},
                      {"name": "landmarks", "kind": "landmarks", "labels": LANDMARK_LABELS}],
            "val": val, "test": test, "records": str(run / "tfrecords"),
        }
        (folder / "unit.json").write_text(json.dumps(unit_json, indent=2))
        metrics["models"][unit] = {
            "val": {"smile": {"accuracy": val["smile"]}, "gender": {"accuracy": val["gender"]},
                    "landmarks": {"nme": VAL[key]["landmarks_nme"]}},
            "test": {"smile": {"accuracy": test["smile"]}, "gender": {"accuracy": test["gender"]},
                     "landmarks": {"nme": TEST[key]["landmarks_nme"]}},
        }
        keras.backend.clear_session()
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
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
