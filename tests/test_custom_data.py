"""A user's own photos: the `csv` and `folders` readers, their conversion (counts, skipped rows and
images named by file:line, class balance), --strict, and the `custom` recipe end to end: a tiny
BKNet trained on each format through `python -m kerasface.train --paper=custom`, exported as a
SavedModel that kerasface.predict reads.

The CSV fixture holds real faces (skimage's astronaut, shifted and scaled: MTCNN finds each), a
blank image (no face), a missing file and a malformed row, with a text label (smile), a numeric
class label (glasses, 0/1) and a numeric regression label (age). The folder fixture is a
train/val/test tree of small face crops (`--cropped yes`: noise with a class-dependent bright half),
with an unreadable file and a text file to ignore.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerasface.data import DATASETS
from kerasface.data.convert import main as convert_main

REAL_FACES = 10  # astronaut variants in the CSV fixture


def astronaut_variant(i: int) -> np.ndarray:
    """skimage's astronaut (one real face), flipped or not, cut and scaled differently per i."""
    import skimage.data

    image = skimage.data.astronaut()
    if i % 2:
        image = image[:, ::-1]
    left, top = 20 * (i % 3), 15 * (i % 4)
    cut = image[top:top + 400, left:left + 400]
    return np.asarray(Image.fromarray(np.ascontiguousarray(cut)).resize((160 + 8 * i,) * 2))


