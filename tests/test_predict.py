"""kerasface.predict: photos -> faces -> attributes, from SavedModel, TFLite and a serving endpoint.

The "demo" models are tests/run_fixture.py's fabricated run (two tiny models on the
`nose_centred_150` crop, fast to make) exported with the export API: the merged default
deployable as a SavedModel and as an fp32 .tflite, and the grayscale model alone (another input
size and colour mode). The kerasface server runs in-process on 127.0.0.1 (free ports). One MTCNN
detector serves the whole file; photos are skimage's astronaut, small.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import run_fixture  # noqa: E402  (tests/ is on sys.path)

from kerasface import predict  # noqa: E402

CROP = run_fixture.CROP  # "nose_centred_150": the crop the fixture's models were trained on
REPO = Path(__file__).resolve().parents[1]
POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    from kerasface.export.run import load_run, select_heads
    from kerasface.export.saved_model import export_saved_model
    from kerasface.export.tflite import export_tflite

    run = load_run(run_fixture.cached_run(tmp_path_factory.getbasetemp()))
    out = tmp_path_factory.mktemp("predict_models")
    quiet = lambda *a, **k: None  # noqa: E731
    merged = select_heads(run)
    export_saved_model(run, merged, "faces", out=out, verify=False, log=quiet)
    export_tflite(run, merged, "none", out / "faces.tflite", log=quiet)
    export_saved_model(run, select_heads(run, "tiny_gray"), "gray", out=out, verify=False, log=quiet)
    return out


@pytest.fixture(scope="module")
def server(models_dir):
    from kerasface.serving.server import ModelServer

    srv = ModelServer(port=0, rest_api_port=0, host="127.0.0.1", model_name="faces",
                      model_base_path=str(models_dir / "faces"), file_system_poll_wait_seconds=60)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def models(models_dir, server):
    """Loaded once for the file: SavedModel, TFLite, gRPC (export.json found under models_dir),
    REST (crop given in the URL), and the grayscale single-model export."""
    loaded = predict.load_models([
        str(models_dir / "faces"),
        str(models_dir / "faces.tflite"),
        f"grpc://{server.grpc_target}/faces",
        f"{server.rest_url}/faces?crop={CROP}",
        f"gray={models_dir / 'gray' / '1'}",
    ], models_dirs=[models_dir])
    yield {m.name: m for m in loaded}
    for m in loaded:
        m.close()


def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.BILINEAR))


def two_faces() -> np.ndarray:
    """800x450: a big astronaut on the left, a smaller one whose face is at the canvas centre."""
    canvas = np.full((450, 800, 3), 118, np.uint8)
    big, small = _resize(astronaut(), 0.8), _resize(astronaut(), 0.5)
    canvas[:410, :410] = big
    canvas[168:424, 288:544] = small  # its face centre lands near (400, 224)
    return canvas


def _save(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=92)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Good, face-less and bad images (nested folder, several formats)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    _save(root / "astronaut.jpg", astronaut())
    _save(root / "group" / "two_faces.png", two_faces())
    rng = np.random.default_rng(0)
    _save(root / "noise.png", rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))  # no face
    (root / "not_an_image.jpg").write_text("hello, I am text\n")
    buf = io.BytesIO()
    Image.fromarray(astronaut()).save(buf, format="JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.new("1", (20000, 10000)).save(root / "huge.png")  # 200 Mpx: over Pillow's bomb limit
    (root / "empty.png").write_bytes(b"")
    return root


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = predict.main(args + ["--no-progress"])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ----------------------------------------------------------------------------- tests


def test_backends_agree_on_the_same_faces(models):
    """SavedModel, fp32 TFLite, gRPC and REST: same faces, same probabilities (1e-4)."""
    images = [astronaut(), two_faces()]
    results = predict.analyze(images, models=list(models.values()))
    assert [len(r.faces) for r in results] == [1, 2]
    names = ["faces", "faces-tflite", "faces-grpc", "faces-http"]
    assert set(names) <= set(models)
    for r in results:
        for face in r.faces:
            ref = face.attributes["faces"]
            for other in names[1:]:
                got = face.attributes[other]
                assert set(got) == set(ref) == {"smile", "gender", "landmarks"}
                for attr in ("smile", "gender"):
                    assert got[attr].label == ref[attr].label
                    for label, p in ref[attr].probabilities.items():
                        assert abs(got[attr].probabilities[label] - p) < 1e-4, (other, attr, label)
                for point, (x, y) in ref["landmarks"].points.items():
                    gx, gy = got["landmarks"].points[point]
                    assert abs(gx - x) < 0.05 and abs(gy - y) < 0.05, (other, point)


def test_predict_crops_with_the_exported_scheme(models):
    """After detection, each model gets the fixture's nose_centred_150 crop, preprocessed as in
    training; the landmark output comes back in image pixels."""
    from kerasface.faces import apply_crop, detect_faces

    sm = models["faces"]
    assert sm.info.crop == CROP and models["gray"].info.crop == CROP
    assert sm.info.input_size == (150, 150) and sm.info.channels == 3
    assert models["gray"].info.input_size == (60, 60) and models["gray"].info.channels == 1
    image = astronaut()
    face = detect_faces(image)[0]
    crop, in_crop = apply_crop(CROP, image, face.points)
    assert crop.shape == (150, 150, 3)
    result = predict.analyze(image, models=[sm, models["gray"]])[0].faces[0]
    for model in (sm, models["gray"]):
        x = predict.model_inputs([crop], model.info.input_size, model.info.channels)
        raw = model.predict(x)
        want = result.attributes[model.name]
        np.testing.assert_allclose([want["smile"].probabilities[k] for k in run_fixture.LABELS["smile"]],
                                   raw["smile"][0], atol=1e-6)
        # landmarks: input pixels -> crop pixels -> image pixels (the crop is a shift by the nose)
        scale = 150 / model.info.input_size[0]
        offset = face.points[2] - in_crop[2]
        expected = raw["landmarks"][0].reshape(5, 2) * scale + offset
        got = np.array([want["landmarks"].points[p] for p in POINTS])
        np.testing.assert_allclose(got, expected, atol=1e-3)
    # the rule for the face: the detector's, passed through
    assert result.index == 0 and result.box == pytest.approx(face.box)
    np.testing.assert_allclose([result.landmarks[p] for p in POINTS], face.points, atol=1e-4)


def test_astronaut_has_one_face_with_attributes_from_every_model(models):
    import kerasface

    results = kerasface.analyze(astronaut(), models=list(models.values()))
    assert len(results) == 1 and results[0].ok
    r = results[0]
    assert (r.width, r.height) == (512, 512) and len(r.faces) == 1
    face = r.faces[0]
    assert set(face.attributes) == set(models)
    for name, attrs in face.attributes.items():
        assert {"smile", "gender", "landmarks"} == set(attrs), name
        for attr in ("smile", "gender"):
            assert attrs[attr].label in run_fixture.LABELS[attr]
            assert sum(attrs[attr].probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    x, y, w, h = face.box
    assert 150 < x < 230 and 30 < y < 100 and 60 < w < 120 and 80 < h < 140  # the astronaut's face


def test_face_rules(models):
    sm = [models["faces"]]
    image = two_faces()
    all_faces = predict.analyze(image, models=sm)[0].faces
    assert len(all_faces) == 2 and sorted(f.index for f in all_faces) == [0, 1]
    largest = predict.analyze(image, models=sm, face="largest")[0].faces
    centre = predict.analyze(image, models=sm, face="centre")[0].faces
    assert len(largest) == len(centre) == 1
    big = max(all_faces, key=lambda f: f.box[2] * f.box[3])
    assert largest[0].index == big.index and largest[0].box[0] < 300
    assert centre[0].index != big.index and abs(centre[0].box[0] + centre[0].box[2] / 2 - 400) < 30


def test_folder_with_good_bad_and_faceless_images(models_dir, photos, capsys):
    rc, out, err = run_cli([str(photos), "--model", str(models_dir / "faces")], capsys)
    assert rc == 1
    records = [json.loads(line) for line in out.splitlines()]
    by_name = {Path(r["path"]).name: r for r in records}
    assert sorted(by_name) == sorted(["astronaut.jpg", "two_faces.png", "noise.png", "not_an_image.jpg",
                                      "truncated.jpg", "huge.png", "empty.png"])
    failed = {n for n, r in by_name.items() if "error" in r}
    assert failed == {"not_an_image.jpg", "truncated.jpg", "huge.png", "empty.png"}
    for name in failed:
        assert name in by_name[name]["error"] and "faces" not in by_name[name]
    assert "truncated" in by_name["truncated.jpg"]["error"] and "too large" in by_name["huge.png"]["error"]
    assert by_name["noise.png"]["faces"] == []
    assert len(by_name["astronaut.jpg"]["faces"]) == 1 and len(by_name["two_faces.png"]["faces"]) == 2
    summary = err.strip().splitlines()[-1]
    assert "7 image(s), 3 face(s), 4 failed, 1 without a face" in summary and "images/s" in summary
    # only good images (a face-less one included): exit 0; a glob works as a PATH too
    rc, out, err = run_cli([str(photos / "*.jpg"), str(photos / "noise.png"), "--model",
                            str(models_dir / "faces"), "--face", "largest"], capsys)
    names = [Path(json.loads(line)["path"]).name for line in out.splitlines()]
    assert names == ["astronaut.jpg", "not_an_image.jpg", "truncated.jpg", "noise.png"] and rc == 1
    rc, out, _ = run_cli([str(photos / "astronaut.jpg"), str(photos / "noise.png"),
                          "--model", str(models_dir / "faces")], capsys)
    assert rc == 0 and len(out.splitlines()) == 2
    rc, out, _ = run_cli([str(photos / "missing.jpg"), "--model", str(models_dir / "faces")], capsys)
    assert rc == 1 and "no such file" in json.loads(out)["error"]


def test_json_output_round_trips_with_the_documented_fields(models_dir, photos, tmp_path, capsys):
    target = tmp_path / "out" / "faces.jsonl"
    rc, out, _ = run_cli([str(photos / "group"), str(photos / "astronaut.jpg"), "--model", str(models_dir / "faces"),
                          "--model", str(models_dir / "faces.tflite"), "--out", str(target),
                          "--batch-size", "2"], capsys)
    assert rc == 0 and out == ""
    assert not [p for p in target.parent.iterdir() if p.name != target.name]  # no temporary left
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert [Path(r["path"]).name for r in records] == ["two_faces.png", "astronaut.jpg"]
    for record in records:
        assert set(record) == {"path", "width", "height", "faces"}
        assert isinstance(record["width"], int) and isinstance(record["height"], int)
        for face in record["faces"]:
            assert set(face) == {"index", "box", "score", "landmarks", "attributes"}
            assert isinstance(face["index"], int) and len(face["box"]) == 4
            assert 0 < face["score"] <= 1 and list(face["landmarks"]) == list(POINTS)
            assert set(face["attributes"]) == {"faces", "faces-tflite"}
            for attrs in face["attributes"].values():
                for attr in ("smile", "gender"):
                    a = attrs[attr]
                    assert set(a) == {"label", "score", "probabilities"}
                    assert list(a["probabilities"]) == run_fixture.LABELS[attr]
                    assert a["score"] == max(a["probabilities"].values())
                    assert a["label"] == max(a["probabilities"], key=a["probabilities"].get)
                assert list(attrs["landmarks"]) == ["points"] and list(attrs["landmarks"]["points"]) == list(POINTS)
    # the typed results serialise to exactly these objects
    again = predict.analyze([photos / "astronaut.jpg"], models=[str(models_dir / "faces")])
    assert json.loads(json.dumps(again[0].to_dict()))["faces"][0]["attributes"]["faces"] == \
        records[1]["faces"][0]["attributes"]["faces"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_ctrl_c_keeps_the_finished_images_in_the_out_file(models_dir, photos, tmp_path, capsys, monkeypatch, fmt):
    """KeyboardInterrupt after 3 images (the third has two faces: two CSV rows): FILE holds exactly
    the three complete records, stderr says so, no temporary file is left."""
    from kerasface.predict.predictor import Predictor

    real_run = Predictor.run

    def interrupted_run(self, inputs):
        for n, result in enumerate(real_run(self, inputs)):
            if n == 3:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(Predictor, "run", interrupted_run)
    target = tmp_path / f"faces.{fmt}"
    rc, out, err = run_cli([str(photos / "astronaut.jpg"), str(photos / "noise.png"), str(photos / "group"),
                            str(photos / "empty.png"), "--model", str(models_dir / "faces"), "--out", str(target),
                            "--format", fmt, "--batch-size", "1"], capsys)
    assert rc == 130 and out == ""
    assert f"interrupted; 3 image(s) written to {target}" in err.strip().splitlines()[-1]
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    if fmt == "jsonl":
        records = [json.loads(line) for line in target.read_text().splitlines()]
        assert [Path(r["path"]).name for r in records] == ["astronaut.jpg", "noise.png", "two_faces.png"]
        assert [len(r["faces"]) for r in records] == [1, 0, 2]
    else:
        rows = list(csv.DictReader(io.StringIO(target.read_text())))
        assert [Path(r["path"]).name for r in rows] == ["astronaut.jpg", "noise.png", "two_faces.png", "two_faces.png"]


def test_out_file_keeps_only_complete_records(tmp_path):
    """A write that Ctrl-C cut short (bytes past the last record) is cut back on close."""
    from kerasface.predict.cli import OutputWriter
    from kerasface.predict.results import ImageResult

    target = tmp_path / "out.jsonl"
    writer = OutputWriter(str(target), "jsonl", [])
    writer.write(ImageResult("a.jpg", 4, 3))
    writer.write(ImageResult("b.jpg", error="b.jpg: no such file"))
    writer.fh.write(b'{"path": "c.jpg", "wid')  # what an interrupted write leaves
    writer.close(keep=True)
    assert target.read_text().splitlines() == ['{"path": "a.jpg", "width": 4, "height": 3, "faces": []}',
                                               '{"path": "b.jpg", "error": "b.jpg: no such file"}']
    assert writer.records == 2 and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
    dropped = OutputWriter(str(tmp_path / "dropped.csv"), "csv", ["path", "error"])
    dropped.close(keep=False)
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_csv_output_and_results_table(models, models_dir, photos, capsys):
    rc, out, _ = run_cli([str(photos / "group"), str(photos / "noise.png"),
                          str(photos / "empty.png"), "--model", str(models_dir / "faces"), "--format", "csv"], capsys)
    assert rc == 1
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4  # two faces, one face-less image, one failure
    assert rows[0]["face"] in ("0", "1") and rows[0]["faces.smile"] in run_fixture.LABELS["smile"]
    assert float(rows[0]["faces.smile.smiling"]) + float(rows[0]["faces.smile.not_smiling"]) == \
        pytest.approx(1.0, abs=1e-5)
    assert rows[0]["faces.landmarks.nose_x"] and rows[0]["left_eye_x"]
    assert rows[2]["face"] == "" and rows[2]["error"] == "" and rows[3]["error"]
    columns = list(rows[0])
    assert columns[:9] == ["path", "width", "height", "face", "box_x", "box_y", "box_w", "box_h", "score"]
    assert columns[-1] == "error"
    results = predict.analyze([astronaut(), photos / "noise.png"], models=[models["faces"], models["gray"]])
    table = predict.results_table(results)
    assert len(table) == 2 and all(list(row) == list(table[0]) for row in table)
    assert table[0]["gray.gender"] in run_fixture.LABELS["gender"] and table[1]["face"] is None
    assert json.loads(json.dumps(table)) == table  # JSON-safe: plain numbers and strings
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            predict.to_dataframe(results)
    else:
        assert len(predict.to_dataframe(results)) == 2


def test_annotated_images_have_the_right_size(models_dir, photos, tmp_path, capsys):
    from PIL import Image

    ann = tmp_path / "annotated"
    rc, _, _ = run_cli([str(photos), "--model", str(models_dir / "faces"), "--model", str(models_dir / "gray"),
                        "--annotate", str(ann)], capsys)
    assert rc == 1
    written = sorted(p.relative_to(ann).as_posix() for p in ann.rglob("*") if p.is_file())
    assert written == ["astronaut.jpg", "group/two_faces.png", "noise.png"]  # bad images: none
    for rel, (w, h) in {"astronaut.jpg": (512, 512), "group/two_faces.png": (800, 450),
                        "noise.png": (160, 120)}.items():
        with Image.open(ann / rel) as im:
            assert im.size == (w, h)
    drawn = np.asarray(Image.open(ann / "group" / "two_faces.png").convert("RGB"))
    assert np.abs(drawn.astype(int) - two_faces().astype(int)).max() > 100  # something was drawn
    noise = np.asarray(Image.open(photos / "noise.png").convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(ann / "noise.png").convert("RGB")), noise)


def test_bad_models_fail_at_start_with_one_line(models_dir, photos, tmp_path, capsys):
    import shutil

    image = str(photos / "astronaut.jpg")
    # a SavedModel that is not a kerasface export (no export.json)
    plain = tmp_path / "plain" / "1"
    shutil.copytree(models_dir / "faces" / "1", plain)
    (plain / "export.json").unlink()
    # an export whose description does not match its inputs
    wrong = tmp_path / "wrong"
    shutil.copytree(models_dir / "gray", wrong)
    desc = json.loads((wrong / "1" / "export.json").read_text())
    desc["input_size"] = [48, 48]
    (wrong / "1" / "export.json").write_text(json.dumps(desc))
    # a .tflite without its description
    bare = tmp_path / "bare.tflite"
    shutil.copyfile(models_dir / "faces.tflite", bare)
    cases = {
        str(tmp_path / "plain"): "not a kerasface export",
        str(wrong): "inputs do not match",
        str(tmp_path / "nowhere"): "no such model",
        str(bare): "not a kerasface export",
        str(photos): "not a kerasface export",
        "grpc://127.0.0.1:1/faces": "cannot reach",
        "http://127.0.0.1:1/faces": "cannot reach",
    }
    for spec, why in cases.items():
        rc, out, err = run_cli([image, "--model", str(models_dir / "faces"), "--model", spec], capsys)
        lines = err.strip().splitlines()
        assert rc == 2 and out == "", spec
        assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], (spec, err)
        assert spec.split("?")[0] in lines[0] or str(Path(spec) / "1") in lines[0]


def test_remote_model_without_a_known_crop_is_refused(server, tmp_path):
    with pytest.raises(predict.ModelError, match="crop scheme unknown"):
        predict.load_model(f"grpc://{server.grpc_target}/faces", models_dirs=[tmp_path])


def test_import_kerasface_stays_light():
    code = ("import sys, kerasface; assert callable(kerasface.analyze); "
            "heavy = [m for m in ('tensorflow', 'keras', 'kerasface.predict', 'mtcnn') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
