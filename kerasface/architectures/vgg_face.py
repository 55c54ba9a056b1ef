"""VGG-Face (Parkhi, Vedaldi, Zisserman, "Deep Face Recognition", BMVC 2015): VGG16 configuration D
trained on 2,622 identities, as used by the gnet_snet recipe.

Registered name ``vgg_face``; also ``kerasface.architectures.get("vgg_face")``. Alone, as a feature
extractor: ``get("vgg_face")(weights="vgg_face.mat", include_top=False)`` maps (N, 224, 224, 3) RGB
images in [0, 255] to the (N, 4096) fc7 descriptor.

Layout at 224x224x3 (convolutions 3x3, stride 1, same padding, bias, ReLU; pools 2x2 max, stride 2):

    rescale          RGB [0, 255] minus the training mean per channel (R 129.1863, G 104.7624,
                     B 93.5940): the MatConvNet file's meta.normalization.averageImage
    conv1_1, conv1_2 64, 64       3*9*64+64 + 64*9*64+64                  =     38,720
    pool1            224 -> 112
    conv2_1, conv2_2 128, 128     64*9*128+128 + 128*9*128+128            =    221,440
    pool2            112 -> 56
    conv3_1..conv3_3 256 x 3      128*9*256+256 + 2*(256*9*256+256)       =  1,475,328
    pool3            56 -> 28
    conv4_1..conv4_3 512 x 3      256*9*512+512 + 2*(512*9*512+512)       =  5,899,776
    pool4            28 -> 14
    conv5_1..conv5_3 512 x 3      3*(512*9*512+512)                       =  7,079,424
    pool5            14 -> 7
    flatten          7*7*512 = 25,088 (height, width, channel order)
    fc6              Dense 4096, ReLU   25,088*4096+4096                  = 102,764,544
    drop6            Dropout 0.5
    fc7              Dense 4096, ReLU   4096*4096+4096                    =  16,781,312
    drop7, features  Dropout 0.5, the 4096-d descriptor the heads read
    fc8              Dense 2,622 identity logits (include_top; output "identity") 10,742,334
    total with fc8                                                        = 145,002,878
    head_<task>      Dense C per task (new last layers), from features     4096*C + C

Pretrained weights, read from local files only (never downloaded), by layer name with shape checks:
- ``vgg_face.mat``, the MatConvNet model of the original release (robots.ox.ac.uk vgg_face_matconvnet):
  ``net.layers{i}`` with ``name``, ``type`` and ``weights = {filters H x W x in x out, biases}``; fc6-fc8
  are convolutions (fc6 7x7x512x4096 over pool5's 7x7 map). Also MatConvNet's re-release ``vgg-face.mat``
  (``layers`` and ``meta`` at the top). RGB input minus ``averageImage``; MatConvNet correlates like TF,
  so filters map to Keras kernels as they are and fc6's 7x7x512 filters flatten in (h, w, c) order,
  Keras' Flatten order.
- ``rcmalli_vggface_tf_vgg16.h5`` / ``rcmalli_vggface_tf_notop_vgg16.h5`` (keras-vggface releases, Keras 2
  HDF5 weights: groups conv1_1 ... fc8 with kernel:0 / bias:0, channels-last kernels, fc6 25,088x4096
  from a channels-last flatten). Those models take BGR input minus (93.5940, 104.7624, 129.1863), so
  conv1_1's input channels are reversed on loading: the Keras model here always takes RGB.
``weights="vggface"`` looks for those files in the Keras cache ($KERAS_HOME/models/vggface/, where
keras-vggface keeps them, then $KERAS_HOME/models/).

Choices:
- ``include_top=False`` (the default) keeps fc6 and fc7 and drops fc8: gnet_snet replaces only the last
  layer. ``fully_connected=False`` also drops fc6 and fc7 (features = pool5, flattened or pooled by
  ``pooling``): that is what a no-top .h5 file holds.
- Without heads and without the top the model returns the features tensor itself, not a dict.
- ``l2`` adds l2 * sum(w^2) on every kernel (a Keras regularizer): Caffe's weight decay wd is the
  gradient of wd/2 * ||w||^2, so l2 = wd / 2 reproduces it with momentum and lr multipliers applied
  the way Caffe applies them.
- ``width`` multiplies every conv and fc6/fc7 width (tests); fc8 and the heads keep their size. Any input
  of at least 32x32 works (fc6 reads whatever pool5 gives); the weight files fit only the shapes they
  were made for, which the loader checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
from keras import layers

from kerasface.architectures import ARCHITECTURES, WEIGHT_FILES
from kerasface.architectures.common import check_heads, scaled

BLOCKS = ((1, (64, 64)), (2, (128, 128)), (3, (256, 256, 256)), (4, (512, 512, 512)), (5, (512, 512, 512)))
FC_UNITS = 4096
IDENTITIES = 2622
DROPOUT = 0.5
MEAN_RGB = (129.1863, 104.7624, 93.5940)  # the VGG-Face training images' mean, R, G, B
CONV_NAMES = tuple(f"conv{block}_{i}" for block, filters in BLOCKS for i in range(1, len(filters) + 1))
FC_NAMES = ("fc6", "fc7", "fc8")

MAT_FILE = "vgg_face.mat"
H5_FILE = "rcmalli_vggface_tf_vgg16.h5"
H5_NOTOP_FILE = "rcmalli_vggface_tf_notop_vgg16.h5"
WHERE = ("vgg_face.mat is in vgg_face_matconvnet.tar.gz of the VGG-Face release "
         "(https://www.robots.ox.ac.uk/~vgg/software/vgg_face/); rcmalli_vggface_tf_vgg16.h5 and "
         "rcmalli_vggface_tf_notop_vgg16.h5 are the keras-vggface release assets "
         "(https://github.com/rcmalli/keras-vggface/releases)")


@ARCHITECTURES.register("vgg_face")
def build_vgg_face(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    heads: dict[str, int] | None = None,
    *,
    weights: str = "",
    include_top: bool = False,
    fully_connected: bool = True,
    pooling: str = "flatten",
    classes: int = IDENTITIES,
    width: float = 1.0,
    dropout: float = DROPOUT,
    l2: float = 0.0,
    mean: tuple[float, float, float] | None = None,
) -> keras.Model:
    """VGG-Face with optional task heads.

    Args:
        input_shape: (height, width, 3), at least 32x32; the original: 224x224x3.
        heads: task -> units; each gets a new Dense layer head_<task> on the fc7 features.
        weights: "" (random init), "vggface" (the Keras cache) or a path to vgg_face.mat or a
            keras-vggface .h5 file.
        include_top: add fc8, the identity logits (output "identity", `classes` units).
        fully_connected: keep fc6 and fc7 (False: features are pool5's, see `pooling`).
        pooling: without fc layers: "flatten", "avg" or "max" over pool5.
        classes: fc8's identities (2,622 in the release).
        width: multiplier on every conv and fc6/fc7 width (rounded, at least 1).
        dropout: rate after fc6 and fc7.
        l2: kernel L2 factor (l2 * sum w^2).
        mean: the per-channel RGB mean the rescale layer subtracts (default: VGG-Face's, or the
            .mat file's averageImage when `weights` is one).
    """
    heads = dict(heads or {})
    if heads:
        check_heads(heads)
    if len(input_shape) != 3 or input_shape[2] != 3 or min(input_shape[:2]) < 32:
        raise ValueError(f"vgg_face needs input_shape (h >= 32, w >= 32, 3) RGB, got {tuple(input_shape)}")
    if include_top and not fully_connected:
        raise ValueError("vgg_face: include_top (fc8) needs fully_connected=True (fc6, fc7)")
    if pooling not in ("flatten", "avg", "max"):
        raise ValueError(f"vgg_face: pooling must be flatten, avg or max, got {pooling!r}")
    path = resolve_weights(weights, include_top or fully_connected) if weights else None
    if mean is None:
        mean = (mat_mean(path) if path is not None and _is_mat(path) else None) or MEAN_RGB
    reg = keras.regularizers.L2(l2) if l2 else None

    image = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1.0, offset=[-float(m) for m in mean], name="rescale")(image)
    for block, filters in BLOCKS:
        for i, maps in enumerate(filters, start=1):
            x = layers.Conv2D(scaled(maps, width), 3, padding="same", activation="relu", kernel_regularizer=reg,
                              name=f"conv{block}_{i}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"pool{block}")(x)
    if fully_connected:
        x = layers.Flatten(name="flatten")(x)
        for name in ("fc6", "fc7"):
            x = layers.Dense(scaled(FC_UNITS, width), activation="relu", kernel_regularizer=reg, name=name)(x)
            x = layers.Dropout(dropout, name=f"drop{name[2:]}")(x)
        features = layers.Identity(name="features")(x)
    else:
        pool = {"flatten": layers.Flatten, "avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D}
        features = pool[pooling](name="features")(x)
    outputs = {}
    if include_top:  # float32 like the heads, so logits keep full precision under mixed_float16
        outputs["identity"] = layers.Dense(classes, kernel_regularizer=reg, dtype="float32", name="fc8")(features)
    for task, units in heads.items():
        outputs[task] = layers.Dense(units, kernel_regularizer=reg, dtype="float32", name=f"head_{task}")(features)
    model = keras.Model(image, outputs or features, name="vgg_face")
    if path is not None:
        load_weights(model, path)
    return model


# ----------------------------------------------------------------------------- weight files


def cache_dirs() -> list[Path]:
    from kerasface.architectures.inception import keras_cache_dir

    models = Path(keras_cache_dir())
    return [models / "vggface", models]


def resolve_weights(weights: str, with_fc: bool = True) -> Path:
    """A local VGG-Face weights file: `weights` as a path, or for "vggface" the first of the release
    files found in the Keras cache (the no-top .h5 only when the model has no fc layers). Raises
    FileNotFoundError with one line naming the file and where users get it."""
    if weights == "vggface":
        names = [H5_FILE, MAT_FILE] + ([] if with_fc else [H5_NOTOP_FILE])
        for folder in cache_dirs():
            for name in names:
                if (folder / name).is_file():
                    return folder / name
        looked = ", ".join(str(folder / names[0]) for folder in cache_dirs())
        raise FileNotFoundError(f"VGG-Face weights not found: no {' or '.join(names)} in {looked} (or beside it); "
                                f"{WHERE}; or pass weights=PATH, or weights=\"\" for random init")
    path = Path(os.path.expanduser(weights))
    if not path.is_file():
        raise FileNotFoundError(f"VGG-Face weights not found: {path} is missing; {WHERE}; "
                                f"or pass weights=\"\" for random init")
    return path


WEIGHT_FILES.register("vgg_face")(resolve_weights)


def _is_mat(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(128)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return False
    return head.startswith(b"MATLAB") or path.suffix.lower() == ".mat"


def load_weights(model: keras.Model, path: str | os.PathLike) -> list[str]:
    """Load a vgg_face.mat or keras-vggface .h5 file into `model` by layer name; returns the names
    of the layers loaded. Every conv and fc layer of the model must be in the file with matching
    shapes (a ValueError names the layer); layers of the file the model lacks are ignored."""
    path = Path(path)
    params = read_mat(path) if _is_mat(path) else read_h5(path)
    wanted = [n for n in CONV_NAMES + FC_NAMES if n in {layer.name for layer in model.layers}]
    missing = [n for n in wanted if n not in params]
    if missing:
        hint = " (a no-top file: build with fully_connected=False)" if "fc6" in missing and "conv5_3" in params else ""
        raise ValueError(f"{path}: no weights for {', '.join(missing)}{hint}")
    for name in wanted:
        layer = model.get_layer(name)
        kernel, bias = params[name]
        expected = tuple(layer.kernel.shape)
        if kernel.ndim == 4 and len(expected) == 2:  # a MatConvNet fully connected layer: a convolution
            kernel = kernel.reshape(-1, kernel.shape[-1])  # (h, w, c) flattened in C order = Keras Flatten
        if tuple(kernel.shape) != expected or bias.shape != tuple(layer.bias.shape):
            raise ValueError(f"{path}: layer {name}: the file has kernel {tuple(kernel.shape)} and bias "
                             f"{bias.shape}, the model expects {expected} and {tuple(layer.bias.shape)} "
                             f"(check input_shape, width and classes)")
        layer.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return wanted


def _unwrap(value):
    """MATLAB 1x1 cells and structs, as scipy.io.loadmat gives them, down to the object inside."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.flat[0]
    return value


def _text(value) -> str:
    value = _unwrap(value)
    if isinstance(value, np.ndarray):
        return "".join(str(v) for v in value.flat)
    return str(value)


def _load_mat(path: Path):
    import scipy.io

    try:
        data = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False)
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5) files
        raise ValueError(f"{path}: a MATLAB v7.3 file, which scipy cannot read; save it again with "
                         f"save(..., '-v7') or use the release's vgg_face.mat: {exc}") from None
    if "net" in data:
        return _unwrap(data["net"])
    if "layers" in data:  # MatConvNet's re-release: layers and meta at the top level
        return type("Net", (), {"layers": data["layers"], "meta": data.get("meta")})
    raise ValueError(f"{path}: not a MatConvNet VGG-Face model: expected a struct 'net' or a variable "
                     f"'layers', found {', '.join(k for k in data if not k.startswith('__'))}")