def write_csv_fixture(root: Path) -> Path:
    """labels.csv with REAL_FACES usable rows (split named per row), a blank photo (no face), a
    missing file, a row with too few fields, and a non-numeric age; returns the CSV's path."""
    (root / "photos").mkdir(parents=True, exist_ok=True)
    rows = ["image,smile,glasses,age,split"]
    splits = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    for i in range(REAL_FACES):
        Image.fromarray(astronaut_variant(i)).save(root / "photos" / f"astro{i}.jpg", quality=92)
        smile = "smiling" if i % 2 else "not_smiling"
        age = "" if i == 3 else str(20 + 3 * i)  # one unknown age: masked
        rows.append(f"photos/astro{i}.jpg,{smile},{i % 2},{age},{splits[i]}")
    Image.fromarray(np.full((120, 120, 3), 180, np.uint8)).save(root / "photos" / "blank.png")
    rows.append("photos/blank.png,smiling,0,30,train")  # line 12: no face
    rows.append("photos/gone.jpg,smiling,1,40,test")  # line 13: missing file
    rows.append("photos/astro0.jpg,smiling")  # line 14: too few fields
    rows.append("photos/astro1.jpg,not_smiling,1,old,val")  # line 15: age is not a number
    path = root / "labels.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def crop_image(rng: np.random.Generator, smiling: bool, size: int = 40) -> np.ndarray:
    image = rng.integers(0, 120, (size, size, 3)).astype(np.int32)
    image[size // 2:] += 110 if smiling else 0
    image[:size // 2] += 0 if smiling else 110
    return np.clip(image, 0, 255).astype(np.uint8)


FOLDER_COUNTS = {"train": 24, "val": 8, "test": 8}  # images per split, half per class


def write_folder_fixture(root: Path) -> Path:
    """train/ val/ test/ x smiling/ not_smiling/ face crops, plus one unreadable .jpg in
    train/smiling and a notes.txt (ignored)."""
    rng = np.random.default_rng(0)
    for split, count in FOLDER_COUNTS.items():
        for cls in ("smiling", "not_smiling"):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count // 2):
                Image.fromarray(crop_image(rng, cls == "smiling")).save(folder / f"{i}.png")
    (root / "train" / "smiling" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "train" / "smiling" / "notes.txt").write_text("ignored\n")
    return root


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory) -> Path:
    return write_csv_fixture(tmp_path_factory.mktemp("own_csv"))


@pytest.fixture(scope="module")
def folder_tree(tmp_path_factory) -> Path:
    return write_folder_fixture(tmp_path_factory.mktemp("own_folders") / "photos")


def convert_cli(*args: str) -> int:
    return convert_main(["--workers", "1", *args])


# ----------------------------------------------------------------------------- readers


def test_csv_reader_labels_splits_and_unusable_rows(csv_file):
    spec = DATASETS.get("csv")
    assert spec.resolve_root(csv_file.parent) == csv_file  # a folder holding labels.csv
    labels = spec.label_specs_for(csv_file, {"regression": "age"})
    assert {k: (v.type, v.names) for k, v in labels.items()} == {
        "smile": ("class", ("not_smiling", "smiling")), "glasses": ("class", ("0", "1")), "age": ("value", ("age",))}
    # without --regression a numeric column is classes too ("old" makes them sort as text)
    ages = {str(20 + 3 * i) for i in range(REAL_FACES) if i != 3} | {"30", "40", "old"}
    assert spec.label_specs_for(csv_file)["age"].names == tuple(sorted(ages))
    splits = spec.splits(csv_file, 0.2, 0, {"regression": "age"})
    usable = {k: [f for f in v if not f.problem] for k, v in splits.items()}
    assert {k: len(v) for k, v in usable.items()} == {"train": 7, "val": 2, "test": 3}  # blank, gone: readable rows
    problems = {f.listed_at: f.problem for faces in splits.values() for f in faces if f.problem}
    assert problems == {"labels.csv:14": "expected 5 fields (image,smile,glasses,age,split), got 2",
                        "labels.csv:15": "age must be a number (it is a regression target), got 'old'"}
    first = usable["train"][0]
    assert (first.path, first.listed_at, first.labels["smile"], first.labels["glasses"]) == \
        ("photos/astro0.jpg", "labels.csv:2", 0, 0)
    assert first.labels["age"] == (20.0,) and np.isnan(usable["train"][3].labels["age"][0])
    with pytest.raises(ValueError, match="dataset csv takes no option --attribute"):
        spec.splits(csv_file, 0.2, 0, {"attribute": "x"})
    with pytest.raises(ValueError, match="--regression height: no label column 'height'"):
        spec.label_specs_for(csv_file, {"regression": "height"})


def test_csv_header_errors_and_seeded_split(tmp_path):
    spec = DATASETS.get("csv")
    (tmp_path / "a.tsv").write_text("file\tbox_x\tbox_y\tsmile\n")
    with pytest.raises(ValueError, match=r"a.tsv:1: face box columns must all be there .* missing box_width"):
        spec.label_specs_for(tmp_path / "a.tsv")
    (tmp_path / "b.csv").write_text("smile,age\n1,2\n")
    with pytest.raises(ValueError, match=r"b.csv:1: expected a header with an image column"):
        spec.label_specs_for(tmp_path / "b.csv")
    # no split column: one seeded split, 20% test then val_fraction of the rest
    (tmp_path / "c.tsv").write_text("Image\tIs Smiling\n" + "".join(f"p{i}.jpg\t{i % 2}\n" for i in range(50)))
    assert list(spec.label_specs_for(tmp_path / "c.tsv")) == ["Is_Smiling"]
    splits = spec.splits(tmp_path / "c.tsv", 0.25, 3)
    assert {k: len(v) for k, v in splits.items()} == {"train": 30, "val": 10, "test": 10}
    assert splits == spec.splits(tmp_path / "c.tsv", 0.25, 3)


def test_folder_reader_classes_and_splits(folder_tree, tmp_path):
    spec = DATASETS.get("folders")
    assert spec.label_specs_for(folder_tree, {"attribute": "smile"})["smile"].names == ("not_smiling", "smiling")
    splits = spec.splits(folder_tree, 0.2, 0, {"attribute": "smile"})
    assert {k: len(v) for k, v in splits.items()} == {"train": 25, "val": 8, "test": 8}  # + broken.jpg
    assert splits["train"][0].path == "train/not_smiling/0.png" and splits["train"][0].labels == {"smile": 0}
    flat = tmp_path / "flat"  # no split level: seeded
    for cls in ("b", "a"):
        (flat / cls).mkdir(parents=True)
        for i in range(10):
            (flat / cls / f"{i}.jpg").write_bytes(b"")
    splits = spec.splits(flat, 0.25, 0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "val": 4, "test": 4}
    assert spec.label_specs_for(flat, {})["label"].names == ("a", "b")


# ----------------------------------------------------------------------------- conversion


def test_csv_converts_with_exact_counts_and_lists_every_skip(csv_file, tmp_path, capsys):
    out = tmp_path / "records"
    assert convert_cli("--dataset", "csv", "--root", str(csv_file), "--out", str(out), "--regression", "age",
                       "--crop", "bknet_48_gray", "--which-face", "largest") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: v["records"] for k, v in manifest["splits"].items()} == {"train": 6, "val": 2, "test": 2}
    skipped = {s["listed_at"]: (s["path"], s["reason"]) for s in manifest["skipped"]}
    assert skipped == {
        "labels.csv:12": ("photos/blank.png", "no face found"),
        "labels.csv:13": ("photos/gone.jpg", "no such file"),
        "labels.csv:14": ("labels.csv:14", "expected 5 fields (image,smile,glasses,age,split), got 2"),
        "labels.csv:15": ("photos/astro1.jpg", "age must be a number (it is a regression target), got 'old'"),
    }
    assert manifest["labels"]["age"] == {"type": "value", "names": ["age"]}
    assert manifest["reader_options"] == {"regression": "age"} and manifest["which_face"] == "largest"
    assert manifest["class_balance"]["smile"] == {"counts": {"not_smiling": 3, "smiling": 3},
                                                  "majority": "not_smiling", "minority": "not_smiling", "ratio": 1.0}
    assert list(manifest["sources"]) == ["labels.csv"]
    shown = capsys.readouterr().out
    assert "skipped labels.csv:13 (photos/gone.jpg): no such file" in shown
    assert "skipped labels.csv:14: expected 5 fields" in shown


