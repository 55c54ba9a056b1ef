"""MegaFace-style identification cost against a growing distractor set: streamed vs in memory,
printed as ratios against the in-memory run of the same size in the same command.

    python benchmarks/bench_wang.py [--sizes 10000,100000] [--million] [--identities 20]
                                    [--per-identity 10] [--dim 1024] [--batch-size 8192]

Synthetic 1024-d embeddings: `identities` x `per_identity` probes (FaceScrub's layout: every
image of a person in turn in the gallery, the others probing it), clustered per identity, and N
random distractors written to a float32 .npy (in chunks, never whole in memory here).
  in memory  the .npy loaded whole and scored in one block (kerasface.evaluators.megaface,
             batch_size = N): the probe x distractor matrix exists at once
  streamed   the .npy memory-mapped and scored `batch_size` distractors at a time
For each N: seconds (best of --repeats), the peak of numpy/Python allocations (tracemalloc, the
memory map's pages not counted: they are the OS's file cache), the ratios streamed / in memory,
and whether the two results are identical (they must be). --million adds N = 1,000,000 (about
4 GB of .npy on disk; the in-memory run needs ~16 GB of RAM and is skipped above --max-memory-gb).
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401  (the repository on sys.path)

import numpy as np  # noqa: E402

from kerasface.evaluators import megaface  # noqa: E402


def write_distractors(path: Path, count: int, dim: int, seed: int) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, dim))
    rng = np.random.default_rng(seed)
    for start in range(0, count, 50_000):
        stop = min(count, start + 50_000)
        out[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    out.flush()
    del out


def timed(fn, repeats: int):
    best, peak, result = float("inf"), 0, None
    for _ in range(repeats):
        tracemalloc.start()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return best, peak, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--million", action="store_true", help="add 1,000,000 distractors")
    parser.add_argument("--identities", type=int, default=20)
    parser.add_argument("--per-identity", type=int, default=10)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--noise", type=float, default=3.0, help="per-image noise around the identity centre")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-memory-gb", type=float, default=8.0, help="skip in-memory runs needing more")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s] + ([1_000_000] if args.million else [])
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(args.identities), args.per_identity)
    centres = rng.standard_normal((args.identities, args.dim))
    probes = centres[ids] + args.noise * rng.standard_normal((len(ids), args.dim))
    print(f"{len(ids)} probes ({args.identities} identities x {args.per_identity}), {args.dim}-d, "
          f"distractor batches of {args.batch_size}; best of {args.repeats}")
    print(f"{'distractors':>12} {'in memory s':>12} {'streamed s':>11} {'time ratio':>11} "
          f"{'in-memory MB':>13} {'streamed MB':>12} {'memory ratio':>13} {'rank-1':>7} {'TAR@1e-6':>9} identical")
    work = Path(tempfile.mkdtemp(prefix="kf-bench-wang-"))
    for n in sizes:
        path = work / f"distractors_{n}.npy"
        write_distractors(path, n, args.dim, seed=n)
        streamed_s, streamed_peak, streamed = timed(
            lambda path=path: megaface(probes, ids, str(path), batch_size=args.batch_size), args.repeats)
        need_gb = (n * args.dim * (4 + 8) + len(ids) * n * 8 * 2) / 1e9
        if need_gb > args.max_memory_gb:
            print(f"{n:>12,} {'skipped':>12} {streamed_s:>11.2f} {'':>11} {'':>13} {streamed_peak / 1e6:>12.0f} "
                  f"{'':>13} {streamed['rank1']:>7.3f} {streamed['tar_at_far']['1e-06']['tar']:>9.3f} "
                  f"(in memory would need ~{need_gb:.0f} GB)")
            path.unlink()
            continue

        def in_memory(path=path):
            whole = np.load(path)
            return megaface(probes, ids, whole, batch_size=len(whole))

        memory_s, memory_peak, reference = timed(in_memory, args.repeats)
        same = {k: v for k, v in streamed.items() if k != "batches"} == \
            {k: v for k, v in reference.items() if k != "batches"}
        print(f"{n:>12,} {memory_s:>12.2f} {streamed_s:>11.2f} {streamed_s / memory_s:>10.2f}x "
              f"{memory_peak / 1e6:>13.0f} {streamed_peak / 1e6:>12.0f} {streamed_peak / memory_peak:>12.3f}x "
              f"{reference['rank1']:>7.3f} {reference['tar_at_far']['1e-06']['tar']:>9.3f} {'yes' if same else 'NO'}")
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
