"""Training throughput: kerasface's custom loop against plain `model.fit` and against the same loop
compiled with XLA (`StageConfig.jit_compile`), same model, same data, same optimizer, in the same run;
plus FLOPs per image and the GFLOP/s they imply.

    python benchmarks/bench_train.py [--steps 30] [--batch 32] [--rounds 3] [--arch tcdcn ...] [--identities 1000]
    python benchmarks/bench_train.py --arch flickr_resnet --arch wang_full --arch wang_fast

Data are in-memory random batches (the input pipeline has its own benchmark), so the figures are
the cost of the training step itself. The two loops run in turn, `steps` steps each per round, for
`rounds` rounds; the best round of each counts (a shared machine drifts; compare the ratios).
Sizes are the recipes' own, (height, width): 112x96 for wang_joint's nets; InceptionV3 runs at
150x150 on CPU to keep the run short (pass --full for 299x299). GPU figures are printed when a GPU
is visible.

The identity networks (flickr_resnet, wang_full, wang_fast) are built from their recipes'
ModelConfigs (kerasface.papers.flickr_depth / wang_joint): an identity softmax (head kind
`embedding`) over --identities classes (1,000 by default, to keep the head small on CPU; the
recipes take as many as the data has, 10,575 for CASIA-WebFace), and for wang_* the 7 attribute
scores (kind `attribute_scores`, MSE, behind their own FC 1024). The custom loop computes each
head's loss with `kerasface.tasks.head_kind(kind).loss` (kerasface.train.make_train_step); fit
gets the equivalent Keras loss (FIT_LOSSES). On CPU, cases with a per-case batch/steps (the
identity networks: batch 8, 2 or 1 steps a round) use them, warmed up by the tracing step alone,
unless --batch or --steps is given; the table prints what ran. Beside the images/s (wall clock),
the ratio of the CPU seconds the process spent and the cores each loop kept busy (CPU / wall):
on a machine shared with other jobs, the CPU ratio is the steadier one.
GFLOP/s: training counts 3x the forward FLOPs per image (forward + two backward products, the
usual estimate); inference counts 1x.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import best_times, seconds_per_call  # noqa: E402
from benchmarks.flops import flops_per_image  # noqa: E402
from kerasface.architectures import ARCHITECTURES  # noqa: E402
from kerasface.config import ModelConfig, StageConfig, TaskConfig, target_key  # noqa: E402
from kerasface.data.pipeline import pipeline_options  # noqa: E402
from kerasface.inference import inference_fn  # noqa: E402
from kerasface.optim import GroupedOptimizer, make_optimizer  # noqa: E402
from kerasface.tasks import head_kind  # noqa: E402
from kerasface.train import input_options, make_strategy, make_train_step  # noqa: E402

IDENTITIES = 1000  # identity softmax classes of the identity networks (--identities)


@dataclasses.dataclass(frozen=True)
class Case:
    arch: str
    size: tuple[int, int]  # (height, width)
    tasks: tuple[TaskConfig, ...]
    kwargs: dict = dataclasses.field(default_factory=dict)
    channels: int = 3
    cpu_batch: int = 0  # on CPU, without --batch/--steps: this batch / step count (0: the global default)
    cpu_steps: int = 0


def recipe_case(model: ModelConfig, cpu_batch: int, cpu_steps: int) -> Case:
    """A recipe's model as it trains: its input size, architecture kwargs and heads."""
    return Case(model.arch, model.input_hw, model.tasks, dict(model.arch_kwargs), model.channels, cpu_batch, cpu_steps)


def identity_cases() -> dict[str, Case]:
    from kerasface.papers.flickr_depth import flickr_depth
    from kerasface.papers.wang_joint import joint_model

    return {"flickr_resnet": recipe_case(flickr_depth().models["identity"], 8, 2),  # 224x224: 0.86 G multiply-adds
            "wang_full": recipe_case(joint_model("wang_full"), 8, 1),  # 112x96: 4.2 G multiply-adds
            "wang_fast": recipe_case(joint_model("wang_fast"), 8, 1)}  # 3.0 G


CASES = {
    "tcdcn": Case("tcdcn", (60, 60), (TaskConfig("landmarks", kind="landmarks", num_classes=10), TaskConfig("gender"),
                                      TaskConfig("smile"), TaskConfig("glasses"), TaskConfig("pose", num_classes=5))),
    "tcdcn_single": Case("tcdcn_single", (60, 60), (TaskConfig("smile"),)),
    "cascade_cnn": Case("cascade_cnn", (150, 150), (TaskConfig("smile"),)),
    "inception_v3": Case("inception_v3", (150, 150), (TaskConfig("smile"),), {"aux_head": False}),
    "bknet": Case("bknet", (48, 48), (TaskConfig("smile"), TaskConfig("emotion", num_classes=7), TaskConfig("gender")),
                  {"l2": 1e-4}, channels=1),  # 48x48 gray
    "vgg_face": Case("vgg_face", (224, 224), (TaskConfig("smile"),)),  # gnet_snet's nets: full VGG-Face, 145M parameters
    **identity_cases(),
}


