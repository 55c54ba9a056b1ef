"""kerasface.serving: TF Serving's gRPC and REST APIs over an exported models/ folder.

The server is driven with the official tensorflow-serving-api stubs and plain HTTP; every server
binds 127.0.0.1 on free ports and is stopped by its fixture.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import run_fixture  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,  # noqa: E402
                                     model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

from kerasface.export.__main__ import main as export_main  # noqa: E402
from kerasface.serving.batching import BatchingParameters  # noqa: E402
from kerasface.serving.client import ClientError, connect  # noqa: E402
from kerasface.serving.models import read_model_config, wanted_versions  # noqa: E402
from kerasface.serving.server import ModelServer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    run = run_fixture.cached_run(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("serving_models")
    assert export_main(["saved-model", str(run), "--name", "faces", "--out", str(out), "--no-verify"]) == 0
    # "dyn" starts with version 1 (a copy); tests add versions to it
    shutil.copytree(out / "faces" / "1", out / "dyn" / "1")
    return out


def write_config(path: Path, models_dir: Path, dyn_policy: str = "latest { num_versions: 1 }",
                 dyn_extra: str = "") -> Path:
    path.write_text(f"""
model_config_list {{
  config {{ name: "faces" base_path: "{models_dir / 'faces'}" model_platform: "tensorflow" }}
  config {{
    name: "dyn"
    base_path: "{models_dir / 'dyn'}"
    model_platform: "tensorflow"
    model_version_policy {{ {dyn_policy} }}
    {dyn_extra}
  }}
}}
""")
    return path


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    config = write_config(tmp_path_factory.mktemp("cfg") / "models.config", models_dir)
    srv = ModelServer(port=0, rest_api_port=0, host="127.0.0.1", model_config_file=str(config),
                      file_system_poll_wait_seconds=0.2, load_retry_interval_micros=0)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(server):
    ch = grpc.insecure_channel(server.grpc_target)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


@pytest.fixture(scope="module")
def loaded(models_dir):
    return tf.saved_model.load(str(models_dir / "faces" / "1"))


def predict_request(name="faces", signature="serving_default", version=None, **inputs):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    return req


def http(method: str, url: str, body=None) -> tuple[int, dict]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def crops(n=2, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, 150, 150, 3)).astype(np.float32)


def wait_for(predicate, timeout=60.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# ----------------------------------------------------------------------------- config parsing


def test_version_policy_and_batching_parameters():
    cfg = model_server_config_pb2.ModelConfig()
    assert wanted_versions(cfg, [3, 1, 2]) == [3]
    cfg.model_version_policy.latest.num_versions = 2
    assert wanted_versions(cfg, [3, 1, 2]) == [2, 3]
    cfg.model_version_policy.all.SetInParent()
    assert wanted_versions(cfg, [3, 1, 2]) == [1, 2, 3]
    cfg.model_version_policy.specific.versions.extend([1, 7])
    assert wanted_versions(cfg, [3, 1, 2]) == [1]
    p = BatchingParameters.parse("""
        max_batch_size { value: 16 }
        batch_timeout_micros { value: 5000 }
        num_batch_threads { value: 2 }
        max_enqueued_batches { value: 4 }
        allowed_batch_sizes: 4
        allowed_batch_sizes: 16
    """)
    assert (p.max_batch_size, p.batch_timeout_micros, p.num_batch_threads, p.max_enqueued_batches,
            p.allowed_batch_sizes) == (16, 5000, 2, 4, (4, 16))
    with pytest.raises(ValueError, match="must equal max_batch_size"):
        BatchingParameters.parse("max_batch_size { value: 8 } allowed_batch_sizes: 4")
    with pytest.raises(ValueError, match="<batching parameters>"):
        BatchingParameters.parse("max_batch_size: {")


def test_repository_serving_configs_parse():
    config = read_model_config(REPO / "serving" / "models.config")
    entry = config.model_config_list.config[0]
    assert entry.base_path.startswith("/models/") and entry.model_version_policy.WhichOneof("policy_choice")
    params = BatchingParameters.read(REPO / "serving" / "batching.config")
    assert params.max_batch_size >= 1
    readme = (REPO / "serving" / "README.md").read_text()
    assert "docker run" in readme and "-p 8500:8500" in readme and "tensorflow/serving" in readme


def test_docker_base_paths_map_to_the_local_models_folder(tmp_path):
    from kerasface.serving.server import _path_mapper

    (tmp_path / "faces").mkdir()
    resolve = _path_mapper(str(tmp_path))
    assert resolve("/models/faces") == tmp_path / "faces"
    assert resolve(str(tmp_path / "faces")) == tmp_path / "faces"
    assert resolve("/models/other") == Path("/models/other")  # missing: reported by the server as is


# ----------------------------------------------------------------------------- gRPC


def test_grpc_predict_float_and_bytes_signatures(predict_stub, loaded):
    x = crops()
    resp = predict_stub.Predict(predict_request(image=x), timeout=60)
    assert resp.model_spec.name == "faces" and resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "serving_default"
    want = loaded.signatures["serving_default"](image=tf.constant(x))
    assert set(resp.outputs) == {"smile", "gender", "landmarks"}
    for k in resp.outputs:
        np.testing.assert_allclose(tf.make_ndarray(resp.outputs[k]), want[k].numpy(), atol=1e-5)
    rng = np.random.default_rng(1)
    jpegs = np.array([run_fixture.encode(run_fixture.make_image(rng, i % 2, 0)) for i in range(3)], dtype=object)
    resp = predict_stub.Predict(predict_request(signature="predict_images", image_bytes=jpegs), timeout=60)
    want = loaded.signatures["predict_images"](image_bytes=tf.constant(list(jpegs)))
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["gender"]), want["gender"].numpy(), atol=1e-5)
    # output_filter
    req = predict_request(image=x)
    req.output_filter.append("smile")
    assert set(predict_stub.Predict(req, timeout=60).outputs) == {"smile"}


def test_grpc_metadata_and_status(predict_stub, model_stub):
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "faces"
    resp = predict_stub.GetModelMetadata(req, timeout=30)
    assert resp.model_spec.version.value == 1
    sigs = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sigs)
    assert {"serving_default", "predict_images", "predict_examples", "classify_smile"} <= set(sigs.signature_def)
    image = sigs.signature_def["serving_default"].inputs["image"]
    assert [d.size for d in image.tensor_shape.dim] == [-1, 150, 150, 3]
    status = model_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "faces"}), timeout=30)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def test_grpc_classify(predict_stub, loaded):
    rng = np.random.default_rng(2)
    images = [run_fixture.encode(run_fixture.make_image(rng, 1, 1)) for _ in range(2)]
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "faces"
    req.model_spec.signature_name = "classify_smile"
    for data in images:
        ex = req.input.example_list.examples.add()
        ex.features.feature["image/encoded"].bytes_list.value.append(data)
    resp = predict_stub.Classify(req, timeout=60)
    want = loaded.signatures["predict_images"](image_bytes=tf.constant(images))["smile"].numpy()
    assert resp.model_spec.signature_name == "classify_smile"
    for i, c in enumerate(resp.result.classifications):
        assert [x.label for x in c.classes] == run_fixture.LABELS["smile"]
        np.testing.assert_allclose([x.score for x in c.classes], want[i], atol=1e-5)
    req.model_spec.signature_name = "serving_default"
    with pytest.raises(grpc.RpcError) as info:
        predict_stub.Classify(req, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def grpc_error(fn, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn(request, timeout=60)
    return info.value.code(), info.value.details()


def test_grpc_error_codes_and_messages(predict_stub, model_stub):
    x = crops(1)
    code, msg = grpc_error(predict_stub.Predict, predict_request(name="nope", image=x))
    assert code == grpc.StatusCode.NOT_FOUND and msg == "Servable not found for request: Latest(nope)"
    code, msg = grpc_error(predict_stub.Predict, predict_request(version=9, image=x))
    assert code == grpc.StatusCode.NOT_FOUND and msg == "Servable not found for request: Specific(faces, 9)"
    code, msg = grpc_error(predict_stub.Predict, predict_request(signature="nope", image=x))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and msg == 'Serving signature key "nope" not found.'
    code, msg = grpc_error(predict_stub.Predict, predict_request())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Missing but required: {image}" in msg
    code, msg = grpc_error(predict_stub.Predict, predict_request(image=x, extra=np.zeros(1, np.float32)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Send extra: {extra}" in msg
    code, msg = grpc_error(predict_stub.Predict, predict_request(image=x.astype(np.int32)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg == "Expects arg[0] to be float but int32 is provided"
    # shapes are checked by the graph, not more strictly, as in TF Serving: a smaller image runs
    # (convolutions and global pooling take it); one with 2 channels fails in the first convolution
    resp = predict_stub.Predict(predict_request(image=np.zeros((1, 32, 32, 3), np.float32)), timeout=60)
    assert [d.size for d in resp.outputs["smile"].tensor_shape.dim] == [1, 2]
    code, msg = grpc_error(predict_stub.Predict, predict_request(image=np.zeros((1, 150, 150, 2), np.float32)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg and "\n" not in msg
    code, msg = grpc_error(predict_stub.Predict, predict_request(
        signature="predict_images", image_bytes=np.array([b"not an image"], dtype=object)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    req = predict_request(image=x)
    req.output_filter.append("nope")
    code, msg = grpc_error(predict_stub.Predict, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "output tensor alias not found" in msg
    code, msg = grpc_error(predict_stub.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "faces"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "metadata_field" in msg
    code, msg = grpc_error(predict_stub.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "nope"}, metadata_field=["signature_def"]))
    assert code == grpc.StatusCode.NOT_FOUND
    code, msg = grpc_error(model_stub.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "nope"}))
    assert code == grpc.StatusCode.NOT_FOUND and msg == "Could not find any versions of model nope"
    req = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "faces"})
    req.model_spec.version.value = 5
    code, msg = grpc_error(model_stub.GetModelStatus, req)
    assert code == grpc.StatusCode.NOT_FOUND and msg == "Could not find version 5 of model faces"


# ----------------------------------------------------------------------------- REST


def test_rest_status_metadata_predict(server, loaded):
    base = f"{server.rest_url}/v1/models/faces"
    code, body = http("GET", base)
    assert code == 200 and body == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    code, body = http("GET", base + "/versions/1")
    assert code == 200 and body["model_version_status"][0]["version"] == "1"
    code, body = http("GET", base + "/metadata")
    assert code == 200 and body["model_spec"] == {"name": "faces", "signature_name": "", "version": "1"}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert sigs["serving_default"]["inputs"]["image"]["dtype"] == "DT_FLOAT"
    x = crops(2, seed=5)
    want = loaded.signatures["serving_default"](image=tf.constant(x))
    code, body = http("POST", base + ":predict", {"instances": x.tolist()})  # row format
    assert code == 200 and len(body["predictions"]) == 2
    np.testing.assert_allclose([p["smile"] for p in body["predictions"]], want["smile"].numpy(), atol=1e-5)
    code, body = http("POST", base + "/versions/1:predict", {"signature_name": "serving_default",
                                                             "inputs": {"image": x.tolist()}})  # columnar
    assert code == 200
    np.testing.assert_allclose(body["outputs"]["landmarks"], want["landmarks"].numpy(), atol=1e-3)
    rng = np.random.default_rng(6)
    jpeg = run_fixture.encode(run_fixture.make_image(rng, 0, 1))
    b64 = base64.b64encode(jpeg).decode()
    code, body = http("POST", base + ":predict", {"signature_name": "predict_images",
                                                  "instances": [{"b64": b64}]})
    assert code == 200
    want = loaded.signatures["predict_images"](image_bytes=tf.constant([jpeg]))
    np.testing.assert_allclose(body["predictions"][0]["gender"], want["gender"].numpy()[0], atol=1e-5)
    code, body = http("POST", base + ":predict", {"signature_name": "predict_images",
                                                  "instances": [{"image_bytes": {"b64": b64}}]})
    assert code == 200 and len(body["predictions"]) == 1
    code, body = http("POST", base + ":classify", {"signature_name": "classify_smile",
                                                   "examples": [{"image/encoded": {"b64": b64}}]})
    assert code == 200 and [c[0] for c in body["result"][0]] == run_fixture.LABELS["smile"]
    np.testing.assert_allclose([c[1] for c in body["result"][0]], want["smile"].numpy()[0], atol=1e-5)


def test_rest_error_codes(server):
    base = f"{server.rest_url}/v1/models"
    x = crops(1).tolist()
    cases = [
        ("GET", "/nope", None, 404, "Could not find any versions of model nope"),
        ("GET", "/faces/versions/7", None, 404, "Could not find version 7 of model faces"),
        ("POST", "/nope:predict", {"instances": x}, 404, "Servable not found for request: Latest(nope)"),
        ("POST", "/faces/versions/7:predict", {"instances": x}, 404,
         "Servable not found for request: Specific(faces, 7)"),
        ("POST", "/faces:predict", {"signature_name": "nope", "instances": x}, 400, 'key "nope" not found'),
        ("POST", "/faces:predict", {"inputs": {"image": x, "extra": [1.0]}}, 400, "Send extra: {extra}"),
        ("POST", "/faces:predict", {"inputs": {"other": x}}, 400, "Missing but required: {image}"),
        ("POST", "/faces:predict", {"instances": [[[["a"]]]]}, 400, "number"),
        ("POST", "/faces:predict", {"instances": [[[[1.0, 2.0]]]]}, 400, ""),  # 2 channels: the graph refuses
        ("POST", "/faces:predict", {"foo": 1}, 400, "Missing 'inputs' or 'instances' key"),
        ("POST", "/faces:predict", b"{not json", 400, "JSON Parse error"),
        ("POST", "/faces:explode", {}, 400, "Malformed request"),
    ]
    for method, path, body, want_code, fragment in cases:
        code, reply = http(method, base + path, body)
        assert code == want_code, (path, reply)
        assert set(reply) == {"error"} and fragment in reply["error"], (path, reply)


# ----------------------------------------------------------------------------- client


def test_client_over_grpc_and_rest(server, loaded):
    rng = np.random.default_rng(7)
    images = [run_fixture.make_image(rng, 1, 0), run_fixture.encode(run_fixture.make_image(rng, 0, 1))]
    results = {}
    for url in (f"grpc://{server.grpc_target}/faces", f"{server.rest_url}/faces"):
        with connect(url) as client:
            assert client.labels()["smile"] == run_fixture.LABELS["smile"]
            assert client.status()[0]["state"] == "AVAILABLE"
            assert "serving_default" in client.metadata()["metadata"]["signature_def"]["signature_def"]
            results[url[:4]] = client.predict_images(images)
            crop_result = client.predict_crops(crops(1))[0]
            assert set(crop_result["smile"]["probabilities"]) == set(run_fixture.LABELS["smile"])
            with pytest.raises(ClientError) as info:
                connect(url.replace("/faces", "/nope")).status()
            assert info.value.code in ("NOT_FOUND", 404)
    g, h = results["grpc"], results["http"]
    assert [r["smile"]["label"] for r in g] == [r["smile"]["label"] for r in h]
    assert g[0]["smile"]["score"] == pytest.approx(h[0]["smile"]["score"], abs=1e-6)
    assert len(g[1]["landmarks"]) == 5 and len(g[1]["landmarks"][0]) == 2
    want = loaded.signatures["predict_images"](image_bytes=tf.constant([images[1]]))["gender"].numpy()[0]
    assert g[1]["gender"]["probabilities"]["male"] == pytest.approx(float(want[1]), abs=1e-6)


# ----------------------------------------------------------------------------- versions


def add_version(models_dir: Path, name: str, version: int) -> None:
    """Publish a version the way an export does: copy under a temporary name, then rename."""
    tmp = models_dir / name / f".tmp-{version}"
    shutil.copytree(models_dir / "faces" / "1", tmp)
    os.replace(tmp, models_dir / name / str(version))


def states(model_stub, name: str) -> dict[int, str]:
    resp = model_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": name}), timeout=30)
    return {s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state) for s in resp.model_version_status}


def test_new_version_is_served_without_restart(models_dir, predict_stub, model_stub):
    assert states(model_stub, "dyn") == {1: "AVAILABLE"}
    add_version(models_dir, "dyn", 2)
    wait_for(lambda: states(model_stub, "dyn") == {1: "END", 2: "AVAILABLE"}, what="version 2 of dyn")
    resp = predict_stub.Predict(predict_request(name="dyn", image=crops(1)), timeout=60)
    assert resp.model_spec.version.value == 2
    code, _ = grpc_error(predict_stub.Predict, predict_request(name="dyn", version=1, image=crops(1)))
    assert code == grpc.StatusCode.NOT_FOUND


def test_reload_config_applies_version_policy(server, models_dir, model_stub, predict_stub, tmp_path):
    if not (models_dir / "dyn" / "2").exists():
        add_version(models_dir, "dyn", 2)

    def reload(policy: str, extra: str = ""):
        config = read_model_config(write_config(tmp_path / "new.config", models_dir, policy, extra))
        return model_stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config),
                                                    timeout=120)

    resp = reload("all {}", 'version_labels { key: "stable" value: 1 }')
    assert resp.status.error_code == 0
    assert states(model_stub, "dyn") == {1: "AVAILABLE", 2: "AVAILABLE"}
    assert predict_stub.Predict(predict_request(name="dyn", version=1, image=crops(1)),
                                timeout=60).model_spec.version.value == 1
    assert predict_stub.Predict(predict_request(name="dyn", image=crops(1)), timeout=60).model_spec.version.value == 2
    req = predict_request(name="dyn", image=crops(1))
    req.model_spec.version_label = "stable"
    assert predict_stub.Predict(req, timeout=60).model_spec.version.value == 1
    code, body = http("POST", f"{server.rest_url}/v1/models/dyn/labels/stable:predict",
                      {"instances": crops(1).tolist()})
    assert code == 200 and len(body["predictions"]) == 1
    reload("specific { versions: 1 }")
    assert states(model_stub, "dyn") == {1: "AVAILABLE", 2: "END"}
    assert predict_stub.Predict(predict_request(name="dyn", image=crops(1)), timeout=60).model_spec.version.value == 1
    reload("latest { num_versions: 1 }")
    assert states(model_stub, "dyn")[2] == "AVAILABLE"
    bad = model_server_config_pb2.ModelServerConfig()
    bad.model_config_list.config.add(name="x", base_path=str(models_dir / "missing"))
    with pytest.raises(grpc.RpcError) as info:
        model_stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=bad), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "Could not find base path" in info.value.details()
    assert states(model_stub, "faces") == {1: "AVAILABLE"}  # a refused config changes nothing


def test_broken_version_keeps_the_previous_one_serving(server, models_dir, model_stub, predict_stub):
    if not (models_dir / "dyn" / "2").exists():  # when run on its own
        add_version(models_dir, "dyn", 2)
    wait_for(lambda: states(model_stub, "dyn").get(2) == "AVAILABLE", what="version 2 of dyn")
    tmp = models_dir / "dyn" / ".tmp-9"
    shutil.copytree(models_dir / "faces" / "1", tmp)
    (tmp / "saved_model.pb").write_bytes(b"not a saved model")
    os.replace(tmp, models_dir / "dyn" / "9")
    try:
        wait_for(lambda: states(model_stub, "dyn").get(9) == "END", what="the broken version to fail")
        assert states(model_stub, "dyn")[2] == "AVAILABLE"
        assert predict_stub.Predict(predict_request(name="dyn", image=crops(1)),
                                    timeout=60).model_spec.version.value == 2
        code, body = http("GET", f"{server.rest_url}/v1/models/dyn/versions/9")
        assert code == 200 and body["model_version_status"][0]["state"] == "END"
        assert body["model_version_status"][0]["status"]["error_code"] != "OK"
        assert "version 9" in body["model_version_status"][0]["status"]["error_message"]
    finally:
        shutil.rmtree(models_dir / "dyn" / "9")


# ----------------------------------------------------------------------------- batching


def test_server_side_batching(models_dir, loaded):
    params = BatchingParameters(max_batch_size=8, batch_timeout_micros=300_000, num_batch_threads=1,
                                max_enqueued_batches=4)
    with ModelServer(port=0, rest_api_port=None, host="127.0.0.1", model_name="faces",
                     model_base_path=str(models_dir / "faces"), enable_batching=True,
                     batching_parameters=params, file_system_poll_wait_seconds=0) as srv:
        with grpc.insecure_channel(srv.grpc_target) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            x = crops(8, seed=9)
            # the warmup replay went through the batcher already, as TF Serving's does
            before = srv.core.batch_stats()["faces/1/serving_default"]
            results = [None] * 8
            errors = []

            def call(i):
                try:
                    resp = stub.Predict(predict_request(image=x[i:i + 1]), timeout=60)
                    results[i] = tf.make_ndarray(resp.outputs["smile"])[0]
                except Exception as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors
            want = loaded.signatures["serving_default"](image=tf.constant(x))["smile"].numpy()
            np.testing.assert_allclose(np.stack(results), want, atol=1e-5)
            stats = srv.core.batch_stats()["faces/1/serving_default"]
            assert stats["rows"] - before["rows"] == 8 and stats["batches"] - before["batches"] < 8
            assert stats["max_batch"] > 1
            # the same counts on the Prometheus page (kerasface's own batch counters)
            text = srv.core.metrics.exposition()
            labels = '{model_name="faces",signature_name="serving_default"}'
            assert f":kerasface:serving:batched_rows{labels} {stats['rows']}" in text
            assert f":kerasface:serving:batch_count{labels} {stats['batches']}" in text
            assert f":kerasface:serving:batch_padding_rows{labels} 0" in text
            code, msg = grpc_error(stub.Predict, predict_request(image=crops(9)))
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert msg == "Task size 9 is larger than maximum input batch size 8"


# ----------------------------------------------------------------------------- command line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_command_line_takes_tensorflow_model_server_flags(models_dir, tmp_path):
    rest = free_port()
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 1000 }\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerasface.serving", "--port=0", f"--rest_api_port={rest}", "--host=127.0.0.1",
         "--model_name=faces", f"--model_base_path={models_dir / 'faces'}", "--enable_batching",
         f"--batching_parameters_file={batching}", "--file_system_poll_wait_seconds=1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        line = ""
        end = time.time() + 120
        while time.time() < end and "ready" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise AssertionError(proc.stderr.read())
        assert "ready" in line, line
        code, body = http("GET", f"http://127.0.0.1:{rest}/v1/models/faces")
        assert code == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
        code, body = http("POST", f"http://127.0.0.1:{rest}/v1/models/faces:predict",
                          {"instances": crops(1).tolist()})
        assert code == 200 and len(body["predictions"]) == 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