def test_strict_fails_on_the_first_bad_row_naming_file_and_line(csv_file, tmp_path, capsys):
    assert convert_cli("--dataset", "csv", "--root", str(csv_file), "--out", str(tmp_path / "r"),
                       "--regression", "age", "--strict") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "error: labels.csv:14: expected 5 fields (image,smile,glasses,age,split), got 2 (--strict)"
    assert convert_cli("--dataset", "folders", "--root", str(tmp_path), "--out", str(tmp_path / "r"),
                       "--regression", "age") == 2
    assert "dataset folders takes no option --regression (its options: --attribute)" in capsys.readouterr().err


def test_folder_tree_converts_with_exact_counts(folder_tree, tmp_path):
    out = tmp_path / "records"
    assert convert_cli("--dataset", "folders", "--root", str(folder_tree), "--out", str(out),
                       "--attribute", "smile", "--cropped", "yes", "--crop", "bknet_48_gray") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: v["records"] for k, v in manifest["splits"].items()} == FOLDER_COUNTS
    assert [(s["path"], s["split"]) for s in manifest["skipped"]] == [("train/smiling/broken.jpg", "train")]
    assert manifest["splits"]["test"]["labels"] == {"smile": {"not_smiling": 4, "smiling": 4}}
    assert manifest["labels"] == {"smile": {"type": "class", "names": ["not_smiling", "smiling"]}}


# ----------------------------------------------------------------------------- the custom recipe

TINY = ["--set", "models.bknet.input_size=32", "--set", "models.bknet.arch_kwargs.width=0.25",
        "--set", "models.bknet.stages.0.steps=20", "--set", "models.bknet.stages.0.batch_size=8",
        "--set", "models.bknet.stages.0.precise_bn_batches=2", "--no-progress"]


def train_custom(tmp_path: Path, *args: str) -> Path:
    from kerasface.train import main as train_main

    run = tmp_path / "run"
    assert train_main(["--paper=custom", "--arch", "bknet", "--records", str(tmp_path / "tfrecords"),
                       "--run-dir", str(run), *args, *TINY]) == 0
    return run


def export_and_predict(run: Path, tmp_path: Path, photo) -> dict:
    from kerasface import predict
    from kerasface.export.__main__ import main as export_main

    assert export_main(["saved-model", str(run), "--name", "mine", "--out", str(tmp_path / "models")]) == 0
    (model,) = predict.load_models([str(tmp_path / "models" / "mine")])
    try:
        (result,) = predict.analyze(photo, [model], face="largest")
    finally:
        model.close()
    (face,) = result.faces
    (attributes,) = face.attributes.values()  # the one model's outputs, by task
    return {task: output.to_dict() for task, output in attributes.items()}


