"""A model behind a TF Serving compatible server (TF Serving or kerasface.serving), over gRPC or
REST; its description comes from the export.json of the served version or from the URL."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from kerasface.faces.images import one_line
from kerasface.predict.model import (FLOAT_INPUT, Model, ModelError, ModelInfo, Output, check_crop,
                                     check_outputs, check_shape, input_geometry, is_points,
                                     outputs_from_description, read_json)


def _served_version(client) -> int | None:
    try:
        status = client.status()
    except Exception:
        return None
    versions = [int(s["version"]) for s in status if s.get("state") == "AVAILABLE"]
    return max(versions) if versions else None


class RemoteModel(Model):
    """A model behind TF Serving's Predict API (gRPC or REST), serving_default with float crops."""

    def __init__(self, url: str, name: str | None = None, models_dirs: Sequence[str | os.PathLike] = ("models",),
                 timeout: float = 60.0):
        from urllib.parse import parse_qs, urlparse

        from kerasface.serving.client import ClientError, connect, parse_url

        where = url
        try:
            scheme, _, model_name, pinned, _ = parse_url(url)
        except ValueError as exc:
            raise ModelError(one_line(exc)) from None
        query = parse_qs(urlparse(url).query)
        client_url = url.split("?", 1)[0]
        self._client = connect(client_url, timeout=timeout)
        try:
            metadata = self._client.metadata()
            served = self._client.labels()
        except ClientError as exc:
            self._client.close()
            if exc.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise ModelError(f"{where}: cannot reach the server ({one_line(exc)})") from None
            raise ModelError(f"{where}: the server answered {one_line(exc)}") from None
        except Exception as exc:  # connection refused, DNS, timeouts, bad JSON
            self._client.close()
            raise ModelError(f"{where}: cannot reach the model ({type(exc).__name__}: "
                             f"{one_line(exc) or 'no answer'})") from None
        try:
            sig = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
            tensor = sig["inputs"][FLOAT_INPUT]
            shape = [int(d.get("size", -1)) for d in tensor["tensor_shape"]["dim"]]
            output_names = list(sig.get("outputs", {}))
            signatures = metadata["metadata"]["signature_def"]["signature_def"]
        except (KeyError, TypeError, ValueError):
            self._client.close()
            raise ModelError(f"{where}: no serving_default signature with a float {FLOAT_INPUT!r} "
                             "input; not a kerasface export") from None
        version = pinned if pinned is not None else _served_version(self._client)
        desc, desc_where = self._find_description(model_name, version, models_dirs)
        crop = (query.get("crop") or [None])[0]
        if desc is not None:
            crop = crop or desc.get("crop")
            size, channels = input_geometry(desc, f"{where} ({desc_where})")
            outputs = outputs_from_description(desc, f"{where} ({desc_where})")
            for o in outputs:
                if o.name in served and tuple(served[o.name]) != o.labels:
                    self._client.close()
                    raise ModelError(f"{where}: the server's labels for {o.name} {served[o.name]} differ from "
                                     f"{desc_where} {list(o.labels)}; is it the same model version?")
        elif crop:
            if len(shape) != 4:
                self._client.close()
                raise ModelError(f"{where}: serving_default input shape {shape}: expected [batch, h, w, c]")
            size, channels = (shape[1], shape[2]), shape[3]
            outputs = tuple(Output(k, "landmarks" if is_points(v) else "classification", tuple(v))
                            for k, v in served.items())
        else:
            self._client.close()
            dirs = ", ".join(str(d) for d in models_dirs) or "(none)"
            raise ModelError(f"{where}: crop scheme unknown: no {model_name}/<version>/export.json under "
                             f"--models-dir {dirs}; give the folder the server serves with --models-dir, "
                             f"or the scheme in the URL ({client_url}?crop=SCHEME)")
        crop = check_crop(crop, where)
        try:
            check_shape(shape, size, channels, where, "serving_default")
            check_outputs(output_names, outputs, where)
        except ModelError:
            self._client.close()
            raise
        self.info = ModelInfo(name or model_name, where, scheme if scheme != "https" else "http", crop, size,
                              channels, outputs, version)
        # Over REST, float crops would travel as JSON numbers (~1 MB a face); send lossless PNG
        # crops to predict_images instead: the graph decodes and resizes them with the training
        # pipeline's own function, and its landmarks are then in crop pixels.
        self._bytes = scheme != "grpc" and "image_bytes" in (signatures.get("predict_images") or {}).get(
            "inputs", {})
        if self._bytes:
            self.landmarks_in = "crop"

    @staticmethod
    def _find_description(name: str, version: int | None, dirs) -> tuple[dict | None, str]:
        for d in dirs:
            base = Path(d) / name
            if not base.is_dir():
                continue
            candidates = [base / str(version)] if version is not None else []
            if version is None:
                nums = sorted(int(c.name) for c in base.iterdir() if c.is_dir() and c.name.isdigit())
                candidates = [base / str(n) for n in reversed(nums)]
            for c in candidates:
                if (c / "export.json").is_file():
                    return read_json(c / "export.json", str(c)), str(c / "export.json")
        return None, ""

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out = self._client.predict({FLOAT_INPUT: np.asarray(x, np.float32)}, "serving_default")
        return {k: np.asarray(v, np.float32) for k, v in out.items()}

    def predict_crops(self, crops: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        if not self._bytes:
            return super().predict_crops(crops)
        from PIL import Image

        encoded = []
        for crop in crops:
            buf = io.BytesIO()
            Image.fromarray(crop[..., 0] if crop.shape[-1] == 1 else crop).save(buf, format="PNG", compress_level=1)
            encoded.append(buf.getvalue())
        out = self._client.predict({"image_bytes": np.array(encoded, dtype=object)}, "predict_images")
        return {k: np.asarray(v, np.float32) for k, v in out.items()}

    def close(self) -> None:
        self._client.close()
