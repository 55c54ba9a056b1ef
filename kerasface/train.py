"""`python -m kerasface.train --paper=KEY`: one custom training loop for every recipe.

The loop is `strategy.run` inside a `tf.function` (not `model.fit`, which breaks under
MultiWorkerMirroredStrategy and hides what the papers need): masked multi-task losses averaged over
the global batch, per-layer learning-rate multipliers, staged fine-tuning (freeze / unfreeze by layer
name), task-wise early stopping, cached-bottleneck training, SGD / RMSprop / Adam / AdamW with weight
decay and constant / step / exponential / polynomial schedules.

A run folder holds everything: config.json, one folder per trained model under models/ (checkpoints,
TensorBoard logs, best weights, model.keras, a SavedModel, plots), metrics.json and results.md.
Run the same command again after a kill and it resumes from the last checkpoint; finished models
are not retrained. SIGTERM / Ctrl-C save a checkpoint at the current step before exiting.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tqdm import tqdm

from kerasface.architectures import ARCHITECTURES
from kerasface.cli import run_command
from kerasface.config import ModelConfig, PaperConfig, StageConfig, apply_overrides, write_config, write_json
from kerasface.data import DATASETS
from kerasface.data.convert import convert
from kerasface.data.pipeline import build_dataset, read_manifest
from kerasface.evaluate import evaluate_unit, inference_fn, predict_split, write_reports
from kerasface.faces.align import LANDMARK_NAMES
from kerasface.losses import CLASSIFICATION_LOSSES, landmark_loss
from kerasface.metrics import landmark_report
from kerasface.papers import PAPERS

AUX_LOSS_WEIGHT = 0.4  # TF-slim InceptionV3 auxiliary head
DEMO_ROOT = Path("data") / "demo"


@dataclass(frozen=True)
class Unit:
    """One model trained on one crop for one attribute ("all" = its multi-task heads)."""

    model_key: str
    crop: str
    attribute: str
    model: ModelConfig

    @property
    def name(self) -> str:
        return f"{self.model_key}-{self.crop}-{self.attribute}"


def plan_units(cfg: PaperConfig, models=(), attributes=(), crops=()) -> list[Unit]:
    for key in models:
        if key not in cfg.models:
            raise KeyError(f"unknown --model {key!r}; {cfg.name} has: {', '.join(cfg.models)}")
    for crop in crops:
        if crop not in cfg.crops:
            raise KeyError(f"unknown --crop {crop!r}; {cfg.name} compares: {', '.join(cfg.crops)}")
    units = []
    for crop in crops or cfg.crops:
        for key, model in cfg.models.items():
            if (models and key not in models) or (model.crops and crop not in model.crops):
                continue
            if model.separate_tasks:
                for task in model.tasks:
                    if not attributes or task.name in attributes:
                        units.append(Unit(key, crop, task.name, dataclasses.replace(model, tasks=(task,))))
            elif not attributes or any(t.name in attributes for t in model.tasks):
                units.append(Unit(key, crop, "all", model))
    if not units:
        raise KeyError(f"--attribute {', '.join(attributes)} selects nothing in {cfg.name}")
    return units


# ----------------------------------------------------------------------------- strategy & model


def make_strategy(devices: list[str] | None = None):
    """MultiWorkerMirroredStrategy when TF_CONFIG is set, else MirroredStrategy (all GPUs, or the CPU)."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices:
        return tf.distribute.MirroredStrategy(devices)
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy([d.name for d in gpus] or ["/cpu:0"])


