"""Images -> attributes over gRPC or REST, against TF Serving or kerasface.serving.

    from kerasface.serving.client import connect
    client = connect("grpc://localhost:8500/faces")      # or "http://localhost:8501/faces"
    client.predict_images(["crop1.jpg", "crop2.png"])     # encoded bytes -> predict_images
    client.predict_crops(float_batch)                     # float32 [B, H, W, C] -> serving_default
    client.metadata(); client.status(); client.labels()

    python -m kerasface.serving.client grpc://localhost:8500/faces crop1.jpg crop2.jpg

A URL may pin a version: grpc://host:8500/faces/versions/2 (or .../labels/stable). Images are
the crops the model was trained on (kerasface.faces.crops.apply_crop output); paths and bytes
are sent as they are (JPEG/PNG, otherwise re-encoded as PNG), arrays as lossless PNG. Each result
is {attribute: {"label", "score", "probabilities": {label: p}}} with "landmarks": [[x, y] x 5] in
pixels of the image sent. Errors raise `ClientError` with the server's code and message.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import urlparse

import numpy as np

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


class ClientError(RuntimeError):
    """code: the canonical name over gRPC ("NOT_FOUND") or the HTTP status over REST (404)."""

    def __init__(self, code, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def encode_image(image: Any) -> bytes:
    """Path, bytes, PIL image or uint8 array -> JPEG/PNG bytes."""
    if isinstance(image, (str, os.PathLike)):
        data = Path(image).read_bytes()
    elif isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    else:
        data = None
    if data is not None:
        if data.startswith(_PNG) or data.startswith(_JPEG):
            return data
        from PIL import Image

        image = Image.open(io.BytesIO(data))
    from PIL import Image

    if isinstance(image, np.ndarray):
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        image = Image.fromarray(arr)
    if not hasattr(image, "save"):
        raise TypeError(f"cannot send {type(image).__name__} as an image")
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def parse_url(url: str) -> tuple[str, str, str, int | None, str | None]:
    """(scheme, host:port, model name, version, label) of grpc://host:port/NAME[/versions/N|/labels/L]."""
    u = urlparse(url)
    if u.scheme not in ("grpc", "http", "https"):
        raise ValueError(f"{url}: expected grpc://host:port/NAME or http://host:port/NAME")
    parts = [p for p in u.path.split("/") if p]
    if parts[:2] == ["v1", "models"]:
        parts = parts[2:]
    if not parts:
        raise ValueError(f"{url}: no model name (expected .../NAME)")
    name, version, label = parts[0], None, None
    if len(parts) >= 3 and parts[1] == "versions":
        version = int(parts[2])
    elif len(parts) >= 3 and parts[1] == "labels":
        label = parts[2]
    if not u.netloc:
        raise ValueError(f"{url}: no host:port")
    return u.scheme, u.netloc, name, version, label


def _interpret(outputs: dict[str, np.ndarray], labels: dict[str, list[str]]) -> list[dict]:
    n = len(next(iter(outputs.values()))) if outputs else 0
    results = [{} for _ in range(n)]
    for name, values in outputs.items():
        names = labels.get(name) or []
        is_points = name == "landmarks" or (names and all(str(x).endswith(("_x", "_y")) for x in names))
        for i in range(n):
            row = np.asarray(values[i], np.float64)
            if is_points and row.size % 2 == 0:
                results[i][name] = [[float(x), float(y)] for x, y in row.reshape(-1, 2)]
            else:
                k = int(row.argmax())
                classes = names if len(names) == row.size else [str(j) for j in range(row.size)]
                results[i][name] = {"label": classes[k], "score": float(row[k]),
                                    "probabilities": {c: float(p) for c, p in zip(classes, row)}}
    return results


