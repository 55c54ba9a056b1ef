"""TensorFlow's CPU allocator: malloc (TensorFlow's default) against its BFC pool (kerasface's
default, set in kerasface/__init__.py), per recipe, training with the real pipeline.

    python benchmarks/bench_allocator.py [--paper wang_joint --model full ...] [--steps 20] [--rounds 2]

The allocator is chosen when TensorFlow first allocates, so each measurement is a child process
(this script with --child) started with TF_CPU_ALLOCATOR_USE_BFC=false or true; the children of
one unit alternate (malloc, BFC, malloc, BFC, ...) so that the machine's drift hits both alike,
and the best of each is kept. Each child builds the unit as the trainer does
(bench_input.unit_step), warms it up, then times `--steps` steps and reports wall-clock seconds
and the CPU seconds of the process split into user and system time: malloc hands large freed
blocks back to the kernel, so every step page-faults its activations in again (system time).
Default: the first unit of every recipe's demo.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import REPO  # noqa: F401  (puts the repository on sys.path)

ALLOCATORS = {"malloc": "false", "BFC": "true"}


def child(spec: str, model_key: str | None, records: Path, steps: int) -> dict:
    from bench_input import unit_step

    cfg, trainer, stage, step = unit_step(spec, model_key, records)
    iterator = iter(trainer.distributed_train_data(stage, 0))
    for _ in range(3):  # trace, fill the shuffle buffers, grow the pool
        step(iterator)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        out = step(iterator)
    float(out[0])
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {"unit": f"{cfg.name}:{trainer.unit.name}", "batch": stage.batch_size, "wall": wall / steps,
            "user": (after.ru_utime - before.ru_utime) / steps, "sys": (after.ru_stime - before.ru_stime) / steps,
            "faults": (after.ru_minflt - before.ru_minflt) / steps}


def run_child(spec: str, model_key: str | None, records: str, steps: int, allocator: str) -> dict:
    command = [sys.executable, __file__, "--child", "--paper", spec, "--records", records, "--steps", str(steps)]
    if model_key:
        command += ["--model", model_key]
    env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": ALLOCATORS[allocator], "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{spec} ({allocator}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    from bench_input import unit_parser, units_of

    parser = unit_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per child")
    parser.add_argument("--rounds", type=int, default=2, help="children per allocator and unit")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.paper[0], (args.model or [None])[0], Path(args.records), args.steps)))
        return 0
    print(f"training with the real pipeline, per step: malloc (TensorFlow's default) vs the BFC pool; "
          f"{args.steps} steps a child, best of {args.rounds} alternating children")
    print(f"{'unit':<52} {'batch':>5} {'allocator':>9} {'wall s':>7} {'user s':>7} {'sys s':>7} {'faults':>8}")
    for spec, model in units_of(args):
        best = {}
        for _ in range(args.rounds):
            for allocator in ALLOCATORS:
                r = run_child(spec, model, args.records, args.steps, allocator)
                kept = best.get(allocator)
                if kept is None or r["user"] + r["sys"] < kept["user"] + kept["sys"]:
                    best[allocator] = {**r, "wall": min(r["wall"], kept["wall"]) if kept else r["wall"]}
        for allocator, r in best.items():
            print(f"{r['unit']:<52} {r['batch']:>5} {allocator:>9} {r['wall']:>7.3f} {r['user']:>7.3f} "
                  f"{r['sys']:>7.3f} {r['faults']:>8.0f}")
        m, b = best["malloc"], best["BFC"]
        print(f"{'':<52} {'':>5} {'BFC gain':>9} {m['wall'] / b['wall']:>6.2f}x "
              f"CPU {(m['user'] + m['sys']) / (b['user'] + b['sys']):.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
