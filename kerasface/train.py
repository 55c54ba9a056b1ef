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
import contextlib
import dataclasses
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

from kerasface.architectures import build_model, check_weights, copy_matching_weights, load_trained_model
from kerasface.cli import run_command
from kerasface.config import (ModelConfig, PaperConfig, SourceConfig, StageConfig, apply_overrides, data_sources,
                              fold_data, read_config, target_key, validate, write_config, write_json)
from kerasface.data import DATASETS
from kerasface.data.convert import CROPPED, WHICH_FACE, convert
from kerasface.data.pipeline import (Source, as_sources, build_dataset, epoch_records, fits_cache, pipeline_options,
                                     read_manifest, train_class_counts, union_labels)
from kerasface.evaluate import evaluate_unit, evaluated_splits, write_reports
from kerasface.inference import ensemble_functions, inference_fn, predict_dataset, split_dataset
from kerasface.optim import GroupedOptimizer, set_trainable
from kerasface.papers import PAPERS, paper_config
from kerasface.production import PRODUCTION, assemble_production
from kerasface.tasks import balanced_class_weights, head_kind

AUX_LOSS_WEIGHT = 0.4  # TF-slim InceptionV3 auxiliary head
DEMO_ROOT = Path("data") / "demo"
DEMO_DONE = ".kerasface-demo-complete"  # written last: a half-rendered demo set is rendered again


@dataclass(frozen=True)
class Unit:
    """One model trained on one crop for one attribute ("all" = its multi-task heads), on one fold
    of a k-fold cross-validation when the paper's data has folds."""

    model_key: str
    crop: str
    attribute: str
    model: ModelConfig
    fold: int | None = None

    @property
    def name(self) -> str:
        fold = "" if self.fold is None else f"-fold{self.fold}"
        return f"{self.model_key}-{self.crop}-{self.attribute}{fold}"


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
    if cfg.data.folds > 1:  # k-fold cross-validation: every unit once per held-out fold
        units = [dataclasses.replace(u, fold=i) for u in units for i in range(cfg.data.folds)]
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


# ----------------------------------------------------------------------------- losses


def total_loss(outputs, targets, tasks, active, global_batch):
    """Weighted sum of the masked task losses (each task's head kind owns its loss); returns
    (total, per-task losses). An auxiliary output "T__aux" adds AUX_LOSS_WEIGHT times T's loss."""
    per_task = {}
    total = 0.0
    for task in tasks:
        kind = head_kind(task.kind)
        target = targets[target_key(task)]
        loss = kind.loss(task, target, outputs[task.name], global_batch)
        aux = outputs.get(f"{task.name}__aux") if isinstance(outputs, dict) else None
        if aux is not None:
            loss = loss + AUX_LOSS_WEIGHT * kind.loss(task, target, aux, global_batch)
        per_task[task.name] = loss
        total += task.loss_weight * active[task.name] * loss
    return total, per_task


def make_train_step(strategy, model, optimizer: GroupedOptimizer, tasks, active, global_batch: int,
                    jit_compile: bool = False):
    """A tf.function running one optimizer step on every replica; returns summed loss and metrics.
    `jit_compile`: each replica's step is one XLA computation (the input iterator stays outside); one
    replica only, as the update's cross-replica sum cannot run inside it (and XLA on a CPU cannot
    reach another logical CPU's variables): with several, the step runs without XLA, said once."""
    variables = model.trainable_variables

    def step_fn(images, targets):
        with tf.GradientTape(persistent=optimizer.persistent_tape) as tape:
            outputs = model(images, training=True)
            loss, per_task = total_loss(outputs, targets, tasks, active, global_batch)
            if model.losses:  # kernel regularizers (BKNet's lambda * ||W||^2), once over all replicas
                loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
            scaled = optimizer.scale_losses(loss)
        optimizer.apply(tape, scaled, variables)
        shown = {}
        for t in tasks:
            value = head_kind(t.kind).batch_accuracy(t, targets[target_key(t)], outputs[t.name], global_batch)
            if value is not None:
                shown[t.name] = value
        return loss, per_task, shown

    if jit_compile and strategy.num_replicas_in_sync > 1:
        print(f"  jit_compile: {strategy.num_replicas_in_sync} replicas, so the step runs without XLA", file=sys.stderr)
        jit_compile = False
    replica_step = tf.function(step_fn, jit_compile=True) if jit_compile else step_fn

    def one_step(iterator):
        result = strategy.run(replica_step, args=next(iterator))
        return tf.nest.map_structure(lambda v: strategy.reduce("SUM", v, axis=None), result)

    @tf.function
    def train_step(iterator, steps=None):
        """`steps` (a scalar tensor, default 1) optimizer steps in one call; the last one's figures."""
        result = one_step(iterator)
        if steps is not None:
            for _ in tf.range(steps - 1):
                result = one_step(iterator)
        return result

    return train_step


