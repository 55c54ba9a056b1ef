"""Small helpers shared by the architecture builders."""

from __future__ import annotations

from keras import layers


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


def task_heads(features, heads: dict[str, int]) -> dict:
    """One Dense output per task, named head_<task>. The heads compute in float32 even under a
    mixed_float16 policy, so logits, losses and exported outputs keep full precision."""
    return {task: layers.Dense(units, dtype="float32", name=f"head_{task}")(features) for task, units in heads.items()}
