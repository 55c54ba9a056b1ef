"""MTFL -> TFRecord conversion: round trip, skipped files and errors, manifest, interruption, reconversion."""

import json

import numpy as np
import pytest
import tensorflow as tf

import kerasface.data.convert as convert_module
from kerasface.data import DATASETS
from kerasface.data.convert import convert, main
from kerasface.data.mtfl import LABELS
from kerasface.data.tfrecord import feature_spec
from kerasface.faces.crops import apply_crop
from mtfl_fixture import write_tiny_mtfl


def read_records(folder, split):
    manifest = json.loads((folder / "manifest.json").read_text())
    spec = feature_spec(manifest["attributes"])
    out = {}
    for name in manifest["splits"][split]["files"]:
        for raw in tf.data.TFRecordDataset(str(folder / name)):
            ex = tf.io.parse_single_example(raw, spec)
            image = tf.io.decode_image(ex["image/encoded"], channels=3).numpy()
            out[ex["image/source"].numpy().decode()] = (
                image, ex["face/landmarks"].numpy().reshape(5, 2),
                [int(ex[f"label/{a}"]) for a in manifest["attributes"]])
    return manifest, out


@pytest.mark.parametrize("crop", ["original", "nose_centred_150"])
def test_round_trip_returns_same_images_landmarks_and_labels(tmp_path, crop):
    truth = write_tiny_mtfl(tmp_path / "MTFL")
    out = tmp_path / "out"
    convert("mtfl", str(tmp_path / "MTFL"), out, crop=crop, shards=3, workers=1, image_format="png", progress=False)
    manifest, records = {}, {}
    for split in ("train", "val", "test"):
        manifest, part = read_records(out, split)
        records.update(part)
    assert sorted(records) == sorted(truth)
    for path, (image, landmarks, labels) in truth.items():
        expected_image, expected_points = apply_crop(crop, image, landmarks)
        got_image, got_points, got_labels = records[path]
        np.testing.assert_array_equal(got_image, expected_image)
        np.testing.assert_allclose(got_points, expected_points, atol=1e-4)
        assert got_labels == [v - 1 for v in labels]
    assert manifest["schema_version"] == 2 and manifest["skipped"] == []
    assert manifest["labels"]["pose"] == {"type": "class", "names": list(LABELS["pose"])}
    assert {k: v["records"] for k, v in manifest["splits"].items()} == {"train": 8, "val": 2, "test": 4}
    test_counts = manifest["splits"]["test"]["labels"]["smile"]
    assert sum(test_counts.values()) == 4 and set(test_counts) == {"smiling", "not_smiling"}
    assert set(manifest["sources"]) == {"training.txt", "testing.txt"}
    assert all(len(h) == 64 for h in manifest["sources"].values())


def test_missing_and_corrupt_images_are_skipped_listed_or_fatal_with_strict(tmp_path):
    truth = write_tiny_mtfl(tmp_path / "MTFL")
    paths = sorted(p for p in truth if p.startswith("AFLW"))
    (tmp_path / "MTFL" / paths[0]).unlink()
    corrupt = tmp_path / "MTFL" / paths[1]
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 10)
    manifest = convert("mtfl", str(tmp_path / "MTFL"), tmp_path / "out", workers=2, progress=False)
    skipped = {item["path"]: item["reason"] for item in manifest["skipped"]}
    assert skipped[paths[0]] == "no such file"
    assert "corrupt" in skipped[paths[1]] or "not an image" in skipped[paths[1]], skipped[paths[1]]
    assert manifest["splits"]["test"]["records"] == 2
    # records go out in a seeded random order: the first bad one may be either
    with pytest.raises(RuntimeError, match=rf"({paths[0]}: no such file|{paths[1]}: truncated or corrupt .*) \(--strict\)$"):
        convert("mtfl", str(tmp_path / "MTFL"), tmp_path / "strict", workers=1, strict=True, progress=False)


