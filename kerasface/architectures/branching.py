"""One model from a trunk and task branches fine-tuned from it at different depths
(flickr_depth's production model, Fig. 1 of the paper).

Each fine-tuned model is the trunk's architecture with the trunk's weights below its branch point
(frozen while it trained) and its own from the branch point on. `branched_model` keeps the trunk
whole and, for each task, re-applies copies of the fine-tuned model's layers from the branch point
on (named "<task>__<layer>", heads keep their "head_<task>" names) to the trunk's tensors below it:
one forward pass gives every task's output, the trunk's own outputs and its "features" embedding,
equal to running each model separately (tested), for the multiply-adds of the trunk plus the
branches.
"""

from __future__ import annotations

import keras


def _source(tensor) -> str:
    """The name of the layer that produced a symbolic tensor (all layers here have one output)."""
    return tensor._keras_history[0].name


def branch_layers(model: keras.Model, point: str, task: str) -> list:
    """The layers of `model` from `point` on (topological order); point "" = the task's head alone."""
    names = [layer.name for layer in model.layers]
    start = point or f"head_{task}"
    if start not in names:
        raise ValueError(f"branch point {start!r}: no layer of that name in {model.name}")
    return model.layers[names.index(start):]


def branched_model(trunk: keras.Model, branches: dict[str, tuple[str, keras.Model]],
                   name: str = "production") -> keras.Model:
    """trunk: the model every branch was fine-tuned from; branches: task -> (branch point, the
    fine-tuned model) with point "" for a new head on the trunk's features. Outputs: the trunk's
    outputs and each task's."""
    outputs = dict(trunk.output) if isinstance(trunk.output, dict) else {"trunk": trunk.output}
    for task, (point, tuned) in branches.items():
        layers = branch_layers(tuned, point, task)
        inside = {layer.name for layer in layers}
        built: dict[str, object] = {}

        def value(tensor, built=built, inside=inside):
            if not isinstance(tensor, keras.KerasTensor):
                return tensor
            source = _source(tensor)
            if source in inside:
                return built[source]
            return trunk.get_layer(source).output  # below the branch point: the trunk's own tensor

        for layer in layers:
            node = layer._inbound_nodes[0]
            args = keras.tree.map_structure(value, node.arguments.args)
            kwargs = keras.tree.map_structure(value, node.arguments.kwargs)
            copy_name = layer.name if layer.name == f"head_{task}" else f"{task}__{layer.name}"
            copy = layer.__class__.from_config({**layer.get_config(), "name": copy_name})
            built[layer.name] = copy(*args, **kwargs)
            copy.set_weights(layer.get_weights())
        heads = tuned.output if isinstance(tuned.output, dict) else {task: tuned.output}
        outputs[task] = built[_source(heads[task])]
    return keras.Model(trunk.input, outputs, name=name)
