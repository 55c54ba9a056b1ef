"""Identity datasets (CASIA-style folders, LFW) and the LFW verification protocol (kerasface.verify):
readers on fixtures in the exact layouts, strict errors naming file:line, the demo writers, a
resumable parallel conversion streamed back through the pipeline, and the 10-fold threshold logic
against hand-computed numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerasface.data import DATASETS
from kerasface.data.identity_folders import (IdentityFoldersFormatError, read_splits as read_identity_splits,
                                             write_demo_identity_folders)
from kerasface.data.lfw import (LFWFormatError, Pair, people_images, read_pairs, read_people,
                                read_splits as read_lfw_splits, write_demo_lfw)

pytestmark = pytest.mark.timeout(180)


def _image(path: Path, value: int = 128, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


# ----------------------------------------------------------------------------- identity folders


def _casia(root: Path, counts: dict[str, int]) -> None:
    for identity, n in counts.items():
        for i in range(1, n + 1):
            _image(root / identity / f"{i:03d}.jpg", i)
    (root / "0000045" / "notes.txt").write_text("not an image")
    _image(root / "0000045" / ".hidden.jpg")
    (root / ".cache").mkdir()


def test_identity_folders_labels_and_identity_level_split(tmp_path):
    root = tmp_path / "CASIA-WebFace"
    _casia(root, {"0000099": 4, "0000045": 10, "0000100": 12})
    spec = DATASETS.get("identity_folders")
    assert spec.resolve_root(tmp_path) == root  # the folder inside
    assert spec.is_cropped(root)
    assert spec.label_specs["identity"].type == "identity"  # known before any tree is read (config checks)
    labels = spec.label_specs_for(root)
    assert labels["identity"].type == "identity"
    assert labels["identity"].names == ("0000045", "0000099", "0000100") and labels["identity"].count == 3
    splits = spec.splits(root, 0.2, seed=3)  # default: 5 validation images per identity
    by = {split: {} for split in splits}
    for split, faces in splits.items():
        for face in faces:
            folder = face.path.split("/")[0]
            assert face.labels == {"identity": labels["identity"].names.index(folder)}
            assert np.isnan(face.landmarks).all()
            by[split].setdefault(folder, []).append(face.path)
    assert {k: len(v) for k, v in by["train"].items()} == {"0000045": 5, "0000099": 4, "0000100": 7}
    assert {k: len(v) for k, v in by["val"].items()} == {"0000045": 5, "0000100": 5}  # 4 < 2 x 5: all train
    assert all(not f.path.endswith(("notes.txt", ".hidden.jpg")) for faces in splits.values() for f in faces)
    assert set(by["train"]["0000045"]).isdisjoint(by["val"]["0000045"])
    again = spec.splits(root, 0.2, seed=3)
    other = spec.splits(root, 0.2, seed=4)
    assert [f.path for f in again["val"]] == [f.path for f in splits["val"]]
    assert [f.path for f in other["val"]] != [f.path for f in splits["val"]]
    # the reader option, as the converter's command line passes it (a string)
    two = spec.splits(root, 0.2, 0, {"val_per_identity": "2"})
    assert len(two["val"]) == 6 and len(two["train"]) == 20
    assert len(spec.splits(root, 0.2, 0, {"val_per_identity": "0"})["val"]) == 0
    with pytest.raises(IdentityFoldersFormatError, match="--val-per-identity: expected a whole number"):
        spec.splits(root, 0.2, 0, {"val_per_identity": "-1"})
    with pytest.raises(ValueError, match="takes no option --attribute"):
        spec.splits(root, 0.2, 0, {"attribute": "x"})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IdentityFoldersFormatError, match="expected one folder per identity"):
        read_identity_splits(empty)


def test_identity_attributes_file_labels_listed_images_and_masks_the_rest(tmp_path):
    from kerasface.label_attributes import write_labels

    root = tmp_path / "tree"
    _casia(root, {"0000045": 2, "0000099": 2})
    names = ("Big_Nose", "Male")
    write_labels(root / "attributes.txt", names, [("0000045/001.jpg", (1, 0)), ("0000099/002.jpg", (-1, 1))])
    spec = DATASETS.get("identity_folders")
    labels = spec.label_specs_for(root)
    assert labels["attributes"].type == "multilabel" and labels["attributes"].names == names
    faces = {f.path: f.labels for faces in spec.splits(root, 0.2, 0).values() for f in faces}
    assert faces["0000045/001.jpg"] == {"identity": 0, "attributes": (1, 0)}
    assert faces["0000099/002.jpg"] == {"identity": 1, "attributes": (-1, 1)}
    assert faces["0000045/002.jpg"]["attributes"] == (-1, -1)  # not listed: unknown, no loss
    assert spec.source_files(root) == [root / "attributes.txt"]  # a changed file reconverts the tree
    assert "attributes" not in spec.label_specs_for(root, {"attributes": "none"})
    assert all("attributes" not in f.labels for f in spec.splits(root, 0.2, 0, {"attributes": "none"})["train"])
    with pytest.raises(IdentityFoldersFormatError, match="missing.txt: --attributes names no file"):
        spec.splits(root, 0.2, 0, {"attributes": "missing.txt"})
    (root / "bad.txt").write_text("Big_Nose Male\n0000045/001.jpg 1 2\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected a path and 2 values"):
        spec.splits(root, 0.2, 0, {"attributes": "bad.txt"})

    # five points per image (SphereFace's casia_landmark.txt: path, optional label, 10 numbers):
    # the tree becomes photos aligned by their points; unlisted images are detected (NaN points)
    assert spec.is_cropped(root)
    (root / "landmarks.txt").write_text("0000045/001.jpg 0 1 2 3 4 5 6 7 8 9 10\n0000099/001.jpg 1 2 3 4 5 6 7 8 9 10\n")
    assert not spec.is_cropped(root)
    faces = {f.path: f for faces in spec.splits(root, 0.2, 0).values() for f in faces}
    np.testing.assert_array_equal(faces["0000045/001.jpg"].landmarks, np.arange(1, 11).reshape(5, 2))
    np.testing.assert_array_equal(faces["0000099/001.jpg"].landmarks, np.arange(1, 11).reshape(5, 2))
    assert np.isnan(faces["0000045/002.jpg"].landmarks).all()
    assert root / "landmarks.txt" in spec.source_files(root)
    (root / "landmarks.txt").write_text("0000045/001.jpg 0 1 2 3\n")
    with pytest.raises(IdentityFoldersFormatError, match=r"landmarks.txt:1: expected a path, an optional label and 10"):
        spec.splits(root, 0.2, 0)


def test_demo_identity_attributes_are_true_to_each_drawn_person(tmp_path):
    from kerasface.data.identity_folders import DEMO_ATTRIBUTES, demo_attributes
    from kerasface.data.synthetic import person_traits, render_face
    from kerasface.label_attributes import read_labels

    root = write_demo_identity_folders(tmp_path / "demo", num_identities=24, per_identity=2, size=32, seed=2)
    names, rows = read_labels(root / "attributes.txt")
    assert names == DEMO_ATTRIBUTES and len(rows) == 48
    by_person = {}
    for rel, values in rows.items():
        by_person.setdefault(rel.split("/")[0], set()).add(values)
    assert all(len(v) == 1 for v in by_person.values())  # one label set per identity
    values = np.array([next(iter(v)) for v in by_person.values()])
    assert (values[:, 4:6] == -1).all()  # never drawn: unknown
    known = values[:, [0, 1, 2, 3, 6]]
    assert set(np.unique(known)) == {0, 1} and 0 < known.mean() < 1
    # the traits are the ones the renderer draws for that person
    traits = person_traits(12345)
    info = render_face(np.random.default_rng(5), (64, 64), identity=12345)[2]
    assert demo_attributes(traits)[6] == int(info["gender"] == 1)


def test_demo_identity_folders_same_person_varied_photos(tmp_path):
    from kerasface.data.synthetic import render_face

    root = write_demo_identity_folders(tmp_path / "demo", num_identities=3, per_identity=4, size=48, seed=1)
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(folders) == 3 and all(len(p.name) == 7 and p.name.isdigit() for p in folders)
    assert sorted(f.name for f in folders[0].iterdir()) == ["001.jpg", "002.jpg", "003.jpg", "004.jpg"]
    assert Image.open(folders[0] / "001.jpg").size == (48, 48)
    assert "SYNTHETIC" in (root / "DEMO_README.txt").read_text()
    again = write_demo_identity_folders(tmp_path / "again", num_identities=3, per_identity=4, size=48, seed=1)
    assert (again / folders[0].name / "002.jpg").read_bytes() == (folders[0] / "002.jpg").read_bytes()
    # one person (identity seed): the same face parameters under different photos
    infos = [render_face(np.random.default_rng(k), (64, 64), identity=7, expression=e)[2]
             for k, e in enumerate(("happy", "sad", "surprise"))]
    for key in ("gender", "glasses", "hair", "beard", "bangs"):
        assert len({info[key] for info in infos}) == 1, key
    assert [info["smile"] for info in infos] == [1, 2, 2]
    assert len({info["yaw_deg"] for info in infos}) == 3
    a = render_face(np.random.default_rng(0), (64, 64), identity=7, yaw=0.0, roll=0.0, clean=True)[0]
    b = render_face(np.random.default_rng(0), (64, 64), identity=7, yaw=0.0, roll=0.0, clean=True)[0]
    c = render_face(np.random.default_rng(0), (64, 64), identity=8, yaw=0.0, roll=0.0, clean=True)[0]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_many_identities_convert_in_parallel_resume_and_stream_back(tmp_path, monkeypatch):
    import kerasface.data.convert as convert_module
    from kerasface.config import DataConfig
    from kerasface.data.convert import convert
    from kerasface.data.pipeline import build_dataset, fits_cache

    root = write_demo_identity_folders(tmp_path / "CASIA", num_identities=60, per_identity=6, size=32, seed=0)
    fifth = [f for f in read_identity_splits(root, seed=0, val_per_identity=2)["train"] if f.labels["identity"] == 5]
    bad = root / fifth[0].path  # a training image of identity 5
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = tmp_path / "records"
    options = {"val_per_identity": "2"}
    calls = []
    real_prepare = convert_module.prepare

    def dying_prepare(job):
        calls.append(job)
        if len(calls) == 100:
            raise KeyboardInterrupt
        return real_prepare(job)

    monkeypatch.setattr(convert_module, "prepare", dying_prepare)
    with pytest.raises(KeyboardInterrupt):  # in shard 3 of 8 of train (30 faces each)
        convert("identity_folders", str(root), out, crop="wang_112x96", shards=8, workers=1, progress=False,
                options=options)
    monkeypatch.undo()
    assert not (out / "manifest.json").exists()
    manifest = convert("identity_folders", str(root), out, crop="wang_112x96", shards=8, workers=2, progress=False,
                       options=options)
    assert manifest["resumed_shards"] == 3
    assert manifest["cropped"] is False  # the demo tree has landmarks.txt: each face is aligned by its points
    assert {k: v["records"] for k, v in manifest["splits"].items()} == {"train": 239, "val": 120}
    assert [s["path"] for s in manifest["skipped"]] == [bad.relative_to(root).as_posix()]
    assert manifest["labels"]["identity"]["type"] == "identity" and manifest["labels"]["identity"]["count"] == 60
    assert len(manifest["splits"]["train"]["files"]) == 8
    data = DataConfig(dataset="identity_folders", cache_budget_mb=0, augment=None, deterministic=True)
    assert not fits_cache(data, 239, (112, 96), 3)
    per_identity = np.zeros(60, int)
    for images, targets in build_dataset(data, "train", image_size=(112, 96), channels=3, batch_size=32,
                                         training=False, folder=out):
        assert images.shape[1:] == (112, 96, 3)
        np.add.at(per_identity, targets["identity"].numpy(), 1)  # counts only: no list of images kept
    expected = np.full(60, 4)
    expected[5] = 3
    np.testing.assert_array_equal(per_identity, expected)


# ----------------------------------------------------------------------------- LFW files

PAIRS = ("3\t2\r\n"
         "Abel_Pacheco\t1\t4\r\n" "Ann\t2\t3\r\n"
         "Abdel_Madi_Shabneh\t1\tDean_Barker\t1\r\n" "Ann\t1\tBob\t2\r\n"
         "Bob\t1\t2\r\n" "Cy\t1\t2\r\n"
         "Cy\t1\tDee\t1\r\n" "Dee\t2\tAnn\t1\r\n"
         "\r\n"
         "Eve\t1\t3\r\n" "Eve\t2\t3\r\n"
         "Eve\t1\tFay\t1\r\n" "Fay\t1\tGus\t1\r\n"
         "\r\n")


def test_read_pairs_both_line_shapes_crlf(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_bytes(PAIRS.encode())
    folds = read_pairs(path)
    assert [len(f) for f in folds] == [4, 4, 4]
    assert folds[0][0] == Pair("Abel_Pacheco", 1, "Abel_Pacheco", 4, 2)
    assert folds[0][2] == Pair("Abdel_Madi_Shabneh", 1, "Dean_Barker", 1, 4)
    assert [p.same for p in folds[1]] == [True, True, False, False]
    assert folds[0][0].images == ("Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0004.jpg")
    assert folds[2][3].line == 14  # blank lines counted
    dev = tmp_path / "pairsDevTrain.txt"
    dev.write_text("1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    assert [[p.same for p in f] for f in read_pairs(dev)] == [[True, False]]


@pytest.mark.parametrize("edit, where, message", [
    (lambda ls: ["3 2 1"] + ls[1:], 1, "expected the header"),
    (lambda ls: ["x\t2"] + ls[1:], 1, "expected the number of folds"),
    (lambda ls: ls[:2] + ["Ann\t2\tBob\t3"] + ls[3:], 3, "expected a matched pair"),
    (lambda ls: ls[:1] + ["Abdel\t1\tDean\t1"] + ls[2:], 2, "expected a matched pair"),
    (lambda ls: ls[:4] + ["Ann\t1\t2"] + ls[5:], 5, "expected a mismatched pair"),
    (lambda ls: ls[:4] + ["Ann\t1\tAnn\t2"] + ls[5:], 5, "a mismatched pair names one person twice"),
    (lambda ls: ls[:2] + ["Ann\ttwo\t3"] + ls[3:], 3, "expected an image number"),
    (lambda ls: ls[:2] + ["Ann\t0\t3"] + ls[3:], 3, "expected an image number"),
    (lambda ls: ls[:-3], 13, "the file ends after 10 pairs"),  # after line 12, the last
    (lambda ls: ls + ["Ann\t1\t2"], 16, "more lines than the header"),
])
def test_read_pairs_bad_lines_name_file_and_line(tmp_path, edit, where, message):
    lines = PAIRS.split("\r\n")[:-1]
    path = tmp_path / "pairs.txt"
    path.write_bytes(("\r\n".join(edit(lines)) + "\r\n").encode())
    with pytest.raises(LFWFormatError, match=rf"^{path}:{where}: {message}"):
        read_pairs(path)


def test_read_people_with_and_without_folds(tmp_path):
    flat = tmp_path / "peopleDevTrain.txt"
    flat.write_text("3\nAnn\t2\nBob\t1\nCy\t4\n")
    assert read_people(flat) == [[("Ann", 2), ("Bob", 1), ("Cy", 4)]]
    folded = tmp_path / "people.txt"
    folded.write_bytes(b"2\r\n2\r\nAnn\t2\r\nBob\t1\r\n1\r\nCy\t4\r\n")
    assert read_people(folded) == [[("Ann", 2), ("Bob", 1)], [("Cy", 4)]]
    bad = tmp_path / "bad.txt"
    for text, where, message in [("2\nAnn\t2\n", 3, "the file ends after 1 of the 2 people"),
                                 ("1\nAnn\t2\tx\n", 2, "expected 'name<TAB>count'"),
                                 ("1\nAnn\tmany\n", 2, "expected an image count"),
                                 ("1\nAnn\t2\nBob\t1\n", 3, "more lines than the counts say"),
                                 ("2\n1\nAnn\t2\n", 4, "the file ends before fold 2 of 2")]:
        bad.write_text(text)
        with pytest.raises(LFWFormatError, match=rf"^{bad}:{where}: {message}"):
            read_people(bad)


@pytest.mark.parametrize("inside", [True, False])
def test_lfw_as_a_dataset_identity_by_name(tmp_path, inside):
    root = tmp_path / "LFW"
    images = root / "lfw" if inside else root
    for name, n in (("Bob", 2), ("Ann", 3)):
        for i in range(1, n + 1):
            _image(images / name / f"{name}_{i:04d}.jpg")
    _image(images / "Ann" / "Bob_0009.jpg")  # not this person's name: ignored
    (root / "pairs.txt").write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nAnn\t2\t3\nAnn\t3\tBob\t2\n")
    spec = DATASETS.get("lfw")
    assert spec.resolve_root(tmp_path) == root
    assert not spec.is_cropped(root) and spec.write_demo is not None
    assert people_images(root) == {"Ann": ["Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", "Ann/Ann_0003.jpg"],
                                   "Bob": ["Bob/Bob_0001.jpg", "Bob/Bob_0002.jpg"]}
    assert spec.label_specs_for(root)["identity"].names == ("Ann", "Bob")
    faces = read_lfw_splits(root)["test"]
    prefix = "lfw/" if inside else ""
    assert [(f.path, f.labels["identity"]) for f in faces] == [
        (f"{prefix}Ann/Ann_0001.jpg", 0), (f"{prefix}Ann/Ann_0002.jpg", 0), (f"{prefix}Ann/Ann_0003.jpg", 0),
        (f"{prefix}Bob/Bob_0001.jpg", 1), (f"{prefix}Bob/Bob_0002.jpg", 1)]
    assert [p.name for p in spec.source_files(root)] == ["pairs.txt"]


def test_demo_lfw_is_valid_and_folds_hold_disjoint_people(tmp_path):
    root = write_demo_lfw(tmp_path / "lfw_demo", num_identities=20, per_identity=2, pairs_per_fold=2, size=48, seed=3)
    folds = read_pairs(root / "pairs.txt")
    assert [len(f) for f in folds] == [4] * 10
    assert (root / "pairs.txt").read_text().startswith("10\t2\n")
    people = read_people(root / "people.txt")
    assert len(people) == 10 and sum(len(f) for f in people) == 20
    for fold, members in zip(folds, people):
        names = {n for n, _ in members}
        assert {p.name1 for p in fold} | {p.name2 for p in fold} <= names
        for pair in fold:
            assert all((root / "lfw" / rel).is_file() for rel in pair.images)
    assert Image.open(root / "lfw" / "Person_001" / "Person_001_0002.jpg").size == (48, 48)
    with pytest.raises(ValueError, match="needs at least 20 identities"):
        write_demo_lfw(tmp_path / "small", num_identities=12)


# ----------------------------------------------------------------------------- the protocol

# Three folds of 2 matched + 2 mismatched pairs, each pair with its own images and a chosen cosine.
SIMILARITY = [((0.9, 0.4), (0.5, 0.1)), ((0.8, 0.6), (0.7, 0.15)), ((0.25, 0.95), (0.35, 0.0))]


def _protocol_fixture(root: Path) -> dict[str, np.ndarray]:
    """The LFW layout with one image per pair member and the embedding each one gets: the pair's
    first image (1, 0), the second (s, sqrt(1 - s^2)), so that their cosine is s."""
    lines, vectors = ["3\t2"], {}
    for k, (matched, mismatched) in enumerate(SIMILARITY):
        for j, s in enumerate(matched):
            name = f"Same_{k}{j}"
            lines.append(f"{name}\t1\t2")
            vectors[f"{name}/{name}_0001.jpg"] = np.array([1.0, 0.0])
            vectors[f"{name}/{name}_0002.jpg"] = np.array([s, math.sqrt(1 - s * s)])
        for j, s in enumerate(mismatched):
            a, b = f"A_{k}{j}", f"B_{k}{j}"
            lines.append(f"{a}\t1\t{b}\t1")
            vectors[f"{a}/{a}_0001.jpg"] = np.array([1.0, 0.0])
            vectors[f"{b}/{b}_0001.jpg"] = np.array([s, math.sqrt(1 - s * s)])
    for rel in vectors:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")  # never read: the embedding function knows them by name
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return vectors


def test_fold_thresholds_and_accuracies_by_hand(tmp_path):
    from kerasface.verify import verify_lfw

    vectors = _protocol_fixture(tmp_path)
    seen = []

    def embed(paths):
        seen.extend(paths)
        return [vectors[p.relative_to(tmp_path).as_posix()] for p in paths]

    report = verify_lfw(embed, tmp_path)
    assert len(seen) == len(vectors) == 24
    # Fold 1 is tested with the threshold best on folds 2 + 3: sorted similarities 0.0d 0.15d 0.25s
    # 0.35d 0.6s 0.7d 0.8s 0.95s; the first cut with 6/8 right is between 0.15 and 0.25 -> 0.2;
    # on fold 1: 0.9 and 0.4 same (right), 0.5 same (wrong), 0.1 different (right) -> 3/4.
    # Fold 2 (on 1 + 3: 0.0d 0.1d 0.25s ...): 0.175; 0.8, 0.6 right, 0.7 wrong, 0.15 right -> 3/4.
    # Fold 3 (on 1 + 2: 0.1d 0.15d 0.4s ...): 0.275; 0.25 wrong, 0.95 right, 0.35 wrong, 0.0 right -> 2/4.
    assert report["thresholds"] == pytest.approx([0.2, 0.175, 0.275], abs=1e-9)
    assert report["fold_accuracy"] == [0.75, 0.75, 0.5]
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["std"] == pytest.approx(math.sqrt(1 / 72))
    assert [f["pairs"] for f in report["folds"]] == [4, 4, 4]
    # AUC over all 12 pairs: of the 36 (same, different) couples, those ranked the wrong way round
    # are 0.4 < 0.5, 0.4 < 0.7, 0.6 < 0.7, 0.25 < 0.5, 0.25 < 0.7, 0.25 < 0.35 -> 30/36
    assert report["auc"] == pytest.approx(30 / 36)
    assert report["pairs"] == {"total": 12, "used": 12, "excluded": 0}
    json.dumps(report)  # JSON-safe


def test_failed_images_are_skipped_counted_and_their_pairs_excluded(tmp_path):
    from kerasface.verify import verify_lfw

    vectors = _protocol_fixture(tmp_path)
    (tmp_path / "Same_20" / "Same_20_0002.jpg").unlink()  # fold 3's matched 0.25: missing

    def embed(paths):
        return ["no face found" if p.name == "B_00_0001.jpg" else vectors[p.relative_to(tmp_path).as_posix()]
                for p in paths]  # fold 1's mismatched 0.5: no face

    report = verify_lfw(embed, tmp_path, pairs=tmp_path / "pairs.txt")
    assert {f["path"]: f["reason"] for f in report["failed_images"]} == {
        "Same_20/Same_20_0002.jpg": "no such file", "B_00/B_00_0001.jpg": "no face found"}
    assert report["images"] == {"total": 24, "used": 22, "failed": 2}
    assert report["pairs"] == {"total": 12, "used": 10, "excluded": 2}
    assert [(f["pairs"], f["excluded_pairs"]) for f in report["folds"]] == [(3, 1), (4, 0), (3, 1)]
    # by hand, as above without 0.5 (fold 1) and 0.25 (fold 3):
    # fold 1 on 2 + 3 (0.0d 0.15d 0.35d 0.6s 0.7d 0.8s 0.95s): 7 cuts, best 6/7 first at (0.35 + 0.6) / 2
    #   -> 0.475; fold 1: 0.9 right, 0.4 wrong, 0.1 right -> 2/3
    # fold 2 on 1 + 3 (0.0d 0.1d 0.35d 0.4s 0.9s 0.95s): 0.375 separates all -> fold 2: 0.8 0.6 right,
    #   0.7 wrong, 0.15 right -> 3/4
    # fold 3 on 1 + 2 (0.1d 0.15d 0.4s 0.6s 0.7d 0.8s 0.9s): 0.275 -> fold 3: 0.95 right, 0.35 wrong,
    #   0.0 right -> 2/3
    assert report["thresholds"] == pytest.approx([0.475, 0.375, 0.275], abs=1e-9)
    assert report["fold_accuracy"] == pytest.approx([2 / 3, 0.75, 2 / 3])
    assert report["accuracy"] == pytest.approx((2 / 3 + 0.75 + 2 / 3) / 3)


def test_a_fold_without_pairs_and_bad_inputs(tmp_path):
    from kerasface.verify import verify_lfw

    vectors = _protocol_fixture(tmp_path)
    gone = {"Same_00", "A_00", "Same_01", "A_01"}  # every pair of fold 1
    report = verify_lfw(lambda paths: [None if p.parent.name in gone else vectors[p.relative_to(tmp_path).as_posix()]
                                       for p in paths], tmp_path)
    assert report["folds"][0]["threshold"] is None and report["folds"][0]["accuracy"] is None
    assert report["folds"][0]["excluded_pairs"] == 4
    assert report["accuracy"] == pytest.approx(np.mean(report["fold_accuracy"][1:]))
    with pytest.raises(ValueError, match="no pair could be scored"):
        verify_lfw(lambda paths: ["unreadable"] * len(paths), tmp_path)
    with pytest.raises(FileNotFoundError, match="no pairs file"):
        verify_lfw(lambda paths: [], tmp_path / "nowhere")
    with pytest.raises(ValueError, match="returned 1 results for 24 images"):
        verify_lfw(lambda paths: [np.ones(2)], tmp_path)


def test_verify_command_end_to_end_with_a_fake_model(tmp_path, monkeypatch, capsys):
    import kerasface.verify as verify

    root = write_demo_lfw(tmp_path / "LFW", num_identities=20, per_identity=2, pairs_per_fold=2, size=48, seed=0)
    (root / "lfw" / "Person_004" / "Person_004_0001.jpg").write_bytes(b"broken")
    names = sorted(p.name for p in (root / "lfw").iterdir())

    def fake_embedder(model, output=None, face="centre", batch_size=32, progress=False, model_key=None, faces="detect"):
        assert model_key is None and faces == "detect"  # the command: the run's own pick, faces detected
        assert model == "models/fake"

        def embed(paths):
            out = []
            for p in paths:
                try:
                    Image.open(p).load()
                except Exception as exc:
                    out.append(f"unreadable ({type(exc).__name__})")
                    continue
                vector = np.zeros(len(names))
                vector[names.index(p.parent.name)] = 1.0  # a perfect embedding: one axis per person
                out.append(vector)
            return out

        embed.close, embed.output = (lambda: None), "identity"
        return embed

    monkeypatch.setattr(verify, "model_embedder", fake_embedder)
    report_path = tmp_path / "out" / "lfw.json"
    assert verify.main(["models/fake", "--lfw", str(root), "--json", str(report_path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    bad_pairs = [p for fold in read_pairs(root / "pairs.txt") for p in fold
                 if "Person_004/Person_004_0001.jpg" in p.images]
    assert report["pairs"]["excluded"] == len(bad_pairs) and report["images"]["failed"] == 1
    assert report["failed_images"][0]["path"] == "Person_004/Person_004_0001.jpg"
    assert report["accuracy"] == 1.0 and report["std"] == 0.0 and report["auc"] == 1.0
    assert all(0.0 <= t < 1.0 for t in report["thresholds"]) and len(report["folds"]) == 10
    assert report["model"] == "models/fake" and report["output"] == "identity"
    assert "LFW verification: 100.00% +- 0.00 over 10 folds (AUC 1.0000)" in printed
    assert f"{report['pairs']['excluded']} excluded" in printed and "skipped Person_004/Person_004_0001.jpg" in printed
    roc = tmp_path / "out" / "lfw.roc.png"
    assert Image.open(roc).size[0] > 100
    assert verify.main(["models/fake", "--lfw", str(tmp_path / "nowhere")]) == 2
    assert "no pairs file" in capsys.readouterr().err


@pytest.fixture(scope="module")
def embedding_run(tmp_path_factory):
    """A run folder trained by kerasface's trainer (2 steps): one tiny model with an identity
    embedding head on the vggface_224 crop."""
    import tensorflow as tf

    import run_fixture
    from kerasface.architectures import ARCHITECTURES
    from kerasface.config import DataConfig, ModelConfig, PaperConfig, StageConfig, TaskConfig
    from kerasface.data.tfrecord import LabelSpec
    from kerasface.train import plan_units, train_paper
    from records_fixture import write_source

    if run_fixture.FIXTURE_ARCH not in ARCHITECTURES:
        ARCHITECTURES.register(run_fixture.FIXTURE_ARCH)(run_fixture.build_fixture_model)
    base = tmp_path_factory.mktemp("embedding_run")
    rows = lambda n: [{"identity": i % 4} for i in range(n)]
    write_source(base / "tfrecords" / "vggface_224", {"identity": LabelSpec("identity", (), count=4)},
                 {"train": rows(16), "val": rows(8)}, value=90)
    model = ModelConfig(arch=run_fixture.FIXTURE_ARCH, input_size=32,
                        tasks=(TaskConfig("identity", kind="embedding", num_classes=4),),
                        stages=(StageConfig(optimizer="adam", lr=1e-3, batch_size=8, steps=2, eval_every=2),))
    paper = PaperConfig(name="emb", data=DataConfig(tfrecords=str(base / "tfrecords"), cache=False, augment=None,
                                                    deterministic=True),
                        crops=("vggface_224",), models={"m": model}, demo=True)
    run = base / "run"
    train_paper(paper, run, plan_units(paper), None, progress=False, strategy=tf.distribute.MirroredStrategy(["/cpu:0"]))
    return run


def test_verify_a_real_exported_model_from_its_run_folder(embedding_run, tmp_path, capsys):
    from kerasface.verify import main, model_embedder, verify_lfw

    root = write_demo_lfw(tmp_path / "LFW", num_identities=20, per_identity=2, pairs_per_fold=2, size=96, seed=0)
    embed = model_embedder(embedding_run)  # a run folder: exported to a temporary SavedModel first
    try:
        assert embed.output == "identity" and embed.model.info.crop == "vggface_224"
        report = verify_lfw(embed, root)
        failed = {f["path"] for f in report["failed_images"]}
        used = next(rel for p in read_pairs(root / "pairs.txt")[0] for rel in p.images if rel not in failed)
        first, second = embed([root / "lfw" / used] * 2)  # the L2-normalised 32-d features, reproducibly
        assert first.shape == (32,) and np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_array_equal(first, second)
    finally:
        embed.close()
    assert all(f["reason"] == "no face found" for f in report["failed_images"])
    pairs = [p for fold in read_pairs(root / "pairs.txt") for p in fold]
    assert report["images"]["total"] == len({rel for p in pairs for rel in p.images})
    assert report["images"]["used"] + report["images"]["failed"] == report["images"]["total"]
    assert report["pairs"]["excluded"] == sum(1 for p in pairs if failed & set(p.images))
    assert report["pairs"]["used"] + report["pairs"]["excluded"] == 40 and report["pairs"]["used"] > 0
    assert 0.0 <= report["accuracy"] <= 1.0 and len(report["folds"]) == 10
    out = tmp_path / "lfw.json"  # the command on the run folder gives the same report
    assert main([str(embedding_run), "--lfw", str(root), "--json", str(out), "--no-progress"]) == 0
    written = json.loads(out.read_text())
    assert written["accuracy"] == pytest.approx(report["accuracy"]) and written["pairs"] == report["pairs"]
    assert written["thresholds"] == pytest.approx(report["thresholds"])
    assert "LFW verification:" in capsys.readouterr().out
    assert (tmp_path / "lfw.roc.png").is_file()


# ----------------------------------------------------------------------------- MegaFace protocol


def test_megaface_demo_and_identification_of_a_model_streamed(embedding_run, tmp_path, monkeypatch):
    import kerasface.identify as identify
    from kerasface.data.megaface import read_megaface, resolve_root, write_demo

    root = write_demo(tmp_path / "MegaFace", seed=0, probes=4, per_probe=3, distractors=10)
    assert resolve_root(str(root)) == root and "SYNTHETIC" in (root / "DEMO_README.txt").read_text()
    probes, distractors = read_megaface(root, 10)
    assert len(probes) == 12 and len({i for _, i in probes}) == 4 and len(distractors) == 10
    for folder, entries in (("facescrub", probes), ("megaface", distractors)):  # aligned 112x96 crops
        assert all(Image.open(root / folder / rel).size == (96, 112) for rel, _ in entries)

    # a perfect embedder (each probe's identity one-hot, the distractors orthogonal to all of them),
    # with one unreadable distractor: every trial at rank 1, the failure counted, batches streamed
    names = sorted({i for _, i in probes})

    def fake_embedder(model, batch_size, model_key, faces):
        def embed(paths):
            out = []
            for p in paths:
                if p == root / "megaface" / distractors[0][0]:
                    out.append("unreadable")
                    continue
                v = np.zeros(len(names) + 1, np.float32)
                v[names.index(p.parent.name) if p.parent.parent.name == "facescrub" else len(names)] = 1.0
                out.append(v)
            return out
        embed.close, embed.output = (lambda: None), "identity"
        return embed

    monkeypatch.setattr(identify, "model_embedder", fake_embedder)
    report = identify.identify_model("model", root, json_out=tmp_path / "mf.json", plot_out=tmp_path / "mf.png")
    assert report["size"] == 10 and report["distractors"] == 9 and len(report["failed_images"]) == 1
    assert report["trials"] == 4 * 3 * 2 and report["rank1"] == 1.0  # each image against each other of its person
    assert json.loads((tmp_path / "mf.json").read_text())["rank1"] == 1.0 and (tmp_path / "mf.png").is_file()
    monkeypatch.undo()

    # a real exported model, on crops (no detection): the embedding output of every image
    report = identify.identify_model(embedding_run, root, faces="crops")
    assert report["output"] == "identity" and report["failed_images"] == []
    assert report["distractors"] == 10 and report["trials"] == 24 and 0.0 <= report["rank1"] <= 1.0
    assert len(report["cmc_curve"]) == 1000 and report["impostor_pairs"] == 12 * 10


def test_every_protocol_runs_on_a_trained_run_and_is_quoted(embedding_run, tmp_path):
    # the recipes' path after training (train_paper -> run_protocols -> write_reports): every
    # registered protocol on the run's own pick, on its demo data
    import dataclasses

    from kerasface.config import read_config
    from kerasface.protocols import PROTOCOLS, protocol_lines, report_path, run_protocols

    options = {"megaface": {"faces": "crops"}}  # the demo MegaFace set is aligned crops
    cfg = dataclasses.replace(read_config(embedding_run / "config.json"),
                              protocols={name: options.get(name, {}) for name in PROTOCOLS.names()},
                              reported={"lfw": 0.9598})
    roots = {}
    for name in PROTOCOLS.names():
        roots[name] = PROTOCOLS.get(name).write_demo(tmp_path / name, 0)
    reports = run_protocols(cfg, embedding_run, lambda protocol: roots[protocol.name])
    assert sorted(reports) == sorted(f"run/{name}" for name in PROTOCOLS.names())
    metrics, text = protocol_lines(cfg, embedding_run)
    for name in PROTOCOLS.names():
        assert report_path(embedding_run, "run", name).is_file()
        assert PROTOCOLS.get(name).headline(reports[f"run/{name}"]) in text
    assert "paper 95.98%" in text and set(metrics) == set(reports)


def test_protocols_run_on_each_trained_model_once_and_skip_untrained_ones(embedding_run, tmp_path, capsys, monkeypatch):
    # `--model m` trains one of a recipe's protocol models: the others are skipped with a line
    # (they used to stop the run), and each model is exported once for all its protocols
    import dataclasses

    from kerasface import verify
    from kerasface.config import read_config
    from kerasface.protocols import PROTOCOLS, run_protocols

    exports = []
    real = verify.exported_model

    def counting(model, model_key=None):
        if verify._is_run_folder(Path(model)):  # an export (a SavedModel passes through)
            exports.append(model_key)
        return real(model, model_key)

    monkeypatch.setattr(verify, "exported_model", counting)
    cfg = dataclasses.replace(read_config(embedding_run / "config.json"), protocol_models=("m", "absent"),
                              protocols={name: {"faces": "crops"} if name == "megaface" else {}
                                         for name in PROTOCOLS.names()})
    roots = {name: PROTOCOLS.get(name).write_demo(tmp_path / name, 0) for name in PROTOCOLS.names()}
    reports = run_protocols(cfg, embedding_run, lambda protocol: roots[protocol.name])
    assert sorted(reports) == sorted(f"m/{name}" for name in PROTOCOLS.names())
    assert exports == ["m"]
    assert all(r["model"] == f"{embedding_run} (m)" for r in reports.values())
    assert f"protocols of absent skipped: not trained in {embedding_run}" in capsys.readouterr().err


def test_a_rejected_output_leaves_no_temporary_export(embedding_run, tmp_path, monkeypatch):
    # a run folder is exported to a temporary folder first; naming an output that is not an
    # embedding raises, and the export is removed then, not left to garbage collection
    import tempfile

    from kerasface.predict import ModelError
    from kerasface.verify import model_embedder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(ModelError, match="--output nope: not an embedding output"):
        model_embedder(embedding_run, output="nope")
    assert not list(tmp_path.glob("kerasface-verify-*"))
