"""Ethnicity as multi-label with an operating point (flickr_depth, Sec. 4.7): the operating point of
a multilabel head (one threshold over every attribute at a target false-positive rate, chosen on
validation and applied to test), multi-label CSV columns (`--multilabel`, cells `a|b`), the
`ethnicity_csv` dataset with its nine fixed groups, and the `flickr_depth:ethnicity` variant. No
ethnicity data exists here: every table and record is written by the tests."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kerasface.metrics import operating_point

# 5 faces x 3 attributes; -1 = unknown. Known pairs, highest probability first:
#   0.95 N, 0.9 P, 0.8 P P N (a tie), 0.7 N, 0.3 N N (a tie), 0.2 P, 0.1 N   -> 4 positives, 6 negatives
# Face 3 has no known label (left out of no_label); face 2's third attribute (0.85) is unknown: it
# counts for what the face is given, never for tpr or fpr.
PROBS = np.array([[0.9, 0.8, 0.1], [0.8, 0.6, 0.3], [0.7, 0.8, 0.85], [0.4, 0.5, 0.05], [0.3, 0.2, 0.95]])
LABELS = np.array([[1, 0, 0], [1, -1, 0], [0, 1, -1], [-1, -1, -1], [0, 1, 0]])


def logits(probs):
    return np.log(probs / (1.0 - probs))


# target fpr -> (threshold, tp, fp, faces of the 4 labelled ones given nothing); by hand from the list above
HAND = {
    0.5: (0.7, 3, 3, 0),  # fpr exactly 3/6 is allowed
    0.34: (0.8, 3, 2, 0),  # the tie at 0.8 comes in whole: two positives and a negative
    0.2: (0.9, 1, 1, 2),  # 0.8 would be 2/6: faces 1 and 2 get nothing (face 2's 0.85 < 0.9)
    1 / 6: (0.9, 1, 1, 2),
    0.99: (0.2, 4, 5, 0),  # the lowest threshold with fpr <= 0.99 is the lowest positive's 0.2 (fpr 5/6)
}


@pytest.mark.parametrize("target", list(HAND))
def test_operating_point_by_hand(target):
    threshold, tp, fp, without = HAND[target]
    point = operating_point(LABELS, PROBS, target)
    assert point["threshold"] == threshold and point["chosen_on"] == "this split"
    assert (point["positives"], point["negatives"], point["true_positives"], point["false_positives"]) == (4, 6, tp, fp)
    assert point["tpr"] == tp / 4 and point["fpr"] == fp / 6 and point["target_fpr"] == target
    assert (point["samples"], point["samples_without_label"], point["no_label"]) == (4, without, without / 4)


def test_operating_point_when_only_nothing_predicted_reaches_the_target():
    # the highest probability (0.95) is a negative: no threshold at a probability has fpr 0
    point = operating_point(LABELS, PROBS, 0.0)
    assert point["threshold"] == np.nextafter(0.95, 1.0) and point["threshold"] > 0.95
    assert (point["tpr"], point["fpr"], point["true_positives"], point["false_positives"]) == (0.0, 0.0, 0, 0)
    assert (point["samples_without_label"], point["no_label"]) == (4, 1.0)


def test_a_given_threshold_is_applied_not_chosen():
    point = operating_point(LABELS, PROBS, 0.2, threshold=0.85)
    # >= 0.85: 0.95 N (face 4), 0.9 P (face 0), and face 2's unknown 0.85 (given, not scored)
    assert point["chosen_on"] == "validation split" and point["threshold"] == 0.85
    assert (point["true_positives"], point["false_positives"], point["tpr"], point["fpr"]) == (1, 1, 0.25, 1 / 6)
    assert (point["samples_without_label"], point["no_label"]) == (1, 0.25)  # face 1 only
    unknown = operating_point(-np.ones((2, 3), int), PROBS[:2], 0.2)  # no known label: nothing to choose on
    assert unknown["threshold"] is None and unknown["samples"] == 0 and unknown["tpr"] == 0.0


def test_multilabel_head_reports_and_shows_the_operating_point():
    from kerasface.config import TaskConfig
    from kerasface.tasks import head_kind

    kind = head_kind("multilabel")
    task = TaskConfig("ethnicity", kind="multilabel", num_classes=3, operating_fpr=0.34)
    report = kind.report(task, logits(PROBS).astype(np.float32), LABELS, ("a", "b", "c"), ())
    point = report["operating_point"]
    # float32 logits round-trip the probabilities closely; the tie at 0.8 stays a tie
    assert point["threshold"] == pytest.approx(0.8, abs=1e-6) and (point["true_positives"], point["false_positives"]) == (3, 2)
    # accuracy per attribute at 0.5 beside it, as before: a 3 of 4 known right, b 1 of 3, c 2 of 3
    assert report["per_attribute"] == {"a": 0.75, "b": 1 / 3, "c": 2 / 3}
    assert kind.summary(report) == "mean 58.3%; tpr 75.0% at fpr 33.3%"
    assert kind.detail(report) == "threshold 0.8 (this split), 0.00% with no attribute; lowest b 33.3%, c 66.7%, a 75.0%"
    plain = kind.report(TaskConfig("x", kind="multilabel", num_classes=3), logits(PROBS), LABELS, ("a", "b", "c"), ())
    assert "operating_point" not in plain and kind.summary(plain) == "mean 58.3%"


def test_the_validation_threshold_is_applied_to_the_other_splits():
    from kerasface.evaluate import reference_split, task_reports

    splits = ["val", "test", "csv/val", "csv/test", "fer2013/public_test"]
    assert [reference_split(s, splits) for s in splits] == [None, "val", None, "csv/val", None]
    tasks = [{"name": "ethnicity", "kind": "multilabel", "labels": ["a", "b", "c"], "operating_fpr": 0.2}]
    val = task_reports({"ethnicity": logits(PROBS)}, {"ethnicity": LABELS}, tasks, ())
    assert val["ethnicity"]["operating_point"]["threshold"] == pytest.approx(0.9)
    # test: the same faces with every probability 0.07 lower; its own choice would be 0.83
    lower = np.clip(PROBS - 0.07, 0.01, 0.99)
    assert operating_point(LABELS, lower, 0.2)["threshold"] == pytest.approx(0.83)
    test = task_reports({"ethnicity": logits(lower)}, {"ethnicity": LABELS}, tasks, (), reference=val)
    point = test["ethnicity"]["operating_point"]
    assert point["chosen_on"] == "validation split" and point["threshold"] == pytest.approx(0.9)
    # nothing reaches 0.9 any more (the highest is 0.88): no positive found, none false, no face given one
    assert (point["true_positives"], point["false_positives"], point["no_label"]) == (0, 0, 1.0)


def test_evaluate_unit_chooses_on_val_and_applies_on_test(tmp_path):
    """The evaluation of a unit end to end (records, unit.json, predictions.npz) with a stand-in
    model whose logits follow each image's brightness."""
    import tensorflow as tf

    from kerasface.config import DataConfig, PaperConfig
    from kerasface.data.tfrecord import LabelSpec
    from kerasface.evaluate import PREDICTIONS, evaluate_unit, load_predictions
    from records_fixture import write_source

    rng = np.random.default_rng(1)
    rows = {split: [{"ethnicity": tuple(int(v) for v in rng.integers(-1, 2, 3))} for _ in range(n)]
            for split, n in (("train", 4), ("val", 24), ("test", 24))}
    grey = {split: rng.integers(0, 256, len(r)) for split, r in rows.items()}

    def image(split, i, row):
        return tf.io.encode_png(np.full((8, 8, 3), grey[split][i], np.uint8)).numpy()

    folder = write_source(tmp_path / "records", {"ethnicity": LabelSpec("multilabel", ("a", "b", "c"))}, rows, 0,
                          images=image)
    unit = tmp_path / "run" / "models" / "m-original-all"
    unit.mkdir(parents=True)
    task = {"name": "ethnicity", "kind": "multilabel", "labels": ["a", "b", "c"], "operating_fpr": 0.25}
    (unit / "unit.json").write_text(json.dumps({
        "unit": unit.name, "model_key": "m", "crop": "original", "input_size": [8, 8], "channels": 3,
        "sources": [{"name": "data", "folder": str(folder), "weight": 1.0, "tasks": []}], "tasks": [task]}))

    def forward(images):
        brightness = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2, 3])[:, None] / 255.0  # images: [0, 255]
        return {"ethnicity": (brightness - tf.constant([[0.3, 0.5, 0.7]])) * 8.0}

    cfg = PaperConfig(name="p", data=DataConfig(cache=False, augment=None, deterministic=True))
    record = evaluate_unit(forward, unit, cfg)
    assert record["evaluated"] == ["val", "test"]
    chosen = {}
    for split in ("val", "test"):
        outputs, targets = load_predictions(unit / PREDICTIONS, split)
        probabilities = 1.0 / (1.0 + np.exp(-outputs["ethnicity"].astype(np.float64)))
        chosen[split] = operating_point(targets["ethnicity"], probabilities, 0.25)
    val, test = record["val_metrics"]["ethnicity"]["operating_point"], record["test_metrics"]["ethnicity"]["operating_point"]
    assert val == chosen["val"] and val["fpr"] <= 0.25
    assert test["chosen_on"] == "validation split" and test["threshold"] == val["threshold"]
    outputs, targets = load_predictions(unit / PREDICTIONS, "test")
    probabilities = 1.0 / (1.0 + np.exp(-outputs["ethnicity"].astype(np.float64)))
    assert test == operating_point(targets["ethnicity"], probabilities, 0.25, threshold=val["threshold"])
    assert test["threshold"] != chosen["test"]["threshold"]  # test's own choice would differ: it was not used


