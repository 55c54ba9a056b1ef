"""gRPC front end: the official tensorflow.serving PredictionService and ModelService.

Servicers subclass the generated `*Servicer` classes of `tensorflow-serving-api` and are added
with its `add_..._to_server` functions, so the wire format is TF Serving's own. Errors abort the
call with TF Serving's status code and message. Output tensors are written in the typed value
fields (float_val, ..., half_val for float16) as TF Serving writes them, or packed in
tensor_content with --enable_serialization_as_tensor_content. Tensors are converted by
kerasface.serving.tensors (numpy calls, not tf.make_ndarray / tf.make_tensor_proto per request).
"""

from __future__ import annotations

import functools
import logging
from concurrent import futures

import grpc
import numpy as np
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from kerasface.serving import tensors
from kerasface.serving.errors import CODES, ServingError
from kerasface.serving.signatures import CLASSIFY

log = logging.getLogger("kerasface.serving")

GRPC_CODES = {name: getattr(grpc.StatusCode, name) for name in CODES if name != "OK"}
MAX_MESSAGE = 2**31 - 1  # tensorflow_model_server accepts messages of any size


def model_spec(spec):
    """(name, version or None, label or None) of a ModelSpec."""
    version = spec.version.value if spec.HasField("version") else None
    return spec.name, version, spec.version_label or None


def to_ndarray(proto) -> np.ndarray:
    try:
        return tensors.to_ndarray(proto)
    except Exception as exc:
        raise ServingError("INVALID_ARGUMENT", f"Unable to parse input tensor proto: {exc}") from None


to_tensor_proto = tensors.to_tensor_proto  # TF Serving's AsProtoField (or tensor_content) form


def _fill_spec(target, model, signature_name: str | None = None) -> None:
    target.name = model.name
    target.version.value = model.version
    if signature_name is not None:
        target.signature_name = signature_name


def status_response(servables) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for s in servables:
        entry = response.model_version_status.add()
        entry.version = s.version
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(s.state)
        entry.status.SetInParent()  # TF Serving always sends a status (error_code OK)
        if s.error is not None:
            entry.status.error_code = CODES[s.error.code]
            entry.status.error_message = s.error.message
    return response


