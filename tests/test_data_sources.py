"""TFRecord schema v2 labels, several data sources in one stream, k-fold splits, the cache budget."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from kerasface.config import DataConfig
from kerasface.data.pipeline import Source, build_dataset, epoch_records, fits_cache
from kerasface.data import FaceAnnotation
from kerasface.data.tfrecord import MANIFEST, LabelSpec, fold_ranks, manifest_labels
from records_fixture import write_source


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("sources")
    smile = write_source(base / "smiles", {"smile": LabelSpec("class", ("no", "yes"))},
                         {"train": [{"smile": i % 2} for i in range(40)], "val": [{"smile": i % 2} for i in range(8)],
                          "test": [{"smile": 1}] * 4}, value=10)
    celeb = {"attributes": LabelSpec("multilabel", ("a", "b", "c")), "age": LabelSpec("value", ("age",)),
             "identity": LabelSpec("identity", (), count=5)}
    rows = [{"attributes": (i % 2, 1, -1), "age": (20.0 + i,), "identity": i % 5} for i in range(10)]
    faces = write_source(base / "faces", celeb, {"train": rows, "val": rows[:4], "test": rows[:2]}, value=200)
    return Source("smiles", smile), Source("faces", faces)


def test_v2_labels_round_trip_with_their_types(sources):
    _, faces = sources
    data = DataConfig(cache=False, augment=None, deterministic=True)
    images, targets = next(iter(build_dataset(data, "train", image_size=(8, 8), channels=3, batch_size=10,
                                              training=False, folder=faces.folder)))
    assert targets["attributes"].dtype == tf.int32 and targets["attributes"].shape == (10, 3)
    np.testing.assert_array_equal(targets["attributes"].numpy()[:2], [[0, 1, -1], [1, 1, -1]])
    assert targets["age"].dtype == tf.float32 and targets["age"].shape == (10, 1)
    np.testing.assert_allclose(sorted(targets["age"].numpy()[:, 0]), 20.0 + np.arange(10))
    assert sorted(targets["identity"].numpy().tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert manifest_labels(json.loads((faces.folder / MANIFEST).read_text()))["identity"].count == 5


def test_v1_manifest_reads_as_class_labels():
    labels = manifest_labels({"schema_version": 1, "attributes": {"smile": ["smiling", "not_smiling"]}})
    assert labels == {"smile": LabelSpec("class", ("smiling", "not_smiling"))}


def test_sources_mix_balanced_and_unknown_labels_are_masked(sources):
    data = DataConfig(cache=False, augment=None, deterministic=True, mixing="balance")
    ds = build_dataset(data, "train", image_size=(8, 8), channels=3, batch_size=200, training=True,
                       folder=list(sources), seed=3)
    images, targets = next(iter(ds))
    from_faces = images.numpy()[:, 0, 0, 0] > 100
    # balance: the 10-record source is drawn as often as the 40-record one (duplicated 4x)
    assert 0.4 < from_faces.mean() < 0.6
    smile, attributes, age = targets["smile"].numpy(), targets["attributes"].numpy(), targets["age"].numpy()
    assert (smile[from_faces] == -1).all() and (smile[~from_faces] >= 0).all()
    assert (attributes[~from_faces] == -1).all() and np.isnan(age[~from_faces]).all()
    assert np.isfinite(age[from_faces]).all()
    assert epoch_records(data, list(sources)) == 2 * 40
    assert epoch_records(DataConfig(mixing="size"), list(sources)) == 50


def test_a_source_gives_only_the_tasks_it_is_assigned(sources):
    smiles, faces = sources
    data = DataConfig(cache=False, augment=None, deterministic=True)
    faces_age_only = Source("faces", faces.folder, tasks=("age",))
    _, targets = next(iter(build_dataset(data, "train", image_size=(8, 8), channels=3, batch_size=10,
                                         training=False, folder=[faces_age_only])))
    assert sorted(targets) == ["age", "landmarks"] and np.isfinite(targets["age"].numpy()).all()
    # beside a source that gives them, they are there, unknown for this source's samples
    _, mixed = next(iter(build_dataset(data, "train", image_size=(8, 8), channels=3, batch_size=50,
                                       training=False, folder=[faces_age_only, faces])))
    assert (mixed["identity"].numpy()[:10] == -1).all() and (mixed["identity"].numpy()[10:] >= 0).all()


def test_evaluation_reads_one_source_or_all(sources):
    data = DataConfig(cache=False, augment=None)

    def count(split):
        ds = build_dataset(data, split, image_size=(8, 8), channels=3, batch_size=64, training=False,
                           folder=list(sources))
        return sum(int(images.shape[0]) for images, _ in ds)

    assert (count("smiles/test"), count("faces/test"), count("test")) == (4, 2, 6)
    with pytest.raises(KeyError, match="no data source 'nope'"):
        count("nope/test")


@pytest.mark.parametrize("folds", [2, 4])
def test_k_fold_splits_partition_train_and_val_stratified(sources, folds):
    smiles, _ = sources
    seen = []
    for fold in range(folds):
        data = DataConfig(cache=False, augment=None, folds=folds, fold=fold)
        labels = {}
        for split in ("train", "val"):
            ds = build_dataset(data, split, image_size=(8, 8), channels=3, batch_size=64, training=False,
                               folder=smiles.folder)
            labels[split] = np.concatenate([t["smile"].numpy() for _, t in ds])
        assert len(labels["train"]) + len(labels["val"]) == 48
        assert abs(len(labels["val"]) - 48 / folds) <= 2
        assert abs(labels["val"].mean() - 0.5) <= 1.5 / len(labels["val"])  # both classes in each fold
        seen.append(len(labels["val"]))
    assert sum(seen) == 48  # every record is held out exactly once


def test_fold_ranks_split_every_class_evenly_for_any_k():
    faces = [FaceAnnotation("x", np.zeros((5, 2)), {"smile": int(i < 30)}) for i in range(100)]
    ranks = fold_ranks(faces, "smile", seed=1)
    assert ((ranks >= 0) & (ranks < 1)).all()
    for k in (3, 4, 10):
        folds = np.floor(ranks * k).astype(int)
        for label in (0, 1):
            sizes = np.bincount(folds[np.array([f.labels["smile"] == label for f in faces])], minlength=k)
            assert sizes.max() - sizes.min() <= 1, (k, label, sizes)


def test_cache_only_within_the_memory_budget():
    data = DataConfig(cache=True, cache_budget_mb=1)
    assert fits_cache(data, 10, (48, 48), 1)  # 92 KB
    assert not fits_cache(data, 1000, (48, 48), 3)  # 27 MB
    assert not fits_cache(DataConfig(cache=False), 1, (8, 8), 1)
    # CASIA-WebFace (494,414 faces) at 112x96 RGB is about 60 GB decoded: never cached by default
    assert not fits_cache(DataConfig(), 494_414, (112, 96), 3)
    assert math.isclose(494_414 * 112 * 96 * 3 * 4 / 2**30, 59.4, rel_tol=0.01)


def test_a_label_a_source_does_not_give_may_differ_from_anothers(tmp_path, sources):
    smiles, _ = sources
    other = write_source(tmp_path / "other", {"smile": LabelSpec("class", ("yes", "no")),
                                              "gender": LabelSpec("class", ("m", "f"))},
                         {"train": [{"smile": 0, "gender": 1}] * 4}, value=50)
    data = DataConfig(cache=False, augment=None)
    with pytest.raises(ValueError, match="label 'smile' differs between sources"):
        build_dataset(data, "train", image_size=(8, 8), channels=3, batch_size=4, training=False,
                      folder=[smiles, Source("other", other)])
    ds = build_dataset(data, "train", image_size=(8, 8), channels=3, batch_size=44, training=False,
                       folder=[smiles, Source("other", other, tasks=("gender",))])
    _, targets = next(iter(ds))
    assert sorted(targets) == ["gender", "landmarks", "smile"]
    assert (targets["smile"].numpy()[40:] == -1).all() and (targets["gender"].numpy()[40:] == 1).all()
