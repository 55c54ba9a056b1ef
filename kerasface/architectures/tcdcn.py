"""TCDCN: Zhang, Luo, Loy, Tang, "Learning Deep Representation for Face Alignment with Auxiliary
Attributes", TPAMI 38(5) 2016 (the 60x60 version of the ECCV 2014 Tasks-Constrained Deep
Convolutional Network), as used by the canal_mtfl recipe.

Registered names:
- ``tcdcn``: the multi-task network; the caller gives the heads, typically the MTFL set
  ``MTFL_HEADS`` = landmarks (10) + gender (2) + smile (2) + glasses (2) + pose (5).
- ``tcdcn_single``: the KTH single-attribute variant (same trunk, exactly one classification
  head; the paper trained smile with lr 1e-4 for 45 epochs).

Layout at 60x60x1 (parameters at width 1.0):

    rescale     [0, 255] -> [0, 1]
    conv1       5x5 conv 20, valid, ReLU    60 -> 56     5*5*1*20 + 20   =     520 (RGB: 1,520)
    pool1       2x2 max pool, stride 2      56 -> 28
    conv2       5x5 conv 48, valid, ReLU    28 -> 24     5*5*20*48 + 48  =  24,048
    pool2                                   24 -> 12
    conv3       3x3 conv 64, valid, ReLU    12 -> 10     3*3*48*64 + 64  =  27,712
    pool3                                   10 -> 5
    conv4       3x3 conv 80, valid, ReLU     5 -> 3      3*3*64*80 + 80  =  46,160
    flatten     3*3*80 = 720
    features    fully connected 256, ReLU                720*256 + 256   = 184,576
    [dropout]   off for tcdcn, 0.4 for tcdcn_single (the KTH code's rate)
    head_<task> Dense: landmarks 10 linear (2,570), 2-class logits (514), pose 5 (1,285)
    tcdcn, MTFL_HEADS, 60x60x1: 283,016 + 5,397 = 288,413   (60x60x3: 289,413)
    tcdcn_single, {"smile": 2}, 60x60x3: 284,016 + 514 = 284,530

Choices:
- Filter sizes and counts (5x5x20, 5x5x48, 3x3x64, 3x3x80; FC 256) are those of TPAMI 2016's
  60x60 network (the ECCV 2014 40x40 version used 5x5x20, 3x3x48, 3x3x64, 2x2x80 and FC 100); the
  KTH code (cnn_model/TCDCN_version.py) uses the same numbers with valid padding, and the shapes
  60 -> 56 -> 28 -> 24 -> 12 -> 10 -> 5 -> 3 match.
- Activation: the original uses the absolute hyperbolic tangent, |tanh(x)|; the canal paper and
  its code use ReLU, and so do we.
- The original's convolutions are locally connected (untied filters, "a different set of filters
  is applied at every location"); like the canal paper we use ordinary shared-weight convolutions.
- Input: the original is grayscale; ``input_shape`` may have 1 or 3 channels. ``tcdcn`` defaults
  to 60x60x1 (faithful), ``tcdcn_single`` to 60x60x3 (the KTH code fed RGB crops).
- The original has no dropout; ``tcdcn`` defaults to none, ``tcdcn_single`` to 0.4 (KTH code).
- ``batch_norm=True`` puts BatchNormalization between every conv and its ReLU and drops that
  conv's bias; off by default (faithful). It helps when training from scratch.
- ``width`` multiplies every conv and FC filter count (rounded, at least 1); heads keep their size.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasface.architectures import ARCHITECTURES
from kerasface.architectures.common import check_heads, scaled, task_heads

# (name, kernel, maps, followed by a 2x2 max pool)
TRUNK = (
    ("conv1", 5, 20, True),
    ("conv2", 5, 48, True),
    ("conv3", 3, 64, True),
    ("conv4", 3, 80, False),
)
FEATURES = 256
MTFL_HEADS = {"landmarks": 10, "gender": 2, "smile": 2, "glasses": 2, "pose": 5}


def _tcdcn(input_shape, heads, width: float, dropout: float, batch_norm: bool, name: str):
    heads = dict(heads or {})
    check_heads(heads)
    if len(input_shape) != 3 or input_shape[2] not in (1, 3):
        raise ValueError(f"{name} needs input_shape (h, w, 1 or 3), got {tuple(input_shape)}")
    size = min(input_shape[0], input_shape[1])
    for _, kernel, _, pooled in TRUNK:
        size = size - kernel + 1
        size = size // 2 if pooled else size
    if size < 1:
        raise ValueError(f"{name} needs an input of at least 44x44, got {tuple(input_shape)}")

    image = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(image)
    for i, (conv, kernel, maps, pooled) in enumerate(TRUNK, start=1):
        filters = scaled(maps, width)
        if batch_norm:
            x = layers.Conv2D(filters, kernel, use_bias=False, name=conv)(x)
            x = layers.BatchNormalization(name=f"{conv}_bn")(x)
            x = layers.Activation("relu", name=f"{conv}_relu")(x)
        else:
            x = layers.Conv2D(filters, kernel, activation="relu", name=conv)(x)
        if pooled:
            x = layers.MaxPooling2D(2, strides=2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    features = layers.Dense(scaled(FEATURES, width), activation="relu", name="features")(x)
    y = layers.Dropout(dropout, name="dropout")(features) if dropout > 0 else features
    outputs = task_heads(y, heads)
    return keras.Model(image, outputs, name=name)


@ARCHITECTURES.register("tcdcn")
def build_tcdcn(
    input_shape: tuple[int, int, int] = (60, 60, 1),
    heads: dict[str, int] | None = None,
    *,
    width: float = 1.0,
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> keras.Model:
    """Multi-task TCDCN: 4 convs (3 followed by 2x2 max pools), shared FC 256 "features", heads.

    Args:
        input_shape: (height, width, 1 or 3), at least 44x44; TPAMI 2016 uses 60x60 grayscale.
        heads: task -> units, e.g. ``MTFL_HEADS``; "landmarks" gives 10 linear outputs
            (x1, y1, ..., x5, y5 as fractions of the input), the others logits.
        width: multiplier on every conv/FC filter count (rounded, at least 1).
        dropout: rate between "features" and the heads (default 0: the original has none).
        batch_norm: BatchNormalization after every conv (default off = faithful).
    """
    return _tcdcn(input_shape, heads, width, dropout, batch_norm, "tcdcn")


@ARCHITECTURES.register("tcdcn_single")
def build_tcdcn_single(
    input_shape: tuple[int, int, int] = (60, 60, 3),
    heads: dict[str, int] | None = None,
    *,
    width: float = 1.0,
    dropout: float = 0.4,
    batch_norm: bool = False,
) -> keras.Model:
    """The KTH single-attribute TCDCN: the same trunk with exactly one classification head.

    Raises ValueError when ``heads`` has more than one task or a "landmarks" head (use ``tcdcn``).
    """
    heads = dict(heads or {})
    if len(heads) != 1 or "landmarks" in heads:
        raise ValueError(
            "tcdcn_single takes exactly one classification head (e.g. {'smile': 2}), got "
            f"{sorted(heads)}; use the 'tcdcn' architecture for landmarks or several tasks"
        )
    return _tcdcn(input_shape, heads, width, dropout, batch_norm, "tcdcn_single")
