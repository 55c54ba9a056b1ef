"""kerasface.serving's request fast paths: TensorProto <-> numpy without tf.make_ndarray /
tf.make_tensor_proto, and the Batcher's queue (behaviour under concurrency, not timing)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_dtypes  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import tensor_pb2  # noqa: E402

from kerasface.serving import tensors  # noqa: E402
from kerasface.serving.batching import Batcher, BatchingParameters  # noqa: E402
from kerasface.serving.errors import ServingError  # noqa: E402

# every dtype a signature input or output may have here, with values that exercise it
NUMERIC = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16, np.int8, np.int16, np.int32, np.int64,
           np.uint8, np.uint16, np.uint32, np.uint64, np.bool_]


def sample(dtype, shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 100).astype(dtype)


def same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.dtype == object:
        assert a.tolist() == b.tolist()
    else:
        assert a.tobytes() == b.tobytes()  # bit for bit


SHAPES = [(), (1,), (1, 3), (2, 3, 4), (0, 3), (5,)]


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_to_ndarray_equals_make_ndarray_for_make_tensor_proto_input(dtype, shape):
    array = sample(dtype, shape)
    proto = tf.make_tensor_proto(array)  # tensor_content when > 1 element, value fields otherwise
    same(tensors.to_ndarray(proto), tf.make_ndarray(proto))
    same(tensors.to_ndarray(proto), array)


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_to_tensor_proto_content_mode_equals_make_tensor_proto(dtype, shape):
    array = sample(dtype, shape, seed=1)
    assert tensors.to_tensor_proto(array, tensor_content=True) == tf.make_tensor_proto(array)


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_to_tensor_proto_writes_tf_serving_value_fields(dtype, shape):
    array = sample(dtype, shape, seed=2)
    proto = tensors.to_tensor_proto(array)
    assert not proto.tensor_content
    enum = tf.dtypes.as_dtype(array.dtype).as_datatype_enum
    assert proto.dtype == enum and [d.size for d in proto.tensor_shape.dim] == list(shape)
    field = {np.float32: "float_val", np.float64: "double_val", np.int64: "int64_val", np.uint32: "uint32_val",
             np.uint64: "uint64_val", np.bool_: "bool_val", np.float16: "half_val",
             ml_dtypes.bfloat16: "half_val"}.get(dtype, "int_val")
    assert len(getattr(proto, field)) == array.size
    same(tf.make_ndarray(proto), array)
    same(tensors.to_ndarray(proto), array)
    # written into a message's map entry, the same proto
    holder = tensor_pb2.TensorProto()
    assert tensors.to_tensor_proto(array, out=holder) is holder and holder == proto


@pytest.mark.parametrize("values", [[b"a", b"\x00\xffz", b""], ["caf\u00e9", "x", "y"]], ids=["bytes", "str"])
@pytest.mark.parametrize("content", [False, True])
def test_strings_both_ways(values, content):
    array = np.array(values, dtype=object).reshape(1, 3)
    proto = tensors.to_tensor_proto(array, tensor_content=content)
    assert proto == tf.make_tensor_proto(array)
    same(tensors.to_ndarray(proto), tf.make_ndarray(proto))
    scalar = np.array(b"one", dtype=object)
    assert tensors.to_tensor_proto(scalar) == tf.make_tensor_proto(scalar)


def test_value_fields_are_padded_and_broadcast_as_tensorflow_reads_them():
    cases = [
        tensor_pb2.TensorProto(dtype=1, float_val=[1.5], tensor_shape={"dim": [{"size": 2}, {"size": 3}]}),
        tensor_pb2.TensorProto(dtype=1, float_val=[1.0, 2.0], tensor_shape={"dim": [{"size": 4}]}),
        tensor_pb2.TensorProto(dtype=3, tensor_shape={"dim": [{"size": 3}]}),  # no values: zeros
        tensor_pb2.TensorProto(dtype=19, half_val=[15360], tensor_shape={"dim": [{"size": 2}]}),  # 1.0 as fp16 bits
        tensor_pb2.TensorProto(dtype=7, string_val=[b"x"], tensor_shape={"dim": [{"size": 3}]}),
        tensor_pb2.TensorProto(dtype=7, tensor_shape={"dim": [{"size": 2}]}),
        tensor_pb2.TensorProto(dtype=10, bool_val=[True], tensor_shape={}),
        tensor_pb2.TensorProto(dtype=9, int64_val=[2**40]),
    ]
    for proto in cases:
        same(tensors.to_ndarray(proto), tf.make_ndarray(proto))


def test_other_dtypes_and_bad_protos_are_tensorflows():
    c = np.array([[1 + 2j, 3 - 4j]], dtype=np.complex64)
    same(tensors.to_ndarray(tf.make_tensor_proto(c)), c)
    assert tensors.to_tensor_proto(c) == tf.make_tensor_proto(c)
    bad = tensor_pb2.TensorProto(dtype=1, tensor_content=b"\x00" * 6, tensor_shape={"dim": [{"size": 2}]})
    for proto in (bad, tensor_pb2.TensorProto(dtype=999, float_val=[1.0])):
        with pytest.raises((ValueError, TypeError)) as ours:
            tensors.to_ndarray(proto)
        with pytest.raises(type(ours.value)):
            tf.make_ndarray(proto)


def test_grpc_to_ndarray_reports_invalid_argument():
    from kerasface.serving.grpc import to_ndarray

    bad = tensor_pb2.TensorProto(dtype=1, tensor_content=b"\x00" * 6, tensor_shape={"dim": [{"size": 2}]})
    with pytest.raises(ServingError) as err:
        to_ndarray(bad)
    assert err.value.code == "INVALID_ARGUMENT" and err.value.message.startswith("Unable to parse input tensor proto")


# ----------------------------------------------------------------------------- Batcher


class Recorder:
    """A model: out = 2 * x (+ rows' index of the batch), recording each batch's row count."""

    def __init__(self, delay: float = 0.0):
        self.sizes: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, inputs):
        x = inputs["x"]
        with self.lock:
            self.sizes.append(len(x))
        if self.delay:
            time.sleep(self.delay)
        return {"y": x * 2, "n": np.full((len(x),), len(x))}


def run_concurrently(batcher, requests):
    results, errors = [None] * len(requests), []

    def call(i):
        try:
            results[i] = batcher.submit(requests[i])
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def test_batcher_returns_each_request_its_own_rows_under_concurrency():
    model = Recorder(delay=0.002)
    params = BatchingParameters(max_batch_size=8, batch_timeout_micros=20_000, num_batch_threads=2,
                                max_enqueued_batches=100)
    batcher = Batcher(model, params)
    try:
        rng = np.random.default_rng(0)
        requests = [{"x": rng.standard_normal((int(rng.integers(1, 4)), 3)).astype(np.float32)} for _ in range(64)]
        results, errors = run_concurrently(batcher, requests)
        assert not errors
        for req, res in zip(requests, results):
            np.testing.assert_array_equal(res["y"], req["x"] * 2)
        assert sum(model.sizes) == sum(len(r["x"]) for r in requests)
        assert max(model.sizes) <= 8 and max(model.sizes) > 3  # merged, never past max_batch_size
        assert batcher.batches == len(model.sizes) < 64
    finally:
        batcher.close()


def test_batcher_never_mixes_incompatible_requests():
    model = Recorder()
    batcher = Batcher(model, BatchingParameters(max_batch_size=16, batch_timeout_micros=20_000,
                                                num_batch_threads=1))
    try:
        requests = [{"x": np.full((1, 3 if i % 2 else 4), i, np.float32)} for i in range(12)]
        requests += [{"x": np.full((1, 3), i, np.float64)} for i in range(4)]
        results, errors = run_concurrently(batcher, requests)
        assert not errors
        for req, res in zip(requests, results):
            assert res["y"].dtype == req["x"].dtype
            np.testing.assert_array_equal(res["y"], req["x"] * 2)
    finally:
        batcher.close()


def test_batcher_pads_to_allowed_batch_sizes_and_strips_the_padding():
    model = Recorder()
    params = BatchingParameters(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1,
                                allowed_batch_sizes=(4, 8))
    seen = []
    batcher = Batcher(model, params, observe=lambda rows, pad: seen.append((rows, pad)))
    try:
        x = np.arange(6, dtype=np.float32).reshape(3, 2)
        out = batcher.submit({"x": x})
        np.testing.assert_array_equal(out["y"], x * 2)
        assert model.sizes == [4] and out["n"].tolist() == [4, 4, 4]
        batcher.submit({"x": x[:1]})
        assert model.sizes == [4, 4]
        assert seen == [(3, 1), (1, 3)]
    finally:
        batcher.close()


def test_batcher_splits_large_requests_only_when_asked():
    model = Recorder()
    batcher = Batcher(model, BatchingParameters(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=2))
    try:
        with pytest.raises(ServingError, match="Task size 9 is larger than maximum input batch size 4"):
            batcher.submit({"x": np.zeros((9, 2), np.float32)})
    finally:
        batcher.close()
    model = Recorder()
    batcher = Batcher(model, BatchingParameters(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=2,
                                                enable_large_batch_splitting=True))
    try:
        x = np.arange(18, dtype=np.float32).reshape(9, 2)
        out = batcher.submit({"x": x})
        np.testing.assert_array_equal(out["y"], x * 2)
        assert sorted(model.sizes) == [1, 4, 4]
    finally:
        batcher.close()


def test_batcher_full_queue_is_unavailable_and_close_answers_waiters():
    release = threading.Event()
    entered = threading.Event()

    def stuck(inputs):
        entered.set()
        release.wait(30)
        return {"y": inputs["x"]}

    params = BatchingParameters(max_batch_size=2, batch_timeout_micros=0, num_batch_threads=1,
                                max_enqueued_batches=1)
    batcher = Batcher(stuck, params)
    x = {"x": np.zeros((1, 1), np.float32)}
    results, errors = [], []

    def call():
        try:
            results.append(batcher.submit(x))
        except ServingError as exc:
            errors.append(exc)

    first = threading.Thread(target=call)
    first.start()
    assert entered.wait(30)  # the only batch thread is busy with the first request
    waiting = [threading.Thread(target=call) for _ in range(2)]  # fill the queue: 1 batch of 2 rows
    for t in waiting:
        t.start()
    deadline = time.time() + 30
    while batcher._rows < 2 and time.time() < deadline:
        time.sleep(0.01)
    with pytest.raises(ServingError) as full:
        batcher.submit(x)
    assert full.value.code == "UNAVAILABLE"
    assert full.value.message == "The batch scheduling queue to which this task was submitted is full"
    release.set()
    first.join(30)
    for t in waiting:
        t.join(30)
    assert len(results) == 3 and not errors
    # close(): queued requests are answered UNAVAILABLE, new ones refused
    release.clear()
    entered.clear()
    first = threading.Thread(target=call)
    first.start()
    assert entered.wait(30)
    queued = threading.Thread(target=call)
    queued.start()
    while batcher._rows < 1 and time.time() < deadline + 30:
        time.sleep(0.01)
    batcher.close()
    queued.join(30)
    release.set()
    first.join(30)
    assert [e.code for e in errors] == ["UNAVAILABLE"]
    with pytest.raises(ServingError, match="unloaded"):
        batcher.submit(x)


def test_batcher_errors_reach_every_request_of_the_batch():
    def broken(inputs):
        raise RuntimeError("boom")

    batcher = Batcher(broken, BatchingParameters(max_batch_size=8, batch_timeout_micros=20_000, num_batch_threads=1))
    try:
        results, errors = run_concurrently(batcher, [{"x": np.zeros((1, 2), np.float32)} for _ in range(5)])
        assert len(errors) == 5 and all(e.code == "INTERNAL" and e.message == "boom" for e in errors)
    finally:
        batcher.close()
