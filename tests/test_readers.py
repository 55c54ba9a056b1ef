"""The FER2013, GENKI-4K and IMDB-WIKI readers on byte-exact fixtures of their real formats (every
FER2013 form giving the same faces), malformed entries, conversion through the converter's command
line, face-crop records in the training pipeline, the demo copies, and the real datasets."""

import itertools
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from kerasface.data import DATASETS
from kerasface.data.common import seeded_split
from kerasface.data.convert import main as convert_main
from kerasface.data.fer2013 import EMOTIONS, FER2013FormatError, find_form, read_csv
from kerasface.data.genki4k import GENKI4KFormatError, images_are_crops, read_labels
from kerasface.data.imdb_wiki import IMDBWikiFormatError, age_at_photo, read_mat
from kerasface.faces.crops import face_crop_as
from readers_fixture import (fer_rows, mat_struct, pixel_text, read_converted, write_fer_csv, write_fer_folders,
                             write_genki)


def convert_cli(dataset, root, out, *extra):
    """`python -m kerasface.data.convert --dataset D --root R --out O` (in this process)."""
    assert convert_main(["--dataset", dataset, "--root", str(root), "--out", str(out), "--workers", "1", *extra]) == 0
    return read_converted(Path(out))


def faces_by_split(dataset, root, val_fraction=0.2, seed=0):
    """{split: [(emotion or labels, pixels bytes)]} as the reader gives them, images read if needed."""
    from PIL import Image

    out = {}
    for split, faces in DATASETS.get(dataset).read_splits(Path(root), val_fraction, seed).items():
        out[split] = [(face.labels["emotion"],
                       (face.image if face.image is not None else np.asarray(Image.open(Path(root) / face.path))).tobytes())
                      for face in faces]
    return out


def test_seeded_split_is_mtfls_split_plus_a_test_part():
    items = list(range(103))
    order = np.random.default_rng(7).permutation(103)  # MTFL's split before it moved to common.py
    assert seeded_split(items, 0.2, 7) == (sorted(order[21:].tolist()), sorted(order[:21].tolist()), [])
    train, val, test = seeded_split(items, 0.2, 7, test_fraction=0.25)
    assert test == sorted(order[:26].tolist()) and val == sorted(order[26:41].tolist())
    assert sorted(train + val + test) == items


# ================================================================================= FER2013


def test_fer2013_csv_parses_exactly(tmp_path):
    rows = fer_rows()
    (path,) = write_fer_csv(tmp_path, rows)
    assert path.read_bytes().startswith(b"emotion,pixels,Usage\n0," + pixel_text(rows[0][1]).encode()[:20])
    faces = read_csv(path, ("emotion", "pixels", "Usage"))
    assert {k: len(v) for k, v in faces.items()} == {"Training": 8, "PublicTest": 3, "PrivateTest": 3}
    first, public = faces["Training"][0], faces["PublicTest"][0]
    assert (first.path, first.line, first.labels) == ("fer2013.csv:2", 2, {"emotion": 0})
    assert (public.path, public.line, public.labels) == ("fer2013.csv:10", 10, {"emotion": rows[8][0]})
    np.testing.assert_array_equal(first.image, rows[0][1])
    assert first.image.dtype == np.uint8 and first.image.shape == (48, 48)
    assert np.isnan(first.landmarks).all() and first.landmarks.shape == (5, 2)


FORMS = [  # form, line end, trailing newline, quoted pixels
    ("fer2013", "\n", True, False), ("fer2013", "\r\n", False, True),
    ("icml", "\n", True, False), ("icml", "\r\n", True, True),
    ("kaggle", "\n", True, False), ("kaggle", "\r\n", False, True),
]


@pytest.mark.parametrize("form,newline,trailing,quote", FORMS)
def test_every_csv_form_gives_the_same_faces(tmp_path, form, newline, trailing, quote):
    rows = fer_rows()
    write_fer_csv(tmp_path / "ref", rows)
    write_fer_csv(tmp_path / "form", rows, form, newline, trailing, quote)
    expected = faces_by_split("fer2013", tmp_path / "ref")
    got = faces_by_split("fer2013", tmp_path / "form")
    assert got["train"] == expected["train"] and got["val"] == expected["val"]  # same rows, same seeded split
    if form == "kaggle":  # test.csv: both test sets, in file order, without labels
        assert list(got) == ["train", "val", "test"]
        assert got["test"] == [(-1, image) for _, image in expected["public_test"] + expected["private_test"]]
    else:
        assert list(got) == ["train", "val", "public_test", "private_test"]
        assert got == expected


