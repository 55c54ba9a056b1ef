"""flickr_resnet: the identity network of flickr_depth (papers/flickr_face_attribute_depth.txt, Fig. 2).

224x224 RGB aligned face. c = convolution, b = batch norm, r = ReLU, ea = element-wise add:

    (a) conv1   7x7/2, 32 (112x112), 2x2/2 max-pool -> 56x56; conv2 3x3, 64 (cbr each)
    (b) conv3-4     one module at 56x56: 1x1 reduce to 32 (cbr), 3x3 expand to 64 (cb), ea, r
    (c) conv5-6     56 -> 28: 1x1 to 64, 3x3/2 to 128; the shortcut a 1x1/2 convolution (cb)
        conv7-8     28 -> 14: 1x1 to 128, 3x3/2 to 256, 1x1/2 shortcut
    (d) conv9-20    the bulk at 14x14: six modules, 1x1 to 128, 3x3 to 256
    (e) conv21-22   14 -> 7: 1x1 to 256, 3x3/2 to 512, 1x1/2 shortcut
    (f) conv23-24   one module at 7x7, 512: 1x1 to 256, 3x3 to 512
    (g) 7x7 average pool; conv_bn320: a 320-d fully connected bottleneck + batch norm (the
        "features" layer: the face embedding); fc: softmax over the identities (the `identity`
        head, or whichever task `identity_head` names); other tasks: head_<task> on the features

24 convolutions without the shortcuts, as the paper counts. Per 224x224 image: 861,986,816
multiply-adds in the trunk (conv1 ... conv_bn320) plus 320 per identity in fc, 865,186,816 at
10,000 identities (the paper: "0.9 Gflops"); parameters 5,313,888 + 321 per identity, 8,523,888
at 10,000 identities, 8,512,240 of them trainable (the paper: "9M", "about 10M"). Both pinned in
tests/test_architectures.py.

Where the paper leaves room (Fig. 2 gives the stages, not every repetition count): the single 3x3
conv2 after the pool (24 = 2 + 2 x 11 modules needs one convolution outside a module), one module
each in (b) and (f), two reductions in (c) (56 -> 28 -> 14) and six modules in (d). With this
layout the branch points of Table 3 are: conv17 (the 5th module of (d)), conv19 (its last), conv21
(the reduction to 7x7), conv22 (its strided 3x3), conv_bn320 (the bottleneck) and fc (the softmax
alone). Table 4's parameter counts of the retrained layers (1,018,055 for emotion from conv19)
match no reading of Fig. 2 that also has the 320-d bottleneck; they are not pinned.
Weights start from N(0, init_std^2) (the paper: variance 0.01, init_std=0.1); default He normal.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasface.architectures import ARCHITECTURES
from kerasface.architectures.common import check_heads, scaled

# (first conv number, reduce filters, expand filters, stride) per module, after conv1 and conv2
MODULES = ((3, 32, 64, 1), (5, 64, 128, 2), (7, 128, 256, 2), *((n, 128, 256, 1) for n in range(9, 21, 2)),
           (21, 256, 512, 2), (23, 256, 512, 1))
BOTTLENECK = 320


@ARCHITECTURES.register("flickr_resnet")
def build_flickr_resnet(input_shape=(224, 224, 3), heads: dict[str, int] | None = None, width: float = 1.0,
                        init_std: float = 0.0, identity_head: str = "identity", weights: str = "") -> keras.Model:
    """The base network with one softmax head per task (logits; `identity_head` is named `fc`).

    Args:
        input_shape: (height, width, channels); at least 32x32 (five stride-2 steps).
        heads: task -> classes.
        width: filter multiplier (tests and demos); the 320-d bottleneck scales too.
        init_std: > 0: every kernel from N(0, init_std^2) (the paper); 0: He normal.
        identity_head: the task whose head is the paper's `fc` layer.
    """
    if weights:
        raise ValueError("flickr_resnet has no pretrained weights file; train it (the identity model) first")
    heads = dict(heads or {})
    check_heads(heads)
    if min(input_shape[:2]) < 32:
        raise ValueError(f"flickr_resnet needs inputs of at least 32x32, got {input_shape[:2]}")
    init = keras.initializers.RandomNormal(stddev=init_std) if init_std > 0 else "he_normal"

    def conv(x, filters, kernel, stride, name, relu=True):
        x = layers.Conv2D(scaled(filters, width), kernel, strides=stride, padding="same", use_bias=False,
                          kernel_initializer=init, name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x) if relu else x

    image = keras.Input(input_shape, name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(image)
    x = conv(x, 32, 7, 2, "conv1")
    x = layers.MaxPooling2D(2, 2, name="pool1")(x)
    x = conv(x, 64, 3, 1, "conv2")
    for number, reduce, expand, stride in MODULES:
        y = conv(x, reduce, 1, 1, f"conv{number}")
        y = conv(y, expand, 3, stride, f"conv{number + 1}", relu=False)
        shortcut = x  # built after the main path: a branch from conv<number> re-trains it too
        if stride > 1 or x.shape[-1] != scaled(expand, width):
            shortcut = conv(x, expand, 1, stride, f"conv{number}_shortcut", relu=False)
        x = layers.ReLU(name=f"module{number}_relu")(layers.Add(name=f"module{number}_add")([shortcut, y]))
    x = layers.GlobalAveragePooling2D(name="pool2")(x)
    x = layers.Dense(scaled(BOTTLENECK, width), use_bias=False, kernel_initializer=init, name="conv_bn320")(x)
    features = layers.BatchNormalization(name="features")(x)
    outputs = {task: layers.Dense(units, dtype="float32", kernel_initializer=init,
                                  name="fc" if task == identity_head else f"head_{task}")(features)
               for task, units in heads.items()}
    return keras.Model(image, outputs, name="flickr_resnet")
