"""The photo export (kerasface.export.photo), the in-graph crops behind it, and cross-model ensembles.

A hand-made run holds three tiny models on three crops of gnet_snet: two smile models (schemes 1
and 5, the SNet pair, declared as an ensemble) and a gender model (scheme 2). The photo
SavedModel must answer smile as the mean of the two smile models on their NumPy crops and gender
from the gender model, from a photo and its landmarks alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from run_fixture import build_fixture_model

pytestmark = pytest.mark.timeout(300)

UNITS = {  # unit -> (model key, crop, task, validation accuracy)
    "snet1-gnet_aligned_face-all": ("snet1", "gnet_aligned_face", "smile", 0.8),
    "snet2-gnet_aligned_mouth_cheek-all": ("snet2", "gnet_aligned_mouth_cheek", "smile", 0.7),
    "gnet-gnet_unaligned_face-all": ("gnet", "gnet_unaligned_face", "gender", 0.9),
    "gnet_worse-gnet_aligned_face-all": ("gnet_worse", "gnet_aligned_face", "gender", 0.6),
}
LABELS = {"smile": ["smiling", "not_smiling"], "gender": ["male", "female"]}


def _photo():
    from kerasface.data.synthetic import render_face

    image, points, _ = render_face(3, (250, 250))
    return image, points.astype(np.float32)


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory) -> Path:
    import keras

    from kerasface.config import ModelConfig, PaperConfig, TaskConfig, write_config

    run = tmp_path_factory.mktemp("photo_run")
    keras.utils.set_random_seed(0)
    models = {}
    for unit, (key, crop, task, acc) in UNITS.items():
        folder = run / "models" / unit
        folder.mkdir(parents=True)
        size = 40 if key == "snet2" else 48  # heads of different input sizes
        build_fixture_model((size, size, 3), {task: 2}).save(folder / "model.keras")
        (folder / "unit.json").write_text(json.dumps({
            "unit": unit, "model_key": key, "arch": "fixture", "crop": crop, "input_size": [size, size],
            "channels": 3, "tasks": [{"name": task, "kind": "classification", "labels": LABELS[task]}],
            "val": {task: acc}}))
        models[key] = ModelConfig(arch="fixture", input_size=size, tasks=(TaskConfig(task),), crops=(crop,))
    cfg = PaperConfig(name="photo_fixture", models=models, ensembles={"smile": ("smile", ("snet1", "snet2"))},
                      photo_tasks=("gender", "smile"))
    write_config(cfg, run)
    return run


def test_every_in_graph_crop_matches_the_numpy_crop_within_one_grey_level():
    import tensorflow as tf

    from kerasface.faces.crops import CROPS, apply_crop, crop_tf

    image, points = _photo()
    twins = [name for name in CROPS.names() if CROPS.get(name).in_graph is not None]
    assert {"gnet_aligned_face", "gnet_unaligned_face", "gnet_unaligned_no_neck", "gnet_unaligned_with_neck",
            "gnet_aligned_mouth_cheek", "bknet_48_gray", "wang_112x96", "vggface_224"} <= set(twins)
    for name in twins:
        want, _ = apply_crop(name, image, points)
        got = crop_tf(name, tf.constant(image), tf.constant(points)).numpy()
        assert got.shape == want.shape, name
        diff = np.abs(got - want.astype(np.float32))
        assert diff.max() <= 1.0 and diff.mean() < 0.2, (name, diff.max(), diff.mean())


def test_crop_without_a_twin_is_a_one_line_error():
    import tensorflow as tf

    from kerasface.faces.crops import crop_tf

    image, points = _photo()
    with pytest.raises(ValueError, match="crop nose_centred_150: no in-graph version"):
        crop_tf("nose_centred_150", tf.constant(image), tf.constant(points))


def test_photo_selection_averages_the_ensemble_and_picks_the_best_other_head(photo_run):
    from kerasface.export.photo import select_photo_heads
    from kerasface.export.run import load_run

    selection = select_photo_heads(load_run(photo_run))
    assert selection.photo
    assert [u.name for u in selection.units_of("smile")] == ["snet1-gnet_aligned_face-all",
                                                             "snet2-gnet_aligned_mouth_cheek-all"]
    assert selection.heads["gender"].name == "gnet-gnet_unaligned_face-all"  # 0.9 beats 0.6
    assert sorted(u.name for u in selection.units) == sorted(n for n in UNITS if not n.startswith("gnet_worse"))


def test_photo_saved_model_answers_from_the_photo_and_landmarks(photo_run, tmp_path):
    import tensorflow as tf

    from kerasface.data.convert import encode
    from kerasface.data.pipeline import to_model_input
    from kerasface.export.__main__ import main as export_main
    from kerasface.faces.crops import apply_crop

    assert export_main(["saved-model", str(photo_run), "--name", "faces", "--out", str(tmp_path), "--photo"]) == 0
    folder = tmp_path / "faces" / "1"
    desc = json.loads((folder / "export.json").read_text())
    assert desc["input_mode"] == "photo_landmarks" and desc["crop"] == "original"
    assert set(desc["inputs"]["serving_default"]) == {"image_bytes", "landmarks"}
    assert desc["selection"]["ensembles"]["smile"] == ["snet1-gnet_aligned_face-all",
                                                       "snet2-gnet_aligned_mouth_cheek-all"]
    assert (folder / "assets.extra" / "tf_serving_warmup_requests").is_file()

    image, points = _photo()
    loaded = tf.saved_model.load(str(folder))
    got = loaded.signatures["serving_default"](image_bytes=tf.constant([encode(image, "png", 0)] * 2),
                                               landmarks=tf.constant(np.stack([points, points])))
    import keras

    def keras_probs(unit, task):
        _, crop, _, _ = UNITS[unit]
        model = keras.saving.load_model(photo_run / "models" / unit / "model.keras", compile=False)
        size = model.inputs[0].shape[1]
        pixels, _ = apply_crop(crop, image, points)
        x = to_model_input(tf.constant(pixels[None], tf.float32), (size, size), 3)
        return tf.nn.softmax(model(x)[task]).numpy()[0]

    smile = (keras_probs("snet1-gnet_aligned_face-all", "smile")
             + keras_probs("snet2-gnet_aligned_mouth_cheek-all", "smile")) / 2
    np.testing.assert_allclose(got["smile"].numpy(), [smile, smile], atol=2e-3)
    np.testing.assert_allclose(got["gender"].numpy()[0], keras_probs("gnet-gnet_unaligned_face-all", "gender"),
                               atol=2e-3)
    np.testing.assert_allclose(got["smile"].numpy().sum(1), 1.0, atol=1e-5)

    # kerasface.predict uses it like any other export: detection gives the landmarks
    from kerasface.predict.saved_model import SavedModelModel
    from kerasface.predict.geometry import cut_crop

    model = SavedModelModel(tmp_path / "faces")
    assert model.info.crop == "original"
    out = model.predict_faces([cut_crop(image, points, model.info.crop)])
    np.testing.assert_allclose(out["smile"][0], smile, atol=2e-3)


def test_photo_export_without_tasks_names_the_config(tmp_path, photo_run):
    from kerasface.config import read_config, write_config
    import dataclasses

    from kerasface.export.photo import select_photo_heads
    from kerasface.export.run import RunError, load_run

    cfg = dataclasses.replace(read_config(photo_run / "config.json"), photo_tasks=())
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(photo_run, copy)
    write_config(cfg, copy)
    with pytest.raises(RunError, match=r"config.json: no tasks for a photo export"):
        select_photo_heads(load_run(copy))


def test_cross_model_ensemble_is_evaluated_from_the_members_saved_predictions(tmp_path):
    from kerasface.config import ModelConfig, PaperConfig, TaskConfig
    from kerasface.evaluate import PREDICTIONS, evaluate_ensembles, save_predictions

    # two members, 4 test faces: each alone gets 2/4 right, their mean 3/4 (faces 0, 1, 3 right;
    # face 2: (0.4 + 0.55) / 2 = 0.475 for the true class 0 -> wrong)
    target = np.array([0, 1, 0, 1], np.int32)
    member_a = np.array([[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8]], np.float32)
    member_b = np.array([[0.4, 0.6], [0.1, 0.9], [0.55, 0.45], [0.6, 0.4]], np.float32)
    records = []
    for key, probs in (("a", member_a), ("b", member_b)):
        unit = f"{key}-crop_{key}-all"
        (tmp_path / "models" / unit).mkdir(parents=True)
        save_predictions(tmp_path / "models" / unit / PREDICTIONS,
                         {"test|output|smile": probs, "test|target|smile": target})
        records.append({"unit": unit, "model_key": key, "crop": f"crop_{key}", "fold": None, "input_size": [8, 8],
                        "tasks": [{"name": "smile", "kind": "classification", "labels": ["no", "yes"]}],
                        "evaluated": ["test"], "test_metrics": {}})
    assert [float(np.mean(p.argmax(1) == target)) for p in (member_a, member_b)] == [0.5, 0.5]
    cfg = PaperConfig(name="x", models={k: ModelConfig(arch="a", input_size=8, tasks=(TaskConfig("smile"),))
                                        for k in "ab"}, ensembles={"both": ("smile", ("a", "b"))})
    results, rows = evaluate_ensembles(tmp_path, cfg, records, ["test"])
    assert results["both"]["test"]["accuracy"] == 0.75
    assert rows[0][:4] == ("ensemble both", "crop_a + crop_b", "smile (mean of a, b)", "75.0%")

    # members evaluated on different faces: an error naming both units
    save_predictions(tmp_path / "models" / "b-crop_b-all" / PREDICTIONS,
                     {"test|output|smile": member_b, "test|target|smile": target[::-1].copy()})
    with pytest.raises(ValueError, match="b-crop_b-all and a-crop_a-all were not evaluated on the same test faces"):
        evaluate_ensembles(tmp_path, cfg, records, ["test"])


def test_ensemble_config_is_checked_against_the_models():
    from kerasface.config import ModelConfig, PaperConfig, StageConfig, TaskConfig, validate

    stages = (StageConfig(steps=10),)
    models = {"a": ModelConfig(arch="vgg_face", input_size=32, tasks=(TaskConfig("smile"),), stages=stages),
              "b": ModelConfig(arch="vgg_face", input_size=32, tasks=(TaskConfig("gender"),), stages=stages)}
    with pytest.raises(ValueError, match="ensembles.e: model 'b' has no task 'smile'"):
        validate(PaperConfig(name="x", models=models, ensembles={"e": ("smile", ("a", "b"))}))
    with pytest.raises(ValueError, match="ensembles.e: no model 'c'"):
        validate(PaperConfig(name="x", models=models, ensembles={"e": ("smile", ("a", "c"))}))