def test_image_folders_give_the_same_faces_as_the_csv(tmp_path):
    rows = fer_rows()
    write_fer_csv(tmp_path / "csv", rows)
    truth = write_fer_folders(tmp_path / "folders", rows)
    (tmp_path / "folders" / "train" / ".DS_Store").write_bytes(b"\0")  # hidden files are ignored
    (tmp_path / "folders" / "test" / "happy" / "._PublicTest_1.jpg").write_bytes(b"\0")
    assert find_form(tmp_path / "folders") == "folders"
    splits = DATASETS.get("fer2013").read_splits(tmp_path / "folders", 0.2, 0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 6, "val": 2, "public_test": 3, "private_test": 3}
    assert all(truth[f.path][0] == f.labels["emotion"] for faces in splits.values() for f in faces)
    assert all(f.image is None and f.path.startswith("test/") for f in splits["public_test"])
    expected, got = faces_by_split("fer2013", tmp_path / "csv"), faces_by_split("fer2013", tmp_path / "folders")
    # the folders list files by name, not in the CSV's row order: the same faces, each split a multiset
    assert sorted(got["train"] + got["val"]) == sorted(expected["train"] + expected["val"])
    for split in ("public_test", "private_test"):
        assert sorted(got[split]) == sorted(expected[split])


def test_folder_split_is_the_file_name_prefix_and_bad_names_are_errors(tmp_path):
    rows = fer_rows((2, 1, 1))
    write_fer_folders(tmp_path, rows)
    from PIL import Image

    stray = tmp_path / "test" / "sad" / "Training_5.png"  # a Training file in test/: still training
    stray.parent.mkdir(exist_ok=True)
    Image.fromarray(rows[0][1]).save(stray)
    splits = DATASETS.get("fer2013").read_splits(tmp_path, 0.0, 0)
    assert "test/sad/Training_5.png" in [f.path for f in splits["train"]]
    bad = tmp_path / "test" / "sad" / "img_5.jpg"
    bad.write_bytes(b"x")
    with pytest.raises(FER2013FormatError, match=rf"^{bad}: expected an image named Training_<id>.jpg"):
        DATASETS.get("fer2013").read_splits(tmp_path, 0.2, 0)
    bad.unlink()
    (tmp_path / "train" / "happiness").mkdir()
    with pytest.raises(FER2013FormatError, match=rf"^{tmp_path / 'train' / 'happiness'}: expected an emotion folder "
                                                 r"\(angry, disgust, fear, happy, sad, surprise, neutral\)"):
        DATASETS.get("fer2013").read_splits(tmp_path, 0.2, 0)


GOOD = pixel_text(np.arange(2304) % 256)
BAD_LINES = [
    ("fer2013", f"7,{GOOD},Training", "emotion must be an integer in 0..6, got '7'"),
    ("fer2013", f"x,{GOOD},Training", "emotion must be an integer in 0..6, got 'x'"),
    ("fer2013", f"0,{GOOD[:-4]},Training", "expected 2304 pixel values (48x48), got 2303"),
    ("fer2013", f"0,{GOOD} 1,Training", "expected 2304 pixel values (48x48), got 2305"),
    ("fer2013", f"0,256 {GOOD[2:]},Training", "pixels must be integers 0..255, got 256"),
    ("fer2013", f"0,-1 {GOOD[2:]},Training", "pixels must be integers 0..255, got '-1'"),
    ("fer2013", f"0,a {GOOD[2:]},Training", "pixels must be integers 0..255, got 'a'"),
    ("fer2013", f"0,{GOOD},Validation", "Usage must be one of Training, PublicTest, PrivateTest, got 'Validation'"),
    ("fer2013", f"0,{GOOD}", "expected 3 fields (emotion, pixels, Usage), got 2"),
    ("icml", f"0,Training,{GOOD},extra", "expected 3 fields (emotion, Usage, pixels), got 4"),
    ("kaggle", f"3,{GOOD}", "expected 1 field (pixels), got 2"),
]


@pytest.mark.parametrize("form,line,expected", BAD_LINES)
def test_malformed_csv_line_names_file_and_line(tmp_path, form, line, expected):
    paths = write_fer_csv(tmp_path, fer_rows((2, 2, 1)), form, newline="\r\n")
    path = paths[-1]  # fer2013.csv, icml_face_data.csv or Kaggle's test.csv
    good = path.read_bytes().rstrip(b"\r\n").split(b"\r\n")
    path.write_bytes(b"\r\n".join(good[:3] + [line.encode()] + good[3:]) + b"\r\n")
    with pytest.raises(FER2013FormatError) as info:
        DATASETS.get("fer2013").read_splits(tmp_path, 0.2, 0)
    assert str(info.value).startswith(f"{path}:4: ") and expected in str(info.value), str(info.value)[:300]


