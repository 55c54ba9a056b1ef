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
# architecture -> resolve(weights) -> local file path, raising FileNotFoundError with one line
# naming the file and where users get it: checked before a run trains anything
WEIGHT_FILES: Registry = Registry("pretrained weights resolver")


def get(name: str):
    """The builder registered as `name`, e.g. `get("vgg_face")(weights=PATH, include_top=False)`."""
    return ARCHITECTURES.get(name)


def check_weights(model) -> None:
    """Fail now, not hours into a run, when a ModelConfig names pretrained weights that are absent."""
    if model.weights and model.arch in WEIGHT_FILES:
        WEIGHT_FILES.get(model.arch)(model.weights)


def build_model(model):
    """The keras.Model of a `ModelConfig`: its architecture with one head per task."""
    kwargs = dict(model.arch_kwargs)
    if model.weights:
        kwargs["weights"] = model.weights
    shape = (*model.input_hw, model.channels)
    return ARCHITECTURES.get(model.arch)(shape, {task.name: task.num_classes for task in model.tasks}, **kwargs)


def load_trained_model(path):
    """A trained Keras model: a unit folder (its model.keras) or a .keras file."""
    from pathlib import Path

    import keras

    path = Path(path)
    file = path / "model.keras" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no trained model there (init_from expects a unit folder or a .keras file)")
    return keras.saving.load_model(file, compile=False)


def copy_matching_weights(source, target, reinit_from: str = "") -> tuple[list[str], list[str]]:
    """Copy the weights of every layer of `target` that `source` has under the same name with the
    same shapes, except `reinit_from` and the layers after it (target.layers order); returns
    (copied layer names, layers left as initialised)."""
    copied, kept = [], []
    by_name = {layer.name: layer for layer in source.layers}
    names = [layer.name for layer in target.layers]
    if reinit_from and reinit_from not in names:
        raise ValueError(f"reinit_from={reinit_from!r}: no layer of that name in {target.name}")
    fresh = set(names[names.index(reinit_from):]) if reinit_from else set()
    for layer in target.layers:
        if not layer.weights:
            continue
        other = None if layer.name in fresh else by_name.get(layer.name)
        if other is not None and [w.shape for w in other.weights] == [w.shape for w in layer.weights]:
            layer.set_weights(other.get_weights())
            copied.append(layer.name)
        else:
            kept.append(layer.name)
    return copied, kept

from kerasface.architectures import (  # noqa: E402,F401  (registration)
    bknet, cascade_cnn, flickr_resnet, inception, tcdcn, vgg_face, wang_resnet)
