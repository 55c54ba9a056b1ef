"""Shared by the benchmark scripts: the repository on sys.path and the test suite's fake-run builder."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def load_fixture_module():
    """tests/run_fixture.py, which fabricates a small trained run (tests are not a package)."""
    spec = importlib.util.spec_from_file_location("run_fixture", REPO / "tests" / "run_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def best_times(runs, rounds: int, cpu: dict | None = None) -> dict[str, float]:
    """Best wall-clock seconds of each `runs[name]()` over `rounds` rounds. Within a round the runs
    go in turn, so the drift of a shared machine hits them alike and their ratio stays meaningful;
    warm them up (trace, allocate) before. `cpu`, when given, receives the least CPU time of the
    process (all its threads) per run: what other jobs on the machine do not add to."""
    import time

    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
            if cpu is not None:
                cpu[name] = min(cpu.get(name, float("inf")), time.process_time() - start_cpu)
    return best


def seconds_per_call(fns, rounds: int = 3, round_seconds: float = 2.0, cpu: dict | None = None) -> dict[str, float]:
    """Seconds per call of each function (an inference call): two warm-up calls each (the first
    traces, the second is timed to size the rounds), then `rounds` interleaved rounds (best_times)
    of as many calls as fill about `round_seconds`; the best round counts. `cpu`, when given,
    receives the CPU seconds per call of the process (best_times)."""
    import time

    calls = {}
    for name, fn in fns.items():
        fn()
        start = time.perf_counter()
        fn()
        calls[name] = max(1, int(round_seconds / max(time.perf_counter() - start, 1e-6)))
    spent = {}
    best = best_times({name: (lambda fn=fn, n=calls[name]: [fn() for _ in range(n)]) for name, fn in fns.items()},
                      rounds, spent)
    if cpu is not None:
        cpu.update({name: spent[name] / calls[name] for name in fns})
    return {name: best[name] / calls[name] for name in fns}
