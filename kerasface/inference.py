"""Running a trained model over a split: the compiled inference function that validation,
evaluation and the trainer share, and where a run folder finds its TFRecords."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def inference_fn(model):
    """`model` in inference mode as one compiled function that runs on the calling device.

    Not `predict_on_batch`: a model built under a MirroredStrategy scope runs the whole batch on every
    replica there and returns the copies concatenated (2N rows for N images on two GPUs).
    """
    import tensorflow as tf

    def forward(images):
        return model(images, training=False)

    if len(model.inputs) == 1:
        # any batch size, one trace: a split's last, smaller batch would otherwise trace again
        spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), model.inputs[0].dtype)
        return tf.function(forward, input_signature=[spec])
    return tf.function(forward, reduce_retracing=True)


def split_dataset(data, records, input_size, channels, split, batch_size=128):
    """The batches of an evaluation split. Kept and iterated again, it is not rebuilt (its parse
    function traced anew) and, when the split fits the cache, not decoded again."""
    from kerasface.data.pipeline import build_dataset

    return build_dataset(data, split, image_size=input_size, channels=channels, batch_size=batch_size,
                         training=False, folder=records)


def predict_dataset(forwards, ds, task_names) -> tuple[list[dict], dict]:
    """The outputs of each of `forwards` and the targets over `ds`, as NumPy arrays: every forward
    runs on each batch as it comes, so several models (an ensemble) read and decode the split once."""
    outputs, targets = [{} for _ in forwards], {}
    for images, target in ds:
        for forward, collected in zip(forwards, outputs):
            out = forward(images)
            for name in task_names:
                collected.setdefault(name, []).append(np.asarray(out[name], np.float32))
        for name, value in target.items():
            targets.setdefault(name, []).append(value.numpy())
    return [concatenate(o) for o in outputs], concatenate(targets)


def concatenate(parts: dict) -> dict:
    """{name: [array, ...]} -> {name: one array}."""
    return {k: np.concatenate(v) for k, v in parts.items()}


def records_folder(unit_dir: str | os.PathLike, recorded: str) -> Path:
    """The TFRecords folder a unit.json names: absolute as written by the trainer; an older relative
    entry is tried against the unit folder, its run folder and the working directory."""
    path = Path(recorded)
    candidates = [path] if path.is_absolute() else [Path(unit_dir) / path, Path(unit_dir).parents[1] / path, path]
    for candidate in candidates:
        if (candidate / "manifest.json").is_file():
            return candidate
    raise FileNotFoundError(f"{Path(unit_dir) / 'unit.json'}: its TFRecords folder {recorded!r} was not found "
                            f"(looked in {', '.join(str(c) for c in candidates)})")


def ensemble_functions(model_cfg, unit_dir) -> list:
    """Inference functions of the last `model_cfg.ensemble` checkpoints of the last stage (empty
    when the model asks for no ensemble); each restores into a model of its own."""
    import dataclasses

    import tensorflow as tf

    from kerasface.architectures import build_model

    count = model_cfg.ensemble
    if not count:
        return []
    folder = Path(unit_dir) / "checkpoints" / f"stage{len(model_cfg.stages) - 1}"
    state = tf.train.get_checkpoint_state(str(folder))
    functions = []
    for path in list(state.all_model_checkpoint_paths)[-count:] if state else []:
        model = build_model(dataclasses.replace(model_cfg, weights=""))
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        functions.append(inference_fn(model))
    return functions
