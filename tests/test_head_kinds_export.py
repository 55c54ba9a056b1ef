"""Multilabel, regression and embedding heads end to end: the real trainer, the evaluation report,
the SavedModel export (each kind's post-processing inside the graph) and predict's reading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

import run_fixture
from kerasface.config import DataConfig, ModelConfig, PaperConfig, StageConfig, TaskConfig
from kerasface.data.tfrecord import LabelSpec
from kerasface.train import plan_units, train_paper
from records_fixture import write_source

ATTRIBUTES = ("Smiling", "Male", "Eyeglasses")


def image_for(split, i, row):
    rng = np.random.default_rng(hash((split, i)) % 2**32)
    pixels = rng.integers(0, 100, (8, 8, 3)).astype(np.uint8)
    pixels[:, :4] += np.uint8(100 * row["attributes"][0])  # a visible cue for the first attribute
    return tf.io.encode_png(pixels).numpy()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from kerasface.architectures import ARCHITECTURES

    if run_fixture.FIXTURE_ARCH not in ARCHITECTURES:
        ARCHITECTURES.register(run_fixture.FIXTURE_ARCH)(run_fixture.build_fixture_model)
    base = tmp_path_factory.mktemp("kinds")
    rng = np.random.default_rng(0)

    def rows(n):
        return [{"attributes": tuple(int(v) for v in rng.integers(0, 2, 3)), "age": (float(rng.uniform(18, 70)),),
                 "identity": int(i % 4)} for i in range(n)]

    labels = {"attributes": LabelSpec("multilabel", ATTRIBUTES), "age": LabelSpec("value", ("age",)),
              "identity": LabelSpec("identity", (), count=4)}
    write_source(base / "tfrecords" / "original", labels, {"train": rows(48), "val": rows(16), "test": rows(16)},
                 value=0, images=image_for)
    tasks = (TaskConfig("attributes", kind="multilabel", num_classes=3),
             TaskConfig("age", kind="regression", num_classes=1, loss_weight=0.001),
             TaskConfig("identity", kind="embedding", num_classes=4),
             TaskConfig("scores", kind="attribute_scores", num_classes=3, label="attributes"))
    model = ModelConfig(arch=run_fixture.FIXTURE_ARCH, input_size=32, tasks=tasks,
                        stages=(StageConfig(optimizer="adam", lr=3e-3, batch_size=16, steps=12, eval_every=6),))
    paper = PaperConfig(name="kinds", data=DataConfig(tfrecords=str(base / "tfrecords"), cache=False, augment=None,
                                                      deterministic=True),
                        crops=("original",), models={"m": model}, demo=True)
    run = base / "run"
    train_paper(paper, run, plan_units(paper), None, progress=False, strategy=tf.distribute.MirroredStrategy(["/cpu:0"]))
    return run


def test_reports_are_written_by_each_kind(trained):
    test = json.loads((trained / "metrics.json").read_text())["models"]["m-original-all"]["test"]
    assert set(test["attributes"]["per_attribute"]) == set(ATTRIBUTES)
    assert test["attributes"]["mean_accuracy"] == pytest.approx(np.mean(list(test["attributes"]["per_attribute"].values())))
    assert test["age"]["mae"] > 0 and test["age"]["count"] == 16
    assert set(test["scores"]["per_attribute"]) == set(ATTRIBUTES) and test["scores"]["count"]["Male"] == 16
    assert "top1" in test["identity"] or "confusion" in test["identity"]
    table = (trained / "results.md").read_text()
    assert "| m | original | attributes | mean " in table and "MAE" in table


def test_saved_model_and_predict_read_every_kind(trained, tmp_path):
    import keras

    from kerasface.export.run import load_run, select_heads
    from kerasface.export.saved_model import export_saved_model
    from kerasface.predict import load_model
    from kerasface.tasks import head_kind

    run = load_run(trained)
    path = export_saved_model(run, select_heads(run), "kinds", out=tmp_path, log=lambda *a: None)
    info = json.loads((path / "export.json").read_text())
    assert {k: v["kind"] for k, v in info["outputs"].items()} == {
        "attributes": "multilabel", "age": "regression", "identity": "embedding", "scores": "attribute_scores"}
    assert info["outputs"]["attributes"]["labels"] == list(ATTRIBUTES)
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    served = load_model(str(tmp_path / "kinds")).predict(x)
    keras_model = keras.saving.load_model(trained / "models" / "m-original-all" / "model.keras")
    raw = keras_model(x, training=False)
    features = keras_model.get_layer("features").output
    feats = keras.Model(keras_model.inputs, features)(x)
    np.testing.assert_allclose(served["attributes"], tf.sigmoid(raw["attributes"]).numpy(), atol=1e-5)
    np.testing.assert_allclose(served["age"], raw["age"].numpy(), atol=1e-4)
    np.testing.assert_allclose(served["identity"], tf.math.l2_normalize(feats, -1).numpy(), atol=1e-5)
    np.testing.assert_allclose(served["scores"], raw["scores"].numpy(), atol=1e-5)  # MSE scores: as trained
    # the embedding's own endpoint (face galleries) answers what serving_default does, from image bytes
    loaded = tf.saved_model.load(str(path))
    pngs = tf.constant([tf.io.encode_png(tf.constant(img.round().astype(np.uint8))).numpy() for img in x])
    embedded = loaded.signatures["embed_identity"](image_bytes=pngs)["embedding"].numpy()
    default = loaded.signatures["serving_default"](image=tf.constant(x.round()))["identity"].numpy()
    np.testing.assert_allclose(embedded, default, atol=1e-5)
    reading = head_kind("multilabel").read(served["attributes"][0], ATTRIBUTES)
    assert set(reading["probabilities"]) == set(ATTRIBUTES)
    from kerasface.predict.results import ValuesResult

    flat = ValuesResult("multilabel", reading).flat("kinds.attributes")
    assert {f"kinds.attributes.{a}" for a in ATTRIBUTES} <= set(flat)