# ----------------------------------------------------------------------------- class balance


def with_class_count(task, labels: dict):
    """A task with num_classes 0 (as many classes as the data has: identities) given its count
    from the label specs; other tasks as they are."""
    if task.num_classes:
        return task
    key = target_key(task)
    count = (len(labels[key].names) or labels[key].count) if key in labels else 0
    if count < 2:
        raise ValueError(f"task {task.name}: num_classes 0 takes the class count from label {key!r}, "
                         f"but the data gives {count}")
    return dataclasses.replace(task, num_classes=count)


def weighted_tasks(tasks, sources: list[Source]):
    """The tasks with class_weights "balanced" resolved from the sources' training counts; prints
    the class balance of every class label the tasks learn (and the weights, where weighted)."""
    resolved, labels = [], union_labels(sources)
    for task in tasks:
        key = target_key(task)
        names = list(labels[key].names) if key in labels else []
        task = with_class_count(task, labels)
        if head_kind(task.kind).has_classes and names:
            counts = train_class_counts(sources, key)
            weights = balanced_class_weights(counts) if task.class_weights == "balanced" else task.class_weights
            task = dataclasses.replace(task, class_weights=weights)
            shown = ", ".join(f"{n} {c}" for n, c in zip(names, counts))
            ratio = f"{max(counts) / min(counts):.3g}:1" if counts and min(counts) else "a class has no training face"
            print(f"  class balance (train) {task.name}: {shown} ({ratio})"
                  + (f"; class weights {weights}" if weights else ""), file=sys.stderr)
        resolved.append(task)
    return tuple(resolved)


# ----------------------------------------------------------------------------- the trainer


def batchnorm_layers(model) -> list:
    """The BatchNormalization layers whose statistics training updates (trainable ones)."""
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def batch_statistics_fn(model):
    """A compiled training-mode forward pass returning the moving (mean, variance) of each layer in
    its `layers` (the model's trainable BatchNormalization layers when it was made) after it; for
    `recalibrate_batchnorm`, which traces it with momentum 0 (Keras reads the momentum at trace
    time), so the returned statistics are the batch's own."""
    norms = batchnorm_layers(model)

    @tf.function
    def statistics(images):
        model(images, training=True)
        return [(layer.moving_mean, layer.moving_variance) for layer in norms]

    statistics.layers = norms
    return statistics


def recalibrate_batchnorm(model, batches, statistics=None) -> int:
    """Set the moving statistics of every trainable BatchNormalization layer to the mean of the
    batch statistics it sees over `batches` (training-mode forward passes); returns the batch count.

    `statistics`: a `batch_statistics_fn(model)` kept from an earlier call with the same layers
    trainable (tracing it again costs seconds for a big net). Frozen layers (trainable False) do not
    update and keep their statistics.
    """
    statistics = statistics or batch_statistics_fn(model)
    norms = statistics.layers
    if not norms:
        return 0
    saved = [layer.momentum for layer in norms]
    sums, count = None, 0
    try:
        for layer in norms:
            layer.momentum = 0.0
        for images in batches:
            values = [(m.numpy(), v.numpy()) for m, v in statistics(images)]
            sums = values if sums is None else [(a + m, b + v) for (a, b), (m, v) in zip(sums, values)]
            count += 1
    finally:
        for layer, momentum in zip(norms, saved):
            layer.momentum = momentum
    for layer, (mean, variance) in zip(norms, sums or ()):
        layer.moving_mean.assign(mean / count)
        layer.moving_variance.assign(variance / count)
    return count


def input_options(strategy) -> tf.distribute.InputOptions:
    """CPU replicas iterate their own pipelines. By default TensorFlow feeds each replica through a
    per-device copy of the worker's stream; built without pipeline_options, its autotuner brings
    back the end-of-stage stall (measured: 4-36 s at 4 of 5 stage ends of the canal demo). On GPUs
    that copy prefetches onto the device, so the default stays (and with it the rare stall)."""
    on_cpu = all(tf.DeviceSpec.from_string(d).device_type == "CPU" for d in strategy.extended.worker_devices)
    if not (on_cpu and isinstance(strategy, tf.distribute.MirroredStrategy)):  # PER_REPLICA: Mirrored only
        return tf.distribute.InputOptions()
    return tf.distribute.InputOptions(experimental_fetch_to_device=False,
                                      experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA)


