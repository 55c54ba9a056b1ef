"""InceptionV3 (Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016).

Registered name: ``inception_v3`` (used by the canal_mtfl recipe, "InceptionV3 fine-tuned").

Layout (299x299x3 input, parameter counts for one 2-class task with the auxiliary head):

    rescale             [0, 255] -> [-1, 1] (InceptionV3's ImageNet preprocessing)
    conv2d ... mixed10  keras.applications.InceptionV3(include_top=False)       21,802,784
    features            global average pool -> 2048
    dropout             rate 0.2 (TF-slim's dropout_keep_prob=0.8)
    head_<task>         Dense(classes) logits / Dense(10) for "landmarks"          4,098
    auxiliary head (TF-slim ``AuxLogits``), from "mixed7" (TF-slim Mixed_6e, 17x17x768):
    head_aux_pool       5x5 average pool, stride 3, valid        -> 5x5x768
    head_aux_conv1      1x1 conv 128, no bias + BN(scale=False) + ReLU              98,688
    head_aux_conv2      5x5 conv 768, valid, no bias + BN(scale=False) + ReLU    2,459,904
    head_aux_logits_<t> 1x1 conv to classes (bias, no BN)    -> 1x1xC                1,538
    head_aux_<task>     squeeze to (batch, C): output "<task>__aux" (the trainer weights it 0.4)
    total for {"gender": 2}                                                     24,367,012

Choices (where neither Keras nor the paper decides):
- The aux trunk (pool, conv1, conv2) is shared by all classification tasks; each task gets its own
  1x1 logits conv, just as the main heads share the backbone. "landmarks" gets no aux output.
- The aux convs follow Keras' own ``conv2d_bn`` (no bias, BatchNormalization(scale=False),
  epsilon 1e-3), which is TF-slim's Inception arg scope.
- Small inputs: like TF-slim's ``_reduced_kernel_size_for_small_input`` the aux 5x5 kernels shrink
  to the map size when the map is smaller (75x75 input: mixed7 is 3x3 -> 3x3 pool, 1x1 conv).
  The final squeeze is a global average pool, which equals TF-slim's squeeze on a 1x1 map and
  still gives (batch, C) for inputs larger than 299.
- The backbone's auto-generated layer names (conv2d, conv2d_1, ..., batch_normalization_93,
  mixed0 ... mixed10) are those of a fresh Keras session, whatever was built before, so names
  are stable across runs and processes.
- ``weights="imagenet"`` loads the no-top ImageNet file from the local Keras cache only; it never
  downloads (see ``imagenet_weights_path``).
"""

from __future__ import annotations

import contextlib
import os

import keras
from keras import layers

from kerasface.architectures import ARCHITECTURES, WEIGHT_FILES
from kerasface.architectures.common import check_heads, task_heads

WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/" + WEIGHTS_FILE
)
AUX_SOURCE_LAYER = "mixed7"  # TF-slim "Mixed_6e", 17x17x768 at 299x299
MIN_SIZE = 75  # keras.applications.InceptionV3's minimum input size
_BN_EPSILON = 1e-3


def keras_cache_dir() -> str:
    """The folder where Keras keeps application weights: $KERAS_HOME/models or ~/.keras/models.

    Read at call time (not at keras import time) so that a changed KERAS_HOME is respected. Like
    keras.utils.get_file, a home folder that exists but is read-only falls back to /tmp/.keras.
    """
    home = os.path.expanduser(
        os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    )
    if os.path.isdir(home) and not os.access(home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    return os.path.join(home, "models")


def imagenet_weights_path(weights: str) -> str:
    """Resolve ``weights`` ("imagenet" or a file path) to an existing local file, never downloading.

    Raises FileNotFoundError with a one-line message that says which file is missing, where it
    comes from, where to put it, and how to train from random initialisation instead.
    """
    if weights == "imagenet":
        path = os.path.join(keras_cache_dir(), WEIGHTS_FILE)
        if os.path.isfile(path):
            return path
    else:
        path = os.path.expanduser(weights)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"InceptionV3 ImageNet weights not found: {path} is missing; download {WEIGHTS_FILE} "
        f"(Keras applications weights release for inception_v3, notop) from {WEIGHTS_URL} and put "
        f"it at {path} (or pass its path as weights=...), or train from random init with "
        f'--set models.<key>.weights=""'
    )


