"""Training throughput: kerasface's custom loop against plain `model.fit`, same model, same data,
same optimizer, in the same run; plus FLOPs per image.

    python benchmarks/bench_train.py [--steps 30] [--arch tcdcn ...]

Data are in-memory random batches (the input pipeline has its own benchmark), so the figures are
the cost of the training step itself. Sizes are the recipes' own; InceptionV3 runs at 150x150 on
CPU to keep the run short (pass --full for 299x299). GPU figures are printed when a GPU is visible.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.flops import flops_per_image  # noqa: E402
from kerasface.architectures import ARCHITECTURES  # noqa: E402
from kerasface.config import StageConfig, TaskConfig  # noqa: E402
from kerasface.optim import GroupedOptimizer, make_optimizer  # noqa: E402
from kerasface.train import make_strategy, make_train_step  # noqa: E402

CASES = {
    "tcdcn": (60, (TaskConfig("landmarks", kind="landmarks", num_classes=10), TaskConfig("gender"), TaskConfig("smile"),
                   TaskConfig("glasses"), TaskConfig("pose", num_classes=5)), {}),
    "tcdcn_single": (60, (TaskConfig("smile"),), {}),
    "cascade_cnn": (150, (TaskConfig("smile"),), {}),
    "inception_v3": (150, (TaskConfig("smile"),), {"aux_head": False}),
    "bknet": (48, (TaskConfig("smile"), TaskConfig("emotion", num_classes=7), TaskConfig("gender")), {"l2": 1e-4}),
    "vgg_face": (224, (TaskConfig("smile"),), {}),  # gnet_snet's nets: full VGG-Face, 145M parameters
}
CHANNELS = {"bknet": 1}  # 48x48 gray; the others take RGB


def batches(size, channels, tasks, batch, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch * 4, size, size, channels)).astype(np.float32)
    targets = {t.name: rng.integers(0, t.num_classes, batch * 4).astype(np.int32) for t in tasks if t.kind != "landmarks"}
    targets["landmarks"] = rng.uniform(0.2, 0.8, (batch * 4, 10)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((images, targets)).repeat().batch(batch, drop_remainder=True).prefetch(2)


def rate(step, steps, batch):
    step()  # trace and warm up
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def bench(arch, size, tasks, kwargs, batch, steps):
    heads = {t.name: t.num_classes for t in tasks}
    stage = StageConfig(optimizer="sgd", lr=1e-3, batch_size=batch)
    strategy = make_strategy()
    channels = CHANNELS.get(arch, 3)
    ds = batches(size, channels, tasks, batch)

    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = ARCHITECTURES.get(arch)((size, size, channels), heads, **kwargs)
        optimizer = GroupedOptimizer(stage, 1000, model)
    active = {t.name: tf.constant(1.0) for t in tasks}
    step_fn = make_train_step(strategy, model, optimizer, tasks, active, batch)
    iterator = iter(strategy.experimental_distribute_dataset(ds))
    custom = rate(lambda: step_fn(iterator), steps, batch)

    keras.utils.set_random_seed(0)
    with strategy.scope():
        fit_model = ARCHITECTURES.get(arch)((size, size, channels), heads, **kwargs)
        losses = {t.name: (keras.losses.MeanSquaredError() if t.kind == "landmarks"
                           else keras.losses.SparseCategoricalCrossentropy(from_logits=True)) for t in tasks}
        fit_model.compile(optimizer=make_optimizer(stage, 1000), loss=losses, jit_compile=False)
    fit_data = ds.map(lambda x, y: (x, {k: y[k] for k in heads}))
    fit_model.fit(fit_data, steps_per_epoch=2, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()  # all timed steps in one fit call, so fit pays its per-call cost once
    fit_model.fit(fit_data, steps_per_epoch=steps, epochs=1, verbose=0)
    fitted = steps * batch / (time.perf_counter() - start)

    infer = tf.function(lambda x: model(x, training=False))
    images = next(iter(ds))[0]
    inferred = rate(lambda: infer(images), steps, batch)
    return custom, fitted, inferred, flops_per_image(model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", help=f"architectures (default: {', '.join(CASES)})")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--full", action="store_true", help="InceptionV3 at 299x299")
    parser.add_argument("--mixed", action="store_true", help="mixed_float16 (pays on GPUs with tensor cores)")
    args = parser.parse_args()
    if args.mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    print(f"device: {device}; batch {args.batch}; {args.steps} timed steps per loop; "
          f"{'mixed_float16' if args.mixed else 'float32'}")
    print(f"{'architecture':<14} {'input':>7} {'custom img/s':>13} {'fit img/s':>10} {'custom/fit':>10} "
          f"{'infer img/s':>12} {'MFLOPs/img':>11}")
    for arch in args.arch or list(CASES):
        size, tasks, kwargs = CASES[arch]
        if arch == "inception_v3" and args.full:
            size = 299
        custom, fitted, inferred, flops = bench(arch, size, tasks, kwargs, args.batch, args.steps)
        print(f"{arch:<14} {size:>4}x{size:<3} {custom:>12.1f} {fitted:>10.1f} {custom / fitted:>10.2f} "
              f"{inferred:>12.1f} {flops / 1e6:>11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
