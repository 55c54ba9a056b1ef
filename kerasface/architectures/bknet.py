"""BKNet: Sang, Cuong, Thieu, "Multi-task learning for smile detection, emotion recognition and
gender classification", SoICT 2017, as used by the sang_bknet recipe.

Registered name ``bknet``: one shared block and one branch per task, 48x48 grayscale faces.

Layout at 48x48x1 (convolutions 3x3, stride 1, same padding, no bias: BatchNorm follows each):

    rescale          [0, 255] -> [0, 1]
    conv1_1, conv1_2 32, 32     + BN + ReLU        9*1*32 + 9*32*32        =   9,504 (+ BN 4*64)
    pool1            2x2 max pool, stride 2         48 -> 24
    conv2_1, conv2_2 64, 64                         9*32*64 + 9*64*64       =  55,296 (+ BN 4*128)
    pool2                                           24 -> 12
    conv3_1, conv3_2 128, 128                       9*64*128 + 9*128*128    = 221,184 (+ BN 4*256)
    pool3                                           12 -> 6
    conv4_1..conv4_3 256, 256, 256                  9*128*256 + 2*9*256*256 = 1,474,560 (+ BN 4*768)
    pool4                                            6 -> 3
    features         flatten 3*3*256 = 2,304
  per task T:
    T_fc1            Dense 256, no bias + BN + ReLU + Dropout 0.5     2,304*256 + 4*256
    T_fc2            Dense 256, no bias + BN + ReLU + Dropout 0.5       256*256 + 4*256
    head_T           Dense C (logits)                                   256*C + C

Choices where the paper is silent:
- No conv/FC bias before a BatchNormalization (it would be cancelled by the normalisation).
- Weights from N(0, 0.01) as the paper says (``init_std``), biases and BN at Keras' defaults.
- ``l2`` puts the paper's lambda * ||W||^2 on every conv and Dense kernel (not on BatchNorm or
  biases) as Keras L2 regularizers, so the penalty is exactly lambda * sum(w^2); the trainer adds
  the model's regularization losses to the task losses.
- ``width`` multiplies every filter and FC count (tests); heads keep their size.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasface.architectures import ARCHITECTURES
from kerasface.architectures.common import check_heads, scaled

# (block, filters per conv); each block ends with a 2x2 max pool
BLOCKS = ((1, (32, 32)), (2, (64, 64)), (3, (128, 128)), (4, (256, 256, 256)))
BRANCH = (256, 256)
DROPOUT = 0.5


@ARCHITECTURES.register("bknet")
def build_bknet(
    input_shape: tuple[int, int, int] = (48, 48, 1),
    heads: dict[str, int] | None = None,
    *,
    width: float = 1.0,
    init_std: float = 0.01,
    l2: float = 0.0,
    dropout: float = DROPOUT,
) -> keras.Model:
    """Multi-task BKNet: the shared conv block, then per task FC256-BN-ReLU-Dropout twice and logits.

    Args:
        input_shape: (height, width, 1 or 3), at least 16x16 (four 2x2 pools); the paper: 48x48x1.
        heads: task -> classes, e.g. {"smile": 2, "emotion": 7, "gender": 2}.
        width: multiplier on every filter / FC count (rounded, at least 1).
        init_std: standard deviation of the normal kernel initialiser (the paper's 0.01).
        l2: lambda of the paper's lambda * ||W||^2 on every kernel (0 = none; the paper: 0.01).
        dropout: rate after each branch FC (the paper's 0.5).
    """
    heads = dict(heads or {})
    check_heads(heads)
    if len(input_shape) != 3 or input_shape[2] not in (1, 3) or min(input_shape[:2]) < 16:
        raise ValueError(f"bknet needs input_shape (h >= 16, w >= 16, 1 or 3), got {tuple(input_shape)}")
    init = keras.initializers.RandomNormal(stddev=init_std)
    reg = keras.regularizers.L2(l2) if l2 else None

    def normed(x, name):
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.Activation("relu", name=f"{name}_relu")(x)

    image = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(image)
    for block, filters in BLOCKS:
        for i, maps in enumerate(filters, start=1):
            name = f"conv{block}_{i}"
            x = layers.Conv2D(scaled(maps, width), 3, padding="same", use_bias=False, kernel_initializer=init,
                              kernel_regularizer=reg, name=name)(x)
            x = normed(x, name)
        x = layers.MaxPooling2D(2, strides=2, name=f"pool{block}")(x)
    features = layers.Flatten(name="features")(x)
    outputs = {}
    for task, classes in heads.items():
        y = features
        for i, units in enumerate(BRANCH, start=1):
            name = f"{task}_fc{i}"
            y = layers.Dense(scaled(units, width), use_bias=False, kernel_initializer=init, kernel_regularizer=reg,
                             name=name)(y)
            y = layers.Dropout(dropout, name=f"{name}_dropout")(normed(y, name))
        outputs[task] = layers.Dense(classes, kernel_initializer=init, kernel_regularizer=reg, dtype="float32",
                                     name=f"head_{task}")(y)
    return keras.Model(image, outputs, name="bknet")
