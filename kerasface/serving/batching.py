"""Server-side batching, as TF Serving's --enable_batching does it.

Concurrent requests to the same model version and signature are queued; a batch thread takes
the queued requests together, up to `max_batch_size` rows, waiting at most
`batch_timeout_micros` after the first one for more to arrive, runs the signature once on the
concatenated inputs, and splits the outputs back by rows. Requests whose inputs differ in
dtype or in any dimension but the first are never mixed. `allowed_batch_sizes` pads a batch up
to the next allowed size (with copies of its last row); a request larger than `max_batch_size`
is refused as TF Serving refuses it, unless `enable_large_batch_splitting` is on, in which case
it is split into chunks of `max_batch_size` rows, queued together. A queue longer than
`max_enqueued_batches` batches (of `max_batch_size` rows) refuses new work with UNAVAILABLE.

The parameters file is TF Serving's text-format `BatchingParameters`:

    max_batch_size { value: 32 }
    batch_timeout_micros { value: 2000 }
    max_enqueued_batches { value: 100 }
    num_batch_threads { value: 2 }
    allowed_batch_sizes: 8
    allowed_batch_sizes: 32

The message is TF Serving's own (declared in kerasface.serving.protos; the wheel lacks it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from kerasface.serving.errors import ServingError
from kerasface.serving.protos import message_class

log = logging.getLogger("kerasface.serving")


@dataclass
class BatchingParameters:
    """TF Serving's defaults when batching is on without a parameters file."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    enable_large_batch_splitting: bool = False
    pad_variable_length_inputs: bool = False

    @classmethod
    def parse(cls, text: str, source: str = "<batching parameters>") -> "BatchingParameters":
        from google.protobuf import text_format

        message = message_class("BatchingParameters")()
        try:
            text_format.Parse(text, message, allow_unknown_field=True)
        except text_format.ParseError as exc:
            raise ValueError(f"{source}: {exc}") from None
        params = cls()
        for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
            if message.HasField(name):
                setattr(params, name, int(getattr(message, name).value))
        if message.HasField("enable_large_batch_splitting"):
            params.enable_large_batch_splitting = bool(message.enable_large_batch_splitting.value)
        params.allowed_batch_sizes = tuple(int(v) for v in message.allowed_batch_sizes)
        params.pad_variable_length_inputs = bool(message.pad_variable_length_inputs)
        params.validate(source)
        return params

    @classmethod
    def read(cls, path: str | os.PathLike) -> "BatchingParameters":
        with open(path) as handle:
            return cls.parse(handle.read(), str(path))

    def validate(self, source: str = "<batching parameters>") -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"{source}: max_batch_size must be positive, got {self.max_batch_size}")
        if self.num_batch_threads < 1:
            raise ValueError(f"{source}: num_batch_threads must be positive, got {self.num_batch_threads}")
        if self.allowed_batch_sizes:
            sizes = list(self.allowed_batch_sizes)
            if sizes != sorted(set(sizes)):
                raise ValueError(f"{source}: allowed_batch_sizes must be increasing, got {sizes}")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(f"{source}: the last allowed_batch_sizes entry ({sizes[-1]}) must equal "
                                 f"max_batch_size ({self.max_batch_size})")


class _Task:
    """One request (or one chunk of a split request) waiting in the queue."""

    __slots__ = ("inputs", "rows", "key", "enqueued", "result", "error", "_done")

    def __init__(self, inputs: dict[str, np.ndarray], rows: int, key: tuple, enqueued: float):
        self.inputs, self.rows, self.key, self.enqueued = inputs, rows, key, enqueued
        self.result: dict | None = None
        self.error: BaseException | None = None
        self._done = threading.Lock()  # held until the batch thread has answered (lighter than an Event)
        self._done.acquire()

    def finish(self) -> None:
        self._done.release()

    def wait(self) -> None:
        self._done.acquire()


def _compat_key(inputs: dict[str, np.ndarray]) -> tuple:
    return tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))