def with_identities(case: Case, identities: int) -> Case:
    """The case with its identity softmax (kind `embedding`) over `identities` classes."""
    tasks = tuple(dataclasses.replace(t, num_classes=identities) if t.kind == "embedding" else t for t in case.tasks)
    return dataclasses.replace(case, tasks=tasks)


def random_targets(task: TaskConfig, count: int, rng) -> np.ndarray:
    """Labels of the type the task's head kind trains on (kerasface.tasks.HeadKind.label_types)."""
    label = head_kind(task.kind).label_types[0]
    if label == "class":  # classification, embedding: a class index
        return rng.integers(0, task.num_classes, count).astype(np.int32)
    if label == "multilabel":  # multilabel, attribute_scores: 0/1 per attribute
        return rng.integers(0, 2, (count, task.num_classes)).astype(np.int32)
    return rng.uniform(0.2, 0.8, (count, task.num_classes)).astype(np.float32)  # landmarks, values


# the Keras loss `fit` gets for each head kind (the custom loop: head_kind(kind).loss); multilabel
# and regression targets are cast to float32 for them
FIT_LOSSES = {
    "classification": lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "embedding": lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "multilabel": lambda: keras.losses.BinaryCrossentropy(from_logits=True),
    "regression": keras.losses.MeanSquaredError,
    "attribute_scores": keras.losses.MeanSquaredError,
    "landmarks": keras.losses.MeanSquaredError,
}


def batches(size, channels, tasks, batch, seed=0):
    """Random images of `size` = (height, width) and targets keyed as the pipeline keys them."""
    height, width = size
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch * 4, height, width, channels)).astype(np.float32)
    targets = {target_key(t): random_targets(t, batch * 4, rng) for t in tasks}
    return tf.data.Dataset.from_tensor_slices((images, targets)).repeat().batch(batch, drop_remainder=True).prefetch(2)


@dataclasses.dataclass
class Result:
    custom: float  # img/s (wall clock)
    fit: float
    xla: float  # the custom loop, each step one XLA computation
    infer: float
    flops: int  # forward FLOPs per image
    custom_cpu: float  # the least CPU seconds of a round (all threads)
    fit_cpu: float
    xla_cpu: float
    custom_wall: float  # the best round's wall seconds
    fit_wall: float


def bench(case: Case, batch: int, steps: int, rounds: int, warmup: int = 2) -> Result:
    """Custom loop, fit and inference throughput of one case: each loop warmed up by `warmup`
    steps (the first traces), then `steps` steps per round, the two loops in turn for `rounds`
    rounds, the best round of each (benchmarks.common.best_times)."""
    tasks = case.tasks
    heads = {t.name: t.num_classes for t in tasks}
    shape = (*case.size, case.channels)
    stage = StageConfig(optimizer="sgd", lr=1e-3, batch_size=batch)
    strategy = make_strategy()
    ds = batches(case.size, case.channels, tasks, batch)

    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = ARCHITECTURES.get(case.arch)(shape, heads, **case.kwargs)
        optimizer = GroupedOptimizer(stage, 1000, model)
    active = {t.name: tf.constant(1.0) for t in tasks}
    step_fn = make_train_step(strategy, model, optimizer, tasks, active, batch)  # head_kind(kind).loss per task

    def fed(ctx):  # as the trainer feeds its replicas: non-autotuned pipelines, per replica on CPUs
        per_replica = batches(case.size, case.channels, tasks, ctx.get_per_replica_batch_size(batch))
        return per_replica.with_options(pipeline_options(deterministic=True))

    iterator = iter(strategy.distribute_datasets_from_function(fed, input_options(strategy)))
    xla_fn = make_train_step(strategy, model, optimizer, tasks, active, batch, jit_compile=True)
    for _ in range(warmup):
        step_fn(iterator)
        xla_fn(iterator)

    keras.utils.set_random_seed(0)
    with strategy.scope():
        fit_model = ARCHITECTURES.get(case.arch)(shape, heads, **case.kwargs)
        losses = {t.name: FIT_LOSSES[t.kind]() for t in tasks}
        fit_model.compile(optimizer=make_optimizer(stage, 1000), loss=losses, jit_compile=False)
    classes = {t.name for t in tasks if head_kind(t.kind).label_types[0] == "class"}
    fit_data = ds.map(lambda x, y: (x, {t.name: y[target_key(t)] if t.name in classes
                                        else tf.cast(y[target_key(t)], tf.float32) for t in tasks}))
    fit_model.fit(fit_data, steps_per_epoch=warmup, epochs=1, verbose=0)
    # all steps of a round in one fit call, so fit pays its per-call cost once a round
    cpu = {}
    best = best_times({"custom": lambda: [step_fn(iterator) for _ in range(steps)],
                       "xla": lambda: [xla_fn(iterator) for _ in range(steps)],
                       "fit": lambda: fit_model.fit(fit_data, steps_per_epoch=steps, epochs=1, verbose=0)},
                      rounds, cpu)

    infer = inference_fn(model)
    images = next(iter(ds))[0]
    inferred = seconds_per_call({"infer": lambda: infer(images)}, rounds)["infer"]
    return Result(steps * batch / best["custom"], steps * batch / best["fit"], steps * batch / best["xla"],
                  batch / inferred, flops_per_image(model), cpu["custom"], cpu["fit"], cpu["xla"], best["custom"],
                  best["fit"])