def test_csv_header_and_form_choice_and_missing_root(tmp_path, monkeypatch):
    path = tmp_path / "fer2013.csv"
    path.write_text(f"emotion,pix,Usage\n0,{GOOD},Training\n")
    with pytest.raises(FER2013FormatError, match=rf"^{path}:1: expected a header with the columns emotion, pixels, "
                                                 r"Usage, got emotion,pix,Usage"):
        DATASETS.get("fer2013").read_splits(tmp_path, 0.2, 0)
    write_fer_csv(tmp_path, fer_rows((2, 1, 1)))
    write_fer_folders(tmp_path, fer_rows((3, 0, 0), seed=1))
    write_fer_csv(tmp_path, fer_rows((4, 0, 0)), "kaggle")
    assert find_form(tmp_path) == "fer2013.csv"  # the original CSV first, then icml, Kaggle, folders
    assert [p.name for p in DATASETS.get("fer2013").source_files(tmp_path)] == ["fer2013.csv"]
    path.unlink()
    assert find_form(tmp_path) == "kaggle"
    monkeypatch.setenv("KERASFACE_FER2013", str(tmp_path))
    assert DATASETS.get("fer2013").resolve_root(None) == tmp_path
    with pytest.raises(FileNotFoundError) as info:
        DATASETS.get("fer2013").resolve_root(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "KERASFACE_FER2013" in message and "--demo" in message
    assert "fer2013.csv, icml_face_data.csv, train.csv" in message


def test_face_crops_are_stored_whole_at_the_schemes_size_and_colour():
    gray = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    np.testing.assert_array_equal(face_crop_as("bknet_48_gray", gray), gray[..., None])  # every pixel kept
    np.testing.assert_array_equal(face_crop_as("bknet_48_gray", np.repeat(gray[..., None], 3, 2)), gray[..., None])
    np.testing.assert_array_equal(face_crop_as("original", gray), np.repeat(gray[..., None], 3, 2))
    big = face_crop_as("nose_centred_150", gray)
    assert big.shape == (150, 150, 3) and (big[..., 0] == big[..., 2]).all()
    assert abs(float(big.mean()) - float(gray.mean())) < 1.0  # the whole face, enlarged, no padding
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    small = face_crop_as("bknet_48_gray", rgb)
    assert small.shape == (48, 48, 1)


@pytest.fixture(scope="module")
def fer_fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("fer")
    rows = fer_rows((16, 3, 3))
    write_fer_csv(root / "csv", rows)
    write_fer_folders(root / "folders", rows)
    csv_out = convert_cli("fer2013", root / "csv", root / "csv-records")
    folders_out = convert_cli("fer2013", root / "folders", root / "folders-records")
    return rows, root, csv_out, folders_out


def test_fer_csv_and_image_folders_convert_to_identical_images(fer_fixture):
    rows, _, (manifest, records), (folder_manifest, folder_records) = fer_fixture
    for m in (manifest, folder_manifest):
        assert list(m["splits"]) == ["train", "val", "public_test", "private_test"]
        assert {k: v["records"] for k, v in m["splits"].items()} == {"train": 13, "val": 3, "public_test": 3,
                                                                     "private_test": 3}
        assert (m["crop"], m["image_format"], m["cropped"], m["image_size"], m["channels"]) == \
            ("bknet_48_gray", "png", True, [48, 48], 1)
        assert m["labels"] == {"emotion": {"type": "class", "names": list(EMOTIONS)}} and m["skipped"] == []
    assert list(manifest["sources"]) == ["fer2013.csv"] and folder_manifest["sources"] == {}
    by_line = {2 + i: row for i, row in enumerate(rows)}
    for items in records.values():
        for r in items:
            emotion, pixels, _ = by_line[int(r["source"].split(":")[1])]
            assert r["source"].startswith("fer2013.csv:") and r["emotion"] == emotion
            np.testing.assert_array_equal(r["image"], pixels[..., None])  # lossless, 48x48x1
            assert np.isnan(r["landmarks"]).all()
    def key(recs, group):
        return sorted((r["emotion"], r["image"].tobytes()) for s in group for r in recs[s])

    for group in (("train", "val"), ("public_test",), ("private_test",)):
        assert key(folder_records, group) == key(records, group)
    counts = manifest["splits"]["public_test"]["labels"]["emotion"]
    assert sum(counts.values()) == 3 and counts == {e: sum(1 for em, _, u in rows if u == "PublicTest" and
                                                           EMOTIONS[em] == e) for e in EMOTIONS}


def test_records_are_written_in_a_seeded_random_order_not_the_readers(tmp_path):
    """The image-folder release lists faces by class; a class-sorted shard would reach the training
    shuffle buffer one class at a time, so the converter writes each split in a seeded order."""
    rows = fer_rows((60, 1, 0))  # the folder release needs its test/ folder
    write_fer_folders(tmp_path / "folders", rows)
    listed = [f.labels["emotion"] for f in DATASETS.get("fer2013").read_splits(tmp_path / "folders", 0.0, 0)["train"]]
    runs_of = lambda labels: [len(list(g)) for _, g in itertools.groupby(labels)]  # noqa: E731
    assert len(runs_of(listed)) == 7  # the reader's own order: one class folder after another
    orders = []
    for run in ("a", "b", "c"):
        manifest, records = convert_cli("fer2013", tmp_path / "folders", tmp_path / run, "--shards", "1",
                                        "--val-fraction", "0", *(["--seed", "1"] if run == "c" else []))
        assert manifest["order"] == "shuffled" and len(records["train"]) == 60
        orders.append([r["source"] for r in records["train"]])
    labels = [r["emotion"] for r in records["train"]]
    assert sorted(labels) == sorted(listed)
    assert max(runs_of(labels)) <= 4  # well mixed: a class holds 60 / 7 ~ 9 records
    assert orders[0] == orders[1] and orders[0] != orders[2]  # seeded: same seed, same order


def test_kaggle_form_converts_with_an_unlabelled_test_split(tmp_path):
    rows = fer_rows((5, 2, 2))
    write_fer_csv(tmp_path / "kaggle", rows, "kaggle", quote=True)
    manifest, records = convert_cli("fer2013", tmp_path / "kaggle", tmp_path / "out")
    assert {k: v["records"] for k, v in manifest["splits"].items()} == {"train": 4, "val": 1, "test": 4}
    assert [r["emotion"] for r in records["test"]] == [-1] * 4
    assert sum(manifest["splits"]["test"]["labels"]["emotion"].values()) == 0
    assert sorted(r["source"] for r in records["test"]) == [f"test.csv:{n}" for n in (2, 3, 4, 5)]
    assert sorted(manifest["sources"]) == ["test.csv", "train.csv"]


def test_face_crop_records_train_nothing_on_landmarks(fer_fixture):
    import tensorflow as tf

    from kerasface.config import DataConfig
    from kerasface.data.pipeline import build_dataset
    from kerasface.losses import landmark_loss
    from kerasface.metrics import landmark_report

    folder = fer_fixture[1] / "csv-records"
    ds = build_dataset(DataConfig(deterministic=True, shuffle_buffer=16), "train", image_size=(48, 48), channels=1,
                       batch_size=8, training=True, folder=folder, seed=0)  # augmented: flips, shifts, ...
    images, targets = next(iter(ds))
    assert images.shape == (8, 48, 48, 1) and np.isfinite(images.numpy()).all()
    assert 0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255
    assert np.isnan(targets["landmarks"].numpy()).all() and targets["landmarks"].shape == (8, 10)
    assert set(targets["emotion"].numpy().tolist()) <= set(range(7))
    predicted = tf.Variable(tf.fill([8, 10], 0.3))
    with tf.GradientTape() as tape:
        loss = landmark_loss(targets["landmarks"], predicted, 8)
    assert float(loss) == 0.0 and not tape.gradient(loss, predicted).numpy().any()
    # a batch mixing faces with and without landmarks: only the known ones count
    known = tf.fill([3, 10], 0.5)
    mixed = tf.concat([known, targets["landmarks"][:5]], axis=0)
    assert float(landmark_loss(mixed, predicted, 8)) == pytest.approx(float(landmark_loss(known, predicted[:3], 8)))
    assert float(landmark_loss(known, predicted[:3], 8)) == pytest.approx(0.5 * 3 * 10 * 0.2 ** 2 / 8)
    report = landmark_report(mixed.numpy(), predicted.numpy(), 48, 48)
    assert report["count"] == 3 and np.isfinite(report["nme"])
    assert landmark_report(targets["landmarks"].numpy(), predicted.numpy(), 48, 48)["count"] == 0


# ================================================================================= GENKI-4K

REAL_GENKI_LINE = "1 -0.021162 0.059530 -0.039662"  # DATA_FORMATS.md (real)
GENKI_LINES = [REAL_GENKI_LINE, "0 0.120000 -0.250000 0.031000", "1 0 0 0"]


@pytest.mark.parametrize("newline,trailing,extra", [("\n", True, ""), ("\r\n", True, ""), ("\n", False, ""),
                                                    ("\n", True, "\n\n"), ("\r\n", True, " \r\n")])
def test_genki_labels_parse_exactly(tmp_path, newline, trailing, extra):
    (tmp_path / "labels.txt").write_bytes((newline.join(GENKI_LINES) + (newline if trailing else "") + extra).encode())
    faces = read_labels(tmp_path / "labels.txt")
    assert [f.path for f in faces] == ["files/file0001.jpg", "files/file0002.jpg", "files/file0003.jpg"]
    assert [f.line for f in faces] == [1, 2, 3]
    assert [f.labels["smile"] for f in faces] == [0, 1, 0]  # ("smiling", "not_smiling"): index = 1 - code
    assert faces[0].labels["pose"] == (-0.021162, 0.05953, -0.039662)
    assert faces[1].labels["pose"] == (0.12, -0.25, 0.031)
    assert np.isnan(faces[0].landmarks).all()


@pytest.mark.parametrize("line,expected", [
    ("1 0.1 0.2", "expected 4 fields (smile yaw pitch roll), got 3"),
    ("2 0 0 0", "smile must be 1 or 0, got '2'"),
    ("1.0 0 0 0", "smile must be 1 or 0, got '1.0'"),
    ("1 a 0 0", "yaw, pitch and roll must be numbers (radians), got 'a 0 0'"),
    ("1 nan 0 0", "must be finite numbers"),
    ("", "blank line: every line up to the last labels the file of its number (files/file0002.jpg)"),
])
def test_malformed_genki_line_names_file_and_line(tmp_path, line, expected):
    path = tmp_path / "labels.txt"
    path.write_bytes("\n".join([GENKI_LINES[0], line, GENKI_LINES[1]]).encode() + b"\n")
    with pytest.raises(GENKI4KFormatError) as info:
        read_labels(path)
    assert str(info.value).startswith(f"{path}:2: ") and expected in str(info.value)


def test_genki_splits_are_seeded_and_the_test_split_ignores_val_fraction(tmp_path):
    (tmp_path / "labels.txt").write_text("".join(f"{i % 2} 0.1 0.2 0.3\n" for i in range(40)))
    read = DATASETS.get("genki4k").read_splits
    splits = read(tmp_path, 0.2, 0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 24, "val": 6, "test": 10}
    lines = [f.line for s in splits.values() for f in s]
    assert sorted(lines) == list(range(1, 41))
    assert [f.line for f in read(tmp_path, 0.1, 0)["test"]] == [f.line for f in splits["test"]]
    assert [f.line for f in read(tmp_path, 0.2, 1)["test"]] != [f.line for f in splits["test"]]
    assert [f.line for f in read(tmp_path, 0.2, 0)["val"]] == [f.line for f in splits["val"]]


def test_genki_root_and_crop_detection(tmp_path, monkeypatch):
    write_genki(tmp_path / "genki4k", GENKI_LINES)
    spec = DATASETS.get("genki4k")
    assert spec.resolve_root(tmp_path) == tmp_path / "genki4k"  # the folder above genki4k/ is taken too
    monkeypatch.setenv("KERASFACE_GENKI4K", str(tmp_path / "genki4k"))
    assert spec.resolve_root(None) == tmp_path / "genki4k"
    assert images_are_crops(tmp_path / "genki4k") and spec.is_cropped(tmp_path / "genki4k")
    write_genki(tmp_path / "big", GENKI_LINES, size=(65, 64))
    assert not images_are_crops(tmp_path / "big")
    with pytest.raises(FileNotFoundError, match="KERASFACE_GENKI4K"):
        spec.resolve_root(tmp_path / "big" / "files")


def test_genki_crops_convert_through_the_command_line(tmp_path):
    lines = [f"{i % 2} {0.01 * i:.6f} {-0.02 * i:.6f} {0.5:.6f}" for i in range(1, 9)]
    images = write_genki(tmp_path / "genki4k", lines)
    manifest, records = convert_cli("genki4k", tmp_path, tmp_path / "out", "--image-format", "png")
    assert {k: v["records"] for k, v in manifest["splits"].items()} == {"train": 5, "val": 1, "test": 2}
    assert (manifest["crop"], manifest["cropped"], manifest["image_size"], manifest["channels"]) == \
        ("bknet_48_gray", True, [48, 48], 1)
    assert manifest["labels"] == {"smile": {"type": "class", "names": ["smiling", "not_smiling"]},
                                  "pose": {"type": "value", "names": ["yaw", "pitch", "roll"]}}
    assert list(manifest["sources"]) == ["labels.txt"]
    for r in (r for split in records.values() for r in split):
        n = int(r["source"][len("files/file"):-4])
        smile, yaw, pitch, roll = lines[n - 1].split()
        assert r["smile"] == 1 - int(smile)
        assert r["pose"] == tuple(np.float32(v).item() for v in (yaw, pitch, roll))
        np.testing.assert_array_equal(r["image"], face_crop_as("bknet_48_gray", images[r["source"]]))
        assert np.isnan(r["landmarks"]).all()


def test_genki_whole_photos_are_detected(tmp_path):
    from PIL import Image
    from skimage import data

    root = tmp_path / "genki4k"
    write_genki(root, GENKI_LINES, size=(8, 8))
    for n in (1, 2, 3):  # whole photos (512x512): not crops, so the converter finds the face
        Image.fromarray(data.astronaut()).save(root / f"files/file{n:04d}.jpg", quality=95)
    assert not images_are_crops(root)
    manifest, records = convert_cli("genki4k", root, tmp_path / "out", "--crop", "bknet_48_gray")
    assert manifest["cropped"] is False and manifest["skipped"] == []
    marks = np.stack([r["landmarks"] for split in records.values() for r in split])
    assert marks.shape == (3, 10) and np.all((marks >= 0) & (marks < 48))
    # --cropped yes: the same photos taken whole
    manifest, records = convert_cli("genki4k", root, tmp_path / "whole", "--cropped", "yes")
    assert manifest["cropped"] is True and all(np.isnan(r["landmarks"]).all() for s in records.values() for r in s)


# ================================================================================= IMDB-WIKI


def datenum(day: date, fraction: float = 0.0) -> float:
    """MATLAB's datenum of a date (days from year 0): its Python ordinal + 366."""
    return day.toordinal() + 366 + fraction


NAN, INF = float("nan"), float("inf")
WIKI_ENTRIES = [  # (entry, kept age or None)
    ({"dob": datenum(date(1981, 5, 5)), "photo_taken": 2009, "full_path": "17/10000217_1981-05-05_2009.jpg",
      "gender": 1.0, "face_score": 4.3, "second_face_score": NAN}, 28),
    ({"dob": datenum(date(1990, 7, 1), 0.5), "photo_taken": 2010, "full_path": "01/20_1990-07-01_2010.jpg",
      "gender": 0.0, "face_score": 1.0, "second_face_score": NAN}, 19),  # born in July: one less
    ({"dob": datenum(date(1990, 6, 30)), "photo_taken": 2010, "full_path": "02/30_1990-06-30_2010.jpg",
      "gender": 0.0, "face_score": 2.5, "second_face_score": NAN}, 20),
    ({"dob": datenum(date(1950, 1, 1)), "photo_taken": 2000, "full_path": "03/a.jpg", "gender": 1.0,
      "face_score": -INF, "second_face_score": NAN}, None),  # no face
    ({"dob": datenum(date(1950, 1, 1)), "photo_taken": 2000, "full_path": "03/b.jpg", "gender": 1.0,
      "face_score": 0.99, "second_face_score": NAN}, None),  # weak face
    ({"dob": datenum(date(1950, 1, 1)), "photo_taken": 2000, "full_path": "03/c.jpg", "gender": 1.0,
      "face_score": 3.0, "second_face_score": 1.2}, None),  # a second face
    ({"dob": datenum(date(1950, 1, 1)), "photo_taken": 2000, "full_path": "03/d.jpg", "gender": NAN,
      "face_score": 3.0, "second_face_score": NAN}, None),  # gender unknown
    ({"dob": 5.0, "photo_taken": 2000, "full_path": "03/e.jpg", "gender": 1.0,
      "face_score": 3.0, "second_face_score": NAN}, None),  # no birth date
    ({"dob": datenum(date(1850, 3, 1)), "photo_taken": 2000, "full_path": "03/f.jpg", "gender": 0.0,
      "face_score": 3.0, "second_face_score": NAN}, None),  # age 150
    ({"dob": datenum(date(2012, 3, 1)), "photo_taken": 2009, "full_path": "03/g.jpg", "gender": 0.0,
      "face_score": 3.0, "second_face_score": NAN}, None),  # age -3
    ({"dob": datenum(date(1900, 1, 2)), "photo_taken": 2000, "full_path": "04/h.jpg", "gender": 1.0,
      "face_score": 1.5, "second_face_score": NAN}, 100),
    ({"dob": datenum(date(2009, 1, 2)), "photo_taken": 2009, "full_path": "04/i.jpg", "gender": 0.0,
      "face_score": 1.5, "second_face_score": NAN}, 0),
]


def write_mat(path: Path, db: str, entries):
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {db: mat_struct(entries, imdb=db == "imdb")})
    return path