def test_operating_fpr_is_validated_naming_the_field():
    from kerasface.config import TaskConfig
    from kerasface.tasks import validate_task

    validate_task(TaskConfig("e", kind="multilabel", num_classes=9, operating_fpr=0.0103), "models.m.tasks.0")
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"models.m.tasks.0.operating_fpr: expected a false-positive rate in \[0, 1\)"):
            validate_task(TaskConfig("e", kind="multilabel", num_classes=9, operating_fpr=bad), "models.m.tasks.0")
    with pytest.raises(ValueError, match="models.m.tasks.1.operating_fpr: classification reports no operating point"):
        validate_task(TaskConfig("g", operating_fpr=0.01), "models.m.tasks.1")


# ----------------------------------------------------------------------------- multi-label CSV columns

ROWS = [  # image, ethnicity, smile, split; line numbers from 2
    ("f0.png", "white|south-asian", "yes", "train"),
    ("f1.png", "black", "no", "train"),
    ("f2.png", "", "yes", "train"),  # unknown: all -1
    ("f3.png", "east-asian | white", "no", "train"),  # spaces around values are ignored
    ("f4.png", "white||black", "yes", "train"),  # line 6: an empty value
    ("f5.png", "hispanic", "no", "val"),
    ("f6.png", "black|white", "yes", "test"),
    ("f7.png", "martian", "no", "test"),  # a value the fixed groups (ethnicity_csv) do not have
]


