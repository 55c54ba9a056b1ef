"""TensorProto <-> numpy without TensorFlow's Python helpers on the request path.

`tf.make_ndarray` and `tf.make_tensor_proto` are general (any dtype, broadcasting, quantized
types) and cost ~100 us a call in Python whatever the tensor's size; a Predict request pays one
per input and one per output, with the GIL held. These functions do the same for the dtypes a
SavedModel signature takes and answers in practice, with a table lookup and a numpy call:

- `to_ndarray(proto)` equals `tf.make_ndarray(proto)` (tensor_content read with
  `np.frombuffer`, no copy: the array is read-only; value fields read with `np.fromiter` and
  padded with their last value as TensorFlow pads them). Anything else (quantized, complex,
  float8, int4, unknown dtypes, strings packed in tensor_content) goes to `tf.make_ndarray`, so
  the results and errors are TensorFlow's own.
- `to_tensor_proto(array, tensor_content)` writes an output as TF Serving's `AsProtoField`
  writes it: float_val, double_val, int_val (int8/16/32, uint8/16), int64_val, uint32_val,
  uint64_val, bool_val, half_val (float16/bfloat16 bit patterns), string_val. With
  `tensor_content=True` (--enable_serialization_as_tensor_content) it equals
  `tf.make_tensor_proto(array)`: tensor_content for numeric tensors of more than one element,
  value fields otherwise. Other dtypes go to `tf.make_tensor_proto`.
"""

from __future__ import annotations

import numpy as np

# DataType enum values (tensorflow/core/framework/types.proto)
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_BFLOAT16, DT_UINT16, DT_HALF, DT_UINT32, DT_UINT64 = 9, 10, 14, 17, 19, 22, 23


def _bfloat16():
    try:
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    except ImportError:  # pragma: no cover - TensorFlow depends on ml_dtypes
        return None


_BF16 = _bfloat16()

# enum -> (numpy dtype, value field, TensorFlow packs it in tensor_content when size > 1)
_BY_ENUM: dict[int, tuple[np.dtype, str, bool]] = {
    DT_FLOAT: (np.dtype(np.float32), "float_val", True),
    DT_DOUBLE: (np.dtype(np.float64), "double_val", True),
    DT_INT32: (np.dtype(np.int32), "int_val", True),
    DT_UINT8: (np.dtype(np.uint8), "int_val", True),
    DT_INT16: (np.dtype(np.int16), "int_val", True),
    DT_INT8: (np.dtype(np.int8), "int_val", True),
    DT_UINT16: (np.dtype(np.uint16), "int_val", False),
    DT_INT64: (np.dtype(np.int64), "int64_val", True),
    DT_UINT32: (np.dtype(np.uint32), "uint32_val", True),
    DT_UINT64: (np.dtype(np.uint64), "uint64_val", True),
    DT_BOOL: (np.dtype(np.bool_), "bool_val", False),
    DT_HALF: (np.dtype(np.float16), "half_val", True),
}
if _BF16 is not None:
    _BY_ENUM[DT_BFLOAT16] = (_BF16, "half_val", True)

# numpy dtype -> (enum, value field, tensor_content allowed); native byte order only
_BY_DTYPE: dict[np.dtype, tuple[int, str, bool]] = {dt: (enum, fld, packed)
                                                     for enum, (dt, fld, packed) in _BY_ENUM.items()}
_HALF_BITS = np.dtype(np.uint16)

#: the DataTypes both directions handle without TensorFlow (the others are TensorFlow's)
FAST_DTYPES = frozenset(_BY_ENUM) | {DT_STRING}


class TensorConversionError(ValueError):
    """A TensorProto that cannot be read (TensorFlow's own message)."""


def _tf_make_ndarray(proto) -> np.ndarray:
    import tensorflow as tf

    return tf.make_ndarray(proto)


def to_ndarray(proto) -> np.ndarray:
    """`tf.make_ndarray(proto)`, fast for the common dtypes (tensor_content arrays are read-only)."""
    enum = proto.dtype
    shape = [d.size for d in proto.tensor_shape.dim]
    content = proto.tensor_content
    if enum == DT_STRING:
        if content:
            return _tf_make_ndarray(proto)
        values = list(proto.string_val)
        count = int(np.prod(shape, dtype=np.int64))
        if count > len(values):
            values.extend([values[-1] if values else ""] * (count - len(values)))
        return np.array(values, dtype=object).reshape(shape)
    spec = _BY_ENUM.get(enum)
    if spec is None or any(d < 0 for d in shape):
        return _tf_make_ndarray(proto)
    dtype, value_field, _ = spec
    if content:
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    if value_field == "half_val":
        values = np.fromiter(proto.half_val, dtype=_HALF_BITS).view(dtype)
    else:
        values = np.fromiter(getattr(proto, value_field), dtype=dtype)
    if values.size == 0:
        return np.zeros(shape, dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if values.size != count:
        values = np.pad(values, (0, count - values.size), "edge")
    return values.reshape(shape)


def _tf_make_tensor_proto(array: np.ndarray, tensor_content: bool):
    import tensorflow as tf

    proto = tf.make_tensor_proto(array)
    if tensor_content or not proto.tensor_content:
        return proto
    spec = _BY_DTYPE.get(array.dtype)
    if spec is None:
        return proto
    proto.ClearField("tensor_content")  # a dtype TensorFlow packs but TF Serving writes in its field
    getattr(proto, spec[1]).extend(array.reshape(-1).tolist())
    return proto


def _as_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(type(value).__name__)


def to_tensor_proto(array, tensor_content: bool = False, out=None):
    """A TensorProto of `array` in TF Serving's output form (see the module docstring).

    `out`: an empty TensorProto to fill (e.g. `response.outputs[name]`) instead of a new one.
    """
    array = np.asarray(array)
    dtype = array.dtype
    if dtype.kind == "O":
        try:
            values = [_as_bytes(v) for v in array.reshape(-1).tolist()]
        except TypeError:
            return _copy(_tf_make_tensor_proto(array, tensor_content), out)
        proto = _new(DT_STRING, out)
        _set_shape(proto, array.shape)
        proto.string_val.extend(values)
        return proto
    spec = _BY_DTYPE.get(dtype) if dtype.isnative else None
    if spec is None:
        return _copy(_tf_make_tensor_proto(array, tensor_content), out)
    enum, value_field, packed = spec
    proto = _new(enum, out)
    _set_shape(proto, array.shape)
    if tensor_content and packed and array.size > 1:
        proto.tensor_content = array.tobytes()
    elif value_field == "half_val":
        proto.half_val.extend(array.reshape(-1).view(_HALF_BITS).tolist())
    else:
        getattr(proto, value_field).extend(array.reshape(-1).tolist())
    return proto


def _new(enum: int, out):
    if out is None:
        from tensorflow.core.framework import tensor_pb2

        return tensor_pb2.TensorProto(dtype=enum)
    out.dtype = enum
    return out


def _copy(proto, out):
    if out is None:
        return proto
    out.CopyFrom(proto)
    return out


def _set_shape(proto, shape) -> None:
    proto.tensor_shape.SetInParent()
    dims = proto.tensor_shape.dim
    for size in shape:
        dims.add(size=size)