@pytest.mark.parametrize("db", ["wiki", "imdb"])
def test_mat_is_read_in_the_real_layout_with_the_usual_filter(tmp_path, db):
    from scipy.io import loadmat

    path = write_mat(tmp_path / f"{db}_crop" / f"{db}.mat", db, [e for e, _ in WIKI_ENTRIES])
    record = loadmat(path)[db][0, 0]  # DATA_FORMATS.md's access path holds for the fixture
    assert record["full_path"][0][0][0] == "17/10000217_1981-05-05_2009.jpg" and record["dob"][0].shape == (12,)
    faces = read_mat(path, db)
    kept = [(e["full_path"], age, 1 - int(e["gender"]), i + 1)
            for i, (e, age) in enumerate(WIKI_ENTRIES) if age is not None]
    assert [(f.path, f.labels["age"][0], f.labels["gender"], f.line) for f in faces] == kept
    assert all(np.isnan(f.landmarks).all() for f in faces)
    assert DATASETS.get(db).resolve_root(tmp_path) == tmp_path / f"{db}_crop"
    assert DATASETS.get(db).label_specs["gender"].names == ("male", "female")


def test_age_rule():
    assert age_at_photo(datenum(date(1981, 5, 5)), 2009) == 28
    assert age_at_photo(datenum(date(1981, 7, 1)), 2009) == 27
    assert age_at_photo(datenum(date(1981, 12, 31), 0.9), 2009.0) == 27
    assert age_at_photo(366.0, 2000) is None and age_at_photo(NAN, 2000) is None and age_at_photo(1e9, 2000) is None
    assert age_at_photo(datenum(date(1981, 5, 5)), NAN) is None


