"""Does the input pipeline keep up with training? For each recipe's training stream, training
images/s fed by the real pipeline (decode, crop, augment, batch, mixed sources) against the same
trainer fed the same kind of batches from memory, in one run (target: >= 0.90).

    python benchmarks/bench_input.py [--paper canal_mtfl:demo --model tcdcn_multitask ...] [--records tfrecords]

Default: the first unit of every recipe's demo (the demo data are rendered and converted into
--records on first use, as `--demo` does). Each unit is built as the trainer builds it (its model,
stage, tasks, optimizer and train step); "memory" replays 8 batches of its own pipeline, cached.
Rounds alternate (best of 3), and the CPU-time ratio is printed beside the wall-clock one: the
pipeline's threads share the 2 cores with the step, which is what a CPU-only host pays.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from common import best_times  # noqa: F401  (puts the repository on sys.path)


from kerasface.optim import GroupedOptimizer  # noqa: E402
from kerasface.papers import PAPERS, paper_config  # noqa: E402
from kerasface.train import Trainer, input_options, make_strategy, plan_units, stage_only_sources, unit_sources  # noqa: E402


def unit_step(spec: str, model_key: str | None, records: Path):
    """(cfg, trainer, first stage, its train step) of a recipe's unit, built as the trainer builds
    them (the demo variant unless `spec` names one)."""
    cfg = paper_config(spec if ":" in spec else f"{spec}:demo")
    unit = plan_units(cfg, [model_key] if model_key else [])[0]
    sources = unit_sources(cfg, unit.crop, None, records)
    everything = {s.name: s for s in sources + unit_sources(cfg, unit.crop, None, records, stage_only_sources(cfg))}
    strategy = make_strategy()
    trainer = Trainer(unit, cfg, sources, Path(tempfile.mkdtemp(prefix="kf-input-")), strategy, progress=False,
                      all_sources=everything)
    # a bottleneck stage trains on cached features, not images: time its images through the full model
    stage = dataclasses.replace(trainer.unit.model.stages[0], bottleneck=False)
    with strategy.scope():
        optimizer = GroupedOptimizer(stage, 1000, trainer.model, cfg.mixed_precision)
    step = trainer.make_train_step(trainer.model, optimizer, stage.batch_size, trainer.stage_tasks(stage),
                                   stage.jit_compile)
    return cfg, trainer, stage, step


def measure(spec: str, model_key: str | None, records: Path, steps: int, rounds: int) -> dict:
    cfg, trainer, stage, step = unit_step(spec, model_key, records)
    strategy = trainer.strategy
    real = iter(trainer.distributed_train_data(stage, 0))
    cached = trainer.dataset("train", stage.batch_size, True, sources=trainer.stage_sources(stage)).take(8).cache()
    # fed the way the trainer feeds its replicas (kerasface.train.input_options), so one traced step takes both
    memory = iter(strategy.distribute_datasets_from_function(lambda ctx: cached.repeat(), input_options(strategy)))
    for iterator in (real, memory):  # trace, fill the cache and the shuffle buffers
        for _ in range(3):
            step(iterator)

    def run(iterator):
        def go():
            for _ in range(steps):
                out = step(iterator)
            float(out[0])
        return go

    cpu = {}
    best = best_times({"pipeline": run(real), "memory": run(memory)}, rounds, cpu)
    images = steps * stage.batch_size
    return {"unit": f"{cfg.name}:{trainer.unit.name}", "batch": stage.batch_size,
            "pipeline": images / best["pipeline"], "memory": images / best["memory"],
            "cpu_ratio": cpu["memory"] / cpu["pipeline"]}


def unit_parser(description: str) -> argparse.ArgumentParser:
    """The unit options the input and allocator benchmarks share (units_of reads them)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--paper", action="append", help="recipe[:variant] (default: every recipe's demo)")
    parser.add_argument("--model", action="append", default=[], help="model key per --paper (default: its first unit)")
    parser.add_argument("--records", default="tfrecords", help="converted records (the demo's are made on first use)")
    return parser


def units_of(args) -> list[tuple[str, str | None]]:
    """(recipe spec, model key or None) per --paper; default: every recipe's demo, its first unit."""
    papers = args.paper or [name for name in PAPERS.names() if name != "custom"]
    return list(zip(papers, args.model + [None] * (len(papers) - len(args.model))))


def main() -> int:
    parser = unit_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"training images/s, real pipeline vs the same batches from memory; {args.steps} steps a round, "
          f"best of {args.rounds}; target pipeline/memory >= 0.90")
    print(f"{'unit':<58} {'batch':>5} {'pipeline':>9} {'memory':>8} {'ratio':>6} {'CPU':>6}")
    for spec, model in units_of(args):
        start = time.perf_counter()
        r = measure(spec, model, Path(args.records), args.steps, args.rounds)
        print(f"{r['unit']:<58} {r['batch']:>5} {r['pipeline']:>9.1f} {r['memory']:>8.1f} "
              f"{r['pipeline'] / r['memory']:>6.2f} {r['cpu_ratio']:>6.2f}   ({time.perf_counter() - start:.0f} s)",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
