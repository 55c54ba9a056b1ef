"""kerasface.serving as a drop-in for tensorflow_model_server (issue 18).

SavedModels are built here in TF1 (graph + builder, reference variables, tf.Example signatures)
and TF2 (tf.saved_model.save, Keras model.export) styles, in zero-padded and plain version folders,
and driven through the official tensorflow-serving-api stubs (over a UNIX socket too) and raw
REST; each answer is compared with what TF Serving's documentation specifies (half_plus_two:
y = 0.5 x + 2, so 1, 2, 5 give 2.5, 3.0, 4.5).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import serving_models_fixture as fixture  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (classification_pb2, get_model_status_pb2, inference_pb2,  # noqa: E402
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from kerasface.serving.errors import ServingError  # noqa: E402
from kerasface.serving.flags import TF_SERVING_FLAGS, build_parser, channel_arguments, parse_flags  # noqa: E402
from kerasface.serving.models import LoadOptions, ModelManager, list_versions, read_model_config  # noqa: E402
from kerasface.serving.server import ModelServer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = Path(__file__).parent / "data" / "official_server_script.sh"


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tf_serving_models")
    fixture.write_tf1_half_plus_two(root / "half_plus_two" / "00000123")
    shutil.copytree(root / "half_plus_two" / "00000123", root / "half_plus_two" / "0007")  # older version
    (root / "half_plus_two" / "not_a_version").mkdir()  # ignored, as TF Serving ignores it
    (root / "half_plus_two" / "12a").mkdir()
    (root / "half_plus_two" / "99").write_text("a file, not a version folder")
    fixture.write_tf2_half_plus_two(root / "tf2" / "1")
    fixture.write_keras_export(root / "keras" / "2")
    return root


@pytest.fixture(scope="module")
def config_dir(model_root, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("config")
    (folder / "models.config").write_text(f"""
model_config_list {{
  config {{ name: "half_plus_two" base_path: "{model_root / 'half_plus_two'}" model_platform: "tensorflow" }}
  config {{ name: "tf2" base_path: "{model_root / 'tf2'}" model_platform: "tensorflow" }}
  config {{ name: "keras" base_path: "{model_root / 'keras'}" model_platform: "tensorflow" }}
}}
""")
    (folder / "monitoring.config").write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    return folder


@pytest.fixture(scope="module")
def server(config_dir, tmp_path_factory):
    sock = tmp_path_factory.mktemp("sock") / "tf-serving.sock"
    srv = ModelServer(port=0, rest_api_port=0, host="127.0.0.1", model_config_file=str(config_dir / "models.config"),
                      grpc_socket_path=str(sock), grpc_channel_arguments="grpc.max_connection_age_ms=60000",
                      monitoring_config_file=str(config_dir / "monitoring.config"), rest_api_timeout_in_ms=1500,
                      rest_api_max_request_bytes=1 << 20, file_system_poll_wait_seconds=0)
    srv.start()
    srv.socket_path = sock
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"unix:{server.socket_path}") as channel:  # the UNIX socket
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def http(method: str, url: str, body=None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def raw_http(port: int, head: bytes, body: bytes = b"", wait: float = 5.0) -> bytes:
    """Send bytes as they are and return what the server answers before it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as conn:
        conn.sendall(head + body)
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except socket.timeout:
            pass
    return b"".join(chunks)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- flags, folders, configs


def test_every_tensorflow_model_server_flag_is_accepted(caplog):
    parser_flags = {a.option_strings[0][2:] for a in build_parser()._actions if a.option_strings[0] != "-h"}
    assert {f.name for f in TF_SERVING_FLAGS} <= parser_flags
    with caplog.at_level(logging.INFO, logger="kerasface.serving"):
        args, given = parse_flags(["--grpc_socket_path=/tmp/tf-serving.sock", "--grpc_channel_arguments",
                                   "grpc.so_reuseaddr=1", "--enable_batching", "--flush_filesystem_caches=false",
                                   "--xla_cpu_compilation_enabled=true", "--no_such_flag=1"])
    assert (args.grpc_socket_path, args.enable_batching, args.flush_filesystem_caches) == (
        "/tmp/tf-serving.sock", True, False)
    assert args.port == 8500 and args.rest_api_port == 0 and args.saved_model_tags == "serve"  # TF Serving's defaults
    assert set(given) == {"grpc_socket_path", "grpc_channel_arguments", "enable_batching",
                          "flush_filesystem_caches", "xla_cpu_compilation_enabled"}
    assert "unknown argument: --no_such_flag=1" in caplog.messages
    from kerasface.serving.flags import report_no_effect

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kerasface.serving"):
        report_no_effect(given)
    assert caplog.messages == [
        f"--{name} is accepted for compatibility with tensorflow_model_server and has no effect here"
        for name in ("flush_filesystem_caches", "xla_cpu_compilation_enabled")]
    assert channel_arguments("grpc.so_reuseaddr=1,grpc.primary_user_agent=x") == [
        ("grpc.so_reuseaddr", 1), ("grpc.primary_user_agent", "x")]