def test_mat_structure_errors_name_the_file_and_what_was_expected(tmp_path):
    from scipy.io import savemat

    entries = [e for e, _ in WIKI_ENTRIES[:3]]
    path = write_mat(tmp_path / "wiki.mat", "wiki", entries)
    with pytest.raises(IMDBWikiFormatError, match=rf"^{path}: expected a variable 'imdb', found: wiki$"):
        read_mat(path, "imdb")
    struct = mat_struct(entries)
    del struct["face_score"]
    savemat(path, {"wiki": struct})
    with pytest.raises(IMDBWikiFormatError, match=rf"^{path}: wiki has no field 'face_score' \(fields: dob, "):
        read_mat(path, "wiki")
    struct = mat_struct(entries)
    struct["gender"] = struct["gender"][:, :2]
    savemat(path, {"wiki": struct})
    with pytest.raises(IMDBWikiFormatError, match=r"expected every field to have one entry per face, got .*wiki.gender 2"):
        read_mat(path, "wiki")
    struct = mat_struct(entries)
    struct["gender"][0, 2] = 2.0
    savemat(path, {"wiki": struct})
    with pytest.raises(IMDBWikiFormatError, match=rf"^{path}: entry 3 of wiki: gender must be 0, 1 or NaN, got 2.0"):
        read_mat(path, "wiki")
    path.write_bytes(b"not a mat file at all")
    with pytest.raises(IMDBWikiFormatError, match=rf"^{path}: not a MATLAB .mat file scipy can read"):
        read_mat(path, "wiki")


