"""kerasface.export: SavedModel (TF Serving layout, signatures, warmup, metadata) and TFLite.

Runs on a fabricated run folder (tests/run_fixture.py): two small trained models on the
nose_centred_150 crop, 48x48 RGB and 60x60 grayscale, heads smile, gender, landmarks.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import run_fixture  # noqa: E402  (tests/ is on sys.path)
import tensorflow as tf  # noqa: E402

from kerasface.export.__main__ import main as export_main  # noqa: E402
from kerasface.export.run import RunError, Task, Unit, load_run, score, select_heads  # noqa: E402

RGB = run_fixture.unit_name("tiny_rgb")
GRAY = run_fixture.unit_name("tiny_gray")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return run_fixture.cached_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir)


@pytest.fixture(scope="module")
def keras_models(run):
    import keras

    return {name: keras.saving.load_model(u.model_path, compile=False) for name, u in run.units.items()}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def merged(run_dir, models_dir):
    """The default deployable: version 1 of models/faces."""
    assert export_main(["saved-model", str(run_dir), "--name", "faces", "--out", str(models_dir)]) == 0
    path = models_dir / "faces" / "1"
    return path, tf.saved_model.load(str(path))


@pytest.fixture(scope="module")
def single(run_dir, models_dir, merged):
    """--model tiny_gray exported under the same name: becomes version 2."""
    assert export_main(["saved-model", str(run_dir), "--name", "faces", "--out", str(models_dir),
                        "--model", "tiny_gray"]) == 0
    path = models_dir / "faces" / "2"
    return path, tf.saved_model.load(str(path))


def reference(keras_models, x: np.ndarray, heads: dict[str, tuple[str, int, int]]) -> dict[str, np.ndarray]:
    """What Keras says for float input x, with each head's colour conversion and resize done eagerly.

    heads: attribute -> (unit, size, channels). Landmarks come back as fractions.
    """
    out = {}
    for task, (unit, size, channels) in heads.items():
        h = tf.convert_to_tensor(x, tf.float32)
        if channels == 1 and h.shape[-1] == 3:
            h = tf.image.rgb_to_grayscale(h)
        if tuple(h.shape[1:3]) != (size, size):
            h = tf.image.resize(h, (size, size), method="bilinear", antialias=False)
        y = keras_models[unit](h, training=False)[task]
        out[task] = tf.nn.softmax(y).numpy() if task != "landmarks" else y.numpy()
    return out


MERGED_HEADS = {"smile": (RGB, 48, 3), "gender": (GRAY, 60, 1), "landmarks": (RGB, 48, 3)}


def png(image: np.ndarray) -> bytes:
    return run_fixture.encode(image, "PNG")


# ----------------------------------------------------------------------------- selection


def test_default_selection_is_best_per_attribute_on_val(run):
    sel = select_heads(run)
    assert {t: u.name for t, u in sel.heads.items()} == {"smile": RGB, "gender": GRAY, "landmarks": RGB}
    assert sel.crop == "nose_centred_150"
    assert [u.name for u in sel.units] == [RGB, GRAY]
    assert not sel.dropped


def test_model_option_takes_unit_or_model_key(run):
    by_key = select_heads(run, "tiny_gray")
    by_unit = select_heads(run, GRAY)
    assert [u.name for u in by_key.units] == [u.name for u in by_unit.units] == [GRAY]
    assert list(by_key.heads) == ["smile", "gender", "landmarks"]
    with pytest.raises(RunError, match="tiny_rgb") as info:
        select_heads(run, "nope")
    assert "model keys" in str(info.value)


def _unit(name, crop, tasks, val):
    return Unit(name=name, model_key=name.split("-")[0], arch="x", crop=crop, input_size=(8, 8), channels=3,
                tasks=tuple(Task(t, "landmarks" if t == "landmarks" else "classification",
                                 ("a", "b") if t != "landmarks" else tuple(str(i) for i in range(10)))
                            for t in tasks),
                folder=Path("/nonexistent"), val=val)


def test_selection_rules_without_models(tmp_path):
    from kerasface.export.run import Run

    units = [
        _unit("a-original-all", "original", ["smile", "gender", "landmarks"],
              {"smile": 0.80, "gender": 0.70, "landmarks": {"nme": 0.09}}),
        _unit("b-original-smile", "original", ["smile"], {"smile": 0.85}),
        _unit("c-original-all", "original", ["landmarks", "smile"], {"landmarks": -0.05, "smile": 0.1}),  # -NME
        _unit("d-tight-all", "tight", ["smile", "gender"], {"smile": 0.99, "gender": 0.99}),
        _unit("e-tight-glasses", "tight", ["glasses"], {"glasses": 0.9}),
        _unit("f-tight-x", "tight", ["pose"], {}),
    ]
    fake = Run(tmp_path, {}, {}, {u.name: u for u in units})
    sel = select_heads(fake)
    # 'tight' answers 4 attributes (smile, gender, glasses, pose) vs 3 for 'original'
    assert sel.crop == "tight"
    assert {t: u.name for t, u in sel.heads.items()} == {
        "smile": "d-tight-all", "gender": "d-tight-all", "glasses": "e-tight-glasses", "pose": "f-tight-x"}
    assert "landmarks" in sel.dropped and "'original'" in sel.dropped["landmarks"]
    # within one crop: accuracy higher is better, landmark NME lower is better (also stored as -NME)
    sel = select_heads(fake, "a")
    assert set(sel.heads) == {"smile", "gender", "landmarks"}
    orig = Run(tmp_path, {}, {}, {u.name: u for u in units if u.crop == "original"})
    sel = select_heads(orig)
    assert sel.heads["smile"].name == "b-original-smile"
    assert sel.heads["landmarks"].name == "c-original-all"
    assert sel.heads["gender"].name == "a-original-all"
    assert score(units[5], units[5].tasks[0]) == -math.inf


def test_records_of_the_exported_crop(tmp_path):
    from kerasface.export.run import Run

    tight, loose = tmp_path / "mtfl-tight", tmp_path / "mtfl-loose"
    for folder in (tight, loose):
        folder.mkdir()
        (folder / "test-00000-of-00001.tfrecord").write_bytes(b"")
    a = _unit("a-tight-all", "tight", ["smile"], {})
    a.records = tight
    b = _unit("b-loose-all", "loose", ["smile"], {})
    b.records = loose
    fake = Run(tmp_path, {}, {}, {a.name: a, b.name: b})
    assert fake.records("test", "tight") == [str(tight / "test-00000-of-00001.tfrecord")]
    assert fake.records("test", "loose") == [str(loose / "test-00000-of-00001.tfrecord")]
    with pytest.raises(RunError, match="no 'train' shards"):
        fake.records("train", "tight")


# ----------------------------------------------------------------------------- SavedModel layout


def test_float_only_export_answers_as_the_full_one(run, merged, keras_models, tmp_path):
    # what verify/identify export for themselves: serving_default alone, no warm-up requests;
    # the same answers as the deployable's serving_default
    from kerasface.export.saved_model import export_saved_model, read_signature_defs

    path = export_saved_model(run, select_heads(run), "inner", out=tmp_path, log=lambda *a: None, verify=False,
                              float_only=True)
    assert sorted(k for k in read_signature_defs(path) if k != "__saved_model_init_op") == ["serving_default"]
    assert not (path / "assets.extra").exists()
    assert list(json.loads((path / "export.json").read_text())["inputs"]) == ["serving_default"]
    x = np.random.default_rng(0).uniform(0, 255, (3, 150, 150, 3)).astype(np.float32)
    small = tf.saved_model.load(str(path)).signatures["serving_default"](image=tf.constant(x))
    full = merged[1].signatures["serving_default"](image=tf.constant(x))
    assert sorted(small) == sorted(full)
    for name in full:
        np.testing.assert_allclose(small[name].numpy(), full[name].numpy(), atol=1e-6)


def test_layout_and_metadata_files(merged, run_dir, models_dir):
    path, _ = merged
    assert path.name == "1" and (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    assert (path / "assets.extra" / "tf_serving_warmup_requests").is_file()
    for f in ("export.json", "labels.json", "config.json", "metrics.json", "smile.labels.txt",
              "gender.labels.txt", "landmarks.labels.txt"):
        assert (path / f).is_file(), f
    assert json.loads((path / "config.json").read_text()) == json.loads((run_dir / "config.json").read_text())
    assert json.loads((path / "metrics.json").read_text()) == json.loads((run_dir / "metrics.json").read_text())
    assert (path / "smile.labels.txt").read_text().split() == run_fixture.LABELS["smile"]
    labels = json.loads((path / "labels.json").read_text())
    assert labels["gender"] == run_fixture.LABELS["gender"]
    assert labels["landmarks"][:2] == ["left_eye_x", "left_eye_y"] and len(labels["landmarks"]) == 10
    info = json.loads((path / "export.json").read_text())
    assert info["crop"] == "nose_centred_150" and info["crop_size"] == [150, 150]
    assert info["input_size"] == [150, 150] and info["channels"] == 3
    assert info["name"] == "faces" and info["version"] == 1
    assert info["outputs"]["smile"]["unit"] == RGB and info["outputs"]["gender"]["unit"] == GRAY
    assert info["outputs"]["smile"]["labels"] == run_fixture.LABELS["smile"]
    metrics = json.loads((run_dir / "metrics.json").read_text())["models"][RGB]
    assert info["outputs"]["smile"]["val"]["accuracy"] == metrics["val"]["smile"]["accuracy"] == 1.0
    assert {h["unit"]: (h["input_size"], h["channels"]) for h in info["heads"]} == {
        RGB: ([48, 48], 3), GRAY: ([60, 60], 1)}
    assert "bilinear" in info["preprocessing"]["steps"] and info["preprocessing"]["range"] == [0, 255]
    sigs = info["signatures"]
    assert set(sigs) == {"serving_default", "predict_images", "predict_examples", "classify_smile",
                         "classify_gender", "labels"}
    assert sigs["serving_default"]["inputs"]["image"]["shape"] == [-1, 150, 150, 3]
    assert sigs["predict_images"]["inputs"]["image_bytes"]["dtype"] == "string"
    assert sigs["classify_smile"]["method_name"] == "tensorflow/serving/classify"
    assert set(sigs["serving_default"]["outputs"]) == {"smile", "gender", "landmarks"}  # no smile__aux
    assert not [p for p in (models_dir / "faces").iterdir() if p.name.startswith(".")]


def test_versions_increment_and_existing_version_is_refused(single, models_dir, run_dir, capsys):
    path, _ = single
    assert path.name == "2"
    info = json.loads((path / "export.json").read_text())
    assert info["version"] == 2 and [h["unit"] for h in info["heads"]] == [GRAY]
    assert export_main(["saved-model", str(run_dir), "--name", "faces", "--out", str(models_dir),
                        "--version", "2", "--model", "tiny_gray"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in (models_dir / "faces").iterdir()) == ["1", "2"]  # nothing half-written


# ----------------------------------------------------------------------------- signatures


def test_float_signature_equals_keras_merged(merged, keras_models):
    _, loaded = merged
    x = np.random.default_rng(0).uniform(0, 255, (3, 150, 150, 3)).astype(np.float32)
    got = loaded.signatures["serving_default"](image=tf.constant(x))
    want = reference(keras_models, x, MERGED_HEADS)
    assert set(got) == {"smile", "gender", "landmarks"}
    for task in ("smile", "gender"):
        np.testing.assert_allclose(got[task].numpy(), want[task], atol=1e-5)
        np.testing.assert_allclose(got[task].numpy().sum(-1), 1.0, atol=1e-5)
    # landmarks: fractions of the input -> pixels of the 150x150 input crop
    np.testing.assert_allclose(got["landmarks"].numpy(), want["landmarks"] * 150.0, atol=1e-3)


def test_float_signature_equals_keras_single(single, keras_models):
    _, loaded = single
    fn = loaded.signatures["serving_default"]
    assert fn.structured_input_signature[1]["image"].shape.as_list() == [None, 60, 60, 1]
    x = np.random.default_rng(1).uniform(0, 255, (4, 60, 60, 1)).astype(np.float32)
    got = fn(image=tf.constant(x))
    raw = keras_models[GRAY](x, training=False)
    for task in ("smile", "gender"):
        np.testing.assert_allclose(got[task].numpy(), tf.nn.softmax(raw[task]).numpy(), atol=1e-5)
    np.testing.assert_allclose(got["landmarks"].numpy(), raw["landmarks"].numpy() * 60.0, atol=1e-4)


def test_bytes_signature_matches_python_decoding(merged, keras_models):
    from PIL import Image

    _, loaded = merged
    rng = np.random.default_rng(3)
    images = [run_fixture.make_image(rng, 1, 0), run_fixture.make_image(rng, 0, 1, size=200)]
    # PNG: Pillow's decoding is exact, so Python decodes with Pillow
    encoded = [png(im) for im in images]
    got = loaded.signatures["predict_images"](image_bytes=tf.constant(encoded))
    for i, data in enumerate(encoded):
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)[None]
        side = pixels.shape[1]
        want = reference(keras_models, pixels, MERGED_HEADS)
        for task in ("smile", "gender"):
            np.testing.assert_allclose(got[task].numpy()[i], want[task][0], atol=1e-5)
        # landmarks are in pixels of the decoded image (150 or 200 wide)
        np.testing.assert_allclose(got["landmarks"].numpy()[i], want["landmarks"][0] * side, atol=2e-3)
    # JPEG: the pipeline decodes with the accurate integer DCT, so Pillow gives the same pixels
    jpeg = run_fixture.encode(images[0])
    got = loaded.signatures["predict_images"](image_bytes=tf.constant([jpeg]))
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float32)[None]
    want = reference(keras_models, pixels, MERGED_HEADS)
    for task in ("smile", "gender"):
        np.testing.assert_allclose(got[task].numpy(), want[task], atol=1e-5)


def test_examples_signature_equals_bytes_signature(merged, run):
    _, loaded = merged
    raw = [r.numpy() for r in tf.data.TFRecordDataset(run.records("test")).take(4)]
    encoded = [tf.train.Example.FromString(r).features.feature["image/encoded"].bytes_list.value[0] for r in raw]
    by_example = loaded.signatures["predict_examples"](examples=tf.constant(raw))
    by_bytes = loaded.signatures["predict_images"](image_bytes=tf.constant(encoded))
    for task in ("smile", "gender", "landmarks"):
        np.testing.assert_allclose(by_example[task].numpy(), by_bytes[task].numpy(), atol=1e-6)


def test_classify_and_labels_signatures(merged, run):
    _, loaded = merged
    raw = [r.numpy() for r in tf.data.TFRecordDataset(run.records("test")).take(3)]
    out = loaded.signatures["classify_smile"](inputs=tf.constant(raw))
    assert out["classes"].numpy().tolist() == [[b"not_smiling", b"smiling"]] * 3
    by_example = loaded.signatures["predict_examples"](examples=tf.constant(raw))
    np.testing.assert_allclose(out["scores"].numpy(), by_example["smile"].numpy(), atol=1e-6)
    labels = loaded.signatures["labels"](rows=tf.constant([0, 0], tf.int32))
    assert labels["gender"].numpy().tolist() == [[b"female", b"male"]] * 2
    assert labels["landmarks"].shape == (2, 10)


def test_warmup_requests_are_valid_prediction_logs(merged):
    from tensorflow_serving.apis import prediction_log_pb2

    path, loaded = merged
    records = list(tf.data.TFRecordDataset(str(path / "assets.extra" / "tf_serving_warmup_requests")))
    assert 1 <= len(records) <= 1000
    signatures = set()
    for raw in records:
        log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        assert log.WhichOneof("log_type") == "predict_log"
        req = log.predict_log.request
        assert req.model_spec.name == "faces"
        signatures.add(req.model_spec.signature_name)
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in req.inputs.items()}
        out = loaded.signatures[req.model_spec.signature_name](**inputs)
        assert out["smile"].shape == (1, 2)
    assert signatures == {"serving_default", "predict_images", "predict_examples"}


# ----------------------------------------------------------------------------- TFLite


@pytest.fixture(scope="module")
def graph(run):
    from kerasface.export.graph import ServingGraph

    return ServingGraph(select_heads(run))


@pytest.fixture(scope="module")
def test_inputs(run, graph):
    from kerasface.export.tflite import float_inputs, read_records

    records = read_records(run.records("test"))
    return records, float_inputs(graph, records)


@pytest.fixture(scope="module")
def tflite_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tflite")


def test_tflite_fp32_matches_keras(run_dir, graph, test_inputs, tflite_dir):
    from kerasface.export.tflite import run_tflite, sidecar_path

    out = tflite_dir / "faces-none.tflite"
    assert export_main(["tflite", str(run_dir), "--quant", "none", "--out", str(out), "--no-parity"]) == 0
    _, x = test_inputs
    lite = run_tflite(out, x)
    want = graph.serve_float(tf.constant(x))
    assert set(lite) == {"smile", "gender", "landmarks"}
    for task in ("smile", "gender"):
        np.testing.assert_allclose(lite[task], want[task].numpy(), atol=1e-4)
    # landmarks are pixels (0..150): the same relative tolerance
    np.testing.assert_allclose(lite["landmarks"], want["landmarks"].numpy(), atol=1e-4 * 150)
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["quant"] == "none" and meta["input_size"] == [150, 150] and meta["channels"] == 3
    assert meta["labels"]["smile"] == run_fixture.LABELS["smile"] and meta["crop"] == "nose_centred_150"
    assert meta["inputs"]["image"]["range"] == [0, 255] and "bilinear" in meta["preprocessing"]["steps"]
    assert meta["signatures"]["serving_default"]["inputs"] == ["image"]


def test_tflite_int8_is_full_integer_and_agrees_with_fp32(run_dir, graph, test_inputs, tflite_dir, capsys):
    from ai_edge_litert.interpreter import Interpreter

    from kerasface.export.tflite import run_tflite, sidecar_path

    out = tflite_dir / "faces-int8.tflite"
    assert export_main(["tflite", str(run_dir), "--quant", "int8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity of" in printed and "1 thread" in printed and "2 threads" in printed
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["ops"]["float_ops"] == []  # every compute op is int8 (float only at QUANTIZE/DEQUANTIZE)
    assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(meta["ops"]["ops"])
    assert meta["parity"]["images"] == len(test_inputs[0])
    interp = Interpreter(model_path=str(out))
    assert interp.get_input_details()[0]["dtype"] == np.float32  # float I/O, int8 inside (documented)
    records, x = test_inputs
    fp32 = graph.serve_float(tf.constant(x))
    int8 = run_tflite(out, x)
    for task in ("smile", "gender"):
        agree = float((fp32[task].numpy().argmax(-1) == int8[task].argmax(-1)).mean())
        assert agree >= 0.95, (task, agree)
        labels = np.array([r["labels"][task] for r in records])
        known = labels >= 0
        acc32 = float((fp32[task].numpy().argmax(-1)[known] == labels[known]).mean())
        acc8 = float((int8[task].argmax(-1)[known] == labels[known]).mean())
        assert abs(acc32 - acc8) <= 0.05, (task, acc32, acc8)
        report = meta["parity"]["attributes"][task]
        assert report["agreement"] == pytest.approx(agree)
    assert np.abs(int8["smile"] - fp32["smile"].numpy()).max() < 0.1


def test_tflite_int8_with_uint8_io(run_dir, graph, test_inputs, tflite_dir, capsys):
    """--io uint8: integer tensors at both ends, their quantization in the sidecar; parity and
    predict dequantize, so the answers equal those of the float-I/O int8 file."""
    from ai_edge_litert.interpreter import Interpreter

    from kerasface.export.tflite import run_tflite, sidecar_path
    from kerasface.predict.tflite import TFLiteModel

    assert export_main(["tflite", str(run_dir), "--quant", "none", "--io", "uint8", "--no-parity"]) == 2
    assert "--io uint8 needs --quant int8" in capsys.readouterr().err
    out = tflite_dir / "faces-int8-uint8.tflite"
    assert export_main(["tflite", str(run_dir), "--quant", "int8", "--io", "uint8", "--out", str(out)]) == 0
    assert "uint8 I/O" in capsys.readouterr().out
    runner = Interpreter(model_path=str(out)).get_signature_runner("serving_default")
    image = runner.get_input_details()["image"]
    assert image["dtype"] == np.uint8 and image["quantization"] == (1.0, 0)  # camera pixels as they are
    assert {np.dtype(d["dtype"]) for d in runner.get_output_details().values()} == {np.dtype(np.uint8)}
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["io"] == "uint8" and meta["ops"]["float_ops"] == []
    assert meta["inputs"]["image"]["dtype"] == "uint8"
    assert meta["inputs"]["image"]["quantization"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
    for name, detail in runner.get_output_details().items():
        q = meta["outputs"][name]["quantization"]
        assert meta["outputs"][name]["dtype"] == "uint8"
        assert (q["scale"], q["zero_point"]) == pytest.approx(detail["quantization"])
    # parity within the bound of the float-I/O int8 test
    records, x = test_inputs
    fp32 = graph.serve_float(tf.constant(x))
    lite = run_tflite(out, x)
    for task in ("smile", "gender"):
        agree = float((fp32[task].numpy().argmax(-1) == lite[task].argmax(-1)).mean())
        assert agree >= 0.95, (task, agree)
        assert meta["parity"]["attributes"][task]["agreement"] == pytest.approx(agree)
    assert np.abs(lite["smile"] - fp32["smile"].numpy()).max() < 0.1
    assert meta["parity"]["io"] == "uint8"
    # predict: the same labels as the float-I/O int8 file
    float_io = tflite_dir / "faces-int8.tflite"
    if not float_io.exists():
        assert export_main(["tflite", str(run_dir), "--quant", "int8", "--out", str(float_io), "--no-parity"]) == 0
    a, b = TFLiteModel(out, threads=1).predict(x), TFLiteModel(float_io, threads=1).predict(x)
    assert set(a) == set(b)
    for task in ("smile", "gender"):
        np.testing.assert_array_equal(a[task].argmax(-1), b[task].argmax(-1))
        assert a[task].dtype == np.float32
    np.testing.assert_allclose(a["landmarks"], b["landmarks"], atol=2 * meta["outputs"]["landmarks"]["quantization"]["scale"])


def test_tflite_fp16_and_dynamic(run_dir, graph, test_inputs, tflite_dir):
    from kerasface.export.tflite import run_tflite

    _, x = test_inputs
    want = graph.serve_float(tf.constant(x[:8]))
    for quant, tol in (("fp16", 1e-2), ("dynamic", 0.1)):
        out = tflite_dir / f"faces-{quant}.tflite"
        assert export_main(["tflite", str(run_dir), "--quant", quant, "--out", str(out), "--no-parity"]) == 0
        lite = run_tflite(out, x[:8])
        assert np.abs(lite["smile"] - want["smile"].numpy()).max() < tol, quant


def test_parity_command(run_dir, tflite_dir, capsys):
    f = tflite_dir / "faces-none.tflite"
    if not f.exists():
        assert export_main(["tflite", str(run_dir), "--quant", "none", "--out", str(f), "--no-parity"]) == 0
    capsys.readouterr()
    assert export_main(["parity", str(run_dir), "--tflite", str(f), "--json", "--max-images", "12"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 12 and report["size_bytes"] == f.stat().st_size
    for task in ("smile", "gender"):
        e = report["attributes"][task]
        assert e["agreement"] == 1.0 and e["max_abs_diff"] < 1e-4
        assert e["keras_accuracy"] == e["tflite_accuracy"]
    assert "keras_nme" in report["attributes"]["landmarks"]
    assert set(report["latency_ms"]) == {"1", "2"} and report["latency_ms"]["1"]["mean"] > 0


def test_errors_name_the_problem(tmp_path, capsys):
    assert export_main(["saved-model", str(tmp_path / "missing"), "--name", "x"]) == 2
    assert "no such run folder" in capsys.readouterr().err
    bad = tmp_path / "bad"
    (bad / "models" / "u").mkdir(parents=True)
    (bad / "config.json").write_text("{}")
    (bad / "models" / "u" / "model.keras").write_text("")
    (bad / "models" / "u" / "unit.json").write_text('{"unit": "u", "crop": "original", "input_size": [8, 8]}')
    assert export_main(["saved-model", str(bad), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert "unit.json" in err and "channels" in err and "tasks" in err
