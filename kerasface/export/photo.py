"""A photo export: one SavedModel over models trained on different crops of the same face.

Input: the whole photo (encoded JPEG/PNG) and its five landmarks, as a detector gives them. The
graph cuts each model's own crop from the photo (`kerasface.faces.crops.crop_tf`, the twin of the
converter's crop), runs every model once and averages the outputs of an ensemble's members:
gnet_snet's smile is the mean of SNet1's (scheme 1) and SNet2's (scheme 5) probabilities, served
beside GNet's gender (scheme 2) in one call.

    serving_default  image_bytes  string  [B]          encoded photos, any size
                     landmarks    float32 [B, 5, 2]    (x, y) pixels: left eye, right eye, nose,
                                                       left and right mouth corner
                     -> one output per attribute, as every export (probabilities per class)
    labels           rows         int32   [B]          -> each output's labels, per row

What it answers (`select_photo_heads`): the tasks of `--tasks`, else the run config's
`photo_tasks`; a task named by one of the config's `ensembles` is the mean of its members, any
other the best unit by validation score over every crop. There is no float-crop input (the
models read different crops) and no TFLite form (the in-graph warp, ImageProjectiveTransformV3,
is not a TFLite builtin): for phones, export one model with `--model`.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from kerasface.data.pipeline import decode_rgb, to_model_input
from kerasface.export.graph import BYTES_INPUT, LABELS_INPUT, ServingGraph
from kerasface.export.run import Run, RunError, Selection, Unit, score
from kerasface.tasks import head_kind

LANDMARKS_INPUT = "landmarks"
# predict cuts no crop for a photo export: the model gets the whole image and the landmarks
PHOTO_CROP = "original"
INPUT_MODE = "photo_landmarks"


def _evaluated_unit(run: Run, key: str, task: str) -> Unit:
    found = [u for u in run.units.values() if u.model_key == key and any(t.name == task for t in u.tasks)]
    if len(found) != 1:
        raise RunError(f"{run.folder}: ensemble member {key!r} has {len(found)} trained units answering {task} "
                       f"({', '.join(u.name for u in found) or 'none'}); a photo export needs exactly one")
    return found[0]


def select_photo_heads(run: Run, tasks: list[str] | None = None) -> Selection:
    """The units a photo export runs (see the module docstring)."""
    cfg = run.config.get("config", {})
    wanted = list(tasks or cfg.get("photo_tasks") or ())
    if not wanted:
        raise RunError(f"{run.folder / 'config.json'}: no tasks for a photo export: give --tasks or set the "
                       f"recipe's photo_tasks")
    ensembles = {task: keys for task, keys in (cfg.get("ensembles") or {}).values()}
    heads, members = {}, {}
    for task in wanted:
        if task in ensembles:
            members[task] = [_evaluated_unit(run, key, task) for key in ensembles[task]]
            heads[task] = members[task][0]
            continue
        candidates = [u for u in run.units.values() if any(t.name == task for t in u.tasks)]
        if not candidates:
            raise RunError(f"{run.folder}: no trained unit answers {task!r}")
        candidates.sort(key=lambda u: (-score(u, u.task(task)), u.name))
        heads[task] = candidates[0]
        if not math.isfinite(score(candidates[0], candidates[0].task(task))) and len(candidates) > 1:
            raise RunError(f"{run.folder}: {task}: no validation scores to choose among "
                           f"{', '.join(u.name for u in candidates)}; evaluate the run first")
    for task, unit in heads.items():
        if head_kind(unit.task(task).kind).pixel_coordinates:
            raise RunError(f"{unit.folder / 'unit.json'}: {task} is in crop pixels; a photo export answers "
                           f"attributes only")
    rule = ("photo export: ensembles of the run config averaged, other attributes from the best unit by "
            "validation score over every crop; each unit's crop cut in the graph from the photo")
    return Selection(crop=PHOTO_CROP, heads=heads, rule=rule, members=members, photo=True)


class PhotoGraph(ServingGraph):
    """A ServingGraph whose input is the photo and its landmarks (see the module docstring)."""

    photo = True

    def serve_photos(self, image_bytes: tf.Tensor, landmarks: tf.Tensor) -> dict[str, tf.Tensor]:
        from kerasface.faces.crops import crop_tf

        image_bytes = tf.reshape(image_bytes, [-1])
        landmarks = tf.reshape(tf.cast(landmarks, tf.float32), [-1, 5, 2])
        answers: dict[str, list[tf.Tensor]] = {}
        for head in self.heads:
            def model_input(args, head=head):
                crop = crop_tf(head.unit.crop, decode_rgb(args[0]), args[1])
                return to_model_input(crop, head.size, head.channels)

            x = tf.map_fn(model_input, (image_bytes, landmarks),
                          fn_output_signature=tf.TensorSpec([*head.size, head.channels], tf.float32))
            for name, y in self._run_head(head, x).items():
                answers.setdefault(name, []).append(y)
        return {t.name: tf.identity(tf.reduce_mean(tf.stack(answers[t.name]), 0), name=t.name) for t in self.tasks}

    def endpoints(self, float_only: bool = False):
        def serving_default(image_bytes, landmarks):
            return self.serve_photos(image_bytes, landmarks)

        def labels(rows):
            return self.label_table(rows)

        return [("serving_default", serving_default, [tf.TensorSpec([None], tf.string, name=BYTES_INPUT),
                                                      tf.TensorSpec([None, 5, 2], tf.float32, name=LANDMARKS_INPUT)]),
                ("labels", labels, [tf.TensorSpec([None], tf.int32, name=LABELS_INPUT)])]

    # ------------------------------------------------------------------ what export_saved_model asks

    def input_description(self) -> dict:
        crops = {h.unit.name: h.unit.crop for h in self.heads}
        return {
            "input_mode": INPUT_MODE,
            "inputs": {"serving_default": {BYTES_INPUT: {"dtype": "string", "shape": [-1]},
                                           LANDMARKS_INPUT: {"dtype": "float32", "shape": [-1, 5, 2]}}},
            "preprocessing": {
                "photo_input": "encoded JPEG/PNG of the whole photo and its five landmarks (x, y pixels: left eye, "
                               "right eye, nose, left and right mouth corner); each model's crop is cut in the "
                               "graph (kerasface.faces.crops.crop_tf), then resized to the model's input",
                "crops": crops,
            },
        }

    def warmup_requests(self, name: str) -> list[bytes]:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

        from kerasface.export.saved_model import gray_jpeg

        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.model_spec.signature_name = "serving_default"
        request.inputs[BYTES_INPUT].CopyFrom(tf.make_tensor_proto(np.array([gray_jpeg(250, 250)], dtype=object)))
        request.inputs[LANDMARKS_INPUT].CopyFrom(tf.make_tensor_proto(sample_landmarks()[None]))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        return [log.SerializeToString()]

    def check_reloaded(self, folder, atol: float = 1e-3) -> float:
        """The reloaded SavedModel against the Keras models fed the converter's own crops (NumPy
        `apply_crop`), on a synthetic photo: the in-graph crop may differ by one grey level."""
        from kerasface.data.synthetic import render_face
        from kerasface.faces.crops import apply_crop
        from kerasface.data.convert import encode

        image, points, _ = render_face(0, (250, 250))
        loaded = tf.saved_model.load(str(folder))
        got = loaded.signatures["serving_default"](**{
            BYTES_INPUT: tf.constant([encode(image, "png", 0)]), LANDMARKS_INPUT: tf.constant(points[None], tf.float32)})
        answers: dict[str, list[np.ndarray]] = {}
        for head in self.heads:
            crop, _ = apply_crop(head.unit.crop, image, points)
            x = to_model_input(tf.constant(crop[None], tf.float32), head.size, head.channels)
            for name, y in self._run_head(head, x).items():
                answers.setdefault(name, []).append(y.numpy())
        worst = max(float(np.max(np.abs(got[name].numpy() - np.mean(ys, 0)))) for name, ys in answers.items())
        if worst > 0.05:  # probabilities; a grey level of the crop moves them far less
            raise RuntimeError(f"{folder}: reloaded photo SavedModel differs from the Keras models on NumPy crops "
                               f"by {worst:g}")
        return worst


def sample_landmarks() -> np.ndarray:
    """Five plausible points of a frontal face in a 250x250 image (warmup requests)."""
    return np.array([[100, 115], [150, 115], [125, 140], [105, 165], [145, 165]], np.float32)