def metadata_response(core, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
    if not request.metadata_field:
        raise ServingError("INVALID_ARGUMENT", "GetModelMetadataRequest must specify at least one metadata_field")
    for name in request.metadata_field:
        if name != "signature_def":
            raise ServingError("INVALID_ARGUMENT", f"Metadata field {name} is not supported")
    model = core.model(*model_spec(request.model_spec))
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _fill_spec(response.model_spec, model)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in model.signature_defs.items():
        sig_map.signature_def[key].CopyFrom(sig)
    response.metadata["signature_def"].Pack(sig_map)
    return response


def input_examples(input_proto) -> list[bytes]:
    """Serialized tf.Examples of a tensorflow.serving.Input (context features merged into each)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in input_proto.example_list.examples]
    if kind == "example_list_with_context":
        ctx = input_proto.example_list_with_context.context
        out = []
        for e in input_proto.example_list_with_context.examples:
            merged = type(e)()
            merged.CopyFrom(ctx)
            merged.MergeFrom(e)
            out.append(merged.SerializeToString())
        return out
    raise ServingError("INVALID_ARGUMENT", "Input is empty.")


def fill_classifications(target, result) -> None:
    for row in result:
        item = target.classifications.add()
        for label, score in row:
            item.classes.add(label=label, score=score)


def fill_regressions(target, result) -> None:
    for value in result:
        target.regressions.add(value=value)


def _rpc(method):
    """Run a servicer method: count it by model and status, and abort with TF Serving's code on error."""

    @functools.wraps(method)
    def call(self, request, context):
        name = getattr(getattr(request, "model_spec", None), "name", "") or (
            request.tasks[0].model_spec.name if getattr(request, "tasks", None) else "")
        try:
            response = method(self, request, context)
            self.core.metrics.request(name, "OK")
            return response
        except ServingError as err:
            self.core.metrics.request(name, err.code)
            context.abort(GRPC_CODES.get(err.code, grpc.StatusCode.UNKNOWN), err.message)

    return call


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core, tensor_content: bool = False):
        self.core = core
        self.tensor_content = tensor_content

    @_rpc
    def Predict(self, request, context):
        model = self.core.model(*model_spec(request.model_spec))
        inputs, dtypes = {}, {}
        for k, v in request.inputs.items():
            inputs[k], dtypes[k] = to_ndarray(v), v.dtype
        sig_name, outputs = self.core.predict(model, request.model_spec.signature_name, inputs, dtypes,
                                              request.output_filter)
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, model, sig_name)
        for k, v in outputs.items():
            to_tensor_proto(v, self.tensor_content, out=response.outputs[k])
        return response

    @_rpc
    def Classify(self, request, context):
        model = self.core.model(*model_spec(request.model_spec))
        sig_name, result = self.core.classify(model, request.model_spec.signature_name,
                                              input_examples(request.input))
        response = classification_pb2.ClassificationResponse()
        _fill_spec(response.model_spec, model, sig_name)
        fill_classifications(response.result, result)
        return response

    @_rpc
    def Regress(self, request, context):
        model = self.core.model(*model_spec(request.model_spec))
        sig_name, result = self.core.regress(model, request.model_spec.signature_name,
                                             input_examples(request.input))
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, model, sig_name)
        fill_regressions(response.result, result)
        return response

    @_rpc
    def MultiInference(self, request, context):
        if not request.tasks:
            raise ServingError("INVALID_ARGUMENT", "MultiInferenceRequest must specify at least one task.")
        specs = [model_spec(t.model_spec) for t in request.tasks]
        if len({s[0] for s in specs}) != 1:
            raise ServingError("INVALID_ARGUMENT", "All ModelSpecs in a MultiInferenceRequest must access the "
                                                   "same model name.")
        if len(set(specs)) != 1:
            raise ServingError("INVALID_ARGUMENT", "ModelSpec's in a MultiInferenceRequest must access the same "
                                                   "model version.")
        model = self.core.model(*specs[0])
        tasks = [(t.model_spec.signature_name, t.method_name) for t in request.tasks]
        response = inference_pb2.MultiInferenceResponse()
        for sig_name, method, result in self.core.multi_inference(model, tasks, input_examples(request.input)):
            item = response.results.add()
            _fill_spec(item.model_spec, model, sig_name)
            if method == CLASSIFY:
                fill_classifications(item.classification_result, result)
            else:
                fill_regressions(item.regression_result, result)
        return response

    @_rpc
    def GetModelMetadata(self, request, context):
        return metadata_response(self.core, request)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core):
        self.core = core

    @_rpc
    def GetModelStatus(self, request, context):
        name, version, label = model_spec(request.model_spec)
        if not name:
            raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
        return status_response(self.core.manager.status(name, version, label))

    @_rpc
    def HandleReloadConfigRequest(self, request, context):
        try:
            self.core.manager.reload(request.config)
        except ServingError as err:
            log.error("ReloadConfig failed: %s", err.message)
            raise
        return model_management_pb2.ReloadConfigResponse()


def server_credentials(ssl_config):
    """grpc credentials from a tensorflow.serving.SSLConfig (None: insecure)."""
    if ssl_config is None:
        return None
    return grpc.ssl_server_credentials(
        [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
        root_certificates=ssl_config.custom_ca.encode() or None,
        require_client_auth=bool(ssl_config.client_verify))


def make_grpc_server(core, host: str, port: int, max_workers: int = 64, socket_path: str = "",
                     channel_arguments=(), ssl_config=None, tensor_content: bool = False):
    options = dict([("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
                    ("grpc.so_reuseport", 0)])
    options.update(channel_arguments)  # the command line's arguments win, as in TF Serving's ServerBuilder
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                         options=list(options.items()))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core, tensor_content),
                                                                        server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    credentials = server_credentials(ssl_config)

    def listen(address: str) -> int:
        bound = (server.add_secure_port(address, credentials) if credentials is not None
                 else server.add_insecure_port(address))
        if bound == 0:
            raise OSError(f"cannot bind gRPC to {address}")
        return bound

    bound = listen(f"{host}:{port}")
    if socket_path:
        listen(f"unix:{socket_path}")
    return server, bound
