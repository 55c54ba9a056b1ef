"""The serving graph: trained Keras models (heads) behind float, bytes and tf.Example inputs.

One `ServingGraph` answers every selected attribute in one call:

- `serve_float(image)`: float32 [B, H, W, C] in [0, 255] at the export's input size. With one
  model that is the model's own input (size and colour mode), passed to it unchanged, so the
  outputs equal Keras's. With several models it is the common crop; each head converts it to its
  own colour mode (tf.image.rgb_to_grayscale) and size (bilinear, antialias=False) in the graph.
- `serve_bytes(image_bytes)`: tf.string [B] of encoded JPEG/PNG crops. Each head decodes and
  resizes with `kerasface.data.pipeline.preprocess_image`, the very function training used, so
  the pixels each model sees are those it saw in training.
- `serve_examples(examples)`: serialized tf.Example [B] with `image/encoded`, then as above.

Outputs: one per attribute. Classification: softmax probabilities [B, classes] in the order of
the labels. Landmarks: [B, 10] = x1, y1, ..., x5, y5 in pixels of the input crop (the float input
for `serve_float`, the decoded image for the bytes and tf.Example inputs). Training-only outputs
("T__aux") are never exported.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass

import tensorflow as tf

from kerasface.data.pipeline import preprocess_image, to_model_input
from kerasface.export.run import Selection, Task, Unit
from kerasface.tasks import head_kind

FLOAT_INPUT = "image"
BYTES_INPUT = "image_bytes"
EXAMPLES_INPUT = "examples"
CLASSIFY_INPUT = "inputs"  # the name TF Serving's Classify API requires
LABELS_INPUT = "rows"
PREPROCESSING = (
    "decode (JPEG/PNG, 3 channels) -> float32 -> tf.image.rgb_to_grayscale if the model is grayscale "
    "-> tf.image.resize(bilinear, antialias=False) to the model's input size; pixel values stay in "
    "[0, 255] (the models rescale themselves); kerasface.data.pipeline.preprocess_image"
)


def load_keras_model(unit: Unit):
    import keras

    import kerasface.architectures  # noqa: F401  (registers any custom objects the architectures define)
    try:
        return keras.saving.load_model(unit.model_path, compile=False)
    except Exception as exc:
        raise RuntimeError(f"{unit.model_path}: cannot load the Keras model: {exc}") from exc


def with_features(model):
    """The model with its "features" layer as an extra output (embedding heads export it)."""
    import keras

    outputs = dict(model.output) if isinstance(model.output, dict) else dict(zip(model.output_names, model.outputs))
    outputs["features"] = model.get_layer("features").output
    return keras.Model(model.inputs, outputs, name=model.name)


@dataclass
class Head:
    unit: Unit
    model: object  # keras.Model
    tasks: list[Task]

    @property
    def size(self) -> tuple[int, int]:
        return self.unit.input_size

    @property
    def channels(self) -> int:
        return self.unit.channels


def _outputs_as_dict(model, raw, unit: Unit) -> dict:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, (list, tuple)):
        return dict(zip(model.output_names, raw))
    if len(unit.tasks) == 1:
        return {unit.tasks[0].name: raw}
    raise ValueError(f"{unit.model_path}: the model returns one tensor but unit.json lists "
                     f"{len(unit.tasks)} tasks; outputs must be a dict keyed by task")


class ServingGraph:
    photo = False  # kerasface.export.photo.PhotoGraph: the photo and its landmarks in

    def __init__(self, selection: Selection, models: dict[str, object] | None = None):
        self.selection = selection
        models = models or {}
        self.heads: list[Head] = []
        for unit in selection.units:
            model = models[unit.name] if unit.name in models else load_keras_model(unit)
            tasks = selection.tasks_of(unit)
            if any(head_kind(t.kind).needs_features for t in tasks):
                model = with_features(model)
            self.heads.append(Head(unit, model, tasks))
            self._check_model(self.heads[-1])
        self.tasks: list[Task] = [self.selection.heads[name].task(name) for name in selection.heads]
        if len(self.heads) == 1:
            head = self.heads[0]
            self.input_size, self.channels = head.size, head.channels
        else:
            sizes = {h.size for h in self.heads}
            chans = {h.channels for h in self.heads}
            from kerasface.faces.crops import CROPS

            crop_size = CROPS.get(selection.crop).size if selection.crop in CROPS else None
            if len(sizes) == 1:
                self.input_size = sizes.pop()
            elif crop_size is not None:
                self.input_size = tuple(crop_size)
            else:
                self.input_size = max(sizes, key=lambda s: (s[0] * s[1], s))
            self.channels = chans.pop() if len(chans) == 1 else 3

    # ------------------------------------------------------------------ description

    @property
    def single(self) -> bool:
        return len(self.heads) == 1

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def labels(self) -> dict[str, list[str]]:
        return {t.name: list(t.labels) for t in self.tasks}

    def _check_model(self, head: Head) -> None:
        model, unit = head.model, head.unit
        shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
        if len(getattr(model, "inputs", [None])) != 1:
            raise ValueError(f"{unit.model_path}: expected a model with one image input, got {len(model.inputs)}")
        want = (unit.input_size[0], unit.input_size[1], unit.channels)
        if shape is not None and all(s is not None for s in shape) and tuple(shape) != want:
            raise ValueError(f"{unit.model_path}: model input is {shape}, unit.json says {want}")

    # ------------------------------------------------------------------ heads

    def _run_head(self, head: Head, x: tf.Tensor) -> dict[str, tf.Tensor]:
        raw = _outputs_as_dict(head.model, head.model(x, training=False), head.unit)
        out = {}
        for task in head.tasks:
            if task.name not in raw:
                raise ValueError(f"{head.unit.model_path}: no output {task.name!r}; outputs: "
                                 f"{', '.join(k for k in raw if not k.endswith('__aux'))}")
            kind = head_kind(task.kind)
            features = raw.get("features") if kind.needs_features else None
            # landmarks stay fractions of width/height here; _assemble scales them to pixels
            out[task.name] = kind.export(tf.cast(raw[task.name], tf.float32), features)
        return out

    @staticmethod
    def _to_head(x: tf.Tensor, head: Head) -> tf.Tensor:
        return to_model_input(x, head.size, head.channels)

    def _assemble(self, per_head: list[dict[str, tf.Tensor]], scale_wh: tf.Tensor) -> dict[str, tf.Tensor]:
        merged: dict[str, tf.Tensor] = {}
        for outs in per_head:
            merged.update(outs)
        result = {}
        for task in self.tasks:
            y = merged[task.name]
            if head_kind(task.kind).pixel_coordinates:
                scale = tf.tile(scale_wh, [1, 5]) if scale_wh.shape.rank == 2 else tf.tile(scale_wh, [5])
                y = y * scale
            result[task.name] = tf.identity(y, name=task.name)
        return result

    # ------------------------------------------------------------------ serving functions

    def serve_float(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        image = tf.cast(image, tf.float32)
        per_head = [self._run_head(h, self._to_head(image, h)) for h in self.heads]
        scale = tf.constant([self.input_size[1], self.input_size[0]], tf.float32)
        return self._assemble(per_head, scale)

    def serve_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        image_bytes = tf.reshape(image_bytes, [-1])
        per_head = []
        for h in self.heads:
            x = tf.map_fn(lambda b, h=h: preprocess_image(b, h.size, h.channels), image_bytes,
                          fn_output_signature=tf.TensorSpec([h.size[0], h.size[1], h.channels], tf.float32))
            per_head.append(self._run_head(h, x))
        if any(head_kind(t.kind).pixel_coordinates for t in self.tasks):
            def size_of(b):
                shape = tf.shape(tf.io.decode_image(b, channels=3, expand_animations=False))
                return tf.cast(tf.stack([shape[1], shape[0]]), tf.float32)

            scale = tf.map_fn(size_of, image_bytes, fn_output_signature=tf.TensorSpec([2], tf.float32))
        else:
            scale = tf.ones([tf.shape(image_bytes)[0], 2], tf.float32)
        return self._assemble(per_head, scale)

    def serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(tf.reshape(examples, [-1]),
                                     {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
        return self.serve_bytes(parsed["image/encoded"])

    def classify(self, task: Task):
        labels = tf.constant(list(task.labels))

        def fn(inputs):
            probs = self._classify_scores(inputs, task)
            classes = tf.tile(labels[None, :], [tf.shape(probs)[0], 1])
            return {"classes": classes, "scores": probs}

        return fn

    def embed(self, task: Task):
        """embed_<task>(image_bytes) -> {"embedding": [B, D] L2-normalised}: what a face gallery or
        a verification service calls, without the other outputs' names."""

        def embed(image_bytes):
            return {"embedding": self.serve_bytes(image_bytes)[task.name]}

        return embed

    def _classify_scores(self, inputs: tf.Tensor, task: Task) -> tf.Tensor:
        parsed = tf.io.parse_example(tf.reshape(inputs, [-1]), {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
        head = next(h for h in self.heads if any(t.name == task.name for t in h.tasks))
        x = tf.map_fn(lambda b: preprocess_image(b, head.size, head.channels), parsed["image/encoded"],
                      fn_output_signature=tf.TensorSpec([head.size[0], head.size[1], head.channels], tf.float32))
        return self._run_head(head, x)[task.name]

    def label_table(self, rows: tf.Tensor) -> dict[str, tf.Tensor]:
        n = tf.shape(tf.reshape(rows, [-1]))[0]
        return {t.name: tf.tile(tf.constant(list(t.labels))[None, :], [n, 1]) for t in self.tasks}

    # ------------------------------------------------------------------ signatures

    def float_spec(self) -> tf.TensorSpec:
        return tf.TensorSpec([None, self.input_size[0], self.input_size[1], self.channels], tf.float32, name=FLOAT_INPUT)

    def endpoints(self, float_only: bool = False) -> list[tuple[str, object, list[tf.TensorSpec]]]:
        """(signature name, python function with the right argument name, input signature)."""

        def serving_default(image):
            return self.serve_float(image)

        result = [("serving_default", serving_default, [self.float_spec()])]
        if float_only:
            return result

        def predict_images(image_bytes):
            return self.serve_bytes(image_bytes)

        def predict_examples(examples):
            return self.serve_examples(examples)

        def labels(rows):
            return self.label_table(rows)

        result += [
            ("predict_images", predict_images, [tf.TensorSpec([None], tf.string, name=BYTES_INPUT)]),
            ("predict_examples", predict_examples, [tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)]),
        ]
        for task in self.tasks:
            if head_kind(task.kind).has_classes:
                result.append((f"classify_{task.name}", self.classify(task),
                               [tf.TensorSpec([None], tf.string, name=CLASSIFY_INPUT)]))
            if head_kind(task.kind).needs_features:  # a face embedding: its own endpoint for galleries
                result.append((f"embed_{task.name}", self.embed(task),
                               [tf.TensorSpec([None], tf.string, name=BYTES_INPUT)]))
        result.append(("labels", labels, [tf.TensorSpec([None], tf.int32, name=LABELS_INPUT)]))
        return result

    def float_saved_model(self) -> str:
        """The folder of this graph's serving_default-only SavedModel (what the TFLite converter
        reads), written on first use and removed with the graph: converting one graph to several
        quantisations writes and traces it once."""
        return self._float_folder.name

    @functools.cached_property
    def _float_folder(self):
        folder = tempfile.TemporaryDirectory(prefix="kerasface-float-")
        self.archive(float_only=True).write_out(folder.name, verbose=False)
        return folder

    def archive(self, float_only: bool = False):
        """A keras.export.ExportArchive with the models tracked and the signatures added."""
        import keras

        archive = keras.export.ExportArchive()
        for h in self.heads:
            archive.track(h.model)
        for name, fn, spec in self.endpoints(float_only):
            archive.add_endpoint(name, fn, spec)
        return archive


def serving_graph(selection: Selection) -> ServingGraph:
    """The graph of a selection: a photo export (kerasface.export.photo) or crops in."""
    from kerasface.export.photo import PhotoGraph

    return PhotoGraph(selection) if selection.photo else ServingGraph(selection)
