"""Wang, He, Fu, Feng, Jiang, Xue, "Multi-task Deep Neural Network for Joint Face Recognition and
Facial Attribute Prediction", ICMR 2017 (Fudan), Figs. 1-3 and 8, as used by the wang_joint recipe.

Registered names (one builder, three building blocks):
- ``wang_full``: the Full-Model, three 3x3 convs on the main path of each block plus an identity
  bypass (Fig. 2);
- ``wang_fast``: the Fast-Model, two 3x3 convs plus the identity bypass (Fig. 3);
- ``wang_variant``: the Fig. 8 / Table 5 ablation, ``block=`` "full" | "fast" | "variant"
  (default "variant": two 3x3 convs on the main path and one 3x3 conv on the bypass).

Layout at 112x96x3, width 1.0 (every conv and FC without bias, then BatchNorm, then PReLU with
one slope per channel; plain convs 3x3 stride 1 padding 0; block convs 3x3 padding 1):

    rescale                 [0, 255] -> [0, 1]
    conv1                   3x3 32          110x94
    conv2, pool1            3x3 64, 2x2/2   108x92 -> 54x46
    res1_1 .. res1_3        3 blocks x 64   54x46
    conv3, pool2            3x3 128         52x44 -> 26x22
    res2_1 .. res2_4        4 blocks x 128  26x22
    conv4, pool3            3x3 256         24x20 -> 12x10
    res3_1 .. res3_6        6 blocks x 256  12x10
    conv5, pool4            3x3 512         10x8 -> 5x4
    res4_1 .. res4_3        3 blocks x 512  5x4
    flatten, fc + BN        10,240 -> 1,024
    features                its PReLU: the 1,024-d face feature (the embedding)
    [dropout 0.5]
    head_<identity task>    1,024 -> identities (softmax logits)
    head_<attr>_fc + BN + PReLU [+ dropout], head_<attr>
                            the extra FC 1,024 of the attribute head only, then 1,024 -> M
                            (M = 7 attributes, linear: the paper's MSE regression)

    Parameters (count_params, BatchNorm's 4 numbers per channel included), 10,575 identities
    and 7 attributes: WANG_FULL_PARAMS = 57,972,054; WANG_FAST_PARAMS = 46,635,926.
    Multiply-adds per 112x96 image (kerasface.architectures.common.multiply_adds, conv/dense kernels, heads
    included): WANG_FULL_MULTIPLY_ADDS = 4,154,026,368; WANG_FAST_MULTIPLY_ADDS = 2,975,705,472.

Choices where the text and the figure leave room:
- Plain convs: the text says "four convolutional layers" but lists five filter counts
  (32, 64, 64, 64, 64) and four max-pools. We keep five convs and four pools, one conv + pool in
  front of each group. Their widths: 32, 64, then the width of the group that follows (128, 256,
  512), not 64: the Full and Fast blocks have an identity bypass ("one bypass ... element-wise
  summed"; only the variant block has a conv on it), so a block's input must already have the
  group's width. (This is the layout of the 112x96 face ResNets of the time, e.g. center loss.)
- Blocks: Fig. 2 says every conv has padding 1 and stride 1, so all block convs are 3x3 at the
  group's width; BN + PReLU after each of them (the paper: "after each convolutional layer"),
  including the last before the sum, and nothing after the sum.
- The variant block's bypass conv is 3x3 (padding 1) at the group's width, with BN + PReLU.
- Dropout 0.5 after the FC layers ("dropout is used for fully connected layers"): after
  "features" (before the identity head) and after each attribute FC; ``dropout=0`` removes it.
- Which head gets the extra FC: ``attribute_heads`` (default ("attributes",)); every other head
  is a plain Dense on the features. The attribute output is linear (MSE on the 0/1 targets).
- ``width`` scales every conv and FC width (tests, demo); head sizes are kept.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasface.architectures import ARCHITECTURES
from kerasface.architectures.common import check_heads, scaled

STEM = (32, 64)
GROUPS = ((3, 64), (4, 128), (6, 256), (3, 512))  # (blocks, filters)
FC = 1024
BLOCKS = ("full", "fast", "variant")
CELEBA_ATTRIBUTES = ("Narrow_Eyes", "Big_Nose", "Pointy_Nose", "Chubby", "Double_Chin",
                     "High_Cheekbones", "Male")
WANG_FULL_PARAMS = 57_972_054  # 112x96x3, {"identity": 10_575, "attributes": 7}
WANG_FAST_PARAMS = 46_635_926
WANG_FULL_MULTIPLY_ADDS = 4_154_026_368
WANG_FAST_MULTIPLY_ADDS = 2_975_705_472


def _bn_prelu(x, name):
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    shared = [1, 2] if len(x.shape) == 4 else None
    return layers.PReLU(shared_axes=shared, name=f"{name}_prelu")(x)


def _conv(x, filters, padding, name):
    x = layers.Conv2D(filters, 3, padding=padding, use_bias=False, name=name)(x)
    return _bn_prelu(x, name)


def _block(x, filters, block, name):
    y = x
    for i in range(1, (3 if block == "full" else 2) + 1):
        y = _conv(y, filters, "same", f"{name}_conv{i}")
    bypass = _conv(x, filters, "same", f"{name}_bypass") if block == "variant" else x
    return layers.Add(name=f"{name}_add")([y, bypass])


def _fc(x, units, name):
    x = layers.Dense(units, use_bias=False, name=name)(x)
    return _bn_prelu(x, name)


def _min_size() -> int:
    size = 1
    for _ in range(4):  # undo each pool (2x) and the valid 3x3 before it (+2)
        size = size * 2 + 2
    return size + 2  # and conv1


def _wang(input_shape, heads, block, width, dropout, attribute_heads, name):
    heads = dict(heads or {})
    check_heads(heads)
    if block not in BLOCKS:
        raise ValueError(f"{name}: block must be one of {BLOCKS}, got {block!r}")
    unknown = [t for t in attribute_heads if t not in heads]
    if unknown:
        raise ValueError(f"{name}: attribute_heads {unknown} are not among the heads {sorted(heads)}")
    if len(input_shape) != 3 or min(input_shape[:2]) < _min_size():
        raise ValueError(f"{name} needs input_shape (h, w, c) of at least {_min_size()}x{_min_size()}, "
                         f"got {tuple(input_shape)}")

    image = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(image)
    x = _conv(x, scaled(STEM[0], width), "valid", "conv1")
    plain = (scaled(STEM[1], width), *(scaled(f, width) for _, f in GROUPS[1:]))
    for g, ((blocks, filters), conv_filters) in enumerate(zip(GROUPS, plain), start=1):
        x = _conv(x, conv_filters, "valid", f"conv{g + 1}")
        x = layers.MaxPooling2D(2, strides=2, name=f"pool{g}")(x)
        for b in range(1, blocks + 1):
            x = _block(x, scaled(filters, width), block, f"res{g}_{b}")
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(scaled(FC, width), use_bias=False, name="fc")(x)
    x = layers.BatchNormalization(name="fc_bn")(x)
    features = layers.PReLU(name="features")(x)
    shared = layers.Dropout(dropout, name="dropout")(features) if dropout > 0 else features
    outputs = {}
    for task, units in heads.items():
        y = shared
        if task in attribute_heads:
            y = _fc(features, scaled(FC, width), f"head_{task}_fc")
            if dropout > 0:
                y = layers.Dropout(dropout, name=f"head_{task}_dropout")(y)
        outputs[task] = layers.Dense(units, dtype="float32", name=f"head_{task}")(y)
    return keras.Model(image, outputs, name=name)


_DOC = """Args:
        input_shape: (height, width, channels), at least {m}x{m}; the paper: 112x96x3.
        heads: task -> units, e.g. {{"identity": 10_575, "attributes": 7}} (CASIA-WebFace ids,
            the 7 CelebA attributes of Table 1 as one regression output).
        width: multiplier on every conv and FC width (rounded, at least 1).
        dropout: rate after the FC layers (the paper: 0.5; 0 removes the layers).
        attribute_heads: the heads that get the extra FC 1024 + BN + PReLU (Fig. 9, config 1).
