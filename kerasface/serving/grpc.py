"""gRPC front end: the official tensorflow.serving PredictionService and ModelService.

Servicers subclass the generated `*Servicer` classes of `tensorflow-serving-api` and are added
with its `add_..._to_server` functions, so the wire format is TF Serving's own. Errors abort the
call with TF Serving's status code and message.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
import numpy as np
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from kerasface.serving.models import CODES, ServingError

log = logging.getLogger("kerasface.serving")

GRPC_CODES = {name: getattr(grpc.StatusCode, name) for name in CODES if name != "OK"}
MAX_MESSAGE = 2**31 - 1  # tensorflow_model_server accepts messages of any size


def _spec(model_spec):
    """(name, version or None, label or None) of a ModelSpec."""
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label or None
    return model_spec.name, version, label


def _abort(context, err: ServingError):
    context.abort(GRPC_CODES.get(err.code, grpc.StatusCode.UNKNOWN), err.message)


def to_ndarray(proto) -> np.ndarray:
    import tensorflow as tf

    try:
        return tf.make_ndarray(proto)
    except Exception as exc:
        raise ServingError("INVALID_ARGUMENT", f"Unable to parse input tensor proto: {exc}") from None


def to_tensor_proto(array: np.ndarray):
    import tensorflow as tf

    return tf.make_tensor_proto(array)


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
    for field in request.metadata_field:
        if field != "signature_def":
            raise ServingError("INVALID_ARGUMENT", f"Metadata field {field} is not supported")
    model = core.model(*_spec(request.model_spec))
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _fill_spec(response.model_spec, model)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in model.signature_defs.items():
        sig_map.signature_def[key].CopyFrom(sig)
    response.metadata["signature_def"].Pack(sig_map)
    return response


def classification_examples(input_proto) -> list[bytes]:
    """Serialized tf.Examples of a tensorflow.serving.Input (context features merged in)."""
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


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core):
        self.core = core

    def Predict(self, request, context):
        try:
            model = self.core.model(*_spec(request.model_spec))
            inputs = {k: to_ndarray(v) for k, v in request.inputs.items()}
            dtypes = {k: v.dtype for k, v in request.inputs.items()}
            sig_name, outputs = self.core.predict(model, request.model_spec.signature_name, inputs, dtypes,
                                                  request.output_filter)
            response = predict_pb2.PredictResponse()
            _fill_spec(response.model_spec, model, sig_name)
            for k, v in outputs.items():
                response.outputs[k].CopyFrom(to_tensor_proto(v))
            return response
        except ServingError as err:
            _abort(context, err)

    def Classify(self, request, context):
        try:
            model = self.core.model(*_spec(request.model_spec))
            examples = classification_examples(request.input)
            sig_name, classes, scores = self.core.classify(model, request.model_spec.signature_name, examples)
            response = classification_pb2.ClassificationResponse()
            _fill_spec(response.model_spec, model, sig_name)
            rows = len(examples)
            for i in range(rows):
                item = response.result.classifications.add()
                width = (classes.shape[1] if classes is not None else scores.shape[1])
                for j in range(width):
                    c = item.classes.add()
                    if classes is not None:
                        label = classes[i, j]
                        c.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
                    if scores is not None:
                        c.score = float(scores[i, j])
            return response
        except ServingError as err:
            _abort(context, err)

    def Regress(self, request, context):
        try:
            raise ServingError("UNIMPLEMENTED", "Regress is not supported by kerasface exports "
                                                "(no regression signatures); use Predict")
        except ServingError as err:
            _abort(context, err)

    def MultiInference(self, request, context):
        try:
            raise ServingError("UNIMPLEMENTED", "MultiInference is not supported; use Predict or Classify")
        except ServingError as err:
            _abort(context, err)

    def GetModelMetadata(self, request, context):
        try:
            return metadata_response(self.core, request)
        except ServingError as err:
            _abort(context, err)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core):
        self.core = core

    def GetModelStatus(self, request, context):
        try:
            name, version, label = _spec(request.model_spec)
            if not name:
                raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
            return status_response(self.core.manager.status(name, version, label))
        except ServingError as err:
            _abort(context, err)

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self.core.manager.reload(request.config)
        except ServingError as err:
            log.error("ReloadConfig failed: %s", err.message)
            _abort(context, err)
        return response


def make_grpc_server(core, host: str, port: int, max_workers: int = 64):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                  ("grpc.max_send_message_length", MAX_MESSAGE),
                                  ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    return server, bound
