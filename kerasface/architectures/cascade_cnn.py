"""Cascade CNN of Canal Garcia, Collery, Pico (KTH), "Prediction of Attributes" (canal_mtfl).

Registered name: ``cascade_cnn``.

The paper (section 3.4): "four convolutional layers, four max-pooling layers, one inception layer
and one fully connected layer ... ReLU ... the same number of convolutional layers with the same
characteristics (size and number of filters, stride, etc) of DeepID2+ [Sun et al. 2014] with the
addition of an inception layer, type of layer used in DeepID3", with ordinary instead of locally
shared convolutions, on 150x150 nose-centred crops.

Layout at 150x150x3, width 1.0 (parameters for one 2-class head):

    rescale     [0, 255] -> [0, 1]
    conv1       4x4 conv 128, valid, ReLU      150 -> 147        4*4*3*128 + 128   =     6,272
    pool1       2x2 max pool, stride 2, same   147 -> 74
    conv2       3x3 conv 128, valid, ReLU       74 -> 72        3*3*128*128 + 128  =   147,584
    pool2                                       72 -> 36
    conv3       3x3 conv 128, valid, ReLU       36 -> 34                               147,584
    pool3                                       34 -> 17
    conv4       2x2 conv 128, valid, ReLU       17 -> 16        2*2*128*128 + 128  =    65,664
    pool4                                       16 -> 8
    inception   GoogLeNet "3a" widths on 8x8x128, all "same", ReLU:
      inception_1x1       1x1 64                                 128*64 + 64       =     8,256
      inception_3x3_reduce 1x1 96 -> inception_3x3 3x3 128      12,384 + 110,720   =   123,104
      inception_5x5_reduce 1x1 16 -> inception_5x5 5x5 32        2,064 + 12,832    =    14,896
      inception_pool 3x3/1 max pool -> inception_pool_proj 1x1 32   128*32 + 32     =     4,128
      inception_concat    64 + 128 + 32 + 32 = 256 maps
    flatten     8*8*256 = 16,384
    features    fully connected 512, ReLU                     16384*512 + 512     = 8,389,120
    dropout     rate 0.4
    head_<task> Dense(classes) logits / Dense(10) linear for "landmarks"   512*2 + 2 =   1,026
    total for {"gender": 2}                                                          8,907,634

Choices (the paper gives no table; these are documented so they can be changed):
- Kernel sizes 4x4, 3x3, 3x3, 2x2, 128 maps each, stride 1, valid padding: DeepID2/DeepID2+'s
  convolutional layers, which the paper says it keeps ("same size and number of filters"). The
  KTH code in their repository (cnn_model/CascadeCNN.py) is an earlier DeepID2-like draft
  (5x5 first kernel, 20/40/60/80 maps, FC 160, no inception layer) that disagrees with the
  paper's text; we follow the text.
- DeepID2+ pools only after conv1..conv3; the paper adds a fourth pool after conv4. Pools are
  2x2/2 with "same" padding, as in the KTH code (tf.nn.max_pool(..., padding="SAME")).
- Inception branch widths: GoogLeNet's inception (3a) (64 | 96->128 | 16->32 | pool->32), the
  first inception block of GoogLeNet and of DeepID3's inception stage; 256 output maps.
- FC 512 with ReLU, as DeepID2+'s feature layer; dropout 0.4 before the heads (the rate of the
  KTH TCDCN code; the paper is silent for this net).
- ``batch_norm=True`` puts BatchNormalization between every conv (trunk and inception) and its
  ReLU and drops that conv's bias; off by default (faithful). It helps when training from scratch
  at the recipe's learning rates.
- ``width`` multiplies every conv and FC filter count (rounded, at least 1); heads keep their size.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasface.architectures import ARCHITECTURES
from kerasface.architectures.common import check_heads, scaled, task_heads

# (name, kernel, maps) of the four DeepID2+ convolutions; each is followed by a 2x2 max pool.
TRUNK = (("conv1", 4, 128), ("conv2", 3, 128), ("conv3", 3, 128), ("conv4", 2, 128))
# Inception layer branch widths: 1x1 | 3x3 reduce, 3x3 | 5x5 reduce, 5x5 | pool projection.
INCEPTION = {"1x1": 64, "3x3_reduce": 96, "3x3": 128, "5x5_reduce": 16, "5x5": 32, "pool_proj": 32}
FEATURES = 512


def _conv(x, filters: int, kernel: int, name: str, batch_norm: bool, padding: str = "valid"):
    """Conv -> [BN] -> ReLU; without BN the ReLU is fused into the conv layer."""
    if not batch_norm:
        return layers.Conv2D(filters, kernel, padding=padding, activation="relu", name=name)(x)
    x = layers.Conv2D(filters, kernel, padding=padding, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _inception(x, width: float, batch_norm: bool):
    w = {key: scaled(n, width) for key, n in INCEPTION.items()}
    b1 = _conv(x, w["1x1"], 1, "inception_1x1", batch_norm, "same")
    b2 = _conv(x, w["3x3_reduce"], 1, "inception_3x3_reduce", batch_norm, "same")
    b2 = _conv(b2, w["3x3"], 3, "inception_3x3", batch_norm, "same")
    b3 = _conv(x, w["5x5_reduce"], 1, "inception_5x5_reduce", batch_norm, "same")
    b3 = _conv(b3, w["5x5"], 5, "inception_5x5", batch_norm, "same")
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name="inception_pool")(x)
    b4 = _conv(b4, w["pool_proj"], 1, "inception_pool_proj", batch_norm, "same")
    return layers.Concatenate(name="inception_concat")([b1, b2, b3, b4])


@ARCHITECTURES.register("cascade_cnn")
def build_cascade_cnn(
    input_shape: tuple[int, int, int] = (150, 150, 3),
    heads: dict[str, int] | None = None,
    *,
    width: float = 1.0,
    dropout: float = 0.4,
    batch_norm: bool = False,
) -> keras.Model:
    """The KTH Cascade CNN: 4 x (conv + ReLU + 2x2 max pool), one inception layer, FC 512, heads.

    Args:
        input_shape: (height, width, channels); 150x150x3 is the canal crop. Each side must be
            at least 24 pixels (so that conv4 still has a 2x2 input).
        heads: task -> units; classification tasks give logits, "landmarks" 10 linear outputs.
        width: multiplier on every conv/FC filter count (rounded, at least 1).
        dropout: rate between "features" and the heads (0 = no dropout layer).
        batch_norm: BatchNormalization after every conv (default off = faithful).
    """
    heads = dict(heads or {})
    check_heads(heads)
    size = min(input_shape[0], input_shape[1])
    for _, kernel, _ in TRUNK:  # valid conv then ceil-halving pool
        size = -(-(size - kernel + 1) // 2)
    if size < 1:
        raise ValueError(f"cascade_cnn needs an input of at least 24x24, got {tuple(input_shape)}")

    image = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(image)
    for i, (name, kernel, maps) in enumerate(TRUNK, start=1):
        x = _conv(x, scaled(maps, width), kernel, name, batch_norm)
        x = layers.MaxPooling2D(2, strides=2, padding="same", name=f"pool{i}")(x)
    x = _inception(x, width, batch_norm)
    x = layers.Flatten(name="flatten")(x)
    features = layers.Dense(scaled(FEATURES, width), activation="relu", name="features")(x)
    y = layers.Dropout(dropout, name="dropout")(features) if dropout > 0 else features
    outputs = task_heads(y, heads)
    return keras.Model(image, outputs, name="cascade_cnn")