def _snapshot(folder):
    """Everything below `folder`, hidden entries included: file -> its bytes, folder -> None."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def _die_at(monkeypatch, n):
    """Make the n-th prepared image raise KeyboardInterrupt (Ctrl-C in the middle of a conversion)."""
    real_prepare, calls = convert_module.prepare, []

    def dying_prepare(job):
        calls.append(job)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real_prepare(job)

    monkeypatch.setattr(convert_module, "prepare", dying_prepare)


def test_interrupted_conversion_keeps_the_previous_one_intact(tmp_path, monkeypatch):
    write_tiny_mtfl(tmp_path / "MTFL")
    out = tmp_path / "out"
    convert("mtfl", str(tmp_path / "MTFL"), out, workers=1, progress=False)  # an old, finished conversion
    (out / "NOTES.txt").write_text("the user's own file\n")
    before = _snapshot(out)
    _die_at(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        convert("mtfl", str(tmp_path / "MTFL"), out, workers=1, shards=2, progress=False)
    staged = {k: v for k, v in _snapshot(out).items() if k.startswith(".partial-")}
    # same files, same bytes: nothing half-written; the new conversion's finished shards wait in
    # its hidden staging folder (for a rerun to resume), without the shard it was writing
    assert {k: v for k, v in _snapshot(out).items() if k not in staged} == before
    assert not any(k.endswith(".partial") for k in staged)
    manifest, records = read_records(out, "train")
    assert len(records) == manifest["splits"]["train"]["records"] == 8


def test_interrupted_first_conversion_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    write_tiny_mtfl(tmp_path / "MTFL")
    out = tmp_path / "out"
    _die_at(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        convert("mtfl", str(tmp_path / "MTFL"), out, workers=1, progress=False)
    # only the hidden staging folder (finished shards, for a resume): no manifest, no shard in OUT
    assert all(k.startswith(".partial-") for k in _snapshot(out))
    assert not any(k.endswith(".partial") for k in _snapshot(out))


def test_an_interrupted_conversion_resumes_from_its_finished_shards(tmp_path, monkeypatch):
    write_tiny_mtfl(tmp_path / "MTFL")
    fresh = convert("mtfl", str(tmp_path / "MTFL"), tmp_path / "fresh", workers=1, shards=2, progress=False)
    out = tmp_path / "out"
    _die_at(monkeypatch, 7)  # train has 8 faces in 2 shards of 4: the first shard is finished
    with pytest.raises(KeyboardInterrupt):
        convert("mtfl", str(tmp_path / "MTFL"), out, workers=1, shards=2, progress=False)
    monkeypatch.undo()
    seen = []
    original = convert_module.prepare

    def counting_prepare(job):
        seen.append(job)
        return original(job)

    monkeypatch.setattr(convert_module, "prepare", counting_prepare)
    manifest = convert("mtfl", str(tmp_path / "MTFL"), out, workers=1, shards=2, progress=False)
    assert manifest["resumed_shards"] == 1 and len(seen) == 14 - 4
    assert not any(p.name.startswith(".partial-") for p in out.iterdir())
    for split in ("train", "val", "test"):
        assert manifest["splits"][split] == fresh["splits"][split]
        for name in manifest["splits"][split]["files"]:
            assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
    # other settings: a new conversion, the stale staging folder is dropped
    _die_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        convert("mtfl", str(tmp_path / "MTFL"), out, workers=1, shards=3, progress=False)
    monkeypatch.undo()
    again = convert("mtfl", str(tmp_path / "MTFL"), out, workers=1, shards=2, progress=False)
    assert again["resumed_shards"] == 0


def test_reconversion_replaces_the_shards_and_keeps_other_files(tmp_path):
    write_tiny_mtfl(tmp_path / "MTFL")
    out = tmp_path / "out"
    convert("mtfl", str(tmp_path / "MTFL"), out, workers=1, shards=4, progress=False)
    (out / "NOTES.txt").write_text("the user's own file\n")
    manifest = convert("mtfl", str(tmp_path / "MTFL"), out, workers=1, shards=2, progress=False)
    listed = {name for split in manifest["splits"].values() for name in split["files"]}
    assert sorted(p.name for p in out.iterdir()) == sorted(listed | {"manifest.json", "NOTES.txt"})
    assert "train-00000-of-00002.tfrecord" in listed
    assert json.loads((out / "manifest.json").read_text()) == manifest
    _, records = read_records(out, "train")
    assert len(records) == 8


def test_any_per_image_error_is_skipped_listed_or_fatal_with_strict(tmp_path, monkeypatch, capsys):
    truth = write_tiny_mtfl(tmp_path / "MTFL")
    bad = sorted(p for p in truth if p.startswith("AFLW"))[0]
    real_crop = convert_module.apply_crop

    def crop_failing_on_bad(scheme, image, landmarks, box=None):  # as a crop scheme can on odd landmarks
        if np.allclose(landmarks, truth[bad][1], atol=1e-3):
            raise ValueError("landmarks outside the image\n(second line of the message)")
        return real_crop(scheme, image, landmarks, box=box)

    monkeypatch.setattr(convert_module, "apply_crop", crop_failing_on_bad)
    manifest = convert("mtfl", str(tmp_path / "MTFL"), tmp_path / "out", workers=1, progress=False)
    assert manifest["skipped"] == [{"path": bad, "split": "test",
                                    "reason": "ValueError: landmarks outside the image (second line of the message)"}]
    assert manifest["splits"]["test"]["records"] == 3
    _, records = read_records(tmp_path / "out", "test")
    assert bad not in records and len(records) == 3
    args = ["--dataset", "mtfl", "--root", str(tmp_path / "MTFL"), "--workers", "1"]
    assert main(args + ["--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "wrote 13 records" in out and "skipped 1" in out
    assert f"  skipped {bad}: ValueError: landmarks outside the image" in out
    assert main(args + ["--out", str(tmp_path / "strict"), "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the progress bar, then the error
    assert [line for line in err if line.startswith("error:")] == err[-1:]
    assert err[-1].startswith(f"error: {tmp_path / 'MTFL' / bad}: ValueError: landmarks outside")
    assert err[-1].endswith("(--strict)")
    # nothing that looks finished: only the staging folder's finished shards (a rerun resumes them)
    assert all(k.startswith(".partial-") and not k.endswith(".partial") for k in _snapshot(tmp_path / "strict"))


def test_cli_prints_summary_and_reports_errors(tmp_path, capsys):
    write_tiny_mtfl(tmp_path / "MTFL")
    assert main(["--dataset", "mtfl", "--root", str(tmp_path / "MTFL"), "--out", str(tmp_path / "o"),
                 "--workers", "1"]) == 0
    assert "wrote 14 records" in capsys.readouterr().out
    assert main(["--dataset", "mtfl", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "MTFL not found" in capsys.readouterr().err
    assert main(["--dataset", "celebz", "--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert f"unknown dataset 'celebz'; known: {', '.join(DATASETS.names())}" in capsys.readouterr().err


@pytest.mark.real_data
def test_real_mtfl_converts_completely(tmp_path):
    from conftest import real_mtfl_or_skip

    root = real_mtfl_or_skip()
    manifest = convert("mtfl", str(root), tmp_path / "mtfl", workers=2, progress=False)
    assert manifest["skipped"] == []
    assert {k: v["records"] for k, v in manifest["splits"].items()} == {"train": 8000, "val": 2000, "test": 2995}
    assert sum(manifest["splits"]["test"]["labels"]["gender"].values()) == 2995


def test_whole_photos_without_landmarks_are_detected_and_faceless_ones_listed(tmp_path):
    from skimage import data
    from PIL import Image

    from kerasface.data import FaceAnnotation
    from kerasface.data.convert import Job, prepare

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    patch = (data.lfw_subset()[150] * 255).astype(np.uint8)
    Image.fromarray(patch).resize((200, 200)).convert("RGB").save(tmp_path / "wall.png")
    unknown = np.full((5, 2), np.nan, np.float32)
    found = prepare(Job(0, "test", str(tmp_path), FaceAnnotation("astronaut.png", unknown, {"smile": 0}), "wang_112x96",
                        "png", 95))
    assert found.encoded is not None and found.shape == (112, 96, 3)
    assert np.all((found.landmarks >= 0) & (found.landmarks < [96, 112]))
    missing = prepare(Job(1, "test", str(tmp_path), FaceAnnotation("wall.png", unknown, {"smile": 0}), "wang_112x96",
                          "png", 95))
    assert missing.encoded is None and missing.error == "no face found"
