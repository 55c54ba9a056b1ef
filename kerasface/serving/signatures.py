"""One SavedModel version, run as TF Serving runs it: its MetaGraphDef's tensors in a Session.

TF Serving loads every SavedModel with the TF1 loader into a Session (TF1 graphs with
placeholders and reference variables, `tf.saved_model.save` and Keras `model.export` exports
alike: the latter also carry a MetaGraphDef whose SignatureDefs name graph tensors) and runs a
signature by feeding its input tensors and fetching its output tensors. Doing the same here means
the graph decides which shapes it accepts, not a stricter Python function signature: a [3]
tensor fed to an input declared [?,1] runs when the graph's ops take it, as it does in TF Serving.

Request checks (input names, dtypes, output filter) and the Classify / Regress output rules are
TF Serving's, with its messages (ServingError).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from kerasface.serving.errors import ServingError, first_line, from_tf_error

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
INIT_OP_KEY = "__saved_model_init_op"

_DTYPE_NAMES: dict[int, str] = {}


def dtype_name(enum_value: int) -> str:
    """TF Serving's spelling of a DataType in messages: float, string, int32, ..."""
    if enum_value not in _DTYPE_NAMES:
        import tensorflow as tf

        try:
            _DTYPE_NAMES[enum_value] = tf.dtypes.as_dtype(enum_value).name.replace("float32", "float").replace(
                "float64", "double")
        except TypeError:
            _DTYPE_NAMES[enum_value] = f"DT_{enum_value}"
    return _DTYPE_NAMES[enum_value]


def _dims(info) -> list[int] | None:
    return None if info.tensor_shape.unknown_rank else [int(d.size) for d in info.tensor_shape.dim]


@dataclass
class Signature:
    name: str
    method_name: str
    inputs: dict[str, tuple[int, list[int] | None]]  # alias -> (DataType enum, dims or None)
    outputs: dict[str, tuple[int, list[int] | None]]
    input_tensors: dict[str, str] = field(default_factory=dict)  # alias -> graph tensor name
    output_tensors: dict[str, str] = field(default_factory=dict)

    @property
    def batchable(self) -> bool:
        """Every input and output has a leading unknown (batch) dimension: requests may be merged."""
        return all(dims and dims[0] == -1 for _, dims in [*self.inputs.values(), *self.outputs.values()])


def select_meta_graph(saved_model, tags: Iterable[str], path: Path):
    """The MetaGraphDef whose tag set is exactly `tags` (TF Serving's --saved_model_tags)."""
    wanted = set(tags)
    for meta in saved_model.meta_graphs:
        if set(meta.meta_info_def.tags) == wanted:
            return meta
    shown = " ".join(sorted(wanted))
    raise ServingError("NOT_FOUND", f"Could not find meta graph def matching supplied tags: {{ {shown} }}. To "
                                    "inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
                                    f"`saved_model_cli` (in {path})")