def worker_folder(strategy, run_dir: Path) -> tuple[Path, bool]:
    """The folder this process writes to, and whether it is the chief.

    Under MultiWorkerMirroredStrategy every worker trains, validates and checkpoints (training is
    synchronous, so the checkpoints are identical and each worker resumes from its own disk), but only
    the chief writes RUN_DIR itself, exports and reports; worker i writes RUN_DIR/workers/worker-i, so
    workers sharing a file system never write the same file.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return run_dir, True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0):
        return run_dir, True
    return run_dir / "workers" / f"{task_type}-{task_id}", False


def heads_of(model: ModelConfig) -> dict[str, int]:
    return {task.name: task.num_classes for task in model.tasks}


def build_model(model: ModelConfig):
    kwargs = dict(model.arch_kwargs)
    if model.weights:
        kwargs["weights"] = model.weights
    shape = (model.input_size, model.input_size, model.channels)
    return ARCHITECTURES.get(model.arch)(shape, heads_of(model), **kwargs)


def set_trainable(model, rule: str) -> None:
    """Freeze or unfreeze layers by name or by depth. `rule` is 'all', 'new_layers' (layers named
    head_*), or comma-separated items, each a glob over layer names, `from:NAME` (that layer and every
    layer after it, i.e. fine-tune from that depth up) or `top:N` (the N layers with weights nearest the
    output); a layer trains when any item selects it. Layer order is the functional model's
    topological order."""
    items = {"all": ["*"], "new_layers": ["head_*"]}.get(rule, [p.strip() for p in rule.split(",") if p.strip()])
    weighted = [layer for layer in model.layers if layer.weights]
    names = [layer.name for layer in weighted]
    selected = set()
    for item in items:
        if item.startswith("from:"):
            start = item[len("from:"):]
            all_names = [layer.name for layer in model.layers]
            if start not in all_names:
                raise ValueError(f"trainable item {item!r}: no layer named {start!r} in {model.name}")
            later = {layer.name for layer in model.layers[all_names.index(start):]}
            selected.update(n for n in names if n in later)
        elif item.startswith("top:"):
            count = item[len("top:"):]
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"trainable item {item!r}: N in top:N must be a positive integer")
            selected.update(names[-int(count):])
        else:
            selected.update(n for n in names if fnmatch.fnmatch(n, item))
    if not selected:
        raise ValueError(f"trainable={rule!r} matches no layer with weights in {model.name}")
    for layer in weighted:
        layer.trainable = layer.name in selected


def make_optimizer(stage: StageConfig, total_steps: int):
    lr = stage.lr
    if stage.schedule == "step":
        values = [stage.lr * stage.decay_rate**i for i in range(len(stage.boundaries) + 1)]
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(list(stage.boundaries), values)
    elif stage.schedule == "exponential":
        lr = keras.optimizers.schedules.ExponentialDecay(stage.lr, stage.decay_steps or total_steps, stage.decay_rate)
    elif stage.schedule == "polynomial":
        lr = keras.optimizers.schedules.PolynomialDecay(stage.lr, stage.decay_steps or total_steps, stage.end_lr,
                                                        stage.power)
    elif stage.schedule != "constant":
        raise ValueError(f"unknown schedule {stage.schedule!r}; known: constant, step, exponential, polynomial")
    wd = stage.weight_decay or None
    makers = {
        "sgd": lambda: keras.optimizers.SGD(lr, momentum=stage.momentum, weight_decay=wd),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr, rho=0.9, momentum=stage.momentum if stage.momentum < 1 else 0,
                                                    epsilon=1.0, weight_decay=wd),
        "adam": lambda: keras.optimizers.Adam(lr, weight_decay=wd),
        "adamw": lambda: keras.optimizers.AdamW(lr, weight_decay=stage.weight_decay or 0.004),
    }
    if stage.optimizer not in makers:
        raise ValueError(f"unknown optimizer {stage.optimizer!r}; known: {', '.join(makers)}")
    optimizer = makers[stage.optimizer]()
    if wd:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def lr_multipliers(model, stage: StageConfig) -> list[float]:
    """One multiplier per trainable variable (first matching glob over its layer name wins)."""
    owner = {}
    for layer in model.layers:
        for var in layer.trainable_weights:
            owner.setdefault(id(var), layer.name)
    mults = []
    for var in model.trainable_variables:
        name = owner.get(id(var), var.path.split("/")[0])
        mults.append(next((m for pattern, m in stage.lr_multipliers if fnmatch.fnmatch(name, pattern)), 1.0))
    return mults


# ----------------------------------------------------------------------------- losses


def total_loss(outputs, targets, tasks, active, global_batch):
    """Weighted sum of the masked task losses; returns (total, per-task losses)."""
    per_task = {}
    total = 0.0
    for task in tasks:
        if task.kind == "landmarks":
            loss = landmark_loss(targets["landmarks"], outputs[task.name], global_batch)
        else:
            fn = CLASSIFICATION_LOSSES[getattr(task, "loss", "softmax")]
            loss = fn(targets[task.name], outputs[task.name], global_batch)
            aux = outputs.get(f"{task.name}__aux") if isinstance(outputs, dict) else None
            if aux is not None:
                loss = loss + AUX_LOSS_WEIGHT * fn(targets[task.name], aux, global_batch)
        per_task[task.name] = loss
        total += task.loss_weight * active[task.name] * loss
    return total, per_task


def make_train_step(strategy, model, optimizer, tasks, active, global_batch: int, mults: list[float]):
    """A tf.function running one optimizer step on every replica; returns summed loss and metrics."""
    variables = model.trainable_variables

    def step_fn(images, targets):
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            loss, per_task = total_loss(outputs, targets, tasks, active, global_batch)
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        grads = tape.gradient(scaled, variables)
        grads = [g * m if m != 1.0 and g is not None else g for g, m in zip(grads, mults)]
        optimizer.apply_gradients(zip(grads, variables))
        correct = {
            t.name: tf.reduce_sum(tf.cast(
                (tf.argmax(outputs[t.name], -1, output_type=tf.int32) == targets[t.name]) & (targets[t.name] >= 0),
                tf.float32)) / global_batch
            for t in tasks if t.kind == "classification"
        }
        return loss, per_task, correct

    @tf.function
    def train_step(iterator):
        result = strategy.run(step_fn, args=next(iterator))
        return tf.nest.map_structure(lambda v: strategy.reduce("SUM", v, axis=None), result)

    return train_step


# ----------------------------------------------------------------------------- the trainer


def recalibrate_batchnorm(model, batches) -> int:
    """Set the moving statistics of every trainable BatchNormalization layer to the mean of the
    batch statistics it sees over `batches` (training-mode forward passes); returns the batch count.

    A momentum of n/(n+1) at the n-th batch turns Keras' exponential update into a running mean.
    Frozen layers (trainable False) do not update and keep their statistics.
    """
    norms = [layer for layer in model._flatten_layers(include_self=False)
             if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not norms:
        return 0
    saved = [layer.momentum for layer in norms]
    count = 0
    try:
        for images in batches:
            for layer in norms:
                layer.momentum = count / (count + 1)
            model(images, training=True)
            count += 1
    finally:
        for layer, momentum in zip(norms, saved):
            layer.momentum = momentum
    return count


class Trainer:
    """Trains one Unit through its stages, with checkpoints, evaluation and early stopping."""

    def __init__(self, unit: Unit, paper: PaperConfig, records: Path, unit_dir: Path, strategy, progress=True):
        self.unit, self.paper, self.records, self.dir, self.strategy = unit, paper, records, unit_dir, strategy
        self.progress = progress
        self.tasks = unit.model.tasks
        self.manifest = read_manifest(records)
        self.train_records = self.manifest["splits"]["train"]["records"]
        with strategy.scope():
            self.model = build_model(unit.model)
            self.active = {t.name: tf.Variable(1.0, trainable=False, name=f"active_{t.name}") for t in self.tasks}
            self.stale = {t.name: tf.Variable(0, trainable=False, name=f"stale_{t.name}") for t in self.tasks}
            self.best_task_loss = {t.name: tf.Variable(np.inf, trainable=False, dtype=tf.float32) for t in self.tasks}
            self.best_score = tf.Variable(-np.inf, trainable=False, dtype=tf.float32, name="best_score")
        self.forward = inference_fn(self.model)  # compiled once, reused by every validation
        self.writer = tf.summary.create_file_writer(str(unit_dir / "logs"))
        # validation history survives a kill: entries are written as they are made and read back here
        self.history_path = unit_dir / "history.json"
        self.history: list[dict] = json.loads(self.history_path.read_text()) if self.history_path.exists() else []

    # -- data
    def stage_steps(self, stage: StageConfig) -> int:
        if stage.steps:
            return stage.steps
        if stage.epochs:
            return max(1, math.ceil(stage.epochs * self.train_records / stage.batch_size))
        raise ValueError(f"{self.unit.name}: stage {stage.name!r} sets neither steps nor epochs")

    def dataset(self, split: str, batch_size: int, training: bool, input_context=None, skip_batches: int = 0):
        m = self.unit.model
        ds = build_dataset(self.paper.data, split, image_size=(m.input_size, m.input_size), channels=m.channels,
                           batch_size=batch_size, training=training, folder=self.records,
                           input_context=input_context, seed=self.paper.seed)
        return ds.skip(skip_batches) if skip_batches else ds

    def distributed_train_data(self, stage: StageConfig, start_step: int):
        global_batch = stage.batch_size
        replicas = self.strategy.num_replicas_in_sync

        def fn(ctx):
            per_replica = ctx.get_per_replica_batch_size(global_batch)
            # Each step takes one batch per local replica; skipping them replays the exact stream.
            local = replicas // ctx.num_input_pipelines
            return self.dataset("train", per_replica, True, ctx, skip_batches=start_step * local)

        return self.strategy.distribute_datasets_from_function(fn)

    # -- steps
    def make_train_step(self, model, optimizer, global_batch: int, mults: list[float]):
        return make_train_step(self.strategy, model, optimizer, self.tasks, self.active, global_batch, mults)

    def predict(self, split: str):
        m = self.unit.model
        return predict_split(self.forward, self.paper.data, self.records, (m.input_size, m.input_size), m.channels,
                             [t.name for t in self.tasks], split)

    def validate(self) -> tuple[float, dict[str, float], dict[str, float]]:
        """Validation score (mean attribute accuracy, or -NME for landmarks only), per-task loss and metric."""
        outputs, targets = self.predict("val")
        losses, metric = {}, {}
        for task in self.tasks:
            out = outputs[task.name]
            if task.kind == "landmarks":
                err = out - targets["landmarks"]
                losses[task.name] = float(0.5 * np.mean(np.sum(err**2, -1)))
                metric[task.name] = -landmark_report(targets["landmarks"], out, 1.0, 1.0)["nme"]
            else:
                labels = targets[task.name]
                keep = labels >= 0
                logp = out - np.log(np.sum(np.exp(out - out.max(-1, keepdims=True)), -1, keepdims=True)) - out.max(-1, keepdims=True)
                losses[task.name] = float(-np.mean(logp[keep, labels[keep]])) if keep.any() else 0.0
                metric[task.name] = float(np.mean(out[keep].argmax(-1) == labels[keep])) if keep.any() else 0.0
        attrs = [metric[t.name] for t in self.tasks if t.kind == "classification"]
        score = float(np.mean(attrs)) if attrs else float(np.mean(list(metric.values())))
        return score, losses, metric

    # -- the loop
    def run(self):
        stages = self.unit.model.stages
        for index, stage in enumerate(stages):
            self.run_stage(index, stage)
        best = self.dir / "best.weights.h5"
        if best.exists():
            self.model.load_weights(best)
        self.writer.flush()
        return self.model

    def run_stage(self, index: int, stage: StageConfig):
        model = self.model
        steps = self.stage_steps(stage)
        set_trainable(model, stage.trainable)
        train_model = self.bottleneck_head() if stage.bottleneck else model
        with self.strategy.scope():
            optimizer = make_optimizer(stage, steps)
            if self.paper.mixed_precision:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            step = tf.Variable(0, trainable=False, dtype=tf.int64, name="step")
            optimizer.build(train_model.trainable_variables)
        ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, best_score=self.best_score,
                                   active=self.active, stale=self.stale, best_task_loss=self.best_task_loss)
        manager = tf.train.CheckpointManager(ckpt, str(self.dir / "checkpoints" / f"stage{index}"), max_to_keep=2)
        if manager.latest_checkpoint:
            ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        elif index > 0:
            previous = tf.train.latest_checkpoint(str(self.dir / "checkpoints" / f"stage{index - 1}"))
            if previous:
                tf.train.Checkpoint(model=model).restore(previous).expect_partial()
        start = int(step.numpy())
        # an evaluation logged after the restored checkpoint is redone by this run
        self.history = [h for h in self.history if h["stage"] != stage.name or h["step"] <= start]
        if start >= steps:
            return
        epochs = steps * stage.batch_size / self.train_records
        resume = f", resuming at step {start}" if start else ""
        print(f"  stage {stage.name}: {steps} steps of {stage.batch_size} ({epochs:.3g} epochs), {stage.optimizer} "
              f"lr {stage.lr:g} {stage.schedule}, trainable {stage.trainable}{resume}", file=sys.stderr)
        if stage.bottleneck:
            iterator = iter(self.strategy.experimental_distribute_dataset(self.bottleneck_data(stage, start)))
        else:
            iterator = iter(self.distributed_train_data(stage, start))
        train_step = self.make_train_step(train_model, optimizer, stage.batch_size, lr_multipliers(train_model, stage))
        eval_every = max(1, min(stage.eval_every, steps))

        stop = {"now": False}

        def on_signal(signum, frame):
            stop["now"] = True

        previous_handler = signal.signal(signal.SIGTERM, on_signal)
        bar = tqdm(total=steps, initial=start, desc=f"{self.unit.name} [{stage.name}]", unit="step",
                   disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
        seen, tick = 0, time.perf_counter()
        try:
            for s in range(start, steps):
                loss, per_task, correct = train_step(iterator)
                step.assign(s + 1)
                seen += stage.batch_size
                bar.update(1)
                if (s + 1) % 10 == 0 or s + 1 == steps:
                    rate = seen / max(time.perf_counter() - tick, 1e-9)
                    post = {"loss": f"{float(loss):.3f}", "img/s": f"{rate:.0f}"}
                    post.update({f"{k}_acc": f"{float(v):.2f}" for k, v in correct.items()})
                    bar.set_postfix(post, refresh=False)
                    with self.writer.as_default(step=s + 1):
                        tf.summary.scalar("train/loss", loss)
                        for k, v in per_task.items():
                            tf.summary.scalar(f"train/loss_{k}", v)
                if (s + 1) % eval_every == 0 or s + 1 == steps:
                    self.evaluate_and_select(s + 1, stage)
                    manager.save(checkpoint_number=s + 1)
                if stop["now"]:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            manager.save(checkpoint_number=int(step.numpy()))
            bar.close()
            print(f"\ninterrupted: checkpoint saved at step {int(step.numpy())} of {stage.name}; "
                  "run the same command to resume", file=sys.stderr)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
        bar.close()

    def precise_bn(self, stage: StageConfig) -> None:
        """Recompute BatchNorm statistics on a fixed, seeded sample of un-augmented training batches."""
        if stage.precise_bn_batches <= 0 or stage.bottleneck:
            return
        m = self.unit.model
        data = dataclasses.replace(self.paper.data, augment=None, cache=False, deterministic=True)
        ds = build_dataset(data, "train", image_size=(m.input_size, m.input_size), channels=m.channels,
                           batch_size=stage.batch_size, training=True, folder=self.records,
                           seed=self.paper.seed + 1)
        recalibrate_batchnorm(self.model, (images for images, _ in ds.take(stage.precise_bn_batches)))

    def evaluate_and_select(self, step: int, stage: StageConfig) -> None:
        self.precise_bn(stage)
        score, losses, metric = self.validate()
        entry = {"step": step, "stage": stage.name, "val_score": score,
                 **{f"val_loss_{k}": v for k, v in losses.items()}, **{f"val_{k}": v for k, v in metric.items()}}
        self.history.append(entry)
        write_json(self.history_path, self.history)
        shown = " ".join(f"{k} {v:.3f}" for k, v in metric.items())
        tqdm.write(f"{self.unit.name} step {step}: val score {score:.4f} | {shown}", file=sys.stderr)
        with self.writer.as_default(step=step):
            tf.summary.scalar("val/score", score)
            for k, v in losses.items():
                tf.summary.scalar(f"val/loss_{k}", v)
        if score > float(self.best_score.numpy()):
            self.best_score.assign(score)
            tmp = self.dir / "best.tmp.weights.h5"
            self.model.save_weights(tmp)
            os.replace(tmp, self.dir / "best.weights.h5")
        # Task-wise early stopping: an auxiliary task whose validation loss stalls stops training.
        for task in self.tasks:
            if task.early_stop_patience <= 0 or float(self.active[task.name].numpy()) == 0.0:
                continue
            if losses[task.name] < float(self.best_task_loss[task.name].numpy()):
                self.best_task_loss[task.name].assign(losses[task.name])
                self.stale[task.name].assign(0)
            else:
                self.stale[task.name].assign_add(1)
                if int(self.stale[task.name].numpy()) >= task.early_stop_patience:
                    self.active[task.name].assign(0.0)
                    print(f"\n{self.unit.name}: task {task.name} stopped early at step {step}", file=sys.stderr)

    # -- bottleneck training (features of the frozen backbone computed once)
    def bottleneck_head(self):
        features = self.model.get_layer("features").output
        inputs = keras.Input(shape=features.shape[1:], name="bottleneck")
        outputs = {t.name: self.model.get_layer(f"head_{t.name}")(inputs) for t in self.tasks}
        return keras.Model(inputs, outputs, name=f"{self.model.name}_head")

    def bottleneck_data(self, stage: StageConfig, start_step: int):
        cache = self.dir / "bottlenecks.npz"
        if not cache.exists():
            extractor = keras.Model(self.model.inputs, self.model.get_layer("features").output)
            feats, labels = [], {}
            for images, targets in self.dataset("train", 64, training=False):
                feats.append(extractor(images, training=False).numpy())
                for k, v in targets.items():
                    labels.setdefault(k, []).append(v.numpy())
            tmp = self.dir / "bottlenecks.tmp.npz"
            np.savez(tmp, features=np.concatenate(feats), **{k: np.concatenate(v) for k, v in labels.items()})
            os.replace(tmp, cache)
        data = dict(np.load(cache))
        feats = data.pop("features")
        ds = tf.data.Dataset.from_tensor_slices((feats, data)).shuffle(len(feats), seed=self.paper.seed).repeat()
        return ds.batch(stage.batch_size, drop_remainder=True).skip(start_step)


# ----------------------------------------------------------------------------- data preparation


def ensure_records(paper: PaperConfig, crop: str, data_root: str | None, records_root: Path, demo: bool) -> Path:
    """The converted shards for `crop`, converting the dataset (or rendering the demo set) if needed."""
    prefix = "demo-" if demo else ""
    folder = Path(paper.data.tfrecords) / crop if paper.data.tfrecords else records_root / f"{prefix}{paper.data.dataset}-{crop}"
    try:
        read_manifest(folder)
        return folder
    except FileNotFoundError:
        pass
    if demo:
        from kerasface.data.synthetic import write_demo_mtfl

        data_root = str(DEMO_ROOT / paper.data.dataset)
        if not (Path(data_root) / "training.txt").exists():
            print(f"rendering the synthetic demo dataset (not real faces) into {data_root}", file=sys.stderr)
            write_demo_mtfl(data_root, num_train=2000, num_test=400, seed=paper.seed)
    print(f"converting {paper.data.dataset} ({crop}) into {folder}", file=sys.stderr)
    convert(paper.data.dataset, data_root, folder, crop=crop, val_fraction=paper.data.val_fraction,
            seed=paper.data.split_seed, shards=paper.data.num_shards)
    return folder


# ----------------------------------------------------------------------------- main


def unit_record(unit: Unit, records: Path, labels: dict) -> dict:
    m = unit.model
    return {
        "unit": unit.name, "model_key": unit.model_key, "arch": m.arch, "crop": unit.crop,
        "attribute": unit.attribute, "input_size": [m.input_size, m.input_size], "channels": m.channels,
        "records": str(records),
        "tasks": [{"name": t.name, "kind": t.kind,
                   "labels": list(labels.get(t.name, [])) if t.kind == "classification"
                   else list(LANDMARK_NAMES)} for t in m.tasks],
    }


def train_paper(cfg: PaperConfig, run_dir: Path, units: list[Unit], data_root: str | None,
                records_root: Path = Path("tfrecords"), strategy=None, progress: bool = True,
                required: frozenset[str] = frozenset()) -> dict:
    """Train, evaluate and export every unit; a unit whose pretrained weights file is missing is
    skipped and reported (results.md says so) unless its model key is in `required`."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = strategy or make_strategy()
    run_dir, chief = worker_folder(strategy, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, run_dir)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)  # its class prints as CollectiveAllReduceStrategy
    name = ("MultiWorkerMirroredStrategy, " + ("chief" if chief else "not chief")) if multi_worker else type(strategy).__name__
    print(f"run folder: {run_dir}  ({strategy.num_replicas_in_sync} replica(s), {name})", file=sys.stderr)
    records = {crop: ensure_records(cfg, crop, data_root, records_root, cfg.demo) for crop in {u.crop for u in units}}
    skipped_path = run_dir / "skipped.json"
    skipped = json.loads(skipped_path.read_text()) if skipped_path.exists() else {}
    for number, unit in enumerate(units, start=1):
        unit_dir = run_dir / "models" / unit.name
        if (unit_dir / "unit.json").exists() and "test" in json.loads((unit_dir / "unit.json").read_text()):
            print(f"[{number}/{len(units)}] {unit.name}: already trained, skipping", file=sys.stderr)
            continue
        print(f"[{number}/{len(units)}] {unit.name}: {unit.model.description}", file=sys.stderr)
        started = time.perf_counter()
        keras.utils.set_random_seed(cfg.seed)
        try:
            trainer = Trainer(unit, cfg, records[unit.crop], unit_dir, strategy, progress)
        except FileNotFoundError as exc:
            if not unit.model.weights or unit.model_key in required:
                raise
            skipped[unit.name] = str(exc)
            print(f"[{number}/{len(units)}] {unit.name}: skipped: {exc}", file=sys.stderr)
            continue
        skipped.pop(unit.name, None)
        unit_dir.mkdir(parents=True, exist_ok=True)
        model = trainer.run()
        model.save(unit_dir / "model.keras")
        record = unit_record(unit, records[unit.crop], trainer.manifest["attributes"])
        record["train_seconds"] = round(time.perf_counter() - started, 1)
        record["history"] = trainer.history
        write_json(unit_dir / "unit.json", record)
        # the validation function serves here too: it already holds the best weights, no new trace
        evaluate_unit(trainer.forward, unit_dir, cfg)  # on workers too: it marks the unit done for a rerun
        if chief:
            model.export(str(unit_dir / "saved_model"), verbose=False)
    write_json(run_dir / "skipped.json", skipped)
    return write_reports(run_dir) if chief else {}