def test_imdb_wiki_splits_are_seeded(tmp_path):
    entries = [dict(WIKI_ENTRIES[0][0], full_path=f"{i:02d}/x{i}.jpg") for i in range(50)]
    write_mat(tmp_path / "wiki.mat", "wiki", entries)
    splits = DATASETS.get("wiki").read_splits(tmp_path, 0.2, 0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 35, "val": 9, "test": 6}
    assert sorted(f.line for s in splits.values() for f in s) == list(range(1, 51))
    *_, test = seeded_split(read_mat(tmp_path / "wiki.mat", "wiki"), 0.2, 0, 0.12)
    assert [f.path for f in test] == [f.path for f in splits["test"]]


def _face_photo(i: int) -> np.ndarray:
    """The astronaut's face with a margin, shifted a little per entry (as wiki_crop's crops are)."""
    from skimage import data

    return data.astronaut()[10 + 3 * i:250 + 3 * i, 110 + 2 * i:330 + 2 * i]


@pytest.mark.parametrize("db,extra", [("wiki", ()), ("imdb", ("--cropped", "yes"))])
def test_imdb_and_wiki_convert_through_the_command_line(tmp_path, db, extra):
    from PIL import Image

    entries = [dict(e, full_path=f"{i % 3:02d}/{i}_{e['full_path'].split('/')[1]}") for i, (e, _) in
               enumerate(WIKI_ENTRIES * 2)]
    ages = {e["full_path"]: age for e, (_, age) in zip(entries, WIKI_ENTRIES * 2) if age is not None}
    root = tmp_path / f"{db}_crop"
    write_mat(root / f"{db}.mat", db, entries)
    for i, rel in enumerate(ages):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_face_photo(i)).save(root / rel, quality=95)
    manifest, records = convert_cli(db, tmp_path, tmp_path / "out", *extra)
    assert {k: v["records"] for k, v in manifest["splits"].items()} == {"train": 7, "val": 2, "test": 1}
    assert manifest["skipped"] == [] and manifest["cropped"] is bool(extra) and manifest["crop"] == "bknet_48_gray"
    assert manifest["labels"] == {"gender": {"type": "class", "names": ["male", "female"]},
                                  "age": {"type": "value", "names": ["age"]}}
    assert list(manifest["sources"]) == [f"{db}.mat"]
    got = {r["source"]: r for split in records.values() for r in split}
    assert {k: r["age"] for k, r in got.items()} == {k: (float(a),) for k, a in ages.items()}
    assert all(r["image"].shape == (48, 48, 1) for r in got.values())
    finite = [np.isfinite(r["landmarks"]).all() for r in got.values()]
    assert all(finite) if not extra else not any(finite)  # detected faces have their five points


