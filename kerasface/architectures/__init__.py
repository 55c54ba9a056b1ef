"""Architecture registry: one file per family, each a functional keras.Model builder.

Conventions every builder follows (the trainer, exporter and tests rely on them):
- signature `build(input_shape: tuple[int, int, int], heads: dict[str, int], **kwargs) -> keras.Model`;
  `heads` maps an output name to its number of units: a classification task -> its classes,
  "landmarks" -> 10 (x1, y1, ..., x5, y5 as fractions of the input width/height, linear output);
- inputs are float32 images in [0, 255]; the model rescales them itself (a layer named "rescale");
- outputs are a dict keyed by task name: logits for classification (no softmax), landmarks as above;
  an auxiliary training-only output of task T is keyed "T__aux";
- every layer that is new with respect to pretrained weights (the heads) has a name starting with
  "head_"; the shared feature vector that feeds the heads comes from a layer named "features".
"""

from kerasface.registry import Registry

ARCHITECTURES: Registry = Registry("architecture")


def build_model(model):
    """The keras.Model of a `ModelConfig`: its architecture with one head per task."""
    kwargs = dict(model.arch_kwargs)
    if model.weights:
        kwargs["weights"] = model.weights
    shape = (*model.input_hw, model.channels)
    return ARCHITECTURES.get(model.arch)(shape, {task.name: task.num_classes for task in model.tasks}, **kwargs)

from kerasface.architectures import cascade_cnn, inception, tcdcn  # noqa: E402,F401  (registration)
