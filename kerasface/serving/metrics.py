"""Prometheus metrics (--monitoring_config_file with prometheus_config), in TF Serving's names.

    :tensorflow:serving:request_count{model_name, status}        one per Predict/Classify/... call
    :tensorflow:cc:saved_model:load_attempt_count{model_path, status}   one per version load

and kerasface's own, with --enable_batching (rows per batch = batched_rows / batch_count):

    :kerasface:serving:batch_count{model_name, signature_name}          batches run
    :kerasface:serving:batched_rows{model_name, signature_name}         request rows in them
    :kerasface:serving:batch_padding_rows{model_name, signature_name}   rows added for allowed_batch_sizes

Served as Prometheus text exposition on the REST port at prometheus_config.path (TF Serving's
default path when it is empty: /monitoring/prometheus/metrics).
"""

from __future__ import annotations

import threading
from collections import Counter

DEFAULT_PATH = "/monitoring/prometheus/metrics"


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self._requests: Counter = Counter()
        self._loads: Counter = Counter()
        self._batches: Counter = Counter()  # (model, signature, "batch_count" | "batched_rows" | ...) -> n

    def request(self, model_name: str, code: str) -> None:
        with self._lock:
            self._requests[(model_name, code)] += 1

    def load(self, model_path: str, succeeded: bool) -> None:
        with self._lock:
            self._loads[(model_path, "success" if succeeded else "failure")] += 1

    def batch(self, model_name: str, signature_name: str, rows: int, padding: int) -> None:
        with self._lock:
            self._batches[(model_name, signature_name, "batch_count")] += 1
            self._batches[(model_name, signature_name, "batched_rows")] += rows
            self._batches[(model_name, signature_name, "batch_padding_rows")] += padding

    def exposition(self) -> str:
        with self._lock:
            requests, loads, batches = dict(self._requests), dict(self._loads), dict(self._batches)
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        lines += [f':tensorflow:serving:request_count{{model_name="{_label(m)}",status="{_label(s)}"}} {n}'
                  for (m, s), n in sorted(requests.items())]
        lines.append("# TYPE :tensorflow:cc:saved_model:load_attempt_count counter")
        lines += [f':tensorflow:cc:saved_model:load_attempt_count{{model_path="{_label(p)}",status="{s}"}} {n}'
                  for (p, s), n in sorted(loads.items())]
        for metric in ("batch_count", "batched_rows", "batch_padding_rows"):
            lines.append(f"# TYPE :kerasface:serving:{metric} counter")
            lines += [f':kerasface:serving:{metric}{{model_name="{_label(m)}",signature_name="{_label(s)}"}} {n}'
                      for (m, s, kind), n in sorted(batches.items()) if kind == metric]
        return "\n".join(lines) + "\n"