def test_custom_recipe_on_a_csv_trains_exports_and_predicts(csv_file, tmp_path, capsys):
    run = train_custom(tmp_path, "--data", str(csv_file), "--regression", "age", "--tasks", "smile,age",
                       "--class-weights", "balanced")
    err = capsys.readouterr().err
    assert "custom (defaults before --set; each stage prints its final plan): csv data" in err and "stage train: adam lr 0.001" in err
    assert "class balance (train) smile: not_smiling 3, smiling 3 (1:1); class weights 1,1" in err
    metrics = json.loads((run / "metrics.json").read_text())
    (unit,) = metrics["models"].values()
    assert unit["test"]["smile"]["count"] == 2 and "mae" in unit["test"]["age"]
    assert metrics["class_balance"]["csv"]["smile"]["ratio"] == 1.0
    assert "Class balance" in (run / "results.md").read_text()
    attributes = export_and_predict(run, tmp_path, astronaut_variant(0))
    assert attributes["smile"]["label"] in ("not_smiling", "smiling")
    assert set(attributes["smile"]["probabilities"]) == {"not_smiling", "smiling"}
    assert list(attributes["age"]["values"]) == ["age"]


def test_custom_recipe_on_a_folder_tree_then_fine_tuned_with_init(folder_tree, tmp_path):
    first = train_custom(tmp_path / "a", "--data", str(folder_tree), "--attribute", "smile", "--cropped", "yes")
    metrics = json.loads((first / "metrics.json").read_text())
    (unit,) = metrics["models"].values()
    assert unit["test"]["smile"]["count"] == FOLDER_COUNTS["test"]
    # fine-tune that run on the same tree as another task name: shared layers copied, the head new
    second = train_custom(tmp_path / "b", "--data", str(folder_tree), "--attribute", "mouth", "--cropped", "yes",
                          "--init", str(first))
    assert json.loads((second / "config.json").read_text())["config"]["models"]["bknet"]["init_from"].endswith(
        "bknet-bknet_48_gray-all")
    attributes = export_and_predict(second, tmp_path, astronaut_variant(2))
    assert attributes["mouth"]["label"] in ("not_smiling", "smiling")


def test_custom_recipe_errors_name_what_is_missing(csv_file, tmp_path, capsys):
    from kerasface.train import main as train_main

    assert train_main(["--paper=custom", "--data", str(csv_file)]) == 2
    assert "--paper=custom needs --arch, one of:" in capsys.readouterr().err
    assert train_main(["--paper=custom", "--arch", "bknet", "--data", str(csv_file), "--tasks", "hair"]) == 2
    assert "--tasks hair: the data has no label 'hair'; its labels: smile, glasses, age" in capsys.readouterr().err
    (tmp_path / "w.h5").write_bytes(b"")
    assert train_main(["--paper=custom", "--arch", "bknet", "--data", str(csv_file), "--init", str(tmp_path / "w.h5")]) == 2
    assert "bknet loads no weights files" in capsys.readouterr().err
    assert train_main(["--paper=canal_mtfl", "--arch", "bknet"]) == 2
    assert "--arch is an option of the custom recipe, not of canal_mtfl" in capsys.readouterr().err


def test_class_weights_scale_each_class_loss_and_are_validated():
    import dataclasses

    import tensorflow as tf

    from kerasface.config import TaskConfig
    from kerasface.tasks import balanced_class_weights, head_kind, validate_task

    assert balanced_class_weights([30, 10]) == "0.666667,2"  # n / (classes * n_c)
    assert balanced_class_weights([4, 0]) == "0.5,0"  # a class without faces: 0
    task = TaskConfig("smile", class_weights="1,3")
    kind = head_kind("classification")
    labels = tf.constant([0, 1, 1, -1])
    logits = tf.constant([[2.0, 0.0], [0.5, 0.0], [0.0, 1.0], [3.0, 0.0]])
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=[0, 1, 1], logits=logits[:3]).numpy()
    expected = (per_example[0] + 3 * per_example[1] + 3 * per_example[2]) / 4
    np.testing.assert_allclose(float(kind.loss(task, labels, logits, 4)), expected, rtol=1e-6)
    plain = float(kind.loss(dataclasses.replace(task, class_weights=""), labels, logits, 4))
    np.testing.assert_allclose(plain, per_example.sum() / 4, rtol=1e-6)
    for bad in ("1,2,3", "x,1", "-1,1"):
        with pytest.raises(ValueError, match="class_weights: expected 'balanced' or 2 non-negative"):
            validate_task(dataclasses.replace(task, class_weights=bad), "models.m.tasks.0")
    with pytest.raises(ValueError, match="only classification tasks weight classes"):
        validate_task(TaskConfig("age", kind="regression", num_classes=1, class_weights="balanced"), "t")