class Client:
    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url
        self.scheme, self.address, self.name, self.version, self.label = parse_url(url)
        self.timeout = timeout
        self._labels: dict[str, list[str]] | None = None
        self._channel = None
        if self.scheme == "grpc":
            import grpc
            from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

            self._channel = grpc.insecure_channel(self.address, options=[
                ("grpc.max_receive_message_length", 2**31 - 1), ("grpc.max_send_message_length", 2**31 - 1)])
            self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _spec(self, spec, signature: str | None = None):
        spec.name = self.name
        if self.version is not None:
            spec.version.value = self.version
        if self.label:
            spec.version_label = self.label
        if signature is not None:
            spec.signature_name = signature

    def _grpc_call(self, fn, request):
        import grpc

        try:
            return fn(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise ClientError(err.code().name, err.details()) from None

    def _rest_path(self) -> str:
        path = f"/v1/models/{self.name}"
        if self.version is not None:
            path += f"/versions/{self.version}"
        elif self.label:
            path += f"/labels/{self.label}"
        return f"{self.scheme}://{self.address}{path}"

    def _http(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            text = err.read()
            try:
                message = json.loads(text).get("error", text.decode("utf-8", "replace"))
            except (json.JSONDecodeError, AttributeError):
                message = text.decode("utf-8", "replace")
            raise ClientError(err.code, message) from None

    # ------------------------------------------------------------------ raw API

    def predict(self, inputs: dict[str, Any], signature: str = "serving_default") -> dict[str, np.ndarray]:
        """Raw Predict: named numpy inputs -> named numpy outputs."""
        if self.scheme == "grpc":
            import tensorflow as tf
            from tensorflow_serving.apis import predict_pb2

            request = predict_pb2.PredictRequest()
            self._spec(request.model_spec, signature)
            for k, v in inputs.items():
                request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
            response = self._grpc_call(self._predict_stub.Predict, request)
            return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        columns = {}
        for k, v in inputs.items():
            arr = np.asarray(v)
            if arr.dtype == object or arr.dtype.kind == "S":
                columns[k] = [{"b64": base64.b64encode(bytes(x)).decode("ascii")} for x in arr.reshape(-1)]
            else:
                columns[k] = arr.tolist()
        body = self._http(self._rest_path() + ":predict", {"signature_name": signature, "inputs": columns})
        out = body["outputs"]
        if not isinstance(out, dict):
            out = {"output": out}
        return {k: np.asarray(v) for k, v in out.items()}

    def labels(self) -> dict[str, list[str]]:
        """Each output's labels, from the export's `labels` signature (cached)."""
        if self._labels is None:
            out = self.predict({"rows": np.zeros([1], np.int32)}, signature="labels")
            self._labels = {k: [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(v)[0]]
                            for k, v in out.items()}
        return self._labels

    def metadata(self) -> dict:
        if self.scheme == "grpc":
            from google.protobuf import json_format
            from tensorflow_serving.apis import get_model_metadata_pb2

            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            self._spec(request.model_spec)
            response = self._grpc_call(self._predict_stub.GetModelMetadata, request)
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(sig_map)
            return {"model_spec": {"name": response.model_spec.name,
                                   "version": str(response.model_spec.version.value)},
                    "metadata": {"signature_def": json_format.MessageToDict(sig_map,
                                                                            preserving_proto_field_name=True)}}
        return self._http(self._rest_path() + "/metadata")

    def status(self) -> list[dict]:
        if self.scheme == "grpc":
            from google.protobuf import json_format
            from tensorflow_serving.apis import get_model_status_pb2

            request = get_model_status_pb2.GetModelStatusRequest()
            self._spec(request.model_spec)
            response = self._grpc_call(self._model_stub.GetModelStatus, request)
            return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                             always_print_fields_with_no_presence=True)["model_version_status"]
        return self._http(self._rest_path())["model_version_status"]

    # ------------------------------------------------------------------ attributes

    def predict_images(self, images: Sequence[Any] | Any, batch_size: int = 32) -> list[dict]:
        """Encoded crops -> one dict of attributes per image (signature predict_images)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        encoded = [encode_image(im) for im in images]
        labels = self.labels()
        results = []
        for i in range(0, len(encoded), batch_size):
            chunk = np.array(encoded[i:i + batch_size], dtype=object)
            results += _interpret(self.predict({"image_bytes": chunk}, "predict_images"), labels)
        return results

    def predict_crops(self, crops: np.ndarray, batch_size: int = 32) -> list[dict]:
        """Float crops [B, H, W, C] in [0, 255] at the export's input size -> attributes (serving_default)."""
        crops = np.asarray(crops, np.float32)
        if crops.ndim == 3:
            crops = crops[None]
        labels = self.labels()
        results = []
        for i in range(0, len(crops), batch_size):
            results += _interpret(self.predict({"image": crops[i:i + batch_size]}, "serving_default"), labels)
        return results


def connect(url: str, timeout: float = 30.0) -> Client:
    return Client(url, timeout)


def main(argv: Iterable[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kerasface.serving.client",
                                     description="Send face crops to a TF Serving or kerasface.serving model.")
    parser.add_argument("url", help="grpc://host:8500/NAME or http://host:8501/NAME")
    parser.add_argument("images", nargs="*", help="crop images (JPEG/PNG)")
    parser.add_argument("--status", action="store_true", help="print the model's version status")
    parser.add_argument("--metadata", action="store_true", help="print the model's signatures")
    args = parser.parse_args(list(argv) if argv is not None else None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with connect(args.url) as client:
            if args.status:
                print(json.dumps(client.status(), indent=2))
            if args.metadata:
                print(json.dumps(client.metadata(), indent=2))
            if args.images:
                for path, result in zip(args.images, client.predict_images(args.images)):
                    print(json.dumps({"image": path, **result}))
    except (ClientError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
