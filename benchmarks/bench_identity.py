"""The identity networks at inference: embedding extraction against classification of the same
model, and flickr_depth's one-pass production model against its separate models; ratios within
one run (absolute figures on a shared machine mean little).

    python benchmarks/bench_identity.py [--part embed|branch|all] [--arch flickr_resnet ...]
                                        [--batch-sizes 32,1] [--rounds 3] [--identities 1000]
                                        [--branch-size 112] [--branches gender:conv_bn320,emotion:conv19,smile:conv17]

embed: images/s of the L2-normalised embedding an `embedding` head exports, built by the export's
  own serving graph (kerasface.export.graph.ServingGraph.serve_float: the model with its
  "features" layer as an extra output, then head_kind("embedding").export; the SavedModel's
  serving_default / embed_<task> return it, and kerasface.verify and kerasface.predict read it),
  against the same model in the same graph serving its identity head as a classification (softmax
  over the identities). flickr_resnet at 224x224 and wang_full / wang_fast at 112x96, as their
  recipes build them (benchmarks.bench_train.identity_cases), the identity softmax over
  --identities classes (1,000 by default; the recipes: as many as the data has).
branch: flickr_depth's production model (kerasface.architectures.branching.branched_model, as
  kerasface.production assembles it): the identity trunk and each task's branch fine-tuned from its
  branch point (the recipe's grid models <task>_<point>, built with the trunk's weights below the
  point, kerasface.architectures.copy_matching_weights, random weights: this measures cost, not
  accuracy) in one forward pass, against the trunk and the fine-tuned models run one after another
  (each its own compiled kerasface.inference.inference_fn, outputs fetched). Multiply-adds per image
  (kerasface.architectures.common.multiply_adds) and latency per image at each batch size. The
  input is reduced to --branch-size (112x112 by default; 224 is the recipe's) to keep the CPU run
  short.

Each configuration is warmed up (the first call traces), then the two compared functions run in
turn for --rounds rounds of about --round-seconds each; the best round counts
(benchmarks.common.seconds_per_call). Beside the wall-clock ratio, the ratio of the CPU seconds
the process spent ("CPU"): on a machine shared with other jobs, the steadier one. Figures only;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.bench_train import IDENTITIES, Case, identity_cases, with_identities  # noqa: E402
from benchmarks.common import seconds_per_call  # noqa: E402
from kerasface.architectures import ARCHITECTURES, build_model, copy_matching_weights  # noqa: E402
from kerasface.architectures.branching import branched_model  # noqa: E402
from kerasface.architectures.common import multiply_adds  # noqa: E402
from kerasface.export.graph import ServingGraph  # noqa: E402
from kerasface.export.run import Selection, Task, Unit  # noqa: E402
from kerasface.inference import inference_fn  # noqa: E402

BRANCHES = "gender:conv_bn320,emotion:conv19,smile:conv17"


def fetch(outputs):
    """The outputs as NumPy arrays, as a caller reads them (and so the call has finished)."""
    return [np.asarray(v) for v in tf.nest.flatten(outputs)]


def images(size, batch: int, seed: int = 0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).uniform(0, 255, (batch, *size, 3)).astype(np.float32))


# ----------------------------------------------------------------------------- embed


def serving_fn(model, case: Case, task_name: str, kind: str):
    """ServingGraph.serve_float of `model` answering `task_name` alone as head kind `kind`, compiled."""
    task = next(t for t in case.tasks if t.name == task_name)
    labels = () if kind == "embedding" else tuple(str(i) for i in range(task.num_classes))
    unit = Unit(name="bench", model_key="bench", arch=case.arch, crop="bench", input_size=tuple(case.size),
                channels=case.channels, tasks=(Task(task_name, kind, labels),), folder=Path("."))
    graph = ServingGraph(Selection(crop="bench", heads={task_name: unit}, rule="benchmark"), models={"bench": model})
    serve = tf.function(graph.serve_float)
    return lambda x: serve(x)[task_name]


def bench_embed(names, batch_sizes, identities, rounds, round_seconds) -> None:
    cases = identity_cases()
    print(f"embedding extraction vs classification of the same model (ServingGraph.serve_float, identity head "
          f"only; {identities:,} identities), images/s, best of {rounds} rounds")
    print(f"{'model':<14} {'input':>7} {'batch':>5} {'classify img/s':>14} {'embed img/s':>11} "
          f"{'embed/classify':>14} {'CPU':>5} {'dim':>5}")
    for name in names:
        case = with_identities(cases[name], identities)
        identity = next(t.name for t in case.tasks if t.kind == "embedding")
        keras.utils.set_random_seed(0)
        model = ARCHITECTURES.get(case.arch)((*case.size, case.channels), {t.name: t.num_classes for t in case.tasks},
                                             **case.kwargs)
        classify = serving_fn(model, case, identity, "classification")
        embed = serving_fn(model, case, identity, "embedding")
        for batch in batch_sizes:
            x = images(case.size, batch)
            dim = int(embed(x).shape[-1])
            cpu = {}
            per_call = seconds_per_call({"classify": lambda: fetch(classify(x)), "embed": lambda: fetch(embed(x))},
                                        rounds, round_seconds, cpu)
            size = f"{case.size[0]}x{case.size[1]}"
            print(f"{name:<14} {size:>7} {batch:>5} {batch / per_call['classify']:>14.1f} "
                  f"{batch / per_call['embed']:>11.1f} {per_call['classify'] / per_call['embed']:>14.2f} "
                  f"{cpu['classify'] / cpu['embed']:>5.2f} {dim:>5}", flush=True)


# ----------------------------------------------------------------------------- branch


def flickr_depth_models(size: int, identities: int, branches: dict[str, str]):
    """(trunk, {task: (branch point, fine-tuned model)}) as the recipe builds them, at size x size."""
    from kerasface.papers.flickr_depth import flickr_depth

    cfg = flickr_depth()

    def at_size(model_cfg):
        return dataclasses.replace(model_cfg, input_size=size)

    identity = cfg.models["identity"]
    keras.utils.set_random_seed(0)
    trunk = build_model(dataclasses.replace(at_size(identity), tasks=tuple(
        dataclasses.replace(t, num_classes=identities) for t in identity.tasks)))
    tuned = {}
    for task, point in branches.items():
        key = f"{task}_{point}"
        if key not in cfg.models:
            raise SystemExit(f"--branches {task}:{point}: flickr_depth has no grid model {key!r}")
        model_cfg = at_size(cfg.models[key])
        model = build_model(model_cfg)
        copy_matching_weights(trunk, model, model_cfg.reinit_from)  # the trainer's init_from
        tuned[task] = (model_cfg.reinit_from, model)
    return trunk, tuned


def bench_branch(size: int, identities: int, branches: dict[str, str], batch_sizes, rounds, round_seconds) -> None:
    trunk, tuned = flickr_depth_models(size, identities, branches)
    production = branched_model(trunk, tuned)
    separate_models = [trunk, *(model for _, model in tuned.values())]
    where = ", ".join(f"{task}@{point or 'fc'}" for task, (point, _) in tuned.items())
    print(f"\nflickr_depth production model (one pass) vs the trunk + {len(tuned)} fine-tuned models run one after "
          f"another: flickr_resnet at {size}x{size}{' (reduced from 224x224)' if size != 224 else ''}, "
          f"{identities:,} identities; branches {where}; best of {rounds} rounds")
    one_pass = inference_fn(production)
    each = [inference_fn(m) for m in separate_models]
    rows = {"separate": [multiply_adds(trunk) + sum(multiply_adds(m) for _, m in tuned.values())],
            "production": [multiply_adds(production)]}
    cpu_rows = {"separate": [], "production": []}
    agree = 0.0
    for batch in batch_sizes:
        x = images((size, size), batch)
        together = one_pass(x)
        apart = {k: v for out in (m(x) for m in each) for k, v in out.items()}
        agree = max([agree] + [float(np.max(np.abs(np.asarray(together[k]) - np.asarray(apart[k])))) for k in apart])
        cpu = {}
        per_call = seconds_per_call({"separate": lambda: [fetch(f(x)) for f in each],
                                     "production": lambda: fetch(one_pass(x))}, rounds, round_seconds, cpu)
        for key in rows:
            rows[key].append(1000 * per_call[key] / batch)
            cpu_rows[key].append(cpu[key])
    header = "".join(f"{f'ms/img b{b}':>12}" for b in batch_sizes)
    print(f"{'':<26} {'M mult-adds/img':>15}{header}")
    print(f"{f'separate ({len(separate_models)} models)':<26} {rows['separate'][0] / 1e6:>15.1f}"
          + "".join(f"{v:>12.2f}" for v in rows["separate"][1:]))
    print(f"{'production (1 pass)':<26} {rows['production'][0] / 1e6:>15.1f}"
          + "".join(f"{v:>12.2f}" for v in rows["production"][1:]))
    print(f"{'separate / production':<26} {rows['separate'][0] / rows['production'][0]:>14.2f}x"
          + "".join(f"{s / p:>11.2f}x" for s, p in zip(rows["separate"][1:], rows["production"][1:])))
    print(f"{'  the same, CPU seconds':<26} {'':>15}"
          + "".join(f"{s / p:>11.2f}x" for s, p in zip(cpu_rows["separate"], cpu_rows["production"])))
    print(f"outputs of the one pass vs the separate models: max |difference| {agree:.2g}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("embed", "branch", "all"), default="all")
    parser.add_argument("--arch", action="append", choices=("flickr_resnet", "wang_full", "wang_fast"),
                        help="embed: the identity networks (default: all three)")
    parser.add_argument("--batch-sizes", default="32,1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-seconds", type=float, default=2.0, help="about this long per function and round")
    parser.add_argument("--identities", type=int, default=IDENTITIES, help="identity softmax classes")
    parser.add_argument("--branch-size", type=int, default=112, help="branch: input side (the recipe: 224)")
    parser.add_argument("--branches", default=BRANCHES, help="branch: task:point,... from flickr_depth's grid")
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    print(f"device: {device}; float32")
    if args.part in ("embed", "all"):
        bench_embed(args.arch or ["flickr_resnet", "wang_full", "wang_fast"], batch_sizes, args.identities,
                    args.rounds, args.round_seconds)
    if args.part in ("branch", "all"):
        branches = dict(item.split(":", 1) for item in args.branches.split(",") if item)
        bench_branch(args.branch_size, args.identities, branches, batch_sizes, args.rounds, args.round_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