def write_table(root: Path) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, *_ in ROWS:
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / name)
    path = root / "labels.csv"
    path.write_text("image,ethnicity,smile,split\n" + "".join(f"{','.join(row)}\n" for row in ROWS))
    return path


def converted_vectors(folder: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """manifest, {image: its ethnicity vector} over every split."""
    import tensorflow as tf

    from kerasface.data.tfrecord import feature_spec, manifest_labels

    manifest = json.loads((folder / "manifest.json").read_text())
    spec = feature_spec(manifest_labels(manifest))
    vectors = {}
    for info in manifest["splits"].values():
        for name in info["files"]:
            for raw in tf.data.TFRecordDataset(str(folder / name)):
                example = tf.io.parse_single_example(raw, spec)
                vectors[example["image/source"].numpy().decode()] = tuple(example["label/ethnicity"].numpy().tolist())
    return manifest, vectors


def test_multilabel_csv_column_converts_to_0_1_vectors(tmp_path):
    from kerasface.data.convert import main as convert_main

    table = write_table(tmp_path / "photos")
    out = tmp_path / "records"
    assert convert_main(["--workers", "1", "--dataset", "csv", "--root", str(table), "--out", str(out),
                         "--multilabel", "ethnicity", "--cropped", "yes", "--crop", "bknet_48_gray"]) == 0
    manifest, vectors = converted_vectors(out)
    names = ["black", "east-asian", "hispanic", "martian", "south-asian", "white"]  # every value found, sorted
    assert manifest["labels"]["ethnicity"] == {"type": "multilabel", "names": names}
    assert manifest["labels"]["smile"] == {"type": "class", "names": ["no", "yes"]}
    assert manifest["reader_options"] == {"multilabel": "ethnicity"}
    assert vectors == {"f0.png": (0, 0, 0, 0, 1, 1), "f1.png": (1, 0, 0, 0, 0, 0), "f2.png": (-1,) * 6,
                       "f3.png": (0, 1, 0, 0, 0, 1), "f5.png": (0, 0, 1, 0, 0, 0), "f6.png": (1, 0, 0, 0, 0, 1),
                       "f7.png": (0, 0, 0, 1, 0, 0)}
    assert [(s["listed_at"], s["path"], s["reason"]) for s in manifest["skipped"]] == [
        ("labels.csv:6", "f4.png", "ethnicity: an empty value in 'white||black' (values are separated by |, "
                                   "e.g. white|south-asian)")]


def test_multilabel_option_errors_name_the_column(tmp_path):
    from kerasface.data import DATASETS

    table = write_table(tmp_path / "photos")
    spec = DATASETS.get("csv")
    with pytest.raises(ValueError, match="--multilabel race: no label column 'race'"):
        spec.label_specs_for(table, {"multilabel": "race"})
    with pytest.raises(ValueError, match="smile: named by both --regression and --multilabel"):
        spec.label_specs_for(table, {"multilabel": "smile", "regression": "smile"})
    with pytest.raises(ValueError, match="dataset folders takes no option --multilabel"):
        DATASETS.get("folders").splits(tmp_path, 0.2, 0, {"multilabel": "ethnicity"})


def test_ethnicity_dataset_has_nine_fixed_groups_and_its_own_variable(tmp_path, monkeypatch):
    from kerasface.data import DATASETS
    from kerasface.data.ethnicity_csv import GROUPS

    table = write_table(tmp_path / "photos")
    spec = DATASETS.get("ethnicity_csv")
    assert spec.label_specs["ethnicity"].names == GROUPS and len(GROUPS) == 9
    assert list(GROUPS) == sorted(GROUPS)  # the order the csv reader gives the same names
    monkeypatch.delenv("KERASFACE_ETHNICITY_CSV", raising=False)
    with pytest.raises(FileNotFoundError, match=r"\$KERASFACE_ETHNICITY_CSV is not set"):
        spec.resolve_root(None)
    monkeypatch.setenv("KERASFACE_ETHNICITY_CSV", str(table.parent))
    assert spec.resolve_root(None) == table
    faces = {f.path: f for split in spec.splits(table, 0.2, 0).values() for f in split}
    assert faces["f0.png"].labels["ethnicity"] == tuple(int(g in ("white", "south-asian")) for g in GROUPS)
    assert faces["f2.png"].labels["ethnicity"] == (-1,) * 9
    assert faces["f7.png"].problem == f"ethnicity: 'martian' is not one of {', '.join(GROUPS)}"
    assert faces["f7.png"].listed_at == "labels.csv:9" and faces["f4.png"].problem.startswith("ethnicity: an empty")


def test_custom_recipe_gives_a_multilabel_column_a_multilabel_head(tmp_path):
    from kerasface.papers import PAPERS, paper_config

    table = write_table(tmp_path / "photos")
    args = SimpleNamespace(data=str(table), arch="bknet", crop=[], regression=None, multilabel="ethnicity",
                           attribute=[], tasks="ethnicity,smile", class_weights=None, init=None, cropped="yes",
                           which_face=None, records=str(tmp_path / "tfrecords"))
    cfg = PAPERS.get("custom").configure(paper_config("custom"), args)
    (model,) = cfg.models.values()
    assert [(t.name, t.kind, t.num_classes) for t in model.tasks] == [("ethnicity", "multilabel", 6),
                                                                       ("smile", "classification", 2)]
    assert cfg.data.sources[0].options == {"multilabel": "ethnicity"}
    assert "--multilabel" in PAPERS.get("custom").options


# ----------------------------------------------------------------------------- flickr_depth:ethnicity


def test_flickr_depth_ethnicity_variant():
    from kerasface.config import validate
    from kerasface.data.ethnicity_csv import GROUPS
    from kerasface.evaluate import reported_for
    from kerasface.papers import paper_config
    from kerasface.papers.flickr_depth import POINTS

    base, cfg = paper_config("flickr_depth"), validate(paper_config("flickr_depth:ethnicity"))
    assert set(cfg.models) - set(base.models) == {f"ethnicity_{p}" for p in POINTS}
    (task,) = cfg.models["ethnicity_conv22"].tasks
    assert (task.kind, task.num_classes, task.operating_fpr) == ("multilabel", len(GROUPS), 0.0103)
    assert cfg.models["ethnicity_conv22"].reinit_from == "conv22" and cfg.models["ethnicity_fc"].reinit_from == ""
    assert cfg.models["ethnicity_fc"].stages[0].sources[0].dataset == "ethnicity_csv"
    source = cfg.data.sources[3]
    assert (source.dataset, source.root, source.tasks) == ("ethnicity_csv", "", ("ethnicity",))  # root: the variable
    assert cfg.branches["ethnicity"] == tuple(f"ethnicity_{p}" for p in POINTS)
    assert cfg.grids["Table 3: accuracy per branch point"]["ethnicity_fc"] == ("fc", "ethnicity")
    assert str(reported_for(cfg, "production", "ethnicity", "vggface_224")) == \
        "72.0% single-label accuracy; 72.0% tpr at fpr 1.03%"
    assert [r.value for r in reported_for(cfg, "production", "ethnicity", "*")] == [0.72, 0.7197]
    # everything else is the paper's recipe unchanged
    assert {k: m for k, m in cfg.models.items() if k in base.models} == base.models
    assert cfg.data.sources[:3] == base.data.sources and cfg.protocols == base.protocols
