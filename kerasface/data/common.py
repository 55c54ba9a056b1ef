"""What the dataset readers share: the seeded splits, finding a dataset's folder, format errors.

Every reader parses its dataset's own files exactly; a malformed entry raises `FormatError`
(a ValueError) whose message starts with `file:line` (or `file: entry N` for binary files) and
says what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

#: landmarks of a face whose points the dataset does not give (detected, or none: face crops)
NO_LANDMARKS = np.full((5, 2), np.nan, np.float32)


class FormatError(ValueError):
    """An entry of a dataset file does not have the expected form."""


def seeded_split(items: Sequence[T], val_fraction: float, seed: int,
                 test_fraction: float = 0.0) -> tuple[list[T], list[T], list[T]]:
    """(train, val, test): one seeded permutation; its first round(n * test_fraction) items are the
    test split, the next round(rest * val_fraction) the validation split, the others train; each
    split keeps the items' order. The test split depends only on the seed and test_fraction, not on
    val_fraction; with test_fraction 0 this is MTFL's seeded train/val split."""
    order = np.random.default_rng(seed).permutation(len(items))
    n_test = round(len(items) * test_fraction)
    rest = order[n_test:]
    n_val = round(len(rest) * val_fraction)
    parts = order[:n_test], rest[:n_val], rest[n_val:]
    test, val, train = ([items[i] for i in sorted(part.tolist())] for part in parts)
    return train, val, test


def find_root(root: str | os.PathLike | None, env_var: str, dataset: str,
              locate: Callable[[Path], Path | None], expected: str, demo: bool = False) -> Path:
    """The dataset folder from an explicit path or $env_var: `locate(candidate)` returns the folder
    that holds the dataset's files (the candidate itself or a folder inside it), or None. `demo`:
    the dataset has a demo copy, and the error says so."""
    candidate = str(root) if root else os.environ.get(env_var, "")
    found = locate(Path(candidate)) if candidate else None
    if found is not None:
        return found
    looked = candidate or f"(no --data/--root given and ${env_var} is not set)"
    raise FileNotFoundError(f"{dataset} not found at {looked}: expected {expected}. "
                            f"Point --data/--root (or ${env_var}) at your copy"
                            + (", or add --demo to run on the built-in demo data." if demo else "."))


def finish_demo(root: Path, list_name: str, lines: list[str], writer: str, seed: int, what: str) -> Path:
    """The last step of a demo writer: its list file `list_name` (`lines`, LF ends, a trailing
    newline) written under a temporary name and renamed, and a DEMO_README.txt saying that the
    faces are synthetic (`writer` made them with `seed`; `what` they show)."""
    tmp = root / f"{list_name}.tmp"
    tmp.write_bytes(("\n".join(lines) + "\n").encode("ascii"))
    os.replace(tmp, root / list_name)
    (root / "DEMO_README.txt").write_text(
        "SYNTHETIC DEMO DATA - NOT REAL FACES\n\n"
        f"Every face here was drawn by a program ({writer}, seed {seed}): {what}.\n"
        "No image shows, or is derived from, a real person; results on it only show that a pipeline\n"
        "runs and learns.\n")
    return root