def dense_conv_rate(rounds: int) -> float:
    """This machine's training GFLOP/s on one large dense convolution (3x3, 128 -> 128 channels,
    28x28, batch 32: forward and both backward products, 3x the forward FLOPs), the yardstick the
    architectures' rates are read against: what the convolution kernels reach when nothing else
    (small channel counts, BN, activations, the optimizer, per-op overhead) costs."""
    conv = keras.layers.Conv2D(128, 3, padding="same", use_bias=False)
    x = tf.random.normal((32, 28, 28, 128))
    conv.build(x.shape)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = conv(x)
        return tape.gradient(y, [x, conv.kernel])

    flops = 2 * 32 * 28 * 28 * 128 * 128 * 9 * 3
    return flops / seconds_per_call({"conv": step}, rounds)["conv"] / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=list(CASES), metavar="CASE",
                        help=f"cases (default: all: {', '.join(CASES)})")
    parser.add_argument("--steps", type=int, help="timed steps per loop and round (default 30, or the case's on CPU)")
    parser.add_argument("--batch", type=int, help="batch size (default 32, or the case's on CPU)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, the loops in turn; the best counts")
    parser.add_argument("--identities", type=int, default=IDENTITIES,
                        help="classes of the identity softmax of flickr_resnet / wang_* (default %(default)s)")
    parser.add_argument("--full", action="store_true", help="InceptionV3 at 299x299")
    parser.add_argument("--mixed", action="store_true", help="mixed_float16 (pays on GPUs with tensor cores)")
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")  # the v1 profiler (flops_per_image) warns about its own deprecated helpers
    if args.mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    names = args.arch or list(CASES)
    print(f"device: {device}; batch {args.batch or 32}, {args.steps or 30} timed steps per round unless the table "
          f"says otherwise, best of {args.rounds} rounds (custom and fit in turn); "
          f"{'mixed_float16' if args.mixed else 'float32'}; training GFLOP/s = 3 x forward FLOPs "
          f"x img/s (the usual estimate), inference GFLOP/s = 1 x")
    if any(any(t.kind == "embedding" for t in CASES[n].tasks) for n in names):
        print(f"identity softmax (kind embedding) over {args.identities:,} identities (the recipes: as many as "
              f"the data has, e.g. CASIA-WebFace's 10,575); wang_*: + 7 attribute scores (attribute_scores, MSE)")
    print("custom/fit: the ratio of images/s (wall clock); CPU: the same ratio from the CPU seconds the process "
          "spent (other jobs on the machine do not add to it); cores: CPU seconds / wall seconds, custom and fit; "
          "xla/custom and its CPU: the same ratios for the XLA-compiled loop against the plain one")
    reference = dense_conv_rate(args.rounds)
    print(f"this machine's dense conv rate (3x3 conv 128->128 at 28x28, batch 32, trained): {reference:.1f} GFLOP/s; "
          f"'of conv': each case's training GFLOP/s as a share of it")
    print(f"{'case':<14} {'input':>7} {'batch':>5} {'steps':>5} {'custom img/s':>12} {'fit img/s':>9} "
          f"{'custom/fit':>10} {'CPU':>5} {'cores':>9} {'xla img/s':>9} {'xla/custom':>10} {'CPU':>5} "
          f"{'infer img/s':>11} {'MFLOPs/img':>10} "
          f"{'train GFLOP/s':>13} {'of conv':>7} {'infer GFLOP/s':>13}")
    for name in names:
        case = with_identities(CASES[name], args.identities)
        if name == "inception_v3" and args.full:
            case = dataclasses.replace(case, size=(299, 299))
        on_cpu = device == "CPU"
        short = on_cpu and not args.batch and not args.steps and case.cpu_batch  # the case's own CPU run
        batch = args.batch or (case.cpu_batch if short else 32)
        steps = args.steps or (case.cpu_steps if short else 30)
        r = bench(case, batch, steps, args.rounds, warmup=1 if short else 2)
        size = f"{case.size[0]}x{case.size[1]}"
        cores = f"{r.custom_cpu / r.custom_wall:.1f}/{r.fit_cpu / r.fit_wall:.1f}"
        print(f"{name:<14} {size:>7} {batch:>5} {steps:>5} {r.custom:>12.1f} {r.fit:>9.1f} {r.custom / r.fit:>10.2f} "
              f"{r.fit_cpu / r.custom_cpu:>5.2f} {cores:>9} {r.xla:>9.1f} {r.xla / r.custom:>10.2f} "
              f"{r.custom_cpu / r.xla_cpu:>5.2f} {r.infer:>11.1f} {r.flops / 1e6:>10.1f} "
              f"{3 * r.flops * r.custom / 1e9:>13.1f} {3 * r.flops * r.custom / 1e9 / reference:>7.0%} "
              f"{r.flops * r.infer / 1e9:>13.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
