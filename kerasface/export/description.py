"""What every export says about itself (export.json beside a SavedModel, FILE.tflite.json beside
a .tflite file): the parts both descriptions share, built here once. Each exporter adds only what
is its own (signatures and versions; quantization, ops and size) and keeps its fields' order.

kerasface.predict reads these files: the crop, input_size, channels, outputs and labels fields are
what it checks a model against.
"""

from __future__ import annotations

from kerasface.data.pipeline import RESIZE
from kerasface.export.graph import PREPROCESSING, ServingGraph
from kerasface.export.run import Run, Selection, metric_summary
from kerasface.tasks import head_kind


def colour_mode(channels: int) -> str:
    return "rgb" if channels == 3 else "grayscale"


def describe_source(run: Run) -> dict:
    """The run an export came from."""
    return {"run_dir": str(run.folder.resolve()), "paper": run.name}


def describe_input(graph: ServingGraph) -> dict:
    """The float input's size (height, width) and channels."""
    return {"input_size": list(graph.input_size), "channels": graph.channels}


def describe_preprocessing() -> dict:
    """How a crop becomes the float input: the training pipeline's steps."""
    return {"steps": PREPROCESSING, "resize": dict(RESIZE), "range": [0, 255], "dtype": "float32"}


def describe_outputs(graph: ServingGraph, selection: Selection) -> dict:
    out = {}
    for task in graph.tasks:
        unit = selection.heads[task.name]
        out[task.name] = {
            "kind": task.kind,
            "labels": list(task.labels),
            "dtype": "float32",
            "shape": [-1, task.size or -1],  # an embedding's width is the model's feature size
            "meaning": head_kind(task.kind).meaning(task.labels),
            "unit": unit.name,
            "model_key": unit.model_key,
            "val": metric_summary(unit, task, "val"),
            "test": metric_summary(unit, task, "test"),
        }
    return out


def describe_heads(graph: ServingGraph) -> list[dict]:
    heads = []
    for h in graph.heads:
        d = h.unit.describe()
        d["answers"] = [t.name for t in h.tasks]
        d["model_file"] = str(h.unit.model_path)
        heads.append(d)
    return heads


def describe_answers(graph: ServingGraph, selection: Selection) -> dict:
    """What the export answers: its outputs, their labels, the heads behind them, the selection."""
    return {
        "outputs": describe_outputs(graph, selection),
        "labels": graph.labels(),
        "heads": describe_heads(graph),
        "selection": selection.describe(),
    }
