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


def multiply_adds(model) -> int:
    """Multiply-adds of one image through `model`'s convolutions and fully connected layers (the
    figure papers quote as "FLOPs"; TensorFlow's profiler counts 2 per multiply-add), from the
    layers' shapes: exact for Conv2D, DepthwiseConv2D and Dense; batch norm, pooling and
    activations are not counted."""
    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, layers.DepthwiseConv2D):
            out = layer.output.shape
            total += out[1] * out[2] * out[3] * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, layers.Conv2D):
            out = layer.output.shape
            cin = layer.input.shape[-1]
            total += out[1] * out[2] * out[3] * layer.kernel_size[0] * layer.kernel_size[1] * cin // layer.groups
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)