class Trainer:
    """Trains one Unit through its stages, with checkpoints, evaluation and early stopping."""

    def __init__(self, unit: Unit, paper: PaperConfig, records, unit_dir: Path, strategy, progress=True,
                 all_sources: dict[str, Source] | None = None, init_from: Path | None = None):
        """records: the converted folder, or the unit's Sources; all_sources: every converted source
        by dataset (for stages with their own data); init_from: a trained unit folder or .keras file."""
        self.unit, self.paper, self.dir, self.strategy = unit, paper, unit_dir, strategy
        self.init_from = init_from
        self.data = fold_data(paper.data, unit.fold)
        self.progress = progress
        self.sources = as_sources(records)
        self.tasks = weighted_tasks(unit.model.tasks, self.sources)
        self.unit = unit = dataclasses.replace(unit, model=dataclasses.replace(unit.model, tasks=self.tasks))
        self.all_sources = all_sources or {s.name: s for s in self.sources}
        self.label_names = {name: list(spec.names) for name, spec in union_labels(self.sources).items()}
        self.train_records = epoch_records(self.data, self.sources)
        with strategy.scope():
            self.model = build_model(unit.model)
            self.active = {t.name: tf.Variable(1.0, trainable=False, name=f"active_{t.name}") for t in self.tasks}
            self.stale = {t.name: tf.Variable(0, trainable=False, name=f"stale_{t.name}") for t in self.tasks}
            self.best_task_loss = {t.name: tf.Variable(np.inf, trainable=False, dtype=tf.float32) for t in self.tasks}
            self.best_score = tf.Variable(-np.inf, trainable=False, dtype=tf.float32, name="best_score")
        self.forward = inference_fn(self.model)  # compiled once, reused by every validation
        self.precise_bn_inputs: dict[tuple, tuple] = {}  # precise BN's batches, its compiled pass (precise_bn)
        self.eval_data: dict[str, tf.data.Dataset] = {}  # per split, see predict
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

    def dataset(self, split: str, batch_size: int, training: bool, input_context=None, sources=None):
        m = self.unit.model
        return build_dataset(self.data, split, image_size=m.input_hw, channels=m.channels,
                             batch_size=batch_size, training=training, folder=sources or self.sources,
                             input_context=input_context, seed=self.paper.seed)

    def stage_sources(self, stage: StageConfig) -> list[Source]:
        """The training data of `stage`: its own sources, or the paper's."""
        if not stage.sources:
            return self.sources
        return [self.all_sources[s.dataset] for s in stage.sources]

    def stage_tasks(self, stage: StageConfig):
        """The tasks with this stage's loss weights."""
        weights = dict(stage.loss_weights)
        return tuple(dataclasses.replace(t, loss_weight=weights.get(t.name, t.loss_weight)) for t in self.tasks)

    def distributed_train_data(self, stage: StageConfig, start_step: int):
        """`stage`'s training batches from step `start_step` on, one pipeline per worker (or per CPU
        replica, input_options): images, or a bottleneck stage's cached features."""
        global_batch = stage.batch_size
        replicas = self.strategy.num_replicas_in_sync
        sources = self.stage_sources(stage)
        features = self.bottleneck_features() if stage.bottleneck else None

        def fn(ctx):
            per_replica = ctx.get_per_replica_batch_size(global_batch)
            if features is None:
                ds = self.dataset("train", per_replica, True, ctx, sources=sources)
            else:
                ds = tf.data.Dataset.from_tensor_slices(features).shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
                ds = ds.shuffle(len(features[0]), seed=self.paper.seed).repeat()
                ds = ds.batch(per_replica, drop_remainder=True).with_options(pipeline_options(deterministic=True))
            # Each step takes one batch per local replica; skipping them replays the exact stream.
            local = replicas // ctx.num_input_pipelines
            return ds.skip(start_step * local) if start_step else ds

        return self.strategy.distribute_datasets_from_function(fn, input_options(self.strategy))

    # -- steps
    def make_train_step(self, model, optimizer: GroupedOptimizer, global_batch: int, tasks=None,
                        jit_compile: bool = False):
        return make_train_step(self.strategy, model, optimizer, tasks or self.tasks, self.active, global_batch,
                               jit_compile)

    def predict(self, split: str):
        if split not in self.eval_data:  # built once: every validation iterates the same dataset
            m = self.unit.model
            self.eval_data[split] = split_dataset(self.data, self.sources, m.input_hw, m.channels, split)
        outputs, targets = predict_dataset([self.forward], self.eval_data[split], [t.name for t in self.tasks])
        return outputs[0], targets

    def validate(self) -> tuple[float, dict[str, float], dict[str, float]]:
        """Validation score (the mean score of the tasks that count in it, see HeadKind.counts_in_score),
        per-task loss (the training loss, over the whole split) and per-task score."""
        outputs, targets = self.predict("val")
        losses, metric = {}, {}
        for task in self.tasks:
            kind = head_kind(task.kind)
            out, target = outputs[task.name], targets[target_key(task)]
            losses[task.name] = float(kind.loss(task, tf.constant(target), tf.constant(out), max(len(out), 1)))
            metric[task.name] = kind.score(task, out, target)
        counted = [metric[t.name] for t in self.tasks if head_kind(t.kind).counts_in_score]
        score = float(np.mean(counted or list(metric.values())))
        return score, losses, metric

    # -- the loop
    def run(self):
        stages = self.unit.model.stages
        offset = 0  # one global step across stages: TensorBoard and curves.png draw them end to end
        for index, stage in enumerate(stages):
            self.run_stage(index, stage, offset)
            offset += self.stage_steps(stage)
        best = self.dir / "best.weights.h5"
        if best.exists():
            self.model.load_weights(best)
        self.writer.flush()
        return self.model

    def run_stage(self, index: int, stage: StageConfig, offset: int = 0):
        model = self.model
        steps = self.stage_steps(stage)
        set_trainable(model, stage.trainable)
        train_model = self.bottleneck_head() if stage.bottleneck else model
        with self.strategy.scope():
            optimizer = GroupedOptimizer(stage, steps, train_model, self.paper.mixed_precision)
            step = tf.Variable(0, trainable=False, dtype=tf.int64, name="step")
        ckpt = tf.train.Checkpoint(model=model, step=step, best_score=self.best_score, active=self.active,
                                   stale=self.stale, best_task_loss=self.best_task_loss, **optimizer.slots())
        manager = tf.train.CheckpointManager(ckpt, str(self.dir / "checkpoints" / f"stage{index}"),
                                             max_to_keep=max(1, stage.keep_checkpoints))
        if manager.latest_checkpoint:
            ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        elif index > 0:
            previous = tf.train.latest_checkpoint(str(self.dir / "checkpoints" / f"stage{index - 1}"))
            if previous:
                tf.train.Checkpoint(model=model).restore(previous).expect_partial()
        elif self.init_from is not None:
            loaded, kept = copy_matching_weights(load_trained_model(self.init_from), model, self.unit.model.reinit_from)
            print(f"  initialised {len(loaded)} layers from {self.init_from}"
                  + (f"; new: {', '.join(kept)}" if kept else ""), file=sys.stderr)
        start = int(step.numpy())
        # an evaluation logged after the restored checkpoint is redone by this run
        self.history = [h for h in self.history if h["stage"] != stage.name or h["step"] <= start]
        if start >= steps:
            return
        epochs = steps * stage.batch_size / self.train_records
        resume = f", resuming at step {start}" if start else ""
        print(f"  stage {stage.name}: {steps} steps of {stage.batch_size} ({epochs:.3g} epochs), {stage.optimizer} "
              f"lr {stage.lr:g} {stage.schedule}, trainable {stage.trainable}{resume}", file=sys.stderr)
        iterator = iter(self.distributed_train_data(stage, start))
        train_step = self.make_train_step(train_model, optimizer, stage.batch_size, self.stage_tasks(stage),
                                          stage.jit_compile)
        per_epoch = math.ceil(self.train_records / stage.batch_size)
        eval_every = max(1, min(stage.eval_every or per_epoch, steps))

        stop = {"now": False}

        def on_signal(signum, frame):
            stop["now"] = True

        previous_handler = signal.signal(signal.SIGTERM, on_signal)
        bar = tqdm(total=steps, initial=start, desc=f"{self.unit.name} [{stage.name}]", unit="step",
                   disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
        seen, tick = 0, time.perf_counter()
        log_every = 10
        try:
            s = start
            while s < steps:
                # a call ends on the next log, evaluation or last step, whichever comes first
                n = min(stage.steps_per_call, steps - s, log_every - s % log_every, eval_every - s % eval_every)
                # one step per call traces no loop (a loop traces the step twice: before it and in it)
                many = (tf.constant(n, tf.int32),) if stage.steps_per_call > 1 else ()
                loss, per_task, correct = train_step(iterator, *many)
                s += n
                step.assign(s)
                seen += n * stage.batch_size
                bar.update(n)
                if s % log_every == 0 or s == steps:
                    rate = seen / max(time.perf_counter() - tick, 1e-9)
                    post = {"loss": f"{float(loss):.3f}", "img/s": f"{rate:.0f}"}
                    post.update({f"{k}_acc": f"{float(v):.2f}" for k, v in correct.items()})
                    bar.set_postfix(post, refresh=False)
                    with self.writer.as_default(step=offset + s):
                        tf.summary.scalar("train/loss", loss)
                        for k, v in per_task.items():
                            tf.summary.scalar(f"train/loss_{k}", v)
                if s % eval_every == 0 or s == steps:
                    self.evaluate_and_select(s, stage, offset)
                    manager.save(checkpoint_number=s)
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
        # stages that update the same layers from the same batches share them and their compiled pass
        # (wang_joint's two phases): tracing it again costs seconds for a deep net
        key = (stage.trainable, stage.batch_size, stage.precise_bn_batches,
               tuple(s.name for s in self.stage_sources(stage)))
        if key not in self.precise_bn_inputs:
            m = self.unit.model
            data = dataclasses.replace(self.data, augment=None, cache=False, deterministic=True)
            ds = build_dataset(data, "train", image_size=m.input_hw, channels=m.channels,
                               batch_size=stage.batch_size, training=True, folder=self.stage_sources(stage),
                               seed=self.paper.seed + 1).map(lambda images, _: images).take(stage.precise_bn_batches)
            # the same batches every time: kept decoded when they fit, else re-read (and the
            # shuffle buffer refilled) at each evaluation
            if fits_cache(self.data, stage.precise_bn_batches * stage.batch_size, m.input_hw, m.channels):
                ds = ds.cache()
            # a stage's `trainable` decides which layers update
            self.precise_bn_inputs[key] = ds, batch_statistics_fn(self.model)
        recalibrate_batchnorm(self.model, *self.precise_bn_inputs[key])

    def evaluate_and_select(self, step: int, stage: StageConfig, offset: int = 0) -> None:
        self.precise_bn(stage)
        score, losses, metric = self.validate()
        entry = {"step": step, "global_step": offset + step, "stage": stage.name, "val_score": score,
                 **{f"val_loss_{k}": v for k, v in losses.items()}, **{f"val_{k}": v for k, v in metric.items()}}
        self.history.append(entry)
        write_json(self.history_path, self.history)
        shown = " ".join(f"{k} {v:.3f}" for k, v in metric.items())
        tqdm.write(f"{self.unit.name} step {step}: val score {score:.4f} | {shown}", file=sys.stderr)
        with self.writer.as_default(step=offset + step):
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

    def bottleneck_features(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The frozen network's "features" output and the targets of every training image, computed
        once per unit and cached in bottlenecks.npz."""
        cache = self.dir / "bottlenecks.npz"
        if not cache.exists():
            # compiled: an eager call dispatches InceptionV3's ops one by one (3x slower at 75x75)
            extract = inference_fn(keras.Model(self.model.inputs, self.model.get_layer("features").output))
            feats, labels = [], {}
            for images, targets in self.dataset("train", 64, training=False):
                feats.append(extract(images).numpy())
                for k, v in targets.items():
                    labels.setdefault(k, []).append(v.numpy())
            tmp = self.dir / "bottlenecks.tmp.npz"
            np.savez(tmp, features=np.concatenate(feats), **{k: np.concatenate(v) for k, v in labels.items()})
            os.replace(tmp, cache)
        data = dict(np.load(cache))
        return data.pop("features"), data


# ----------------------------------------------------------------------------- data preparation


def demo_root(dataset: str, seed: int, write_demo=None) -> Path:
    """The folder of a dataset's (or a protocol's: `write_demo`) synthetic demo copy, rendered on first use."""
    write_demo = write_demo or DATASETS.get(dataset).write_demo
    if write_demo is None:
        raise FileNotFoundError(f"dataset {dataset} has no demo copy; point --data at the real one")
    root = DEMO_ROOT / dataset
    if not (root / DEMO_DONE).exists():
        print(f"rendering the synthetic {dataset} demo dataset (not real faces) into {root}", file=sys.stderr)
        write_demo(root, seed)
        (root / DEMO_DONE).write_text("complete\n")
    return root


def protocol_root(cfg: PaperConfig, protocol) -> Path:
    """A protocol's data: its demo copy under --demo, else where its environment variable says."""
    return demo_root(protocol.name, cfg.seed, protocol.write_demo) if cfg.demo else protocol.resolve_root(None)


def ensure_records(paper: PaperConfig, source: SourceConfig, crop: str, data_root: str | None, records_root: Path,
                   demo: bool) -> Path:
    """The converted shards of one source at `crop`, converting the dataset (or rendering its demo
    copy) if needed."""
    crop = source.crop or crop
    prefix = "demo-" if demo else ""
    single = len(data_sources(paper.data)) == 1  # data.tfrecords and --data name the one source
    given = bool(paper.data.tfrecords and single)  # converted records the config names: used as they are
    folder = Path(paper.data.tfrecords) / crop if given else records_root / f"{prefix}{source.dataset}-{crop}"
    try:
        manifest = read_manifest(folder)
    except FileNotFoundError:
        manifest = None
    if manifest is not None and given:
        if manifest.get("order") != "shuffled":
            print(f"warning: {folder} was converted in the reader's order (possibly sorted by class); "
                  f"convert it again for a well-mixed training stream", file=sys.stderr)
        return folder
    spec = DATASETS.get(source.dataset)
    root = source.root or (data_root if single else None)
    if manifest is not None:
        stale = "" if demo else stale_reason(manifest, source, spec, root)
        if not stale and manifest.get("order") == "shuffled":
            return folder
        # before records were written in random order they could be sorted by class
        print(f"{folder}: {stale or 'converted in the reader order'}; converting again", file=sys.stderr)
    if demo:
        root = str(demo_root(source.dataset, paper.seed))
    print(f"converting {source.dataset} ({crop}) into {folder}", file=sys.stderr)
    convert(source.dataset, root, folder, crop=crop, val_fraction=paper.data.val_fraction,
            seed=paper.data.split_seed, shards=paper.data.num_shards, cropped=CROPPED[source.cropped],
            options=dict(source.options), which_face=WHICH_FACE[source.which_face])
    return folder


def stale_reason(manifest: dict, source: SourceConfig, spec, root: str | None) -> str:
    """Why converted records no longer match their source ("" when they do): other reader options
    or face rule, or, for data-dependent formats (a user's CSV, edited often), a changed list file."""
    if manifest.get("reader_options", {}) != dict(source.options):
        return f"converted with the reader options {manifest.get('reader_options', {})}, not {dict(source.options)}"
    if manifest.get("which_face", "centre") != WHICH_FACE[source.which_face]:
        return f"converted with --which-face {manifest.get('which_face', 'centre')}, not {source.which_face}"
    cropped = CROPPED[source.cropped]
    if cropped is not None and bool(manifest.get("cropped")) != cropped:
        return f"converted with --cropped {'yes' if manifest.get('cropped') else 'no'}, not {source.cropped}"
    if spec.labels_of is None or "sources" not in manifest:
        return ""
    from kerasface.data.tfrecord import sha256_file

    path = spec.resolve_root(root)
    folder = path if path.is_dir() else path.parent
    now = {str(p.relative_to(folder)): sha256_file(p) for p in spec.source_files(path)}
    return "its source files changed since the conversion" if now != manifest["sources"] else ""


def unit_sources(paper: PaperConfig, crop: str, data_root: str | None, records_root: Path,
                 sources=None) -> list[Source]:
    """Converted `sources` (default: the paper's data sources) at `crop`, converted on first use."""
    converted = []
    for source in data_sources(paper.data) if sources is None else sources:
        folder = ensure_records(paper, source, crop, data_root, records_root, paper.demo or source.synthetic)
        converted.append(Source(source.dataset, folder.resolve(), source.weight, source.tasks))
    return converted


def stage_only_sources(paper: PaperConfig) -> list[SourceConfig]:
    """Sources that only some stages train on (not among the paper's data sources)."""
    known = {s.dataset for s in data_sources(paper.data)}
    extra = {}
    for model in paper.models.values():
        for stage in model.stages:
            extra.update({s.dataset: s for s in stage.sources if s.dataset not in known})
    return list(extra.values())


def init_folder(unit: Unit, run_dir: Path) -> Path | None:
    """Where a unit's `init_from` weights are: an earlier model of the run (same crop; the same
    attribute, else its multi-task unit), or a path."""
    ref = unit.model.init_from
    if not ref:
        return None
    for attribute in (unit.attribute, "all"):
        folder = run_dir / "models" / f"{ref}-{unit.crop}-{attribute}"
        if (folder / "model.keras").is_file():
            return folder
    if Path(ref).exists():
        return Path(ref)
    raise FileNotFoundError(f"{unit.name}: init_from={ref!r} is neither a trained model of this run "
                            f"(no {run_dir / 'models' / f'{ref}-{unit.crop}-*'}/model.keras) nor a path")


# ----------------------------------------------------------------------------- main


def unit_record(unit: Unit, sources: list[Source], labels: dict) -> dict:
    m = unit.model
    return {
        "unit": unit.name, "model_key": unit.model_key, "arch": m.arch, "crop": unit.crop,
        "attribute": unit.attribute, "fold": unit.fold, "input_size": list(m.input_hw), "channels": m.channels,
        # absolute paths: the run folder works from any directory; "records" is the first source's
        "records": str(sources[0].folder),
        "sources": [{"name": s.name, "folder": str(s.folder), "weight": s.weight, "tasks": list(s.tasks)}
                    for s in sources],
        "tasks": [{"name": t.name, "kind": t.kind, **({"label": t.label} if t.label else {}),
                   **({"operating_fpr": t.operating_fpr} if t.operating_fpr else {}),
                   "labels": head_kind(t.kind).label_names(t, labels.get(target_key(t), []))} for t in m.tasks],
    }


class PhaseClock:
    """Wall seconds per phase of a run (data, training, evaluation, ...), printed when it ends, so a
    user sees where the time went."""

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def summary(self) -> str:
        parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.seconds.items())
        return f"time: {parts}; total {time.perf_counter() - self.started:.0f} s"