class LoadedModel:
    """One loaded version: its Session, its SignatureDefs, checked `run` calls."""

    def __init__(self, name: str, version: int, path: Path, tags: Iterable[str] = ("serve",),
                 session_config=None):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.name, self.version, self.path = name, version, Path(path)
        self.tags = tuple(tags)
        saved_model = saved_model_pb2.SavedModel()
        pb = self.path / "saved_model.pb"
        if not pb.is_file():
            raise ServingError("NOT_FOUND", f"Could not find SavedModel .pb or .pbtxt at supplied export directory "
                                            f"path: {self.path}")
        saved_model.ParseFromString(pb.read_bytes())
        meta = select_meta_graph(saved_model, self.tags, self.path)
        self.signature_defs = {k: v for k, v in meta.signature_def.items() if k != INIT_OP_KEY}
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config)
        with self.graph.as_default():
            tf.compat.v1.saved_model.loader.load(self.session, list(self.tags), str(self.path))
        self.signatures = {
            key: Signature(key, sig.method_name,
                           {a: (i.dtype, _dims(i)) for a, i in sig.inputs.items()},
                           {a: (i.dtype, _dims(i)) for a, i in sig.outputs.items()},
                           {a: i.name for a, i in sig.inputs.items()},
                           {a: i.name for a, i in sig.outputs.items()})
            for key, sig in self.signature_defs.items()}
        self._callables: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def signature(self, name: str) -> Signature:
        key = name or "serving_default"
        if key not in self.signatures:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{key}" not found.')
        return self.signatures[key]

    def check_inputs(self, sig: Signature, inputs: dict[str, np.ndarray], dtypes: dict[str, int]) -> None:
        """TF Serving's checks: input names, then dtypes (INVALID_ARGUMENT); shapes are the graph's."""
        sent, required = set(inputs), set(sig.inputs)
        if sent != required:
            extra = ",".join(sorted(sent - required))
            missing = ",".join(sorted(required - sent))
            raise ServingError("INVALID_ARGUMENT",
                               f"Request inputs do not match required inputs for model `{self.name}`. "
                               f"Send extra: {{{extra}}}. Missing but required: {{{missing}}}.")
        for index, alias in enumerate(sorted(sig.inputs)):
            want = sig.inputs[alias][0]
            if dtypes[alias] != want:
                raise ServingError("INVALID_ARGUMENT", f"Expects arg[{index}] to be {dtype_name(want)} "
                                                       f"but {dtype_name(dtypes[alias])} is provided")

    def check_output_filter(self, sig: Signature, output_filter: Iterable[str]) -> list[str]:
        names = list(output_filter)
        for alias in names:
            if alias not in sig.outputs:
                raise ServingError("INVALID_ARGUMENT",
                                   f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                                   f"the set {{{','.join(sorted(sig.outputs))}}}.")
        return names or sorted(sig.outputs)

    def run(self, sig: Signature, inputs: dict[str, np.ndarray],
            outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Feed the signature's input tensors, fetch its output tensors (all, or `outputs`)."""
        import tensorflow as tf

        feeds = sorted(inputs)
        fetches = sorted(outputs if outputs is not None else sig.outputs)
        key = (sig.name, tuple(feeds), tuple(fetches))
        with self._lock:
            fn = self._callables.get(key)
            if fn is None:
                # a callable built from CallableOptions runs in C++ as TF Serving's Session::Run does,
                # without the Python client's stricter check of fed shapes against static shapes
                from tensorflow.core.protobuf import config_pb2

                options = config_pb2.CallableOptions(feed=[sig.input_tensors[a] for a in feeds],
                                                     fetch=[sig.output_tensors[a] for a in fetches])
                fn = self.session._make_callable_from_options(options)
                self._callables[key] = fn
        try:
            values = fn(*[inputs[a] for a in feeds])
        except tf.errors.OpError as exc:
            raise from_tf_error(exc) from None
        except (ValueError, TypeError) as exc:  # a value numpy cannot hand to the session
            raise ServingError("INVALID_ARGUMENT", first_line(str(exc), "invalid input")) from None
        return {a: np.asarray(v) for a, v in zip(fetches, values)}


# ----------------------------------------------------------------------------- Classify / Regress


def example_input(model: LoadedModel, sig: Signature, api: str) -> str:
    """The alias of a Classify / Regress signature's serialized tf.Example input ("inputs", string)."""
    import tensorflow as tf

    if "inputs" not in sig.inputs or len(sig.inputs) != 1:
        raise ServingError("INVALID_ARGUMENT", f"No {api} inputs found in SignatureDef: {sig.name} (expected one "
                                               f"input named inputs, got {', '.join(sorted(sig.inputs)) or 'none'})")
    if sig.inputs["inputs"][0] != tf.string.as_datatype_enum:
        raise ServingError("INVALID_ARGUMENT", f"Expected input Tensor of DT_STRING in SignatureDef: {sig.name}, "
                                               f"got {dtype_name(sig.inputs['inputs'][0])}")
    return "inputs"


def classification_outputs(sig: Signature) -> list[str]:
    import tensorflow as tf

    present = [k for k in ("classes", "scores") if k in sig.outputs]
    if not present:
        raise ServingError("INVALID_ARGUMENT", f"Expected classification signature outputs to contain classes "
                                               f"and/or scores; {sig.name} has {', '.join(sorted(sig.outputs))}")
    if "classes" in sig.outputs and sig.outputs["classes"][0] != tf.string.as_datatype_enum:
        raise ServingError("INVALID_ARGUMENT", "Expected classes Tensor of DT_STRING. Got: "
                                               f"{dtype_name(sig.outputs['classes'][0])}")
    if "scores" in sig.outputs and sig.outputs["scores"][0] != tf.float32.as_datatype_enum:
        raise ServingError("INVALID_ARGUMENT", "Expected scores Tensor of DT_FLOAT. Got: "
                                               f"{dtype_name(sig.outputs['scores'][0])}")
    return present


def classification_result(outputs: dict[str, np.ndarray], rows: int) -> list[list[tuple[str, float]]]:
    """[[(label, score) per class] per example]; label "" without classes, score 0 without scores."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for name, value in (("classes", classes), ("scores", scores)):
        if value is not None and (value.ndim != 2 or value.shape[0] != rows):
            raise ServingError("INVALID_ARGUMENT", f"Expected Tensor shape: [{rows} num_classes] but got "
                                                   f"[{','.join(map(str, value.shape))}] for {name}")
    if classes is not None and scores is not None and classes.shape != scores.shape:
        raise ServingError("INVALID_ARGUMENT", f"Tensors class and score should match in shape: classes "
                                               f"{list(classes.shape)}, scores {list(scores.shape)}")
    width = (classes if classes is not None else scores).shape[1]
    return [[(_text(classes[i, j]) if classes is not None else "",
              float(scores[i, j]) if scores is not None else 0.0) for j in range(width)] for i in range(rows)]


def regression_outputs(sig: Signature) -> list[str]:
    import tensorflow as tf

    if "outputs" not in sig.outputs:
        raise ServingError("INVALID_ARGUMENT", f"No regression outputs found in SignatureDef: {sig.name}")
    if sig.outputs["outputs"][0] != tf.float32.as_datatype_enum:
        raise ServingError("INVALID_ARGUMENT", "Expected output Tensor of DT_FLOAT. Got: "
                                               f"{dtype_name(sig.outputs['outputs'][0])}")
    return ["outputs"]


def regression_result(outputs: dict[str, np.ndarray], rows: int) -> list[float]:
    values = outputs["outputs"]
    if not (values.shape == (rows,) or values.shape == (rows, 1)):
        raise ServingError("INVALID_ARGUMENT", f"Expected output Tensor shape to be either [{rows}] or [{rows}, 1] "
                                               f"but got [{','.join(map(str, values.shape))}]")
    return [float(v) for v in values.reshape(-1)]


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