def main(argv: list[str] | None = None) -> int:
    keys = ", ".join(PAPERS.names())
    parser = argparse.ArgumentParser(prog="python -m kerasface.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Recipes and their model keys:\n" + "\n".join(
                                         f"  {name}: {', '.join(PAPERS.get(name)().models)}" for name in PAPERS.names()))
    parser.add_argument("--paper", required=True, help=f"recipe: {keys}")
    parser.add_argument("--demo", action="store_true", help="run on the built-in synthetic demo data, reduced size")
    parser.add_argument("--data", help="dataset folder (default: the dataset's environment variable, e.g. $KERASFACE_MTFL)")
    parser.add_argument("--model", action="append", default=[], help="train only this model key (repeatable)")
    parser.add_argument("--attribute", action="append", default=[], help="train only this attribute (repeatable)")
    parser.add_argument("--crop", action="append", default=[], help="train only this crop (repeatable)")
    parser.add_argument("--run-dir", help="run folder (default: runs/<paper>[-demo])")
    parser.add_argument("--records", default="tfrecords", help="folder of converted TFRecords (default: tfrecords)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. models.tcdcn_multitask.stages.0.lr=0.001")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    def body() -> None:
        cfg = apply_overrides(PAPERS.get(args.paper)(demo=args.demo), args.set)
        units = plan_units(cfg, args.model, args.attribute, args.crop)
        if not args.demo:
            DATASETS.get(cfg.data.dataset).resolve_root(args.data)  # fail early with where we looked
        run_dir = Path(args.run_dir or Path("runs") / (cfg.name + ("-demo" if args.demo else "")))
        print(json.dumps({"paper": cfg.name, "units": [u.name for u in units]}), file=sys.stderr)
        train_paper(cfg, run_dir, units, args.data, Path(args.records), progress=not args.no_progress,
                    required=frozenset(args.model))

    return run_command(body)

if __name__ == "__main__":
    sys.exit(main())
