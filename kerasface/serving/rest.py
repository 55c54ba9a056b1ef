"""REST front end (TF Serving's API) on the standard library's ThreadingHTTPServer.

    GET  /v1/models/NAME[/versions/N | /labels/L]              model status
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata     signature defs
    POST /v1/models/NAME[/versions/N | /labels/L]:predict      {"signature_name"?, "instances": [...]}
                                                               or {"signature_name"?, "inputs": ...}
    POST /v1/models/NAME[/versions/N | /labels/L]:classify     {"signature_name"?, "examples": [...], "context"?}

Row format ("instances") answers {"predictions": [...]}: one value per row when the signature has
one output, else one object per row. Columnar format ("inputs") answers {"outputs": ...}. Binary
strings travel as {"b64": "..."}; string outputs whose name ends in "_bytes" are returned that
way. Errors answer {"error": "..."} with TF Serving's HTTP status (400 INVALID_ARGUMENT and
FAILED_PRECONDITION, 404 NOT_FOUND, ...).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from kerasface.serving.models import ServingError, dtype_name

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
    if array.dtype.kind == "f":
        return _floats(array.tolist())
    return array.tolist()


def _floats(value):
    if isinstance(value, list):
        return [_floats(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


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


def make_handler(core):
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    from kerasface.serving.grpc import metadata_response, status_response

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "kerasface-serving"

        def log_message(self, fmt, *args):  # quiet; errors are logged below
            log.debug("%s - %s", self.address_string(), fmt % args)

        def _send(self, status: int, payload: dict) -> None:
            body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, err: ServingError) -> None:
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

        def do_GET(self):
            try:
                name, version, label, metadata, _ = self._route("GET")
                if metadata:
                    from tensorflow_serving.apis import model_pb2

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
                        "metadata": {"signature_def": json_format.MessageToDict(
                            sig_map, preserving_proto_field_name=True)},
                    })
                else:
                    response = status_response(core.manager.status(name, version, label))
                    self._send(200, json_format.MessageToDict(response, preserving_proto_field_name=True,
                                                              always_print_fields_with_no_presence=True))
            except ServingError as err:
                self._error(err)
            except Exception as exc:  # pragma: no cover
                log.exception("REST GET failed")
                self._error(ServingError("INTERNAL", str(exc)))

        def do_POST(self):
            try:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
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
                elif verb == "classify":
                    examples = body.get("examples")
                    if not isinstance(examples, list) or not examples:
                        raise ServingError("INVALID_ARGUMENT", "'examples' must be a non-empty JSON list of objects")
                    serialized = [example_from_json(e, body.get("context")) for e in examples]
                    _, classes, scores = core.classify(model, signature_name, serialized)
                    result = []
                    for i in range(len(serialized)):
                        width = classes.shape[1] if classes is not None else scores.shape[1]
                        row = []
                        for j in range(width):
                            label_ = classes[i, j].decode("utf-8", "replace") if classes is not None else ""
                            row.append([label_, float(scores[i, j]) if scores is not None else 0.0])
                        result.append(row)
                    self._send(200, {"result": result})
                else:
                    raise ServingError("UNIMPLEMENTED", "Regress is not supported by kerasface exports; use :predict")
            except ServingError as err:
                self._error(err)
            except Exception as exc:  # pragma: no cover
                log.exception("REST POST failed")
                self._error(ServingError("INTERNAL", str(exc)))

    return Handler


def make_rest_server(core, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(core))
    server.daemon_threads = True
    return server
