"""VGG-Face: the exact parameter count at full size, and both weight-file layouts loaded into a
reduced-width model and checked against a NumPy forward pass written in each file's own convention
(MatConvNet: RGB minus averageImage, fc layers as convolutions; keras-vggface: BGR minus its mean,
fc6 on a channels-last flatten). Random weights: a wrong channel or flattening order cannot pass.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kerasface.architectures import ARCHITECTURES, get
from kerasface.architectures import vgg_face as vgg

SIZE = 64  # pool5 is 2x2: fc6 sees a real spatial map, so its flattening order is tested
WIDTH = 1 / 16  # convs 4, 8, 16, 32, 32; fc6 and fc7 256
CLASSES = 7
BGR_MEAN = (93.5940, 104.7624, 129.1863)


def conv(k, cin, cout):
    return k * k * cin * cout + cout


def test_full_size_parameter_count():
    model = get("vgg_face")(include_top=True)
    chans = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    convs = sum(conv(3, a, b) for a, b in zip(chans[:-1], chans[1:]))
    assert convs == 14_714_688
    fcs = conv(7, 512, 4096) + conv(1, 4096, 4096) + conv(1, 4096, 2622)
    assert model.count_params() == convs + fcs == 145_002_878
    assert [layer.name for layer in model.layers if layer.weights] == list(vgg.CONV_NAMES + vgg.FC_NAMES)
    assert model.get_layer("pool5").output.shape[1:] == (7, 7, 512)
    assert model.output["identity"].shape[1:] == (2622,)
    assert get("vgg_face") is ARCHITECTURES.get("vgg_face")


# ----------------------------------------------------------------------------- random weights


def random_params(seed=0):
    """name -> (kernel in the Keras layout, bias) for the reduced model, He-scaled."""
    rng = np.random.default_rng(seed)
    params, cin = {}, 3
    for block, filters in vgg.BLOCKS:
        for i, maps in enumerate(filters, start=1):
            cout = max(1, round(maps * WIDTH))
            params[f"conv{block}_{i}"] = (rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, cout)),
                                          rng.normal(0, 0.1, cout))
            cin = cout
    side, fc = SIZE // 32, round(4096 * WIDTH)
    params["fc6"] = (rng.normal(0, np.sqrt(2 / (side * side * cin)), (side * side * cin, fc)), rng.normal(0, 0.1, fc))
    params["fc7"] = (rng.normal(0, np.sqrt(2 / fc), (fc, fc)), rng.normal(0, 0.1, fc))
    params["fc8"] = (rng.normal(0, np.sqrt(1 / fc), (fc, CLASSES)), rng.normal(0, 0.1, CLASSES))
    return {k: (w.astype("float32"), b.astype("float32")) for k, (w, b) in params.items()}


def conv3x3(x, kernel, bias):
    """Same-padded 3x3 correlation, (H, W, Cin) -> (H, W, Cout), as MatConvNet, Caffe and TF do."""
    h, w, _ = x.shape
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, w, kernel.shape[-1]), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += padded[dy:dy + h, dx:dx + w] @ kernel[dy, dx]
    return out + bias


def numpy_convs(x, params):
    for block, filters in vgg.BLOCKS:
        for i in range(1, len(filters) + 1):
            x = np.maximum(conv3x3(x, *params[f"conv{block}_{i}"]), 0)
        h, w, c = x.shape
        x = x.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))
    return x


def mat_forward(image_rgb, filters, average):
    """MatConvNet's vl_simplenn on one image: RGB minus the average image, fc layers as convolutions."""
    x = numpy_convs(image_rgb - average, filters)
    for name in ("fc6", "fc7", "fc8"):
        w, b = filters[name]
        x = np.einsum("hwc,hwco->o", x, w) + b  # a valid convolution covering the whole map
        x = np.maximum(x, 0) if name != "fc8" else x
        x = x[None, None, :]
    return x.reshape(-1)


