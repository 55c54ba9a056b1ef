"""Write a tiny MTFL-format dataset (real folder names and list-file quirks) with known pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_tiny_mtfl(root: Path, n_train: int = 10, n_test: int = 4, size: int = 160, seed: int = 0) -> dict:
    """Returns {relative path: (image array, landmarks (5, 2), labels list)} for every listed face."""
    rng = np.random.default_rng(seed)
    truth = {}
    lines = {"training.txt": [], "testing.txt": []}
    for split, count in (("training.txt", n_train), ("testing.txt", n_test)):
        for i in range(count):
            folder = ("lfw_5590" if i % 2 else "net_7876") if split == "training.txt" else "AFLW"
            rel = f"{folder}/img_{split[:4]}_{i:03d}.png"
            image = rng.integers(0, 256, (size, size + 10 * (i % 3), 3), dtype=np.uint8)
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / rel)
            landmarks = rng.uniform(30, size - 30, (5, 2)).round(6)
            labels = [int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(1, 6))]
            truth[rel] = (image, landmarks, labels)
            sep = "\\" if split == "training.txt" else "/"
            coords = " ".join(f"{v:.6f}" for v in list(landmarks[:, 0]) + list(landmarks[:, 1]))
            lines[split].append(f"{rel.replace('/', sep)} {coords} {' '.join(map(str, labels))}")
    for name, rows in lines.items():
        (root / name).write_bytes(("\r\n ".join(rows) + "\r\n ").encode())
    return truth
