"""Feeding and reading a .tflite model's tensors whatever their type (numpy only, no TensorFlow).

A kerasface .tflite file has float32 input and outputs, or (int8 models exported with
`--io uint8|int8`) integer ones. An integer tensor carries an affine quantization,
real = scale * (q - zero_point), which the exporter records in FILE.tflite.json under
"inputs"/"outputs" -> NAME -> "quantization" and which LiteRT reports in the tensor details.
`to_input` quantizes float [0, 255] pixels for an integer input, `from_output` dequantizes an
integer output, so callers (the parity report, kerasface.predict) keep working in float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IO_TYPES = ("float32", "uint8", "int8")


def check_io(quant: str, io: str) -> None:
    """--io uint8/int8 only makes sense for a full-integer model."""
    if io not in IO_TYPES:
        raise ValueError(f"--io {io!r}: expected one of {', '.join(IO_TYPES)}")
    if io != "float32" and quant != "int8":
        raise ValueError(f"--io {io} needs --quant int8 (a {quant} model computes in float, so its input "
                         f"and outputs stay float32)")


def sidecar_path(tflite_file: str | Path) -> Path:
    """Where the description of a .tflite file lives: FILE + '.json'."""
    return Path(str(tflite_file) + ".json")


def quantization(detail: dict) -> dict:
    """{"dtype", "scale", "zero_point"} of a LiteRT tensor detail (scale 0 for float tensors)."""
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if dtype.kind == "f":
        scale, zero = 0.0, 0
    return {"dtype": dtype.name, "scale": float(scale), "zero_point": int(zero)}


def is_integer(detail: dict) -> bool:
    return np.dtype(detail["dtype"]).kind in "iu"


def to_input(detail: dict, x: np.ndarray) -> np.ndarray:
    """Float x -> what the input tensor takes: unchanged for float, q = round(x/scale) + zp clipped."""
    dtype = np.dtype(detail["dtype"])
    if not is_integer(detail):
        return np.ascontiguousarray(x, dtype)
    x = np.asarray(x)
    q = quantization(detail)
    if x.dtype == dtype and q["scale"] == 1.0 and q["zero_point"] == 0:
        return np.ascontiguousarray(x)  # camera pixels as they are
    info = np.iinfo(dtype)
    values = np.round(x.astype(np.float32) / np.float32(q["scale"])) + q["zero_point"]
    return np.ascontiguousarray(np.clip(values, info.min, info.max).astype(dtype))


def from_output(detail: dict, y: np.ndarray) -> np.ndarray:
    """An output tensor's values as float32: scale * (q - zp) for integer outputs."""
    if not is_integer(detail):
        return np.asarray(y, np.float32)
    q = quantization(detail)
    return (np.asarray(y, np.int32) - q["zero_point"]).astype(np.float32) * np.float32(q["scale"])