def train_paper(cfg: PaperConfig, run_dir: Path, units: list[Unit], data_root: str | None,
                records_root: Path = Path("tfrecords"), strategy=None, progress: bool = True,
                required: frozenset[str] = frozenset(), clock: PhaseClock | None = None) -> dict:
    """Train, evaluate and export every unit; a unit whose pretrained weights file is missing is
    skipped and reported (results.md says so) unless its model key is in `required`. `clock`
    collects the seconds of each phase."""
    clock = clock or PhaseClock()
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
    crops = sorted({u.crop for u in units})
    with clock.phase("data"):
        records = {crop: unit_sources(cfg, crop, data_root, records_root) for crop in crops}
        extra = {crop: unit_sources(cfg, crop, data_root, records_root, stage_only_sources(cfg)) for crop in crops}
    skipped_path = run_dir / "skipped.json"
    skipped = json.loads(skipped_path.read_text()) if skipped_path.exists() else {}
    for number, unit in enumerate(units, start=1):
        unit_dir = run_dir / "models" / unit.name
        if (unit_dir / "unit.json").exists() and evaluated_splits(json.loads((unit_dir / "unit.json").read_text())):
            print(f"[{number}/{len(units)}] {unit.name}: already trained, skipping", file=sys.stderr)
            continue
        print(f"[{number}/{len(units)}] {unit.name}: {unit.model.description}", file=sys.stderr)
        started = time.perf_counter()
        keras.utils.set_random_seed(cfg.seed)
        try:
            everything = {s.name: s for s in records[unit.crop] + extra[unit.crop]}
            trainer = Trainer(unit, cfg, records[unit.crop], unit_dir, strategy, progress, everything,
                              init_folder(unit, run_dir))
        except FileNotFoundError as exc:
            if not unit.model.weights or unit.model_key in required:
                raise
            skipped[unit.name] = str(exc)
            print(f"[{number}/{len(units)}] {unit.name}: skipped: {exc}", file=sys.stderr)
            continue
        skipped.pop(unit.name, None)
        unit_dir.mkdir(parents=True, exist_ok=True)
        with clock.phase("training"):
            model = trainer.run()
        model.save(unit_dir / "model.keras")
        unit = trainer.unit  # its tasks as trained (class counts taken from the data)
        record = unit_record(unit, records[unit.crop], trainer.label_names)
        record["train_seconds"] = round(time.perf_counter() - started, 1)
        record["history"] = trainer.history
        write_json(unit_dir / "unit.json", record)
        # the validation function serves here too: it already holds the best weights, no new trace
        # on workers too: it marks the unit done for a rerun
        with clock.phase("evaluation"):
            evaluate_unit(trainer.forward, unit_dir, cfg, ensemble=ensemble_functions(unit.model, unit_dir))
    write_json(run_dir / "skipped.json", skipped)
    if not chief:
        return {}
    if cfg.branches:
        try:
            assemble_production(run_dir, cfg)
        except ValueError as exc:  # some branch candidates were not trained in this run (--model)
            print(f"production model not assembled: {exc}", file=sys.stderr)
    if cfg.protocols:
        from kerasface.protocols import run_protocols

        with clock.phase("protocols"):
            run_protocols(cfg, run_dir, lambda protocol: protocol_root(cfg, protocol))
    return write_reports(run_dir)


