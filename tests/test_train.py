"""The trainer: mirrored == single device, resume after a kill, falling loss, masked losses."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.config import AugmentConfig, DataConfig, ModelConfig, PaperConfig, SourceConfig, StageConfig, TaskConfig
from kerasface.data.convert import convert
from kerasface.losses import landmark_loss, masked_softmax_cross_entropy, masked_squared_hinge
from kerasface.optim import GroupedOptimizer, set_trainable
from kerasface.train import Trainer, plan_units, train_paper
from mtfl_fixture import write_tiny_mtfl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtfl")
    write_tiny_mtfl(root, n_train=40, n_test=8, size=96)
    out = root / "records" / "original"
    convert("mtfl", str(root), out, crop="original", shards=2, workers=1, progress=False)
    return out


def tiny_paper(records, steps=12, **stage):
    model = ModelConfig(
        arch="tcdcn", input_size=48, arch_kwargs={"width": 0.25},
        tasks=(TaskConfig("landmarks", kind="landmarks", num_classes=10), TaskConfig("smile"),
               TaskConfig("pose", num_classes=5, early_stop_patience=1)),
        stages=(StageConfig(optimizer="sgd", lr=0.01, batch_size=8, steps=steps, eval_every=4, **stage),),
        description="tiny")
    data = DataConfig(tfrecords=str(records.parent), deterministic=True, shuffle_buffer=16, cache=False,
                      augment=AugmentConfig())
    return PaperConfig(name="tiny", data=data, crops=("original",), models={"tiny": model})


def make_trainer(records, tmp_path, strategy, **stage):
    paper = tiny_paper(records, **stage)
    unit = plan_units(paper)[0]
    return Trainer(unit, paper, records, tmp_path, strategy, progress=False), paper


def test_masked_losses_ignore_unlabelled_examples_but_average_over_the_global_batch():
    logits = tf.constant([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [5.0, -5.0]])
    labels = tf.constant([0, 1, -1, -1])
    ce = -np.log(np.exp(2) / (np.exp(2) + 1)) - np.log(np.exp(3) / (np.exp(3) + 1))
    assert float(masked_softmax_cross_entropy(labels, logits, 4)) == pytest.approx(ce / 4, rel=1e-6)
    assert float(masked_softmax_cross_entropy(tf.constant([-1, -1, -1, -1]), logits, 4)) == 0.0
    # squared hinge: only j != y, max(0, s_j - s_y + 1)^2
    assert float(masked_squared_hinge(tf.constant([0, -1, -1, 0]), logits, 2)) == pytest.approx(0.0)  # margins met
    assert float(masked_squared_hinge(tf.constant([1, 0, -1, -1]), logits, 2)) == pytest.approx((3 ** 2 + 4 ** 2) / 2)
    assert float(landmark_loss(tf.zeros([2, 10]), tf.ones([2, 10]), 2)) == pytest.approx(0.5 * 10)


def test_two_replicas_give_the_same_loss_and_update_as_one_device(records, tmp_path):
    results = []
    for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
        strategy = tf.distribute.MirroredStrategy(devices)
        keras.utils.set_random_seed(0)
        trainer, paper = make_trainer(records, tmp_path / str(len(devices)), strategy)
        images, targets = next(iter(trainer.dataset("train", 8, training=False)))
        ds = tf.data.Dataset.from_tensors((images, targets)).repeat()
        iterator = iter(strategy.experimental_distribute_dataset(ds))
        with strategy.scope():
            optimizer = GroupedOptimizer(trainer.unit.model.stages[0], 10, trainer.model)
        step = trainer.make_train_step(trainer.model, optimizer, 8)
        loss, per_task, correct = step(iterator)
        # validation after the update sees every image once whatever the replica count
        results.append((float(loss), {k: float(v) for k, v in per_task.items()},
                        [v.numpy() for v in trainer.model.trainable_variables], trainer.validate()))
    (loss1, tasks1, w1, val1), (loss2, tasks2, w2, val2) = results
    assert val1[0] == pytest.approx(val2[0], abs=1e-6)
    for k in val1[1]:
        assert val1[1][k] == pytest.approx(val2[1][k], rel=1e-4), k
    assert loss1 == pytest.approx(loss2, rel=1e-5)
    for k in tasks1:
        assert tasks1[k] == pytest.approx(tasks2[k], rel=1e-5, abs=1e-7)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_loss_falls_on_a_small_batch(records, tmp_path):
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    trainer, _ = make_trainer(records, tmp_path, strategy)
    images, targets = next(iter(trainer.dataset("train", 8, training=False)))
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((images, targets)).repeat()))
    stage = dataclasses.replace(trainer.unit.model.stages[0], optimizer="adam", lr=1e-2)
    with strategy.scope():
        optimizer = GroupedOptimizer(stage, 100, trainer.model)
    step = trainer.make_train_step(trainer.model, optimizer, 8)
    losses = [float(step(iterator)[0]) for _ in range(100)]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_mixed_precision_trains_with_loss_scaling_and_float32_outputs(records, tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        paper = dataclasses.replace(tiny_paper(records, steps=8), mixed_precision=True)
        trainer = Trainer(plan_units(paper)[0], paper, records, tmp_path, tf.distribute.MirroredStrategy(["/cpu:0"]),
                          progress=False)
        convs = [l for l in trainer.model.layers if isinstance(l, keras.layers.Conv2D)]
        assert convs[0].compute_dtype == "float16" and convs[0].kernel.dtype == "float32"
        images, _ = next(iter(trainer.dataset("train", 8, training=False)))
        assert {k: v.dtype for k, v in trainer.model(images).items()} == {t: "float32" for t in ("landmarks", "smile", "pose")}
        trainer.run()
        reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "checkpoints" / "stage0")))
        names = list(reader.get_variable_to_shape_map())
        assert any("dynamic_scale" in n for n in names), "no loss-scale variable: the optimizer does not scale losses"
        assert all(np.isfinite(v.numpy()).all() for v in trainer.model.weights)
        assert [h["step"] for h in trainer.history] == [4, 8] and all(np.isfinite(h["val_score"]) for h in trainer.history)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_frozen_layers_and_zero_multipliers_do_not_change(records, tmp_path):
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    trainer, paper = make_trainer(records, tmp_path, strategy)
    stage = StageConfig(trainable="head_*,features", optimizer="sgd", momentum=0.0, lr=0.1, batch_size=8, steps=1,
                        lr_multipliers=(("features", 0.0),))
    set_trainable(trainer.model, stage.trainable)
    before = {l.name: [w.numpy() for w in l.weights] for l in trainer.model.layers if l.weights}
    assert {n for n in before if not trainer.model.get_layer(n).trainable} == {"conv1", "conv2", "conv3", "conv4"}
    images, targets = next(iter(trainer.dataset("train", 8, training=False)))
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((images, targets)).repeat()))
    with strategy.scope():
        optimizer = GroupedOptimizer(stage, 1, trainer.model)
    trainer.make_train_step(trainer.model, optimizer, 8)(iterator)
    for name in ("conv1", "conv2", "conv3", "conv4", "features"):  # frozen, and multiplier 0
        for old, new in zip(before[name], trainer.model.get_layer(name).weights):
            np.testing.assert_array_equal(old, new.numpy())
    assert not np.array_equal(before["head_smile"][0], trainer.model.get_layer("head_smile").kernel.numpy())
    with pytest.raises(ValueError, match="matches no layer"):
        set_trainable(trainer.model, "nothing_like_this*")


def test_a_bottleneck_stage_trains_the_heads_on_cached_features_of_the_frozen_network(records, tmp_path):
    keras.utils.set_random_seed(0)
    trainer, _ = make_trainer(records, tmp_path, tf.distribute.MirroredStrategy(["/cpu:0"]), bottleneck=True,
                              trainable="new_layers")
    before = {w.path: w.numpy() for w in trainer.model.weights}
    trainer.run()
    # the cache holds the "features" output of every training image, in the split's order
    images = np.concatenate([x.numpy() for x, _ in trainer.dataset("train", 64, training=False)])
    extractor = keras.Model(trainer.model.inputs, trainer.model.get_layer("features").output)
    cached = np.load(tmp_path / "bottlenecks.npz")
    assert cached["features"].shape == (32, 64)  # 40 faces less the 8 of val
    np.testing.assert_allclose(cached["features"], extractor(images, training=False).numpy(), rtol=1e-5, atol=1e-5)
    changed = {w.path.split("/")[0] for w in trainer.model.weights if not np.array_equal(before[w.path], w.numpy())}
    assert changed == {"head_smile", "head_pose", "head_landmarks"}
    # CPU replicas iterate their own pipelines, which start no autotuning thread (kerasface.train.input_options)
    stream = iter(trainer.distributed_train_data(trainer.unit.model.stages[0], 0))
    pipeline = stream._iterators[0]._iterator
    assert isinstance(pipeline, tf.data.Iterator) and pipeline._dataset.options().autotune.enabled is False


@pytest.mark.parametrize("optimizer,weight_decay", [("sgd", 0.1), ("adam", 0.0), ("rmsprop", 0.0)])
def test_lr_multipliers_scale_the_update_under_every_optimizer(optimizer, weight_decay):
    # Scaling the gradient (the old way) is undone by Adam/RMSprop and misses SGD's weight decay.
    def one_step(multipliers):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4,))
        outputs = {"y": keras.layers.Dense(3, name="head_y")(keras.layers.Dense(5, name="body")(inputs))}
        model = keras.Model(inputs, outputs)
        stage = StageConfig(optimizer=optimizer, lr=0.01, momentum=0.9, weight_decay=weight_decay, steps=1,
                            lr_multipliers=multipliers)
        grouped = GroupedOptimizer(stage, 1, model)
        before = [v.numpy() for v in model.trainable_variables]
        x = tf.constant(np.random.default_rng(1).normal(size=(8, 4)), tf.float32)
        with tf.GradientTape() as tape:
            scaled = grouped.scale_losses(tf.reduce_sum(tf.square(model(x)["y"] - 1.0)))
        grouped.apply(tape, scaled, model.trainable_variables)
        return {v.path: v.numpy() - b for v, b in zip(model.trainable_variables, before)}

    plain, scaled = one_step(()), one_step((("body", 0.1),))
    assert set(plain) == set(scaled)
    for path in plain:
        factor = 0.1 if path.startswith("body") else 1.0
        np.testing.assert_allclose(scaled[path], factor * plain[path], rtol=1e-4, atol=1e-9, err_msg=path)
        assert np.abs(plain[path]).max() > 0


def test_trainable_rules_select_layers_by_name_or_depth():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, name="conv_a")(inputs)
    x = keras.layers.Conv2D(2, 3, name="conv_b")(x)
    x = keras.layers.Dense(3, name="dense_c")(keras.layers.Flatten(name="flat")(x))
    model = keras.Model(inputs, [keras.layers.Dense(2, name="head_x")(x), keras.layers.Dense(2, name="head_y")(x)])

    def trained(rule):
        set_trainable(model, rule)
        return [layer.name for layer in model.layers if layer.weights and layer.trainable]

    assert trained("all") == ["conv_a", "conv_b", "dense_c", "head_x", "head_y"]
    assert trained("new_layers") == ["head_x", "head_y"]
    assert trained("from:conv_b") == ["conv_b", "dense_c", "head_x", "head_y"]
    assert trained("from:flat") == ["dense_c", "head_x", "head_y"]  # a layer without weights marks the depth too
    assert trained("top:3") == ["dense_c", "head_x", "head_y"]
    assert trained("conv_a, top:1") == ["conv_a", "head_y"]
    with pytest.raises(ValueError, match="no layer named 'conv_z'"):
        set_trainable(model, "from:conv_z")
    with pytest.raises(ValueError, match="positive integer"):
        set_trainable(model, "top:0")


@pytest.fixture
def nose_records(demo_records):
    """The demo records under the folder name the CLI looks for with data.tfrecords (one folder per crop)."""
    records = demo_records.parent / "nose_centred_150"
    if not records.exists():
        records.symlink_to(demo_records)
    return records


def assert_same_checkpoint(a, b, rtol, atol):
    assert a.keys() == b.keys() and len(a) > 20
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)


def final_weights(run_dir):
    ckpts = sorted((run_dir / "models").glob("*/checkpoints/stage0"))
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(ckpts[0])))
    # every tensor of the last checkpoint: model weights, optimizer slots, step, early-stopping state
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k}


def run_cli(run_dir, records, extra=(), wait=True, env=None):
    cmd = [sys.executable, "-m", "kerasface.train", "--paper", "canal_mtfl", "--demo", "--model", "tcdcn_multitask",
           "--crop", "nose_centred_150", "--run-dir", str(run_dir), "--no-progress", "--no-export",
           "--set", f"data.tfrecords={records.parent}", "--set", "data.deterministic=true",
           "--set", "models.tcdcn_multitask.stages.0.steps=24", "--set", "models.tcdcn_multitask.stages.0.eval_every=6",
           "--set", "models.tcdcn_multitask.stages.0.batch_size=8", "--set", "models.tcdcn_multitask.input_size=48",
           "--set", "models.tcdcn_multitask.arch_kwargs={'width': 0.25}", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    if wait:
        return subprocess.run(cmd, cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(cmd, cwd=run_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_killed_run_resumes_and_ends_with_the_same_weights(nose_records, tmp_path):
    records = nose_records
    straight = run_cli(tmp_path / "straight", records)
    assert straight.returncode == 0, straight.stderr[-2000:]
    # kill -9 once the first checkpoint exists, then run the same command again
    killed_dir = tmp_path / "killed"
    proc = run_cli(killed_dir, records, wait=False)
    deadline = time.time() + 240
    while time.time() < deadline and not list(killed_dir.glob("models/*/checkpoints/stage0/ckpt-*.index")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_done = [int(p.name.split("-")[1].split(".")[0]) for p in killed_dir.glob("models/*/checkpoints/stage0/ckpt-*.index")]
    assert steps_done and max(steps_done) < 24
    resumed = run_cli(killed_dir, records)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_checkpoint(final_weights(tmp_path / "straight"), final_weights(killed_dir), rtol=1e-5, atol=1e-6)
    # the validation history spans the kill: each evaluation once, with the uninterrupted run's scores
    unit = "tcdcn_multitask-nose_centred_150-all"
    history = [json.loads((d / "models" / unit / "unit.json").read_text())["history"]
               for d in (tmp_path / "straight", killed_dir)]
    assert [h["step"] for h in history[1]] == [6, 12, 18, 24]
    assert [h["val_score"] for h in history[1]] == pytest.approx([h["val_score"] for h in history[0]], abs=1e-5)
    metrics = json.loads((killed_dir / "metrics.json").read_text())
    assert list(metrics["models"]) == ["tcdcn_multitask-nose_centred_150-all"]
    again = run_cli(killed_dir, records)  # a finished model is not retrained
    assert "already trained" in again.stderr
    # evaluate recomputes the same metrics from the best checkpoint
    from kerasface.evaluate import main as evaluate_main

    before = metrics["models"][unit]["test"]
    assert evaluate_main([str(killed_dir)]) == 0
    after = json.loads((killed_dir / "metrics.json").read_text())["models"][unit]["test"]
    assert after["smile"]["confusion"] == before["smile"]["confusion"]
    assert after["landmarks"]["nme"] == pytest.approx(before["landmarks"]["nme"], rel=1e-5)
    assert (killed_dir / "models" / unit / "confusion_smile.png").stat().st_size > 1000
    assert "| tcdcn_multitask | nose_centred_150 | smile |" in (killed_dir / "results.md").read_text()


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_workers_train_in_lockstep_and_only_the_chief_writes_the_run_folder(nose_records, tmp_path):
    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    run_dir = tmp_path / "multi"
    procs = [run_cli(run_dir, nose_records, wait=False,
                     env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
             for i in range(2)]
    try:
        logs = [proc.communicate(timeout=400)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert "(2 replica(s), MultiWorkerMirroredStrategy, chief)" in logs[0]
    assert "(2 replica(s), MultiWorkerMirroredStrategy, not chief)" in logs[1]
    chief, worker = run_dir, run_dir / "workers" / "worker-1"
    # synchronous training: both workers end with the same weights, optimizer slots and step
    assert_same_checkpoint(final_weights(chief), final_weights(worker), rtol=1e-6, atol=1e-7)
    unit = "tcdcn_multitask-nose_centred_150-all"
    assert (chief / "metrics.json").exists() and (chief / "results.md").exists()
    assert not (worker / "metrics.json").exists() and not (worker / "results.md").exists()
    steps = [h["step"] for h in json.loads((chief / "models" / unit / "history.json").read_text())]
    assert steps == [6, 12, 18, 24]


def test_plan_units_and_selection_errors():
    from kerasface.papers import PAPERS

    cfg = PAPERS.get("canal_mtfl").config()
    units = plan_units(cfg)
    assert len(units) == 2 * (4 * 2 + 1)
    names = {u.name for u in plan_units(cfg, models=["tcdcn_single"], attributes=["smile"])}
    assert names == {"tcdcn_single-original-smile", "tcdcn_single-nose_centred_150-smile"}
    assert [u.name for u in plan_units(cfg, models=["tcdcn_multitask"], crops=["original"])] == ["tcdcn_multitask-original-all"]
    with pytest.raises(KeyError, match="unknown --model 'vgg'; canal_mtfl has: inception_bottleneck"):
        plan_units(cfg, models=["vgg"])
    with pytest.raises(KeyError, match="unknown --crop"):
        plan_units(cfg, crops=["bknet_48_gray"])


def test_missing_pretrained_weights_skip_the_unit_and_say_so_unless_it_was_asked_for(records, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    paper = tiny_paper(records, steps=4)
    pre = ModelConfig(arch="inception_v3", input_size=75, weights="imagenet", tasks=(TaskConfig("smile"),),
                      arch_kwargs={"aux_head": False}, separate_tasks=True, stages=(StageConfig(batch_size=8, steps=2),))
    paper = dataclasses.replace(paper, models={**paper.models, "pre": pre}, reported={"pre/smile/*": 0.9})
    units = plan_units(paper)
    run_dir = tmp_path / "run"
    metrics = train_paper(paper, run_dir, units, None, strategy=tf.distribute.MirroredStrategy(["/cpu:0"]),
                          progress=False)
    assert list(metrics["models"]) == ["tiny-original-all"]
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in metrics["skipped"]["pre-original-smile"]
    table = (run_dir / "results.md").read_text()
    assert "| pre | original | smile | — | not trained: " in table and "90.0%" in table
    with pytest.raises(FileNotFoundError, match="notop.h5"):
        train_paper(paper, tmp_path / "run2", units, None, strategy=tf.distribute.MirroredStrategy(["/cpu:0"]),
                    progress=False, required=frozenset({"pre"}))


def test_cli_without_the_dataset_says_where_it_looked_and_offers_demo(tmp_path, capsys, monkeypatch):
    from kerasface.train import main

    monkeypatch.delenv("KERASFACE_MTFL", raising=False)
    assert main(["--paper", "canal_mtfl", "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and "--demo" in err and "KERASFACE_MTFL" in err
    assert main(["--paper", "nope"]) == 2
    assert "unknown paper 'nope'; known: canal_mtfl" in capsys.readouterr().err


def test_precise_bn_sets_moving_statistics_to_the_mean_of_batch_statistics():
    from kerasface.train import batch_statistics_fn, recalibrate_batchnorm

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((6, 6, 3))
        conv = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(conv)
        x = keras.layers.BatchNormalization(name="frozen_bn")(x)
        model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    model.get_layer("frozen_bn").trainable = False
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(4, 50.0, "float32"))
    frozen_before = model.get_layer("frozen_bn").moving_mean.numpy().copy()

    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=i, scale=1 + i, size=(5, 6, 6, 3)).astype("float32") for i in range(3)]
    features = keras.Model(inputs, conv)
    per_batch = [features(b).numpy().reshape(-1, 4) for b in batches]
    assert recalibrate_batchnorm(model, iter(batches)) == 3
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([f.mean(0) for f in per_batch], 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([f.var(0) for f in per_batch], 0), rtol=1e-4)
    np.testing.assert_array_equal(model.get_layer("frozen_bn").moving_mean.numpy(), frozen_before)
    assert bn.momentum == 0.99  # restored
    # a kept compiled pass (as the trainer keeps one per stage) serves later recalibrations
    statistics = batch_statistics_fn(model)
    for shift in (3.0, -2.0):
        moved = [b + shift for b in batches[:2]]
        assert recalibrate_batchnorm(model, iter(moved), statistics) == 2
        expected = [features(b).numpy().reshape(-1, 4) for b in moved]
        np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([f.mean(0) for f in expected], 0), rtol=1e-4,
                                   atol=1e-5)
    assert statistics.experimental_get_tracing_count() == 1


def test_predicting_a_split_with_a_smaller_last_batch_traces_the_model_once(records, tmp_path):
    from kerasface.inference import predict_dataset, split_dataset

    trainer, _ = make_trainer(records, tmp_path, tf.distribute.MirroredStrategy(["/cpu:0"]))
    m = trainer.unit.model
    ds = split_dataset(trainer.data, trainer.sources, m.input_hw, m.channels, "train", batch_size=5)
    (outputs,), targets = predict_dataset([trainer.forward], ds, ["smile"])  # 32 faces: 6 batches of 5, one of 2
    assert outputs["smile"].shape == (32, 2) and len(targets["smile"]) == 32
    assert trainer.forward.experimental_get_tracing_count() == 1
    images = next(iter(trainer.dataset("train", 5, training=False)))[0]
    np.testing.assert_allclose(outputs["smile"][:5], trainer.model(images, training=False)["smile"], rtol=1e-5,
                               atol=1e-6)


def test_trainer_recalibrates_batchnorm_before_validation(records, tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    paper = tiny_paper(records, steps=4, precise_bn_batches=2)
    paper = dataclasses.replace(paper, models={"tiny": dataclasses.replace(
        paper.models["tiny"], arch_kwargs={"width": 0.25, "batch_norm": True})})
    trainer = Trainer(plan_units(paper)[0], paper, records, tmp_path, strategy, progress=False)
    norms = [l for l in trainer.model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert norms
    for layer in norms:
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 7.0, "float32"))
    trainer.evaluate_and_select(4, paper.models["tiny"].stages[0])
    for layer in norms:
        assert np.all(np.abs(layer.moving_mean.numpy()) < 7.0), layer.name
    assert trainer.history[0]["step"] == 4


def test_several_steps_per_call_train_as_single_steps_and_evaluate_on_the_same_steps(records, tmp_path):
    # 12 steps, evaluations every 4, logs every 10: steps_per_call 5 runs calls of 4, 4, 2, 2 (a call
    # never crosses an evaluation or a log) and must end on the weights and history of one step per
    # call, on two replicas
    results = []
    for per_call in (1, 5):
        keras.utils.set_random_seed(0)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        trainer, _ = make_trainer(records, tmp_path / str(per_call), strategy, steps_per_call=per_call)
        calls = []
        step_fn = trainer.make_train_step

        def counting(*args, **kwargs):
            inner = step_fn(*args, **kwargs)
            return lambda iterator, steps=None: calls.append(steps if steps is None else int(steps)) or inner(iterator, steps)

        trainer.make_train_step = counting
        trainer.run_stage(0, trainer.unit.model.stages[0])
        results.append(([v.numpy() for v in trainer.model.trainable_variables], trainer.history, calls))
    (w1, history1, calls1), (w5, history5, calls5) = results
    assert calls1 == [None] * 12 and calls5 == [4, 4, 2, 2]  # one step a call: no loop traced
    assert [h["step"] for h in history5] == [h["step"] for h in history1] == [4, 8, 12]
    for a, b in zip(w1, w5):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for h1, h5 in zip(history1, history5):
        assert h5["val_score"] == pytest.approx(h1["val_score"], abs=1e-5)


def test_xla_compiled_steps_train_as_plain_steps(records, tmp_path, capsys):
    # jit_compile makes the replica's step one XLA computation: same losses and weights as the
    # plain step (to float tolerance), and the loss falls; with two replicas it runs without XLA
    results = []
    for jit, devices in ((False, ["/cpu:0"]), (True, ["/cpu:0"]), (True, ["/cpu:0", "/cpu:1"])):
        keras.utils.set_random_seed(0)
        strategy = tf.distribute.MirroredStrategy(devices)
        trainer, _ = make_trainer(records, tmp_path / str(jit), strategy, jit_compile=jit)
        stage = trainer.unit.model.stages[0]
        with strategy.scope():
            optimizer = GroupedOptimizer(stage, 6, trainer.model)
        step = trainer.make_train_step(trainer.model, optimizer, 8, jit_compile=stage.jit_compile)
        iterator = iter(trainer.distributed_train_data(stage, 0))
        losses = [float(step(iterator)[0]) for _ in range(6)]
        results.append((losses, [v.numpy() for v in trainer.model.trainable_variables]))
    (plain_losses, plain_weights), (jit_losses, jit_weights), (two_losses, _) = results
    np.testing.assert_allclose(jit_losses, plain_losses, rtol=1e-3)
    assert jit_losses[-1] < jit_losses[0] and two_losses[-1] < two_losses[0]
    for a, b in zip(plain_weights, jit_weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    assert capsys.readouterr().err.count("jit_compile: 2 replicas, so the step runs without XLA") == 1


def test_stages_run_on_one_global_step_with_their_own_loss_weights(records, tmp_path):
    # stage "warmup" trains smile at weight 0 (its head must not move), stage "joint" trains it
    keras.utils.set_random_seed(0)
    paper = tiny_paper(records)
    model = paper.models["tiny"]
    stages = (StageConfig(name="warmup", optimizer="sgd", momentum=0.0, lr=0.01, batch_size=8, steps=4, eval_every=4,
                          loss_weights=(("smile", 0.0),)),
              StageConfig(name="joint", optimizer="sgd", momentum=0.0, lr=0.01, batch_size=8, steps=4, eval_every=2))
    paper = dataclasses.replace(paper, models={"tiny": dataclasses.replace(model, stages=stages)})
    trainer = Trainer(plan_units(paper)[0], paper, records, tmp_path, tf.distribute.MirroredStrategy(["/cpu:0"]),
                      progress=False)
    head = trainer.model.get_layer("head_smile")
    before = head.kernel.numpy()
    trainer.run_stage(0, stages[0])
    np.testing.assert_array_equal(head.kernel.numpy(), before)  # weight 0: no gradient reaches it
    trainer.run_stage(1, stages[1], offset=4)
    assert not np.array_equal(head.kernel.numpy(), before)
    assert [(h["stage"], h["step"], h["global_step"]) for h in trainer.history] == [
        ("warmup", 4, 4), ("joint", 2, 6), ("joint", 4, 8)]


def test_a_stage_trains_on_its_own_sources_and_init_from_copies_matching_layers(records, tmp_path):
    from kerasface.architectures import build_model, copy_matching_weights
    from kerasface.data.pipeline import Source

    paper = tiny_paper(records)
    other = Source("other", records)  # a second converted source (here: the same records)
    stage = StageConfig(name="other_data", steps=1, batch_size=8, sources=(SourceConfig("other"),))
    trainer = Trainer(plan_units(paper)[0], paper, records, tmp_path, tf.distribute.MirroredStrategy(["/cpu:0"]),
                      progress=False, all_sources={"mtfl": Source("mtfl", records), "other": other})
    assert trainer.stage_sources(stage) == [other]
    assert [s.name for s in trainer.stage_sources(StageConfig())] == [trainer.sources[0].name]
    # init_from: same-named layers with the same shapes are copied, a resized head keeps its init
    source = build_model(paper.models["tiny"])
    bigger = dataclasses.replace(paper.models["tiny"], tasks=(TaskConfig("landmarks", kind="landmarks", num_classes=10),
                                                              TaskConfig("smile", num_classes=3)))
    target = build_model(bigger)
    copied, kept = copy_matching_weights(source, target)
    assert kept == ["head_smile"] and "conv1" in copied and "head_landmarks" in copied
    np.testing.assert_array_equal(target.get_layer("conv1").kernel.numpy(), source.get_layer("conv1").kernel.numpy())
    # reinit_from: that layer and every later one keep the target's fresh weights (a branch point)
    names = [layer.name for layer in target.layers]
    point = next(n for n in names if n.startswith("conv") and n != "conv1")
    fresh = {layer.name: [w.numpy().copy() for w in layer.weights] for layer in target.layers}
    copied, kept = copy_matching_weights(source, target, reinit_from=point)
    later = set(names[names.index(point):])
    assert "conv1" in copied and point in kept and not later & set(copied)
    for name in later & set(kept):
        for before, after in zip(fresh[name], target.get_layer(name).weights):
            np.testing.assert_array_equal(before, after.numpy())
    with pytest.raises(ValueError, match="reinit_from='nowhere': no layer of that name"):
        copy_matching_weights(source, target, reinit_from="nowhere")


def test_a_model_starts_from_an_earlier_model_of_the_run(records, tmp_path, capsys):
    paper = tiny_paper(records, steps=2)
    first = paper.models["tiny"]
    second = dataclasses.replace(first, init_from="tiny", tasks=first.tasks[:2] + (TaskConfig("gender"),))
    paper = dataclasses.replace(paper, models={"tiny": first, "next": second})
    train_paper(paper, tmp_path / "run", plan_units(paper), None, records_root=tmp_path, progress=False,
                strategy=tf.distribute.MirroredStrategy(["/cpu:0"]))
    err = capsys.readouterr().err
    assert f"initialised 7 layers from {tmp_path / 'run' / 'models' / 'tiny-original-all'}; new: head_gender" in err
    bad = dataclasses.replace(paper, models={"next": second, "tiny": first})
    from kerasface.config import validate

    with pytest.raises(ValueError, match="models.next.init_from: 'tiny' must come before 'next'"):
        validate(bad)


def test_regularization_losses_count_once_whatever_the_replica_count():
    from kerasface.architectures import ARCHITECTURES
    from kerasface.train import make_train_step

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 48, 48, 1)).astype(np.float32)
    targets = {"smile": rng.integers(0, 2, 8).astype(np.int32)}
    results = []
    for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
        # ReductionToOneDevice: a second collective all-reduce strategy in one process can collide
        # with the other 2-replica test's collective instance keys (TF reuses them per process)
        strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = ARCHITECTURES.get("bknet")((48, 48, 1), {"smile": 2}, width=0.125, l2=0.01, dropout=0.0)
            optimizer = GroupedOptimizer(StageConfig(optimizer="sgd", lr=0.1, steps=1), 1, model)
        penalty = float(sum(model.losses))
        step = make_train_step(strategy, model, optimizer, (TaskConfig("smile"),), {"smile": tf.constant(1.0)}, 8)
        ds = tf.data.Dataset.from_tensors((images, targets)).repeat()
        loss, per_task, _ = step(iter(strategy.experimental_distribute_dataset(ds)))
        # summed over replicas: the task loss of the whole batch plus the penalty exactly once
        # (the task losses differ a little between 1 and 2 replicas: BatchNorm sees half-batches)
        assert float(loss) == pytest.approx(float(per_task["smile"]) + penalty, rel=1e-5)
        results.append(float(loss) - float(per_task["smile"]))
    assert results[0] == pytest.approx(results[1], rel=1e-4)


def test_k_fold_units_report_mean_and_std_and_a_checkpoint_ensemble_averages_probabilities(records, tmp_path):
    paper = tiny_paper(records, steps=4)
    model = paper.models["tiny"]
    stage = dataclasses.replace(model.stages[0], eval_every=2, keep_checkpoints=2)
    model = dataclasses.replace(model, stages=(stage,), ensemble=2,
                                tasks=(TaskConfig("smile"), TaskConfig("pose", num_classes=5)))
    paper = dataclasses.replace(paper, models={"tiny": model}, data=dataclasses.replace(paper.data, folds=2))
    units = plan_units(paper)
    assert [u.name for u in units] == ["tiny-original-all-fold0", "tiny-original-all-fold1"]
    metrics = train_paper(paper, tmp_path / "run", units, None, records_root=tmp_path, progress=False,
                          strategy=tf.distribute.MirroredStrategy(["/cpu:0"]))
    folds = [metrics["models"][u.name] for u in units]
    # the two held-out folds partition the 40 train+val records
    assert sum(f["val"]["smile"]["count"] for f in folds) == 40
    cv = metrics["cross_validation"]["tiny-original-all"]["smile"]
    assert cv["val"] == [f["val"]["smile"]["accuracy"] for f in folds]
    table = (tmp_path / "run" / "results.md").read_text()
    mean, std = 100 * np.mean(cv["val"]), 100 * np.std(cv["val"])
    assert f"{mean:.2f} +- {std:.2f}% (2 folds)" in table
    # the ensemble: the average of the two kept checkpoints' softmax probabilities
    from kerasface.architectures import build_model
    from kerasface.data.pipeline import build_dataset

    unit_dir = tmp_path / "run" / "models" / units[0].name
    state = tf.train.get_checkpoint_state(str(unit_dir / "checkpoints" / "stage0"))
    assert [p.rsplit("-", 1)[1] for p in state.all_model_checkpoint_paths] == ["2", "4"]
    probs = []
    for path in state.all_model_checkpoint_paths:
        net = build_model(model)
        tf.train.Checkpoint(model=net).restore(path).expect_partial()
        ds = build_dataset(paper.data, "test", image_size=(48, 48), channels=3, batch_size=64, training=False,
                           folder=records)
        out = [(tf.nn.softmax(net(x, training=False)["smile"]).numpy(), y["smile"].numpy()) for x, y in ds]
        probs.append(np.concatenate([o for o, _ in out]))
        labels = np.concatenate([y for _, y in out])
    keep = labels >= 0
    expected = float(np.mean(np.mean(probs, 0).argmax(-1)[keep] == labels[keep]))
    assert folds[0]["ensemble"]["size"] == 2
    assert folds[0]["ensemble"]["test"]["smile"]["accuracy"] == pytest.approx(expected)


def test_num_classes_zero_takes_the_class_count_from_the_data(records, tmp_path):
    paper = tiny_paper(records)
    model = dataclasses.replace(paper.models["tiny"], tasks=(TaskConfig("pose", num_classes=0),))
    paper = dataclasses.replace(paper, models={"tiny": model})
    from kerasface.config import validate

    validate(paper)
    trainer = Trainer(plan_units(paper)[0], paper, records, tmp_path, tf.distribute.MirroredStrategy(["/cpu:0"]),
                      progress=False)
    assert trainer.unit.model.tasks[0].num_classes == 5  # MTFL's five poses
    assert trainer.model.get_layer("head_pose").units == 5
    with pytest.raises(ValueError, match="num_classes: expected a positive number of outputs, got 0"):
        validate(dataclasses.replace(paper, models={"tiny": dataclasses.replace(
            model, tasks=(TaskConfig("landmarks", kind="landmarks", num_classes=0),))}))