def h5_forward(image_rgb, params, top=True):
    """keras-vggface: RGB -> BGR, minus its BGR mean; fc6 on the channels-last flatten."""
    x = numpy_convs(image_rgb[..., ::-1] - np.array(BGR_MEAN), params).reshape(-1)
    if not top:
        return x
    for name in ("fc6", "fc7", "fc8"):
        x = x @ params[name][0] + params[name][1]
        x = np.maximum(x, 0) if name != "fc8" else x
    return x


def images(n=2, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


# ----------------------------------------------------------------------------- file writers


def write_mat(path, params, average, rerelease=False):
    """A MatConvNet SimpleNN file: conv filters H x W x in x out, fc6-fc8 as convolutions."""
    import scipy.io

    side = SIZE // 32
    layers = []
    for name in vgg.CONV_NAMES + vgg.FC_NAMES:
        kernel, bias = params[name]
        if name.startswith("fc"):
            cin = kernel.shape[0] // (side * side) if name == "fc6" else kernel.shape[0]
            k = side if name == "fc6" else 1
            kernel = kernel.reshape(k, k, cin, kernel.shape[1])
        weights = np.empty((1, 2), dtype=object)
        weights[0, 0], weights[0, 1] = kernel, bias.reshape(-1, 1)
        layers.append({"name": name, "type": "conv", "weights": weights, "stride": np.array([1.0, 1.0])})
        if name != "fc8":
            layers.append({"name": f"relu{name[2:] if name.startswith('fc') else name[4:]}", "type": "relu"})
        if name.endswith("_3") or name in ("conv1_2", "conv2_2"):
            layers.append({"name": f"pool{name[4]}", "type": "pool", "method": "max"})
    cells = np.empty((1, len(layers)), dtype=object)
    for i, layer in enumerate(layers):
        cells[0, i] = layer
    meta = {"normalization": {"averageImage": np.asarray(average, np.float32).reshape(1, 1, 3),
                              "imageSize": np.array([SIZE, SIZE, 3.0])}}
    content = {"layers": cells, "meta": meta} if rerelease else {"net": {"layers": cells, "meta": meta}}
    scipy.io.savemat(path, content)


def write_h5(path, params, top=True):
    """A Keras 2 save_weights file in keras-vggface's layer naming (conv1_1's input channels in BGR)."""
    h5py = pytest.importorskip("h5py")
    names = ["input_1"]
    for block, filters in vgg.BLOCKS:
        names += [f"conv{block}_{i}" for i in range(1, len(filters) + 1)] + [f"pool{block}"]
    if top:
        names += ["flatten", "fc6", "fc6/relu", "fc7", "fc7/relu", "fc8", "fc8/softmax"]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in names]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.5"
        for name in names:
            group = f.create_group(name)
            if name not in params:
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            kernel, bias = params[name]
            weight_names = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            group.attrs["weight_names"] = weight_names
            group[weight_names[0].decode()] = kernel
            group[weight_names[1].decode()] = bias


# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("rerelease", [False, True], ids=["vgg_face.mat", "vgg-face.mat"])
def test_matconvnet_file_matches_numpy_forward(tmp_path, rerelease):
    params = random_params()
    average = (120.5, 99.25, 80.0)  # not the default: the file's averageImage must be used
    path = tmp_path / "vgg_face.mat"
    write_mat(path, params, average, rerelease)
    model = get("vgg_face")((SIZE, SIZE, 3), weights=str(path), include_top=True, classes=CLASSES, width=WIDTH)
    x = images()
    ours = model(x, training=False)["identity"].numpy()
    side = SIZE // 32
    filters = dict(params)
    filters["fc6"] = (params["fc6"][0].reshape(side, side, -1, params["fc6"][0].shape[1]), params["fc6"][1])
    for name in ("fc7", "fc8"):
        filters[name] = (params[name][0][None, None], params[name][1])
    for image, out in zip(x, ours):
        expected = mat_forward(image.astype(np.float64), filters, np.array(average))
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_keras_vggface_h5_matches_numpy_forward(tmp_path):
    params = random_params(seed=2)
    path = tmp_path / vgg.H5_FILE
    write_h5(path, params)
    model = get("vgg_face")((SIZE, SIZE, 3), {"smile": 2}, weights=str(path), include_top=True, classes=CLASSES,
                            width=WIDTH)
    x = images()
    out = model(x, training=False)
    for image, logits in zip(x, out["identity"].numpy()):
        expected = h5_forward(image.astype(np.float64), params)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert out["smile"].shape == (2, 2)  # the new head is there, freshly initialised