@contextlib.contextmanager
def _fresh_auto_names():
    """Give auto-named layers built inside the block the names of a fresh Keras session.

    keras.applications.InceptionV3 leaves most layers unnamed, so Keras numbers them with a
    process-wide counter (conv2d_94, ... on a second build). Layer names only need to be unique
    within one model, so a private counter during the build is safe. Falls back to Keras' default
    naming if the (private) global-state API moves.
    """
    try:
        import collections

        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - a Keras version without this module
        yield
        return
    key = "object_name_uids"
    saved = global_state.get_global_attribute(key)
    global_state.set_global_attribute(key, collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute(key, saved)


def _conv_bn_relu(x, filters: int, kernel: int, name: str, padding: str = "same"):
    x = layers.Conv2D(filters, kernel, padding=padding, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(scale=False, epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


WEIGHT_FILES.register("inception_v3")(imagenet_weights_path)


@ARCHITECTURES.register("inception_v3")
def build_inception_v3(
    input_shape: tuple[int, int, int] = (299, 299, 3),
    heads: dict[str, int] | None = None,
    *,
    weights: str = "",
    aux_head: bool = True,
    dropout: float = 0.2,
    width: float = 1.0,
) -> keras.Model:
    """InceptionV3 backbone + pooled "features" + dropout + one Dense head per task (+ aux heads).

    Args:
        input_shape: (height, width, 3), both sides >= 75; the canal recipe uses 299x299x3.
        heads: task -> units; classification tasks give logits, "landmarks" 10 linear outputs.
        weights: "" = random init; "imagenet" = the no-top ImageNet file from the local Keras cache
            (``$KERAS_HOME/models`` or ``~/.keras/models``); any other value = a path to that file.
            Never downloads: a missing file raises FileNotFoundError saying where to get it.
        aux_head: add TF-slim's auxiliary classifier, output "<task>__aux" per classification task.
        dropout: rate before the main heads (TF-slim default keep_prob 0.8 -> 0.2).
        width: accepted for a uniform builder interface; InceptionV3 has no width multiplier, so
            anything but 1.0 raises ValueError.
    """
    heads = dict(heads or {})
    check_heads(heads)
    if width != 1.0:
        raise ValueError(f"inception_v3 has no width option: width must be 1.0, got {width}")
    height, wide, channels = input_shape
    if channels != 3 or height < MIN_SIZE or wide < MIN_SIZE:
        raise ValueError(
            f"inception_v3 needs an RGB input of at least {MIN_SIZE}x{MIN_SIZE}x3, "
            f"got input_shape={tuple(input_shape)}"
        )
    weights_path = imagenet_weights_path(weights) if weights else None

    # ---- backbone -------------------------------------------------------------------------
    image = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(image)
    with _fresh_auto_names():
        backbone = keras.applications.InceptionV3(
            include_top=False, weights=None, input_tensor=x, input_shape=tuple(input_shape)
        )
    if weights_path is not None:
        # The h5 file is matched layer by layer in order (the rescale layer has no weights).
        backbone.load_weights(weights_path)

    # ---- main heads -----------------------------------------------------------------------
    features = layers.GlobalAveragePooling2D(name="features")(backbone.output)
    y = layers.Dropout(dropout, name="dropout")(features) if dropout > 0 else features
    outputs = task_heads(y, heads)

    # ---- auxiliary head (TF-slim AuxLogits) ----------------------------------------------------
    classification = [task for task in heads if task != "landmarks"]
    if aux_head and classification:
        a = backbone.get_layer(AUX_SOURCE_LAYER).output
        pool = min(5, a.shape[1], a.shape[2])
        a = layers.AveragePooling2D(pool, strides=3, padding="valid", name="head_aux_pool")(a)
        a = _conv_bn_relu(a, 128, 1, "head_aux_conv1")
        kernel = (min(5, a.shape[1]), min(5, a.shape[2]))
        a = _conv_bn_relu(a, 768, kernel, "head_aux_conv2", padding="valid")
        for task in classification:
            logits = layers.Conv2D(heads[task], 1, dtype="float32", name=f"head_aux_logits_{task}")(a)
            outputs[f"{task}__aux"] = layers.GlobalAveragePooling2D(dtype="float32", name=f"head_aux_{task}")(logits)

    return keras.Model(image, outputs, name="inception_v3")
