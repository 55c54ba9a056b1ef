"""The training stream on TensorFlow's tf.data service: a dispatcher and two workers on localhost
serve the batches the local pipeline would (the same records, labels and layout; each worker in
its own shuffled order), and the trainer takes a step from them."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import tensorflow as tf

from kerasface.config import DataConfig
from kerasface.data.pipeline import build_dataset, read_manifest
from kerasface.data.service import start_dispatcher, start_worker

SIZE, BATCH = (32, 32), 8


@pytest.fixture(scope="module")
def service():
    dispatcher = start_dispatcher()
    workers = [start_worker(dispatcher.target) for _ in range(2)]
    yield dispatcher.target
    # the servers have no public stop (they live as long as their process); stop them for the next module
    for worker in workers:
        worker._stop()
    dispatcher._stop()


def faces(images, targets):
    """(image digest -> its labels) for each face of a batch."""
    out = {}
    for i, image in enumerate(images.numpy()):
        key = hashlib.sha1(image.astype(np.float32).tobytes()).hexdigest()
        out[key] = (int(targets["gender"][i]), int(targets["smile"][i]),
                    tuple(np.round(targets["landmarks"][i].numpy(), 5)))
    return out


@pytest.mark.timeout(180)
def test_two_workers_serve_the_local_pipelines_faces_and_labels(demo_records, service):
    data = DataConfig(augment=None, shuffle_buffer=64)
    train_records = read_manifest(demo_records)["splits"]["train"]["records"]
    local = {}
    for images, targets in build_dataset(data, "train", image_size=SIZE, channels=3, batch_size=BATCH,
                                         training=False, folder=demo_records):
        local.update(faces(images, targets))
    assert len(local) == train_records  # every training face once, told apart by its pixels

    remote_ds = build_dataset(dataclasses.replace(data, service=service), "train", image_size=SIZE, channels=3,
                              batch_size=BATCH, training=True, folder=demo_records)
    local_ds = build_dataset(data, "train", image_size=SIZE, channels=3, batch_size=BATCH, training=True,
                             folder=demo_records)
    assert remote_ds.element_spec == local_ds.element_spec
    seen = {}
    batches = 2 * train_records // BATCH  # two epochs' worth: about one from each worker
    for images, targets in remote_ds.take(batches):
        assert images.shape == (BATCH, *SIZE, 3)
        seen.update(faces(images, targets))
    assert set(seen) <= set(local)
    assert all(seen[key] == local[key] for key in seen)  # each face with its own labels
    assert len(seen) >= 0.9 * train_records


@pytest.mark.timeout(180)
def test_a_training_step_reads_its_batch_from_the_service(demo_records, service):
    import keras

    from kerasface.architectures import build_model
    from kerasface.config import ModelConfig, StageConfig, TaskConfig
    from kerasface.optim import GroupedOptimizer
    from kerasface.train import make_train_step

    tasks = (TaskConfig("smile"),)
    model_cfg = ModelConfig(arch="tcdcn_single", input_size=48, tasks=tasks, arch_kwargs={"width": 0.25},
                            stages=(StageConfig(optimizer="adam", lr=1e-3, batch_size=BATCH, steps=3),))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_model(model_cfg)
        optimizer = GroupedOptimizer(model_cfg.stages[0], 3, model)
    step = make_train_step(strategy, model, optimizer, tasks, {"smile": tf.constant(1.0)}, BATCH)
    data = DataConfig(service=service)
    ds = build_dataset(data, "train", image_size=(48, 48), channels=3, batch_size=BATCH, training=True,
                       folder=demo_records)
    iterator = iter(strategy.experimental_distribute_dataset(ds))
    losses = [float(step(iterator)[0]) for _ in range(3)]
    assert all(np.isfinite(losses))