def test_keras_vggface_notop_h5_as_feature_extractor(tmp_path):
    params = random_params(seed=3)
    notop = {k: v for k, v in params.items() if k.startswith("conv")}
    path = tmp_path / vgg.H5_NOTOP_FILE
    write_h5(path, notop, top=False)
    extractor = get("vgg_face")((SIZE, SIZE, 3), weights=str(path), fully_connected=False, width=WIDTH)
    x = images()
    features = extractor(x, training=False).numpy()  # no heads, no top: the features tensor itself
    for image, feature in zip(x, features):
        expected = h5_forward(image.astype(np.float64), params, top=False)
        np.testing.assert_allclose(feature, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    with pytest.raises(ValueError, match="no weights for fc6, fc7.*no-top"):
        get("vgg_face")((SIZE, SIZE, 3), weights=str(path), width=WIDTH)


def test_feature_extractor_without_top_returns_fc7(tmp_path):
    params = random_params(seed=4)
    path = tmp_path / "weights.h5"
    write_h5(path, params)
    extractor = get("vgg_face")((SIZE, SIZE, 3), weights=str(path), include_top=False, width=WIDTH)
    assert extractor.output.shape[1:] == (round(4096 * WIDTH),)
    assert "fc8" not in [layer.name for layer in extractor.layers]
    x = images(1)
    fc7 = extractor(x, training=False).numpy()[0]
    y = h5_forward(x[0].astype(np.float64), params, top=False)
    for name in ("fc6", "fc7"):
        y = np.maximum(y @ params[name][0] + params[name][1], 0)
    np.testing.assert_allclose(fc7, y, rtol=1e-4, atol=1e-4 * np.abs(y).max())


def test_missing_and_mismatched_files(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as info:
        get("vgg_face")((SIZE, SIZE, 3), weights=str(tmp_path / "vgg_face.mat"), width=WIDTH)
    message = str(info.value)
    assert str(tmp_path / "vgg_face.mat") in message and "\n" not in message
    assert "vgg_face_matconvnet" in message and "keras-vggface" in message

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "models" / "vggface" / vgg.H5_FILE)):
        get("vgg_face")((SIZE, SIZE, 3), weights="vggface", width=WIDTH)
    (tmp_path / "models" / "vggface").mkdir(parents=True)
    write_h5(tmp_path / "models" / "vggface" / vgg.H5_FILE, random_params())
    model = get("vgg_face")((SIZE, SIZE, 3), weights="vggface", include_top=True, classes=CLASSES, width=WIDTH)
    np.testing.assert_array_equal(model.get_layer("fc7").kernel.numpy(), random_params()["fc7"][0])

    with pytest.raises(ValueError, match=r"layer conv1_1: the file has kernel \(3, 3, 3, 4\).*expects \(3, 3, 3, 8\)"):
        get("vgg_face")((SIZE, SIZE, 3), weights="vggface", width=WIDTH * 2)
    with pytest.raises(ValueError, match="layer fc6"):  # another input size: pool5 is 3x3, not 2x2
        get("vgg_face")((96, 96, 3), weights="vggface", width=WIDTH)


def test_recipe_without_the_weights_fails_before_training_anything(tmp_path, monkeypatch, capsys):
    from kerasface.train import main

    from kerasface.data import DATASETS

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    found = lambda root=None: tmp_path  # noqa: E731  the datasets are found (checked first), the weights not
    for name in ("celeba", "fotw"):
        monkeypatch.setitem(DATASETS._items, name, dataclasses.replace(DATASETS.get(name), resolve_root=found))
    run_dir = tmp_path / "run"
    assert main(["--paper=gnet_snet", "--run-dir", str(run_dir), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "VGG-Face weights not found: no rcmalli_vggface_tf_vgg16.h5 or vgg_face.mat in " in err
    assert str(tmp_path / "keras" / "models" / "vggface") in err
    assert not run_dir.exists()
