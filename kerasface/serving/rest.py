"""REST front end (TF Serving's API) on the standard library's ThreadingHTTPServer.

    GET  /v1/models/NAME[/versions/N | /labels/L]              model status
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata     signature defs
    POST /v1/models/NAME[/versions/N | /labels/L]:predict      {"signature_name"?, "instances": [...]}
                                                               or {"signature_name"?, "inputs": ...}
    POST /v1/models/NAME[/versions/N | /labels/L]:classify     {"signature_name"?, "examples": [...], "context"?}
    POST /v1/models/NAME[/versions/N | /labels/L]:regress      same body as :classify
    GET  PROMETHEUS_PATH                                       metrics, with --monitoring_config_file

Row format ("instances") answers {"predictions": [...]}: one value per row when the signature has
one output, else one object per row. Columnar format ("inputs") answers {"outputs": ...}. Binary
strings travel as {"b64": "..."}; string outputs whose name ends in "_bytes" are returned that
way. Floats are written in their shortest form (a float32 0.1 as 0.1), non-finite ones as the
NaN / Infinity / -Infinity literals TF Serving writes and reads. Metadata is the JSON form of
GetModelMetadataResponse with every field printed (`defaults`, dim `name`, `unknown_rank`), as
TF Serving prints it. Errors answer {"error": "..."} with TF Serving's HTTP status (400
INVALID_ARGUMENT and FAILED_PRECONDITION, 404 NOT_FOUND, ...).

Bad requests are refused before their body is read: a Content-Length that is not a number gets
400, one above --rest_api_max_request_bytes (default 256 MiB) gets 413, a chunked body gets 411;
a client that sends nothing for --rest_api_timeout_in_ms is disconnected (408). The server keeps
serving the other connections throughout.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from kerasface.serving.errors import ServingError
from kerasface.serving.signatures import dtype_name

log = logging.getLogger("kerasface.serving")

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                   r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                   r"(?:(?P<metadata>/metadata)|:(?P<verb>predict|classify|regress))?/?$")


# ----------------------------------------------------------------------------- JSON <-> tensors


def _decode_value(value, is_string: bool):
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError):
                raise ServingError("INVALID_ARGUMENT", "Unable to base64 decode") from None
        raise ServingError("INVALID_ARGUMENT", f"JSON object: does not have named input: {next(iter(value), '')}")
    if isinstance(value, list):
        return [_decode_value(v, is_string) for v in value]
    if is_string:
        if isinstance(value, str):
            return value.encode("utf-8")
        raise ServingError("INVALID_ARGUMENT", f"JSON Value: {json.dumps(value)} not formatted correctly for base64 data")
    if isinstance(value, str):
        if value in ("NaN", "Infinity", "-Infinity"):
            return float(value.replace("Infinity", "inf"))
        raise ServingError("INVALID_ARGUMENT", f"JSON Value: {json.dumps(value)} Type: String is not of expected type: "
                                               "number")
    return value


def _np_dtype(dtype_enum: int):
    import tensorflow as tf

    dt = tf.dtypes.as_dtype(dtype_enum)
    return object if dt == tf.string else dt.as_numpy_dtype


def json_to_array(value, dtype_enum: int, alias: str) -> np.ndarray:
    import tensorflow as tf

    is_string = tf.dtypes.as_dtype(dtype_enum) == tf.string
    decoded = _decode_value(value, is_string)
    try:
        if is_string:
            array = np.array(decoded, dtype=object)
            # a ragged list comes out as an array of lists; refuse it
            if array.dtype == object and any(isinstance(x, list) for x in array.reshape(-1)):
                raise ValueError
        else:
            if any(isinstance(x, (bytes, bool)) for x in _flatten(decoded)) and dtype_enum != tf.bool.as_datatype_enum:
                raise ServingError("INVALID_ARGUMENT", f"Expects arg for input {alias} to be {dtype_name(dtype_enum)}")
            array = np.array(decoded, dtype=_np_dtype(dtype_enum))
    except ServingError:
        raise
    except (ValueError, TypeError, OverflowError):
        raise ServingError("INVALID_ARGUMENT", f"Failed to process element: {alias}: the list is not rectangular or "
                                               f"its values are not {dtype_name(dtype_enum)}") from None
    return array


def _flatten(value):
    if isinstance(value, list):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


def array_to_json(array: np.ndarray, alias: str):
    if array.dtype == object or array.dtype.kind in "SU":
        def conv(x):
            if isinstance(x, bytes):
                if alias.endswith("_bytes"):
                    return {"b64": base64.b64encode(x).decode("ascii")}
                try:
                    return x.decode("utf-8")
                except UnicodeDecodeError:
                    return {"b64": base64.b64encode(x).decode("ascii")}
            return str(x)

        return np.vectorize(conv, otypes=[object])(array).tolist() if array.size else array.tolist()
    if array.dtype.kind == "f" and array.dtype.itemsize < 8:
        # numpy's str() of a float32 is its shortest round-trip form: 0.1 rather than 0.10000000149011612
        shortest = np.array([float(str(x)) for x in array.reshape(-1)], dtype=object)
        return shortest.reshape(array.shape).tolist()
    return array.tolist()


def parse_predict(body: dict, sig) -> tuple[dict[str, np.ndarray], dict[str, int], bool]:
    """(inputs, dtypes, row_format) from a :predict body, typed by the signature."""
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances and has_inputs:
        raise ServingError("INVALID_ARGUMENT", "Not both of 'instances' and 'inputs' can be specified")
    if not has_instances and not has_inputs:
        raise ServingError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")
    aliases = sorted(sig.inputs)
    columns: dict[str, object] = {}
    if has_instances:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise ServingError("INVALID_ARGUMENT", "'instances' must be a non-empty JSON list")
        named = all(isinstance(r, dict) and not (set(r) == {"b64"}) for r in rows)
        if named:
            keys = set(rows[0])
            for r in rows:
                if set(r) != keys:
                    raise ServingError("INVALID_ARGUMENT", "Expecting object with the same set of keys in every "
                                                           "instance")
            columns = {k: [r[k] for r in rows] for k in keys}
        elif len(aliases) == 1:
            columns = {aliases[0]: rows}
        else:
            raise ServingError("INVALID_ARGUMENT", "instances must be JSON objects with named inputs when the "
                                                   f"signature has several inputs ({', '.join(aliases)})")
    else:
        value = body["inputs"]
        if isinstance(value, dict) and set(value) != {"b64"}:
            columns = dict(value)
        elif len(aliases) == 1:
            columns = {aliases[0]: value}
        else:
            raise ServingError("INVALID_ARGUMENT", "inputs must be a JSON object with named inputs when the "
                                                   f"signature has several inputs ({', '.join(aliases)})")
    inputs, dtypes = {}, {}
    for alias, value in columns.items():
        if alias not in sig.inputs:
            inputs[alias] = np.zeros(0)  # reported as an extra input by the common check
            dtypes[alias] = 0
            continue
        dtype = sig.inputs[alias][0]
        inputs[alias] = json_to_array(value, dtype, alias)
        dtypes[alias] = dtype
    return inputs, dtypes, has_instances


def format_predict(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    if row_format:
        keys = list(outputs)
        rows = {k: array_to_json(v, k) for k, v in outputs.items()}
        n = len(next(iter(rows.values()))) if rows else 0
        for k, v in outputs.items():
            if v.ndim == 0 or len(rows[k]) != n:
                raise ServingError("INVALID_ARGUMENT", "Output tensors do not have the same 0th dimension; "
                                                       "use the columnar 'inputs' format")
        if len(keys) == 1:
            return {"predictions": rows[keys[0]]}
        return {"predictions": [{k: rows[k][i] for k in keys} for i in range(n)]}
    if len(outputs) == 1:
        k, v = next(iter(outputs.items()))
        return {"outputs": array_to_json(v, k)}
    return {"outputs": {k: array_to_json(v, k) for k, v in outputs.items()}}


def example_from_json(obj: dict, context: dict | None = None) -> bytes:
    import tensorflow as tf

    merged = dict(context or {})
    merged.update(obj)
    feature = {}
    for key, value in merged.items():
        values = value if isinstance(value, list) else [value]
        if all(isinstance(v, bool) or isinstance(v, int) for v in values):
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
        else:
            data = [_decode_value(v, True) for v in values]
            if not all(isinstance(d, bytes) for d in data):
                raise ServingError("INVALID_ARGUMENT", f"feature {key}: mixed or nested values")
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=data))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


# ----------------------------------------------------------------------------- handler


class _Refused(Exception):
    """A request refused before its body is read: answered, then the connection is closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def make_handler(core, timeout_s: float | None = 30.0, cors: bool = False, max_request_bytes: int = 256 * 2**20,
                 monitoring_path: str | None = None):
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

    from kerasface.serving.grpc import metadata_response, status_response

    def to_json(message) -> dict:
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "kerasface-serving"
        timeout = timeout_s  # a stalled client is dropped (StreamRequestHandler sets it on the socket)

        def log_message(self, fmt, *args):  # quiet; errors are logged below
            log.debug("%s - %s", self.address_string(), fmt % args)

        def _send_bytes(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if cors:
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", "Content-Type")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _send(self, status: int, payload: dict) -> None:
            self._send_bytes(status, json.dumps(payload, separators=(",", ":")).encode("utf-8"), "application/json")

        def _error(self, err: ServingError, model_name: str = "") -> None:
            if model_name:
                core.metrics.request(model_name, err.code)
            self._send(err.http_status, {"error": err.message})

        def _route(self, method: str):
            path = self.path.split("?", 1)[0]
            m = _PATH.match(path)
            if not m or (method == "GET" and m.group("verb")) or (method == "POST" and not m.group("verb")):
                raise ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")
            version = m.group("version")
            if version is not None:
                if not version.isdigit():
                    raise ServingError("INVALID_ARGUMENT", f"Failed to convert version: {version} to numeric.")
                version = int(version)
            return m.group("name"), version, m.group("label"), bool(m.group("metadata")), m.group("verb")

        def _body(self) -> bytes:
            """The request body, refused (and never read) when its size is missing, bad or too large."""
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                raise _Refused(411, "Chunked request bodies are not supported; send a Content-Length")
            text = (self.headers.get("Content-Length") or "0").strip()
            if not text.isdigit():
                raise _Refused(400, f"Invalid Content-Length: {text[:40]!r}")
            length = int(text)
            if length > max_request_bytes:
                raise _Refused(413, f"Request body of {length} bytes exceeds the limit of {max_request_bytes} "
                                    "bytes (--rest_api_max_request_bytes)")
            data = self.rfile.read(length) if length else b""
            if len(data) != length:
                raise _Refused(400, f"Request body ended after {len(data)} of {length} bytes")
            return data

        def do_OPTIONS(self):  # CORS preflight
            self._send_bytes(204 if cors else 405, b"", "application/json")

        def do_GET(self):
            if monitoring_path and self.path.split("?", 1)[0] == monitoring_path:
                self._send_bytes(200, core.metrics.exposition().encode(), "text/plain; version=0.0.4")
                return
            name = ""
            try:
                name, version, label, metadata, _ = self._route("GET")
                if metadata:
                    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
                    request.model_spec.CopyFrom(model_pb2.ModelSpec(name=name, version_label=label or ""))
                    if version is not None:
                        request.model_spec.version.value = version
                    response = metadata_response(core, request)
                    sig_map = get_model_metadata_pb2.SignatureDefMap()
                    response.metadata["signature_def"].Unpack(sig_map)
                    self._send(200, {
                        "model_spec": {"name": name, "signature_name": "",
                                       "version": str(response.model_spec.version.value)},
                        "metadata": {"signature_def": to_json(sig_map)},
                    })
                else:
                    self._send(200, to_json(status_response(core.manager.status(name, version, label))))
                core.metrics.request(name, "OK")
            except ServingError as err:
                self._error(err, name)
            except Exception as exc:  # pragma: no cover
                log.exception("REST GET failed")
                self._error(ServingError("INTERNAL", str(exc)))

        def do_POST(self):
            name = ""
            try:
                try:
                    raw = self._body()
                except _Refused as refused:
                    self.close_connection = True  # the unread body must not be taken for a next request
                    self._send(refused.status, {"error": refused.message})
                    return
                except (socket.timeout, TimeoutError):
                    self.close_connection = True
                    self._send(408, {"error": f"Timed out reading the request body after {timeout_s} s"})
                    return
                name, version, label, _, verb = self._route("POST")
                try:
                    body = json.loads(raw or b"null")
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {exc}") from None
                if not isinstance(body, dict):
                    raise ServingError("INVALID_ARGUMENT", "JSON Parse error: the request body must be a JSON object")
                model = core.model(name, version, label)
                signature_name = body.get("signature_name", "") or ""
                if verb == "predict":
                    sig = model.signature(signature_name)
                    inputs, dtypes, rows = parse_predict(body, sig)
                    _, outputs = core.predict(model, signature_name, inputs, dtypes)
                    self._send(200, format_predict(outputs, rows))
                else:
                    examples = body.get("examples")
                    if not isinstance(examples, list) or not examples:
                        raise ServingError("INVALID_ARGUMENT", "'examples' must be a non-empty JSON list of objects")
                    serialized = [example_from_json(e, body.get("context")) for e in examples]
                    if verb == "classify":
                        _, result = core.classify(model, signature_name, serialized)
                        self._send(200, {"result": [[[label_, score] for label_, score in row] for row in result]})
                    else:
                        _, result = core.regress(model, signature_name, serialized)
                        self._send(200, {"result": result})
                core.metrics.request(name, "OK")
            except ServingError as err:
                self._error(err, name)
            except Exception as exc:  # pragma: no cover
                log.exception("REST POST failed")
                self._error(ServingError("INTERNAL", str(exc)), name)

    return Handler


def make_rest_server(core, host: str, port: int, **options) -> ThreadingHTTPServer:
    """options: timeout_s, cors, max_request_bytes, monitoring_path (see make_handler)."""
    server = ThreadingHTTPServer((host, port), make_handler(core, **options))
    server.daemon_threads = True
    return server
