"""Serving: a TF Serving-compatible server (gRPC + REST) and clients, over a models/ folder.

- `python -m kerasface.serving ...` runs `ModelServer` with tensorflow_model_server's flags
  (kerasface.serving.server); the official `tensorflow/serving` image serves the same folder with
  the same serving/models.config (serving/README.md).
- `kerasface.serving.client.connect("grpc://host:8500/NAME" | "http://host:8501/NAME")` sends
  images (or float crops) and returns attributes, against either server.

Modules: flags (tensorflow_model_server's flag table), server (ModelServer, ServingCore, command
line), models (config, version folders and policy, labels, loading), signatures (a SavedModel in a
session; request checks; Classify/Regress rules), errors (status codes), protos (TF Serving config
messages the wheel lacks), batching (server-side batching), metrics (Prometheus), grpc
(PredictionService, ModelService), rest (HTTP/JSON), client.
"""


def __getattr__(name):  # keep `import kerasface.serving` light
    if name in ("ModelServer", "ServingCore", "main"):
        from kerasface.serving import server

        return getattr(server, name)
    if name in ("ServingError",):
        from kerasface.serving.errors import ServingError

        return ServingError
    if name in ("BatchingParameters",):
        from kerasface.serving.batching import BatchingParameters

        return BatchingParameters
    if name in ("Client", "connect"):
        from kerasface.serving import client

        return getattr(client, name)
    raise AttributeError(f"module 'kerasface.serving' has no attribute {name!r}")