def test_version_folders_parse_as_tf_serving_parses_them(model_root):
    versions = list_versions(model_root / "half_plus_two")
    assert {v: p.name for v, p in versions.items()} == {7: "0007", 123: "00000123"}


def test_config_files_fail_as_tf_serving_fails(tmp_path):
    bad = tmp_path / "bad.config"
    bad.write_text("model_config_list { config { name: 'x' base_path: }")
    with pytest.raises(ServingError) as info:
        read_model_config(bad)
    assert (info.value.code, info.value.message) == ("INVALID_ARGUMENT", f"Invalid protobuf file: '{bad}'")
    assert "bad.config:1:" in info.value.detail  # where the parser stopped
    with pytest.raises(ServingError) as info:
        read_model_config(tmp_path / "missing.config")
    assert (info.value.code, info.value.message) == ("NOT_FOUND", f"{tmp_path / 'missing.config'}; "
                                                                  "No such file or directory")
    proc = subprocess.run([sys.executable, "-m", "kerasface.serving", f"--model_config_file={bad}", "--port=0"],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 255
    assert f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{bad}'" in proc.stderr


def test_version_labels_must_name_available_versions(model_root, config_dir):
    config = read_model_config(config_dir / "models.config")
    manager = ModelManager(config, poll_seconds=0, options=LoadOptions(warmup=False))
    manager.start()
    entry = config.model_config_list.config[0]
    entry.version_labels["stable"] = 123
    manager.reload(config)
    assert manager.get("half_plus_two", label="stable").version == 123
    entry.version_labels["canary"] = 124
    with pytest.raises(ServingError) as info:
        manager.reload(config)
    assert info.value.code == "FAILED_PRECONDITION" and info.value.message == (
        "Request to assign label to version 124 of model half_plus_two, which is not currently available for "
        "inference")
    with pytest.raises(ServingError, match="Unrecognized servable version label: canary"):
        manager.get("half_plus_two", label="canary")  # the refused map left the old one in effect
    manager.options.allow_labels_for_unavailable = True  # --allow_version_labels_for_unavailable_models
    manager.reload(config)
    assert manager.status("half_plus_two", label="stable")[0].version == 123
    with pytest.raises(ServingError, match=r"Specific|Labeled"):
        manager.get("half_plus_two", label="canary")  # assigned, but nothing serves it yet
    manager.stop()


# ----------------------------------------------------------------------------- gRPC (official stubs)


def test_grpc_predict_feeds_the_graph_as_tf_serving_does(stub):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "half_plus_two"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0, 5.0], dtype=tf.float32))  # [3] into x [?,1]
    resp = stub.Predict(req, timeout=30)
    assert (resp.model_spec.name, resp.model_spec.version.value, resp.model_spec.signature_name) == (
        "half_plus_two", 123, "serving_default")
    y = resp.outputs["y"]
    assert list(y.float_val) == [2.5, 3.0, 4.5] and not y.tensor_content  # TF Serving's typed value field
    assert [d.size for d in y.tensor_shape.dim] == [3]
    req.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0], [-4.0]], dtype=tf.float32))
    np.testing.assert_array_equal(tf.make_ndarray(stub.Predict(req, timeout=30).outputs["y"]), [[2.5], [0.0]])
    req.model_spec.version.value = 7  # the older, zero-padded "0007" is not aspired under latest 1
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(req, timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "Servable not found for request: Specific(half_plus_two, 7)"


def test_grpc_classify_regress_multi_inference_on_tf_examples(stub):
    examples = [tf.train.Example.FromString(fixture.example(x)) for x in (1.0, 2.0)]
    req = regression_pb2.RegressionRequest()
    req.model_spec.name, req.model_spec.signature_name = "half_plus_two", "regress_x_to_y"
    req.input.example_list.examples.extend(examples)
    resp = stub.Regress(req, timeout=30)
    assert [r.value for r in resp.result.regressions] == [2.5, 3.0]
    assert (resp.model_spec.version.value, resp.model_spec.signature_name) == (123, "regress_x_to_y")

    req = classification_pb2.ClassificationRequest()
    req.model_spec.name, req.model_spec.signature_name = "half_plus_two", "classify_x"
    req.input.example_list.examples.extend(examples)
    resp = stub.Classify(req, timeout=30)
    high = [1 / (1 + np.exp(-(0.5 * x + 2 - 3))) for x in (1.0, 2.0)]
    for classification, h in zip(resp.result.classifications, high):
        assert [c.label for c in classification.classes] == ["low", "high"]
        np.testing.assert_allclose([c.score for c in classification.classes], [1 - h, h], rtol=1e-6)

    req = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify_x", "tensorflow/serving/classify"),
                              ("regress_x_to_y", "tensorflow/serving/regress")):
        task = req.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = "half_plus_two", signature, method
    req.input.example_list.examples.extend(examples)
    resp = stub.MultiInference(req, timeout=30)
    assert [r.model_spec.signature_name for r in resp.results] == ["classify_x", "regress_x_to_y"]
    assert [c.classes[0].label for c in resp.results[0].classification_result.classifications] == ["low", "low"]
    assert [r.value for r in resp.results[1].regression_result.regressions] == [2.5, 3.0]
    req.tasks[1].model_spec.signature_name = "classify_x"
    req.tasks[1].method_name = "tensorflow/serving/classify"
    with pytest.raises(grpc.RpcError) as info:
        stub.MultiInference(req, timeout=30)
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                         "Duplicate evaluation of signature: classify_x")


