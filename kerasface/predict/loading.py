"""--model arguments -> loaded models: the backend is chosen by the argument's form (URL, .tflite
file, SavedModel folder), and every model gets a unique name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from kerasface.predict.model import Model
from kerasface.predict.remote import RemoteModel
from kerasface.predict.saved_model import SavedModelModel
from kerasface.predict.tflite import TFLiteModel


def _split_alias(spec: str) -> tuple[str | None, str]:
    head, sep, tail = spec.partition("=")
    if sep and head and tail and all(c.isalnum() or c in "_-" for c in head):
        return head, tail
    return None, spec


def load_model(spec: str | os.PathLike | Model, models_dirs: Sequence[str | os.PathLike] | None = None,
               threads: int | None = None) -> Model:
    """One --model argument -> a loaded `Model` (raises ModelError naming it)."""
    if isinstance(spec, Model):
        return spec
    alias, target = _split_alias(os.fspath(spec))
    if target.startswith(("grpc://", "http://", "https://")):
        return RemoteModel(target, alias, models_dirs if models_dirs is not None else ("models",))
    if target.endswith(".tflite") or (Path(target).is_file() and Path(target + ".json").is_file()):
        return TFLiteModel(target, alias, threads)
    return SavedModelModel(target, alias)


def load_models(specs: Sequence[str | os.PathLike | Model] | str | os.PathLike | Model,
                models_dirs: Sequence[str | os.PathLike] | None = None, threads: int | None = None) -> list[Model]:
    """Load every model; names are made unique (NAME, NAME-tflite, NAME-grpc, NAME-2, ...).
    An empty list is allowed (detection only: faces without attributes)."""
    if isinstance(specs, (str, os.PathLike, Model)):
        specs = [specs]
    models: list[Model] = []
    try:
        for spec in specs:
            models.append(load_model(spec, models_dirs, threads))
    except BaseException:
        for m in models:
            m.close()
        raise
    seen: set[str] = set()
    for m in models:
        name = m.info.name
        if name in seen:
            name = f"{m.info.name}-{m.info.kind.replace('_', '')}"
            k = 2
            while name in seen:
                name, k = f"{m.info.name}-{k}", k + 1
            m.info.name = name
        seen.add(name)
    return models