class Batcher:
    """Queue + batch threads for one (model, version, signature).

    The queue keeps running row counts (all tasks, and per compatibility key), so a submit costs
    O(1) under the lock and wakes the forming batch thread only when it has something to act on:
    the queue was empty (the batch timeout starts) or the waiting key has a full batch. One batch
    thread at a time forms a batch; the others run theirs meanwhile, so the model is called while
    the next batch fills.
    """

    def __init__(self, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], params: BatchingParameters,
                 name: str = "", observe: Callable[[int, int], None] | None = None):
        self.run, self.params, self.name = run, params, name
        self.observe = observe  # observe(rows, padding rows) after each batch (metrics)
        self._queue: deque[_Task] = deque()
        self._rows = 0  # rows queued, all keys
        self._key_rows: dict[tuple, int] = {}  # rows queued per compatibility key
        self._cond = threading.Condition(threading.Lock())
        self._forming = threading.Lock()
        self._closed = False
        self.batches = 0  # statistics, for tests and benchmarks
        self.batched_rows = 0
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self._threads = [threading.Thread(target=self._work, name=f"batch-{name}-{i}", daemon=True)
                         for i in range(params.num_batch_threads)]
        for t in self._threads:
            t.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._rows = 0
            self._key_rows.clear()
            self._cond.notify_all()
        for task in pending:
            task.error = ServingError("UNAVAILABLE", "Servable is being unloaded")
            task.finish()

    # ------------------------------------------------------------------ client side

    def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = {int(v.shape[0]) if v.ndim else -1 for v in inputs.values()}
        if len(rows) != 1 or -1 in rows or not inputs:
            return self.run(inputs)  # nothing to batch along (TF Serving runs such calls in-line)
        n = rows.pop()
        limit = self.params.max_batch_size
        if n > limit:
            if not self.params.enable_large_batch_splitting:
                raise ServingError("INVALID_ARGUMENT", f"Task size {n} is larger than maximum input batch size {limit}")
            # the chunks are queued together (all or none) and batch in parallel, as TF Serving splits
            chunks = [({k: v[i:i + limit] for k, v in inputs.items()}, min(limit, n - i)) for i in range(0, n, limit)]
            parts = [self._result(t) for t in self._enqueue(chunks)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return self._result(self._enqueue([(inputs, n)])[0])

    def _enqueue(self, chunks: list[tuple[dict[str, np.ndarray], int]]) -> list[_Task]:
        limit = self.params.max_batch_size
        now = time.perf_counter()
        tasks = [_Task(inputs, n, _compat_key(inputs), now) for inputs, n in chunks]
        total = sum(n for _, n in chunks)
        with self._cond:
            if self._closed:
                raise ServingError("UNAVAILABLE", "Servable is being unloaded")
            if self._rows + total > self.params.max_enqueued_batches * limit:
                raise ServingError("UNAVAILABLE", "The batch scheduling queue to which this task was submitted is full")
            wake = not self._queue
            self._queue.extend(tasks)
            self._rows += total
            for task in tasks:
                ready = self._key_rows.get(task.key, 0) + task.rows
                self._key_rows[task.key] = ready
                wake = wake or ready >= limit
            if wake:
                self._cond.notify()
        return tasks

    @staticmethod
    def _result(task: _Task) -> dict[str, np.ndarray]:
        task.wait()
        if task.error is not None:
            raise task.error
        return task.result

    # ------------------------------------------------------------------ batch threads

    def _take(self) -> list[_Task] | None:
        timeout = self.params.batch_timeout_micros / 1e6
        limit = self.params.max_batch_size
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._queue[0]
            deadline = first.enqueued + timeout
            while not self._closed and self._key_rows.get(first.key, 0) < limit:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._closed:
                return None
            batch, rows = [], 0
            queued = self._key_rows[first.key]
            if queued == self._rows and queued <= limit:  # the common case: one key, and it all fits
                batch, rows = list(self._queue), queued
                self._queue.clear()
            else:
                keep: deque[_Task] = deque()
                for t in self._queue:
                    if t.key == first.key and rows + t.rows <= limit:
                        batch.append(t)
                        rows += t.rows
                    else:
                        keep.append(t)
                self._queue = keep
            self._rows -= rows
            left_rows = self._key_rows[first.key] - rows
            if left_rows:
                self._key_rows[first.key] = left_rows
            else:
                del self._key_rows[first.key]
            return batch

    def _padded_size(self, rows: int) -> int:
        for size in self.params.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows

    def _work(self) -> None:
        while True:
            with self._forming:  # one thread forms the open batch; the others run closed ones
                batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            rows = sum(t.rows for t in batch)
            try:
                if len(batch) == 1 and not self.params.allowed_batch_sizes:
                    merged = batch[0].inputs
                else:
                    merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in batch[0].inputs}
                target = self._padded_size(rows)
                if target > rows:
                    merged = {k: np.concatenate([v, np.repeat(v[-1:], target - rows, axis=0)]) for k, v in merged.items()}
                out = self.run(merged)
                for k, v in out.items():
                    if v.ndim == 0 or v.shape[0] != target:
                        raise ServingError("INTERNAL", "Batched output tensor's 0th dimension does not equal the "
                                                       f"sum of the 0th dimension sizes of the input tensors ({k})")
                start = 0
                for t in batch:
                    t.result = {k: v[start:start + t.rows] for k, v in out.items()}
                    start += t.rows
            except BaseException as exc:  # every waiting request gets the error
                for t in batch:
                    t.error = exc if isinstance(exc, ServingError) else ServingError("INTERNAL", str(exc))
            finally:
                self.batches += 1
                self.batched_rows += rows
                self.batch_sizes.append(rows)
                if self.observe is not None:
                    self.observe(rows, self._padded_size(rows) - rows)
                for t in batch:
                    t.finish()
