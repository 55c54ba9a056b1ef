"""Small helpers shared by the architecture builders."""

from __future__ import annotations


def scaled(n: int, width: float) -> int:
    """A filter count multiplied by the width factor, at least 1."""
    return max(1, int(round(n * width)))


def check_heads(heads: dict[str, int]) -> None:
    """Heads map identifiers (not ending in '__aux', kept for auxiliary outputs) to positive unit counts."""
    if not heads:
        raise ValueError("heads must name at least one task, e.g. {'smile': 2}")
    for task, units in heads.items():
        if not isinstance(task, str) or not task.isidentifier() or task.endswith("__aux"):
            raise ValueError(f"bad head name {task!r}: expected a Python identifier not ending in '__aux'")
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"head {task!r}: expected a positive int of units, got {units!r}")