""".format(m=_min_size())


@ARCHITECTURES.register("wang_full")
def build_wang_full(input_shape=(112, 96, 3), heads=None, *, width: float = 1.0,
                    dropout: float = 0.5, attribute_heads: tuple[str, ...] = ("attributes",)):
    return _wang(input_shape, heads, "full", width, dropout, tuple(attribute_heads), "wang_full")


@ARCHITECTURES.register("wang_fast")
def build_wang_fast(input_shape=(112, 96, 3), heads=None, *, width: float = 1.0,
                    dropout: float = 0.5, attribute_heads: tuple[str, ...] = ("attributes",)):
    return _wang(input_shape, heads, "fast", width, dropout, tuple(attribute_heads), "wang_fast")


@ARCHITECTURES.register("wang_variant")
def build_wang_variant(input_shape=(112, 96, 3), heads=None, *, block: str = "variant",
                       width: float = 1.0, dropout: float = 0.5,
                       attribute_heads: tuple[str, ...] = ("attributes",)):
    return _wang(input_shape, heads, block, width, dropout, tuple(attribute_heads), "wang_variant")


build_wang_full.__doc__ = "The Full-Model (3-conv blocks, Fig. 2).\n\n    " + _DOC
build_wang_fast.__doc__ = "The Fast-Model (2-conv blocks, Fig. 3).\n\n    " + _DOC
build_wang_variant.__doc__ = ("The Fig. 8 block ablation; block: 'full', 'fast' or 'variant' (two "
                              "convs on the main path, one on the bypass).\n\n    " + _DOC)