def read_mat(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """layer name -> (filters H x W x in x out, biases (out,)) of every conv layer of a MatConvNet file."""
    net = _load_mat(path)
    params = {}
    for entry in np.asarray(net.layers).flat:
        layer = _unwrap(entry)
        if _text(layer.type) != "conv":
            continue
        name = _text(layer.name)
        if hasattr(layer, "weights"):
            filters, biases = (_unwrap(w) for w in np.asarray(layer.weights).flat)
        else:  # MatConvNet before beta-12 kept them in their own fields
            filters, biases = _unwrap(layer.filters), _unwrap(layer.biases)
        filters = np.asarray(filters, dtype=np.float32)
        while filters.ndim < 4:  # MATLAB drops trailing singleton dimensions (a 1-filter layer)
            filters = filters[..., None]
        params[name] = (filters, np.asarray(biases, dtype=np.float32).reshape(-1))
    return params


def mat_mean(path: Path) -> tuple[float, float, float] | None:
    """The RGB mean of a MatConvNet file: meta.normalization.averageImage (or normalization.averageImage),
    averaged over the image when it is a whole mean image; None when the file has none."""
    net = _load_mat(path)
    holder = _unwrap(getattr(net, "meta", None)) if getattr(net, "meta", None) is not None else net
    normalization = _unwrap(getattr(holder, "normalization", None))
    average = getattr(normalization, "averageImage", None) if normalization is not None else None
    if average is None:
        return None
    average = np.asarray(_unwrap(average), dtype=np.float64)
    if average.size != 3:
        average = average.reshape(-1, 3).mean(axis=0)
    return tuple(float(v) for v in average.reshape(3))


def read_h5(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """layer name -> (kernel, bias) of a Keras 2 HDF5 weights file (save_weights, or model.save's
    model_weights group), conv1_1's input channels turned from BGR into RGB."""
    import h5py

    params = {}
    with h5py.File(path, "r") as handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs.get("layer_names", list(root))]
        for name in names:
            group = root[name]
            weight_names = [w.decode() if isinstance(w, bytes) else str(w) for w in group.attrs.get("weight_names", [])]
            if not weight_names:
                continue
            arrays = {w.split("/")[-1].split(":")[0]: np.asarray(group[w]) for w in weight_names}
            if "kernel" not in arrays or "bias" not in arrays:
                raise ValueError(f"{path}: layer {name}: expected kernel and bias, found {', '.join(arrays)}")
            params[name] = (arrays["kernel"], arrays["bias"])
    if "conv1_1" in params:  # keras-vggface models take BGR images
        kernel, bias = params["conv1_1"]
        params["conv1_1"] = (kernel[:, :, ::-1, :], bias)
    return params
