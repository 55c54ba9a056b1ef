#!/usr/bin/env bash
# Start TF Serving on half_plus_two and query it over REST, as one writes it for the official
# tensorflow_model_server binary (its flags, its zero-padded version folders, its requests).
# tests/test_serving_compat.py runs it unchanged with TENSORFLOW_MODEL_SERVER="python -m kerasface.serving".
set -euo pipefail

SERVER=${TENSORFLOW_MODEL_SERVER:-tensorflow_model_server}
GRPC_PORT=${GRPC_PORT:-8500}
REST_PORT=${REST_PORT:-8501}
MODEL_BASE_PATH=${MODEL_BASE_PATH:-/models/saved_model_half_plus_two_cpu}

$SERVER \
  --port="$GRPC_PORT" \
  --rest_api_port="$REST_PORT" \
  --model_name=half_plus_two \
  --model_base_path="$MODEL_BASE_PATH" \
  --grpc_socket_path="${SOCKET:-/tmp/tf-serving.sock}" \
  --grpc_channel_arguments=grpc.so_reuseaddr=1 \
  --enable_batching \
  --tensorflow_intra_op_parallelism=1 \
  --tensorflow_inter_op_parallelism=1 \
  --file_system_poll_wait_seconds=5 \
  --flush_filesystem_caches=false \
  --enable_profiler=false \
  --num_load_threads=2 \
  >"${LOG:-/dev/null}" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true' EXIT

url="http://localhost:$REST_PORT/v1/models/half_plus_two"
for _ in $(seq 1 120); do
  curl -sf "$url" >/dev/null && break
  sleep 1
done

curl -sf "$url"; echo
curl -sf -d '{"instances": [1.0, 2.0, 5.0]}' -X POST "$url:predict"; echo
curl -sf -d '{"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]}' -X POST "$url:regress"; echo