def export_run(run_dir: Path, models_dir: Path, name: str) -> None:
    """What `python -m kerasface.export` makes of a run: MODELS_DIR/NAME/<version>/ (SavedModel),
    MODELS_DIR/NAME.tflite (fp32) and NAME-int8.tflite, each .tflite with its parity report, and
    MODELS_DIR/NAME_photo/<version>/ when the recipe has photo_tasks. Each step prints the command
    that repeats it; the three share one serving graph (the models loaded, the float SavedModel the
    converter reads written, once)."""
    from kerasface.export.__main__ import saved_model, tflite
    from kerasface.export.graph import serving_graph
    from kerasface.export.photo import select_photo_heads
    from kerasface.export.run import load_run, select_heads

    cfg = read_config(run_dir / "config.json")
    model = None
    # a branching recipe deploys its production model alone: every task and the embedding in one pass
    if cfg.branches and any((run_dir / "models").glob(f"{PRODUCTION}-*/model.keras")):
        model = PRODUCTION
    if cfg.deploy and any((run_dir / "models").glob(f"{cfg.deploy}-*/model.keras")):
        model = cfg.deploy
    only = ["--model", model] if model else []
    run = load_run(run_dir)
    selection = select_heads(run, model)
    graph = serving_graph(selection)
    steps = [(["saved-model", str(run_dir), "--name", name, "--out", str(models_dir), *only],
              lambda: saved_model(run, selection, name, models_dir, graph=graph))]
    for quant, file in (("none", f"{name}.tflite"), ("int8", f"{name}-int8.tflite")):
        steps.append((["tflite", str(run_dir), "--quant", quant, "--out", str(models_dir / file), *only],
                      lambda quant=quant, file=file: tflite(run, selection, quant, models_dir / file, graph=graph)))
    if cfg.photo_tasks:  # and the one-photo deployable (kerasface.export.photo)
        steps.append((["saved-model", str(run_dir), "--name", f"{name}_photo", "--out", str(models_dir), "--photo"],
                      lambda: saved_model(run, select_photo_heads(run, None), f"{name}_photo", models_dir)))
    for command, step in steps:
        print(f"python -m kerasface.export {' '.join(command)}", file=sys.stderr)
        try:
            step()
        except Exception as exc:
            raise RuntimeError(f"export of {run_dir} failed: python -m kerasface.export {' '.join(command)}: "
                               f"{exc}") from exc


