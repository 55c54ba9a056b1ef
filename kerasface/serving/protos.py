"""TF Serving config messages that the `tensorflow-serving-api` wheel does not ship.

session_bundle_config.proto (BatchingParameters), monitoring_config.proto (MonitoringConfig) and
ssl_config.proto (SSLConfig) are declared here with TF Serving's package, field names and field
numbers, so protobuf's own text_format parses the same files tensorflow_model_server reads.
"""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2

_F = descriptor_pb2.FieldDescriptorProto
# (message, [(field, number, type, label, type_name)]); type_name only for message fields
_MESSAGES = {
    "BatchingParameters": [
        ("max_batch_size", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, _F.TYPE_INT64, _F.LABEL_REPEATED, None),
        ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
        ("enable_large_batch_splitting", 9, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 10, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("batch_padding_policy", 11, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
    ],
    "PrometheusConfig": [
        ("enable", 1, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
        ("path", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
    ],
    "MonitoringConfig": [
        ("prometheus_config", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".tensorflow.serving.PrometheusConfig"),
    ],
    "SSLConfig": [
        ("server_key", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("server_cert", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("custom_ca", 3, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("client_verify", 4, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
    ],
}


@functools.lru_cache(maxsize=None)
def _pool():
    from google.protobuf import descriptor_pool, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    fd = descriptor_pb2.FileDescriptorProto(name="kerasface/serving/tf_serving_configs.proto",
                                            package="tensorflow.serving", syntax="proto3",
                                            dependency=["google/protobuf/wrappers.proto"])
    for message, fields in _MESSAGES.items():
        msg = fd.message_type.add(name=message)
        for name, number, kind, label, type_name in fields:
            field = msg.field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
    pool.Add(fd)
    return pool


def message_class(name: str):
    """The class of tensorflow.serving.NAME (BatchingParameters, MonitoringConfig, SSLConfig)."""
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(f"tensorflow.serving.{name}"))


def read_text_proto(path: str, message):
    """Parse a text-format file into `message` as TF Serving's ParseProtoTextFile does.

    A missing file raises ServingError NOT_FOUND "PATH; No such file or directory"; a file that does
    not parse raises INVALID_ARGUMENT "Invalid protobuf file: 'PATH'" (the parser's reason, with
    its line and column, is in `.detail`).
    """
    from google.protobuf import text_format

    from kerasface.serving.errors import ServingError

    try:
        with open(path) as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ServingError("NOT_FOUND", f"{path}; No such file or directory") from None
    except IsADirectoryError:
        raise ServingError("FAILED_PRECONDITION", f"{path}; Is a directory") from None
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ServingError("INVALID_ARGUMENT", f"Invalid protobuf file: '{path}'", detail=f"{path}:{exc}") from None
    return message