# ================================================================================= demos


@pytest.mark.parametrize("dataset", ["fer2013", "genki4k"])
def test_demo_copies_convert_balanced_and_learnable(tmp_path, dataset):
    spec = DATASETS.get(dataset)
    spec.write_demo(tmp_path / "demo", 0)
    assert "NOT REAL FACES" in (tmp_path / "demo" / "DEMO_README.txt").read_text()
    manifest, records = convert_cli(dataset, tmp_path / "demo", tmp_path / "out")
    assert manifest["skipped"] == [] and manifest["cropped"] is True
    label = "emotion" if dataset == "fer2013" else "smile"
    counts = {split: manifest["splits"][split]["labels"][label] for split in manifest["splits"]}
    if dataset == "fer2013":
        assert {k: v["records"] for k, v in manifest["splits"].items()} == {"train": 202, "val": 50,
                                                                             "public_test": 56, "private_test": 56}
        assert all(n == 8 for n in counts["public_test"].values())
        pool = {e: counts["train"][e] + counts["val"][e] for e in EMOTIONS}
        assert pool == dict.fromkeys(EMOTIONS, 36)
        fit, held = records["train"] + records["val"], records["public_test"] + records["private_test"]
        chance = 1 / 7
    else:
        assert {k: v["records"] for k, v in manifest["splits"].items()} == {"train": 240, "val": 60, "test": 100}
        total = {c: sum(counts[s][c] for s in counts) for c in ("smiling", "not_smiling")}
        assert total == {"smiling": 200, "not_smiling": 200}
        assert all(0.35 < counts[s]["smiling"] / sum(counts[s].values()) < 0.65 for s in counts)
        fit, held = records["train"] + records["val"], records["test"]
        chance = max(counts["test"].values()) / 100
    # the label shows in the pixels: a ridge classifier on raw pixels beats chance clearly
    def xy(recs):
        return (np.stack([r["image"].reshape(-1).astype(np.float64) / 255 for r in recs]),
                np.array([r[label] for r in recs]))

    x, y = xy(fit)
    xt, yt = xy(held)
    mean, std = x.mean(0), x.std(0) + 1e-3
    a, at = (x - mean) / std, (xt - mean) / std
    w = np.linalg.solve(a.T @ a + 100 * np.eye(a.shape[1]), a.T @ np.eye(y.max() + 1)[y])
    accuracy = float((np.argmax(at @ w, 1) == yt).mean())
    print(f"{dataset} demo: ridge accuracy on held-out faces {accuracy:.3f} (chance {chance:.3f})")
    assert accuracy > chance + 0.1


