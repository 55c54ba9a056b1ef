"""Architecture tests: exact full-size parameter counts (arithmetic written out from the layer
specs) and, for every registered architecture, a tiny build that is run forward, backward, saved and
loaded. A new architecture is picked up automatically through ``ARCHITECTURES.names()``; give it an
entry in ``TINY`` when the default tiny configuration does not suit it.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.architectures import ARCHITECTURES
from kerasface.architectures import inception as inception_module
from kerasface.architectures.tcdcn import MTFL_HEADS

# ------------------------------------------------------------------------------------------------
# Tiny configurations, one per architecture: how each builder is exercised cheaply on a 2-core CPU.
# ------------------------------------------------------------------------------------------------
DEFAULT_TINY = {"input_shape": (64, 64, 3), "heads": {"gender": 2, "landmarks": 10},
                "kwargs": {"width": 0.25}}
TINY: dict[str, dict] = {
    # InceptionV3 has no width option: the smallest input it accepts (75x75) keeps it cheap.
    "inception_v3": {"input_shape": (75, 75, 3), "heads": {"gender": 2, "landmarks": 10},
                     "kwargs": {}},
    # The canal crop size, a quarter of the filters; landmarks too so both head kinds are seen.
    "cascade_cnn": {"input_shape": (150, 150, 3), "heads": {"smile": 2, "landmarks": 10},
                    "kwargs": {"width": 0.25}},
    # The faithful grayscale 60x60 multi-task network with the MTFL heads.
    "tcdcn": {"input_shape": (60, 60, 1), "heads": dict(MTFL_HEADS), "kwargs": {"width": 0.25}},
    "tcdcn_single": {"input_shape": (60, 60, 3), "heads": {"smile": 2}, "kwargs": {"width": 0.25}},
    # The paper's 48x48 grayscale input, two of its three task branches.
    "bknet": {"input_shape": (48, 48, 1), "heads": {"smile": 2, "emotion": 7}, "kwargs": {"width": 0.125}},
    # wang: the paper's 112x96 at 1/16 of the widths; identity softmax + the 7-attribute
    # regression head (with its extra FC); dropout on, as in the paper.
    **{name: {"input_shape": (112, 96, 3), "heads": {"identity": 10, "attributes": 7},
              "kwargs": {"width": 0.0625}} for name in ("wang_full", "wang_fast", "wang_variant")},
}


def tiny_config(name: str) -> dict:
    return TINY.get(name, DEFAULT_TINY)


def expected_outputs(heads: dict[str, int], model: keras.Model) -> dict[str, int]:
    """Task -> units, plus any "<task>__aux" outputs the model declares for classification tasks."""
    expected = dict(heads)
    for key in model.output:
        if key.endswith("__aux"):
            task = key[: -len("__aux")]
            assert task in heads and task != "landmarks", f"unexpected aux output {key}"
            expected[key] = heads[task]
    return expected


def random_images(input_shape, n: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, size=(n, *input_shape)).astype("float32")


def output_layer_names(model: keras.Model) -> dict[str, str]:
    return {key: t._keras_history[0].name for key, t in model.output.items()}


def total_loss(outputs: dict, heads: dict[str, int], seed: int = 0):
    """Sum of per-output losses: MSE for landmarks, sparse softmax cross-entropy for the rest."""
    rng = np.random.default_rng(seed)
    loss = 0.0
    for key, value in outputs.items():
        task = key.split("__aux")[0]
        n = value.shape[0]
        if task == "landmarks":
            target = rng.uniform(0, 1, size=(n, heads[task])).astype("float32")
            loss += tf.reduce_mean(tf.square(value - target))
        else:
            labels = rng.integers(0, heads[task], size=(n,))
            loss += tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=value)
            )
    return loss


# ------------------------------------------------------------------------------------------------
# Generic behaviour, parametrized over the registry.
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_tiny_build_forward_backward_save_load(name, tmp_path):
    cfg = tiny_config(name)
    heads = cfg["heads"]
    model = ARCHITECTURES.get(name)(cfg["input_shape"], heads, **cfg["kwargs"])
    x = random_images(cfg["input_shape"])

    # Conventions: rescale first, a "features" layer, every output from a "head_" layer.
    names = [layer.name for layer in model.layers]
    assert "rescale" in names and "features" in names
    assert names.index("rescale") == 1, "rescale must directly follow the input"
    for key, layer_name in output_layer_names(model).items():
        assert layer_name.startswith("head_"), f"output {key} comes from {layer_name}"
    head_layers = [n for n in names if n.startswith("head_")]
    for task in heads:
        assert f"head_{task}" in head_layers

    # Forward: keys, shapes, finite values.
    expected = expected_outputs(heads, model)
    out = model(x, training=False)
    assert set(out) == set(expected)
    for key, units in expected.items():
        assert tuple(out[key].shape) == (2, units), key
        assert np.all(np.isfinite(out[key].numpy())), key

    # One gradient step: every trainable weight gets a finite gradient, nothing turns NaN.
    # (Clipped: with 2 images, BatchNorm on 1x1 maps - InceptionV3 at 75x75 - gives huge but
    # finite gradients, and an unclipped step would blow up the inference-mode activations.)
    optimizer = keras.optimizers.SGD(learning_rate=0.01, global_clipnorm=1.0)
    with tf.GradientTape() as tape:
        loss = total_loss(model(x, training=True), heads)
    grads = tape.gradient(loss, model.trainable_weights)
    assert np.isfinite(float(loss))
    for weight, grad in zip(model.trainable_weights, grads):
        assert grad is not None, f"no gradient for {weight.path}"
        assert np.all(np.isfinite(np.asarray(grad))), f"non-finite gradient for {weight.path}"
    optimizer.apply_gradients(zip(grads, model.trainable_weights))
    after = model(x, training=False)
    for key in expected:
        assert np.all(np.isfinite(after[key].numpy())), key

    # .keras round trip: same layers, same outputs.
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [layer.name for layer in loaded.layers] == names
    reloaded = loaded(x, training=False)
    for key in expected:
        np.testing.assert_allclose(reloaded[key].numpy(), after[key].numpy(), rtol=1e-6, atol=1e-6)


def test_tiny_table_names_registered_architectures():
    # Catches a typo or a renamed architecture in the table (it would silently use the default).
    assert set(TINY) <= set(ARCHITECTURES.names())


# ------------------------------------------------------------------------------------------------
# Exact parameter counts at full size, computed by hand from the layer specs.
# ------------------------------------------------------------------------------------------------
def conv(k: int, cin: int, cout: int, bias: bool = True) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def dense(cin: int, cout: int) -> int:
    return cin * cout + cout


def bn(c: int, scale: bool = True) -> int:
    """BatchNormalization: beta, moving mean, moving variance (+ gamma when scale)."""
    return (4 if scale else 3) * c


INCEPTION_V3_NOTOP = 21_802_784  # keras.applications.InceptionV3(include_top=False), 299x299x3


def test_inception_v3_backbone_count_matches_keras_applications():
    reference = keras.applications.InceptionV3(
        include_top=False, weights=None, input_shape=(299, 299, 3)
    )
    assert reference.count_params() == INCEPTION_V3_NOTOP


@pytest.mark.parametrize(
    "heads, aux",
    [
        ({"gender": 2}, True),
        ({"gender": 2}, False),
        ({"gender": 2, "smile": 2, "landmarks": 10}, True),
    ],
)
def test_inception_v3_full_size_count(heads, aux):
    model = ARCHITECTURES.get("inception_v3")((299, 299, 3), heads, aux_head=aux)
    backbone = sum(
        layer.count_params() for layer in model.layers if not layer.name.startswith("head_")
    )
    assert backbone == INCEPTION_V3_NOTOP
    expected = INCEPTION_V3_NOTOP
    expected += sum(dense(2048, units) for units in heads.values())  # head_<task> on 2048 features
    classification = [t for t in heads if t != "landmarks"]
    if aux:
        # mixed7 17x17x768 -> 5x5/3 avg pool -> 5x5x768
        expected += conv(1, 768, 128, bias=False) + bn(128, scale=False)  # head_aux_conv1 98,688
        expected += conv(5, 128, 768, bias=False) + bn(768, scale=False)  # head_aux_conv2 2,459,904
        expected += sum(conv(1, 768, heads[t]) for t in classification)  # head_aux_logits_<t>
    assert model.count_params() == expected
    if heads == {"gender": 2} and aux:
        assert expected == 24_367_012
    outputs = set(model.output)
    assert outputs == set(heads) | ({f"{t}__aux" for t in classification} if aux else set())


def cascade_cnn_count(classes: int, channels: int = 3) -> int:
    # 150 -4x4-> 147 -pool-> 74 -3x3-> 72 -pool-> 36 -3x3-> 34 -pool-> 17 -2x2-> 16 -pool-> 8
    trunk = conv(4, channels, 128) + conv(3, 128, 128) + conv(3, 128, 128) + conv(2, 128, 128)
    inception = (
        conv(1, 128, 64)  # 1x1 branch
        + conv(1, 128, 96) + conv(3, 96, 128)  # 1x1 reduce -> 3x3
        + conv(1, 128, 16) + conv(5, 16, 32)  # 1x1 reduce -> 5x5
        + conv(1, 128, 32)  # 3x3 max pool -> 1x1 projection
    )
    features = dense(8 * 8 * (64 + 128 + 32 + 32), 512)
    return trunk + inception + features + dense(512, classes)


def test_cascade_cnn_full_size_count():
    model = ARCHITECTURES.get("cascade_cnn")((150, 150, 3), {"gender": 2})
    assert model.count_params() == cascade_cnn_count(2) == 8_907_634
    assert model.get_layer("inception_concat").output.shape[1:] == (8, 8, 256)


def tcdcn_trunk_count(channels: int) -> int:
    # 60 -5x5-> 56 -pool-> 28 -5x5-> 24 -pool-> 12 -3x3-> 10 -pool-> 5 -3x3-> 3
    convs = conv(5, channels, 20) + conv(5, 20, 48) + conv(3, 48, 64) + conv(3, 64, 80)
    return convs + dense(3 * 3 * 80, 256)


@pytest.mark.parametrize("channels", [1, 3])
def test_tcdcn_multitask_full_size_count(channels):
    model = ARCHITECTURES.get("tcdcn")((60, 60, channels), MTFL_HEADS)
    heads = dense(256, 10) + dense(256, 2) + dense(256, 2) + dense(256, 2) + dense(256, 5)
    expected = tcdcn_trunk_count(channels) + heads
    assert model.count_params() == expected
    assert expected == {1: 288_413, 3: 289_413}[channels]
    assert set(model.output) == set(MTFL_HEADS)


def test_tcdcn_single_full_size_count():
    model = ARCHITECTURES.get("tcdcn_single")((60, 60, 3), {"smile": 2})
    assert model.count_params() == tcdcn_trunk_count(3) + dense(256, 2) == 284_530
    model = ARCHITECTURES.get("tcdcn")((60, 60, 3), {"gender": 2})
    assert model.count_params() == tcdcn_trunk_count(3) + dense(256, 2)


def test_bknet_full_size_count():
    # shared block: 3x3 convs without bias (BatchNorm follows; BN holds 4 numbers per channel)
    convs = [(1, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    trunk = sum(9 * cin * cout + 4 * cout for cin, cout in convs)
    assert trunk == 1_765_408
    branch = 2304 * 256 + 4 * 256 + 256 * 256 + 4 * 256  # FC256-BN twice, from 3*3*256 features
    expected = trunk + sum(branch + 256 * c + c for c in (2, 7, 2))
    model = ARCHITECTURES.get("bknet")((48, 48, 1), {"smile": 2, "emotion": 7, "gender": 2})
    assert model.count_params() == expected == 3_740_459
    assert model.get_layer("features").output.shape[1:] == (2304,)
    # the paper's N(0, 0.01) initialisation and lambda * ||W||^2 on every kernel
    kernel = model.get_layer("conv4_3").kernel.numpy()
    assert abs(kernel.std() - 0.01) < 0.0005 and abs(kernel.mean()) < 0.0005
    assert not model.losses
    regularised = ARCHITECTURES.get("bknet")((48, 48, 1), {"smile": 2}, l2=0.01, width=0.125)
    kernels = [layer.kernel for layer in regularised.layers if hasattr(layer, "kernel")]
    assert len(regularised.losses) == len(kernels) == 9 + 3
    total = float(sum(regularised.losses))
    assert total == pytest.approx(0.01 * sum(float((k.numpy() ** 2).sum()) for k in kernels), rel=1e-4)


def test_flickr_resnet_full_size_count_and_multiply_adds():
    from kerasface.architectures.common import multiply_adds
    from kerasface.architectures.flickr_resnet import MODULES

    # every conv without bias, then BN; a module: 1x1 reduce, 3x3 expand, a 1x1 shortcut when it
    # changes the size or the filters
    convs = [(7, 3, 32), (3, 32, 64)]
    cin = 64
    for _, reduce, expand, stride in MODULES:
        convs += [(1, cin, reduce), (3, reduce, expand)] + ([(1, cin, expand)] if stride > 1 or cin != expand else [])
        cin = expand
    assert len(convs) - 3 == 24  # the paper counts 24 without the 3 shortcut convolutions
    trunk = sum(conv(k, a, b, bias=False) + bn(b) for k, a, b in convs) + 512 * 320 + bn(320)
    assert trunk == 5_313_888
    model = ARCHITECTURES.get("flickr_resnet")((224, 224, 3), {"identity": 10_000})
    assert model.count_params() == trunk + dense(320, 10_000) == 8_523_888
    assert multiply_adds(model) == 865_186_816  # the paper: 0.9 GFLOPs (multiply-adds)
    names = {layer.name for layer in model.layers}
    assert {"conv17", "conv19", "conv21", "conv22", "conv_bn320", "fc", "features"} <= names
    assert model.get_layer("features").output.shape[1:] == (320,)
    assert model.get_layer("conv22").output.shape[1:] == (7, 7, 512)


@pytest.mark.parametrize("name", ["cascade_cnn", "tcdcn"])
def test_batch_norm_option(name):
    cfg = tiny_config(name)
    plain = ARCHITECTURES.get(name)(cfg["input_shape"], cfg["heads"], **cfg["kwargs"])
    normed = ARCHITECTURES.get(name)(
        cfg["input_shape"], cfg["heads"], batch_norm=True, **cfg["kwargs"]
    )
    convs = [layer for layer in plain.layers if isinstance(layer, keras.layers.Conv2D)]
    # each conv loses its bias and gains BN (gamma, beta, moving mean, moving variance)
    assert normed.count_params() == plain.count_params() + sum(3 * c.filters for c in convs)
    out = normed(random_images(cfg["input_shape"]), training=True)
    assert all(np.all(np.isfinite(v.numpy())) for v in out.values())


def test_width_scales_filters():
    model = ARCHITECTURES.get("cascade_cnn")((150, 150, 3), {"gender": 2}, width=0.25)
    assert model.get_layer("conv1").filters == 32
    assert model.get_layer("inception_5x5_reduce").filters == 4
    assert model.get_layer("features").units == 128
    model = ARCHITECTURES.get("tcdcn")((60, 60, 1), {"gender": 2}, width=0.01)
    assert model.get_layer("conv1").filters == 1  # rounded, at least 1


# ------------------------------------------------------------------------------------------------
# Argument checking and pretrained weights.
# ------------------------------------------------------------------------------------------------
def test_tcdcn_single_rejects_two_heads_and_landmarks():
    build = ARCHITECTURES.get("tcdcn_single")
    with pytest.raises(ValueError, match="exactly one"):
        build((60, 60, 3), {"smile": 2, "gender": 2})
    with pytest.raises(ValueError, match="exactly one"):
        build((60, 60, 3), {"landmarks": 10})


def test_inputs_too_small_or_bad_width_raise():
    with pytest.raises(ValueError, match="24x24"):
        ARCHITECTURES.get("cascade_cnn")((20, 20, 3), {"gender": 2})
    with pytest.raises(ValueError, match="44x44"):
        ARCHITECTURES.get("tcdcn")((40, 40, 1), {"gender": 2})
    with pytest.raises(ValueError, match="75x75"):
        ARCHITECTURES.get("inception_v3")((64, 64, 3), {"gender": 2})
    with pytest.raises(ValueError, match="width"):
        ARCHITECTURES.get("inception_v3")((75, 75, 3), {"gender": 2}, width=0.5)
    with pytest.raises(ValueError, match="__aux"):
        ARCHITECTURES.get("tcdcn")((60, 60, 1), {"gender__aux": 2})


def test_inception_imagenet_weights_missing_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        ARCHITECTURES.get("inception_v3")((75, 75, 3), {"gender": 2}, weights="imagenet")
    message = str(info.value)
    expected_file = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert str(tmp_path / "models" / expected_file) in message
    assert "notop" in message and 'weights=""' in message
    assert "\n" not in message
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        ARCHITECTURES.get("inception_v3")(
            (75, 75, 3), {"gender": 2}, weights=str(tmp_path / "nowhere.h5")
        )


def test_inception_imagenet_weights_load_from_keras_cache(tmp_path, monkeypatch):
    """A Keras-2-format no-top file in $KERAS_HOME/models loads layer by layer into the backbone."""
    legacy = pytest.importorskip("keras.src.legacy.saving.legacy_h5_format")
    h5py = pytest.importorskip("h5py")
    reference = keras.applications.InceptionV3(
        include_top=False, weights=None, input_shape=(75, 75, 3)
    )
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / inception_module.WEIGHTS_FILE
    with h5py.File(path, "w") as f:
        legacy.save_weights_to_hdf5_group(f, reference)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    model = ARCHITECTURES.get("inception_v3")((75, 75, 3), {"gender": 2}, weights="imagenet")
    ours = [layer for layer in model.layers if layer.weights and not layer.name.startswith("head_")]
    theirs = [layer for layer in reference.layers if layer.weights]
    assert len(ours) == len(theirs) == 188  # 94 conv2d + 94 batch_normalization
    for a, b in zip(ours, theirs):
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb)


# ------------------------------------------------------------------------------------------------
# wang_joint: Full / Fast / variant blocks at 112x96, CASIA-WebFace identities + 7 attributes.
# ------------------------------------------------------------------------------------------------
WANG_GROUPS = ((3, 64, (54, 46)), (4, 128, (26, 22)), (6, 256, (12, 10)), (3, 512, (5, 4)))


def wang_count(convs_per_block: int, bypass_conv: bool, identities: int, attributes: int) -> int:
    def unit(cin, cout):  # 3x3 conv without bias + BN + PReLU (one slope per channel)
        return conv(3, cin, cout, bias=False) + bn(cout) + cout

    total = unit(3, 32) + unit(32, 64) + unit(64, 128) + unit(128, 256) + unit(256, 512)
    for blocks, filters, _ in WANG_GROUPS:
        total += blocks * (convs_per_block + bypass_conv) * unit(filters, filters)
    total += 5 * 4 * 512 * 1024 + bn(1024) + 1024  # fc + BN + PReLU = "features"
    total += dense(1024, identities)  # head_identity
    total += 1024 * 1024 + bn(1024) + 1024 + dense(1024, attributes)  # head_attributes_fc, head
    return total


def wang_multiply_adds(convs_per_block: int, identities: int, attributes: int) -> int:
    macs = (9 * 3 * 32 * 110 * 94 + 9 * 32 * 64 * 108 * 92 + 9 * 64 * 128 * 52 * 44
            + 9 * 128 * 256 * 24 * 20 + 9 * 256 * 512 * 10 * 8)
    for blocks, filters, (h, w) in WANG_GROUPS:
        macs += blocks * convs_per_block * 9 * filters * filters * h * w
    return macs + 10240 * 1024 + 1024 * identities + 1024 * 1024 + 1024 * attributes


def test_wang_full_and_fast_full_size_counts():
    from kerasface.architectures import wang_resnet as wang
    from kerasface.architectures.common import multiply_adds

    heads = {"identity": 10_575, "attributes": 7}
    full = ARCHITECTURES.get("wang_full")((112, 96, 3), heads)
    fast = ARCHITECTURES.get("wang_fast")((112, 96, 3), heads)
    assert full.count_params() == wang_count(3, False, 10_575, 7) == wang.WANG_FULL_PARAMS
    assert fast.count_params() == wang_count(2, False, 10_575, 7) == wang.WANG_FAST_PARAMS
    assert multiply_adds(full) == wang_multiply_adds(3, 10_575, 7) == wang.WANG_FULL_MULTIPLY_ADDS
    assert multiply_adds(fast) == wang_multiply_adds(2, 10_575, 7) == wang.WANG_FAST_MULTIPLY_ADDS
    variant = ARCHITECTURES.get("wang_variant")((112, 96, 3), heads)
    assert variant.count_params() == wang_count(2, True, 10_575, 7)
    same = ARCHITECTURES.get("wang_variant")((112, 96, 3), heads, block="full")
    assert same.count_params() == full.count_params()
    for model in (full, fast):
        assert model.get_layer("features").output.shape[1:] == (1024,)
        assert model.get_layer("res4_3_add").output.shape[1:] == (5, 4, 512)
        # the extra FC feeds the attribute head only; the identity head reads the features
        assert model.get_layer("head_attributes_fc").input.shape[1:] == (1024,)
        assert "head_identity_fc" not in [layer.name for layer in model.layers]


def test_wang_attribute_heads_option():
    build = ARCHITECTURES.get("wang_fast")
    model = build((112, 96, 3), {"identity": 5, "male": 2}, width=0.0625, attribute_heads=("male",),
                  dropout=0.0)
    names = [layer.name for layer in model.layers]
    assert "head_male_fc" in names and "head_identity_fc" not in names
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    with pytest.raises(ValueError, match="attribute_heads"):
        build((112, 96, 3), {"identity": 5}, width=0.0625)  # default ("attributes",) absent
    with pytest.raises(ValueError, match="block"):
        ARCHITECTURES.get("wang_variant")((112, 96, 3), {"identity": 5}, block="deep",
                                          attribute_heads=())
    with pytest.raises(ValueError, match="at least"):
        build((40, 40, 3), {"identity": 5}, attribute_heads=())
