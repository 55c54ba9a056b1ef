"""What predict reads: paths (files, folders, globs), encoded bytes and arrays -> `Item`s, and
each item's pixels."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kerasface.faces.images import expand_paths, load_image, to_rgb_uint8


@dataclass
class Item:
    """One image to analyse: a source (path, bytes or array), its reported name, where to draw it."""

    source: Any
    name: str
    rel: Path  # relative output name for --annotate


def expand_inputs(inputs) -> list[Item]:
    """Paths (files, folders searched recursively, globs), bytes and arrays -> Items in order."""
    if isinstance(inputs, (str, os.PathLike, bytes, bytearray, np.ndarray)) or hasattr(inputs, "numpy"):
        inputs = [inputs]
    items: list[Item] = []
    for k, inp in enumerate(inputs):
        if isinstance(inp, (bytes, bytearray)):
            items.append(Item(bytes(inp), f"<bytes {k}>", Path(f"image_{k}.png")))
        elif isinstance(inp, (str, os.PathLike)):
            items.extend(Item(*found) for found in expand_paths([inp]))
        else:
            items.append(Item(inp, f"<array {k}>", Path(f"image_{k}.png")))
    return items


def load_item(item: Item) -> np.ndarray:
    """The item's pixels as RGB uint8; ImageError (naming the item) when they cannot be had."""
    if isinstance(item.source, (str, os.PathLike, bytes)):
        return load_image(item.source)
    return to_rgb_uint8(item.source, item.name)
