"""A .tflite export (described by FILE.tflite.json beside it), run by the LiteRT interpreter.

Integer-I/O files (int8 exports with --io uint8|int8) get their float [0, 255] input quantized and
their outputs dequantized with the tensors' own scale and zero point (kerasface.export.litert_io),
so predict returns the same float answers as for a float-I/O file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerasface.export.litert_io import from_output, to_input
from kerasface.faces.images import one_line
from kerasface.predict.model import (FLOAT_INPUT, TFLITE_FORMAT_PREFIX, Model, ModelError, ModelInfo,
                                     check_outputs, check_shape, read_description)


class TFLiteModel(Model):
    def __init__(self, path: str | os.PathLike, name: str | None = None, threads: int | None = None):
        from kerasface.export.litert_io import sidecar_path

        file = Path(path)
        where = str(file)
        if not file.is_file():
            raise ModelError(f"{where}: no such .tflite file")
        side = sidecar_path(file)
        if not side.is_file():
            raise ModelError(f"{where}: not a kerasface export (no {side.name} beside it)")
        desc, crop, size, channels, outputs = read_description(side, where, TFLITE_FORMAT_PREFIX)
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interp = Interpreter(model_path=str(file), num_threads=threads or min(4, os.cpu_count() or 1))
            runner_sigs = self._interp.get_signature_list()
        except Exception as exc:
            raise ModelError(f"{where}: cannot load the TFLite model ({one_line(exc)})") from None
        sig = desc.get("signature") or "serving_default"
        if sig not in runner_sigs or FLOAT_INPUT not in runner_sigs[sig]["inputs"]:
            raise ModelError(f"{where}: no {sig} signature with an {FLOAT_INPUT!r} input "
                             f"(signatures: {', '.join(runner_sigs) or 'none'})")
        self._sig = sig
        runner = self._interp.get_signature_runner(sig)
        detail = runner.get_input_details()[FLOAT_INPUT]
        check_shape(detail["shape"], size, channels, where, "TFLite")
        check_outputs(runner_sigs[sig]["outputs"], outputs, where)
        self._signature_shape = detail.get("shape_signature")
        self._batch = 1
        self._runner = runner
        self._in_detail = detail
        self._out_details = runner.get_output_details()
        default = file.name[: -len(".tflite")] if file.name.endswith(".tflite") else file.stem
        self.info = ModelInfo(name or default, where, "tflite", crop, size, channels, outputs)

    def _resize(self, batch: int) -> None:
        if batch == self._batch:
            return
        index = self._runner.get_input_details()[FLOAT_INPUT]["index"]
        h, w = self.info.input_size
        self._interp.resize_tensor_input(index, [batch, h, w, self.info.channels], strict=True)
        self._interp.allocate_tensors()
        self._runner = self._interp.get_signature_runner(self._sig)
        self._batch = batch

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = to_input(self._in_detail, np.asarray(x, np.float32))
        dynamic = self._signature_shape is not None and int(self._signature_shape[0]) == -1
        if dynamic:
            try:
                self._resize(len(x))
                return {k: from_output(self._out_details[k], v) for k, v in self._runner(**{FLOAT_INPUT: x}).items()}
            except (RuntimeError, ValueError):
                self._signature_shape = None  # the model does not take batches: one by one
                self._resize(1)
        self._resize(1)
        outs: dict[str, list] = {}
        for i in range(len(x)):
            for k, v in self._runner(**{FLOAT_INPUT: x[i : i + 1]}).items():
                outs.setdefault(k, []).append(from_output(self._out_details[k], v[0]))
        return {k: np.stack(v) for k, v in outs.items()}