# ================================================================================= real data


@pytest.mark.real_data
def test_real_fer2013_converts_completely(tmp_path):
    from conftest import real_dataset_or_skip

    from kerasface.data.convert import convert

    root = real_dataset_or_skip("fer2013")
    manifest = convert("fer2013", str(root), tmp_path / "fer", workers=2, progress=False)
    records = {k: v["records"] for k, v in manifest["splits"].items()}
    counts = {k: v["labels"]["emotion"] for k, v in manifest["splits"].items()}
    for split, per_class in counts.items():
        print(f"FER2013 {split} ({records[split]}): {per_class}")
    assert manifest["skipped"] == [] and manifest["cropped"] is True
    assert records["train"] + records["val"] == 28709
    assert (records["public_test"], records["private_test"]) == (3589, 3589)
    pool = {e: counts["train"][e] + counts["val"][e] for e in EMOTIONS}
    assert pool == {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "sad": 4830, "surprise": 3171,
                    "neutral": 4965}
    assert counts["public_test"] == {"angry": 467, "disgust": 56, "fear": 496, "happy": 895, "sad": 653,
                                     "surprise": 415, "neutral": 607}
    assert counts["private_test"] == {"angry": 491, "disgust": 55, "fear": 528, "happy": 879, "sad": 594,
                                      "surprise": 416, "neutral": 626}


@pytest.mark.real_data
def test_real_genki4k_reads_and_converts_completely(tmp_path):
    from conftest import real_dataset_or_skip

    from kerasface.data.convert import convert

    root = real_dataset_or_skip("genki4k")
    faces = read_labels(root / "labels.txt")
    smiles = [1 - f.labels["smile"] for f in faces]  # the file's codes
    print(f"GENKI-4K: {len(faces)} labels, smile=1: {smiles.count(1)}, smile=0: {smiles.count(0)}")
    assert len(faces) == 4000 and (smiles.count(1), smiles.count(0)) == (2162, 1838)
    assert images_are_crops(root)  # the copy holds 64x64 crops
    manifest = convert("genki4k", str(root), tmp_path / "genki", workers=2, progress=False)
    assert manifest["skipped"] == [] and manifest["cropped"] is True
    assert {k: v["records"] for k, v in manifest["splits"].items()} == {"train": 2400, "val": 600, "test": 1000}
    total = {c: sum(s["labels"]["smile"][c] for s in manifest["splits"].values()) for c in ("smiling", "not_smiling")}
    assert total == {"smiling": 2162, "not_smiling": 1838}