def _recipe_help(recipe) -> str:
    models = ", ".join(recipe.build().models) or "chosen by its options"
    own = f"; options {', '.join(recipe.options)}" if recipe.options else ""
    lines = [f"  {recipe.name}: models {models}{own}"]
    lines += [f"    {recipe.name}:{name}  {text}" for name, (text, _) in recipe.variants.items()]
    return "\n".join(lines)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def recipe_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Add the options every recipe declares (Recipe.options); returns flag -> its recipe."""
    owners = {}
    for name in PAPERS.names():
        for flag, kwargs in PAPERS.get(name).options.items():
            if flag not in owners:
                help_text = kwargs.get("help", "")
                parser.add_argument(flag, **{**kwargs, "default": None, "help": f"[--paper={name}] {help_text}"})
                owners[flag] = name
    return owners


def main(argv: list[str] | None = None) -> int:
    keys = ", ".join(PAPERS.names())
    parser = argparse.ArgumentParser(prog="python -m kerasface.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Recipes, their model keys and variants (--paper KEY:VARIANT):\n" + "\n".join(
                                         _recipe_help(PAPERS.get(name)) for name in PAPERS.names()))
    parser.add_argument("--paper", required=True, help=f"recipe, optionally with a variant (KEY:VARIANT): {keys}")
    parser.add_argument("--demo", action="store_true",
                        help="run on the built-in synthetic demo data, reduced size (the variant KEY:demo)")
    parser.add_argument("--data", help="dataset folder (default: the dataset's environment variable, e.g. $KERASFACE_MTFL)")
    parser.add_argument("--model", action="append", default=[], help="train only this model key (repeatable)")
    parser.add_argument("--attribute", action="append", default=[], help="train only this attribute (repeatable)")
    parser.add_argument("--crop", action="append", default=[], help="train only this crop (repeatable)")
    parser.add_argument("--run-dir", help="run folder (default: runs/<paper>[-<variant>])")
    parser.add_argument("--records", default="tfrecords", help="folder of converted TFRecords (default: tfrecords)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. models.tcdcn_multitask.stages.0.lr=0.001")
    parser.add_argument("--export", nargs="?", const="models", metavar="MODELS_DIR",
                        help="after the run, export it into MODELS_DIR (default: models): a SavedModel in TF "
                             "Serving's layout and fp32 and int8 .tflite files with their parity reports; "
                             "--demo does this unless --no-export")
    parser.add_argument("--no-export", action="store_true", help="with --demo: do not export")
    parser.add_argument("--no-progress", action="store_true")
    owners = recipe_flags(parser)
    args = parser.parse_args(argv)
    def body() -> None:
        clock = PhaseClock()
        recipe = PAPERS.get(args.paper.partition(":")[0])
        for flag, owner in owners.items():
            if owner != recipe.name and getattr(args, _dest(flag)) is not None:
                raise ValueError(f"{flag} is an option of the {owner} recipe, not of {recipe.name}")
        cfg = paper_config(args.paper, demo=args.demo)
        if recipe.configure is not None:
            cfg = recipe.configure(cfg, args)
        cfg = validate(apply_overrides(cfg, args.set))
        units = plan_units(cfg, args.model, args.attribute, args.crop)
        if not cfg.demo:  # fail early, saying where each dataset was looked for
            sources = data_sources(cfg.data)
            for source in (s for s in sources if not s.synthetic):  # a synthetic source is rendered here
                DATASETS.get(source.dataset).resolve_root(source.root or (args.data if len(sources) == 1 else None))
        for unit in units:  # then the pretrained weights, before any conversion or training
            check_weights(unit.model)
        run_dir = Path(args.run_dir or Path("runs") / (cfg.name + (f"-{cfg.variant}" if cfg.variant else "")))
        print(json.dumps({"paper": cfg.name, "units": [u.name for u in units]}), file=sys.stderr)
        export_dir = None if args.no_export else args.export or ("models" if cfg.demo else None)
        reports = train_paper(cfg, run_dir, units, args.data, Path(args.records), progress=not args.no_progress,
                              required=frozenset(args.model), clock=clock)
        if export_dir and reports:  # reports: this process is the chief
            with clock.phase("export"):
                export_run(run_dir, Path(export_dir), cfg.name + (f"_{cfg.variant}" if cfg.variant else ""))
        print(clock.summary(), file=sys.stderr)

    return run_command(body)

if __name__ == "__main__":
    sys.exit(main())