def test_grpc_tf2_and_keras_exports(stub, server):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "keras"
    req.inputs["feat"].CopyFrom(tf.make_tensor_proto([[1.0, 2.0], [0.5, -3.0]], dtype=tf.float32))
    resp = stub.Predict(req, timeout=30)
    assert resp.model_spec.version.value == 2
    np.testing.assert_array_equal(tf.make_ndarray(resp.outputs["output_0"]), [[4.0], [-1.5]])
    req = regression_pb2.RegressionRequest()
    req.model_spec.name, req.model_spec.signature_name = "tf2", "regress_x_to_y"
    req.input.example_list.examples.add().CopyFrom(tf.train.Example.FromString(fixture.example(4.0)))
    assert [r.value for r in stub.Regress(req, timeout=30).result.regressions] == [4.0]
    with grpc.insecure_channel(server.grpc_target) as tcp:  # the TCP port serves the same
        status = model_service_pb2_grpc.ModelServiceStub(tcp).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "tf2"}), timeout=30)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


# ----------------------------------------------------------------------------- REST


def test_rest_status_and_metadata_json(server):
    base = f"{server.rest_url}/v1/models/half_plus_two"
    assert http("GET", base) == (200, {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    code, body = http("GET", base + "/metadata")
    assert code == 200 and body["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "regress_x_to_y", "classify_x"}
    assert sigs["serving_default"] == {
        "inputs": {"x": {"dtype": "DT_FLOAT", "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False}, "name": "x:0"}},
        "outputs": {"y": {"dtype": "DT_FLOAT", "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False}, "name": "y:0"}},
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }
    assert sigs["regress_x_to_y"]["inputs"]["inputs"] == {"dtype": "DT_STRING", "tensor_shape": {
        "dim": [{"size": "-1", "name": ""}], "unknown_rank": False}, "name": "tf_example:0"}


def test_rest_predict_row_and_columnar_as_documented(server):
    url = f"{server.rest_url}/v1/models/half_plus_two:predict"
    assert http("POST", url, {"instances": [1.0, 2.0, 5.0]}) == (200, {"predictions": [2.5, 3.0, 4.5]})
    assert http("POST", url, {"instances": [{"x": [1.0]}, {"x": [2.0]}]}) == (200, {"predictions": [[2.5], [3.0]]})
    assert http("POST", url, {"inputs": [1.0, 2.0, 5.0]}) == (200, {"outputs": [2.5, 3.0, 4.5]})
    assert http("POST", url, {"inputs": {"x": [[1.0], [0.2]]}}) == (200, {"outputs": [[2.5], [2.1]]})  # shortest floats
    assert http("POST", f"{server.rest_url}/v1/models/half_plus_two/versions/123:predict",
                {"signature_name": "serving_default", "instances": [[10.0]]}) == (200, {"predictions": [[7.0]]})
    assert http("POST", f"{server.rest_url}/v1/models/tf2:predict", {"instances": [1.0, 2.0, 5.0]}) == (
        200, {"predictions": [2.5, 3.0, 4.5]})
    text = [{"b64": base64.b64encode(b"\x00\xffabc").decode()}, "hello"]
    assert http("POST", f"{server.rest_url}/v1/models/tf2:predict",
                {"signature_name": "lengths", "instances": text}) == (200, {"predictions": [5, 5]})
    assert http("POST", f"{server.rest_url}/v1/models/keras:predict", {"instances": [[1.0, 2.0]]}) == (
        200, {"predictions": [[4.0]]})


def test_rest_classify_and_regress_as_documented(server):
    base = f"{server.rest_url}/v1/models/half_plus_two"
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}, {"x": 5.0}]}
    assert http("POST", base + ":regress", body) == (200, {"result": [2.5, 3.0, 4.5]})
    code, reply = http("POST", base + ":classify", {"signature_name": "classify_x", "examples": [{"x": 4.0}]})
    high = 1 / (1 + np.exp(-(0.5 * 4.0 + 2 - 3)))
    assert code == 200 and [c[0] for c in reply["result"][0]] == ["low", "high"]
    np.testing.assert_allclose([c[1] for c in reply["result"][0]], [1 - high, high], rtol=1e-6)
    assert http("POST", base + ":regress", {"examples": [{"x": 1.0}]}) == (400, {
        "error": "No regression inputs found in SignatureDef: serving_default (expected one input named inputs, "
                 "got x)"})


def test_rest_refuses_bad_lengths_and_stalled_clients_and_keeps_serving(server):
    port = server.rest_port
    head = b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    reply = raw_http(port, head + b"Content-Length: abc\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ") and b'{"error":"Invalid Content-Length: \'abc\'"}' in reply
    reply = raw_http(port, head + b"Content-Length: 1000000000000\r\n\r\n")  # never read: 1 TB announced
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"exceeds the limit of 1048576 bytes (--rest_api_max_request_bytes)" in reply
    started = time.perf_counter()
    reply = raw_http(port, head + b"Content-Length: 100\r\n\r\n", b'{"instances": [1.0', wait=10)  # then stalls
    assert reply.startswith(b"HTTP/1.1 408 ") and 1.0 < time.perf_counter() - started < 8
    assert http("POST", f"{server.rest_url}/v1/models/half_plus_two:predict", {"instances": [1.0]}) == (
        200, {"predictions": [2.5]})


def test_prometheus_endpoint_counts_requests(server):
    http("POST", f"{server.rest_url}/v1/models/half_plus_two:predict", {"instances": [1.0]})
    with urllib.request.urlopen(f"{server.rest_url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("text/plain")
    counted = [line for line in text.splitlines()
               if line.startswith(':tensorflow:serving:request_count{model_name="half_plus_two",status="OK"} ')]
    assert len(counted) == 1 and int(counted[0].rsplit(" ", 1)[1]) >= 1
    assert "# TYPE :tensorflow:serving:request_count counter" in text


def test_warmup_file_is_replayed(server, model_root, caplog):
    model = server.core.model("half_plus_two")
    with caplog.at_level(logging.INFO, logger="kerasface.serving"):
        server.core._warmup(model, model_root / "half_plus_two" / "00000123")
    assert (f"Finished reading warmup data for model at {model_root / 'half_plus_two' / '00000123'}. "
            "Number of warmup records read: 1.") in caplog.messages


# ----------------------------------------------------------------------------- a script for the official server


def test_a_script_written_for_tensorflow_model_server_runs_unchanged(model_root, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO),
           "TENSORFLOW_MODEL_SERVER": f"{sys.executable} -m kerasface.serving",
           "MODEL_BASE_PATH": str(model_root / "half_plus_two"), "GRPC_PORT": str(free_port()),
           "REST_PORT": str(free_port()), "SOCKET": str(tmp_path / "tf-serving.sock"), "LOG": str(tmp_path / "log")}
    proc = subprocess.run(["bash", str(SERVER_SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    log_text = (tmp_path / "log").read_text() if (tmp_path / "log").exists() else ""
    assert proc.returncode == 0, proc.stdout + proc.stderr + log_text
    lines = proc.stdout.strip().splitlines()
    assert lines == [
        '{"model_version_status":[{"version":"123","state":"AVAILABLE",'
        '"status":{"error_code":"OK","error_message":""}}]}',
        '{"predictions":[2.5,3.0,4.5]}',
        '{"result":[2.5,3.0]}',
    ]
    for flag in ("flush_filesystem_caches", "enable_profiler", "num_load_threads"):
        assert f"--{flag} is accepted for compatibility with tensorflow_model_server and has no effect here" in log_text
    assert "Running gRPC ModelServer at UNIX socket" in log_text
