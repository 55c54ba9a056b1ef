"""The predictor: images in batches -> detect faces once -> cut each crop scheme once -> run
every model -> one ImageResult per image, in order; and `analyze`, its one-call Python API."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from kerasface.faces.align import LANDMARK_NAMES
from kerasface.faces.images import ImageError, annotated_name, one_line, save_image
from kerasface.predict.draw import annotate
from kerasface.predict.geometry import Crop, cut_crop
from kerasface.predict.inputs import Item, expand_inputs, load_item
from kerasface.predict.loading import load_models
from kerasface.predict.model import Model
from kerasface.predict.results import AttributeResult, FaceResult, ImageResult, LandmarksResult, ValuesResult
from kerasface.tasks import head_kind

DEFAULT_BATCH_SIZE = 32
FACE_RULES = ("all", "largest", "centre")


def interpret_outputs(model: Model, outputs: dict[str, np.ndarray], row: int, crop: Crop,
                      crop_hw: tuple[int, int]) -> dict[str, AttributeResult | LandmarksResult]:
    """Row `row` of a model's outputs -> its results: classification outputs as labels and
    probabilities, landmark outputs mapped from the model's input (or crop) to image pixels."""
    result: dict[str, AttributeResult | LandmarksResult] = {}
    h_in, w_in = model.info.input_size
    for out in model.info.outputs:
        values = np.asarray(outputs[out.name][row], np.float64).reshape(-1)
        kind = head_kind(out.kind)
        if kind.pixel_coordinates:
            pts = values[: 2 * (len(values) // 2)].reshape(-1, 2)
            if model.landmarks_in == "input":
                pts = pts * np.array([crop_hw[1] / w_in, crop_hw[0] / h_in])  # input -> crop pixels
            img = pts @ crop.to_image[:, :2].T + crop.to_image[:, 2]
            result[out.name] = LandmarksResult(
                {n: (float(x), float(y)) for n, (x, y) in zip(out.point_names, img)})
        elif kind.has_classes:
            k = int(np.argmax(values))
            labels = out.labels if len(out.labels) == len(values) else tuple(str(i) for i in range(len(values)))
            result[out.name] = AttributeResult(labels[k], float(values[k]),
                                               {lab: float(p) for lab, p in zip(labels, values)})
        else:
            result[out.name] = ValuesResult(out.kind, kind.read(values, out.labels))
    return result


class Predictor:
    """Loaded models + detection settings; `run(inputs)` yields one ImageResult per image, in order.

    Images are read, detected and predicted `batch_size` at a time: the next batch is decoded in
    a background thread while the current one is detected (MTCNN, once for all models), cropped
    (once per crop scheme) and predicted (each model, `batch_size` faces per call).
    """

    def __init__(self, models, face: str = "all", batch_size: int = DEFAULT_BATCH_SIZE,
                 models_dirs: Sequence[str | os.PathLike] | None = None, threads: int | None = None,
                 min_face_size: float | None = None, threshold: float | None = None,
                 max_side: int | None | str = "default", annotate_dir: str | os.PathLike | None = None):
        from kerasface.faces.detect import _normalise_rule

        rule = _normalise_rule(face)
        if rule not in FACE_RULES:
            raise ValueError(f"face rule {face!r}: expected one of {', '.join(FACE_RULES)}")
        self.rule = rule
        self.batch_size = max(1, int(batch_size))
        self.models = load_models(models, models_dirs, threads)
        self.detect_kwargs: dict[str, Any] = {}
        if min_face_size is not None:
            self.detect_kwargs["min_face_size"] = float(min_face_size)
        if threshold is not None:
            self.detect_kwargs["score_threshold"] = float(threshold)
        if max_side != "default":
            self.detect_kwargs["max_side"] = int(max_side) if max_side else None
        self.annotate_dir = Path(annotate_dir) if annotate_dir else None
        self.detect_seconds = 0.0

    def close(self) -> None:
        for m in self.models:
            m.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -------------------------------------------------------------- one batch of images

    def _detect(self, images: list[np.ndarray]) -> list[list | Exception]:
        from kerasface.faces.detect import detect_faces, detect_faces_batch

        t0 = time.perf_counter()
        # Only images of one size share an MTCNN batch: a batch is padded to its largest image,
        # which would make an image's faces depend on its neighbours in the folder.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(tuple(image.shape[:2]), []).append(i)
        found: list[list | Exception] = [[] for _ in images]
        for idx in groups.values():
            try:
                batch = detect_faces_batch([images[i] for i in idx], batch_size=self.batch_size,
                                           **self.detect_kwargs)
                for i, faces in zip(idx, batch):
                    found[i] = faces
            except Exception:  # find the culprit: one by one
                for i in idx:
                    try:
                        found[i] = detect_faces(images[i], **self.detect_kwargs)
                    except Exception as exc:
                        found[i] = exc
        self.detect_seconds += time.perf_counter() - t0
        return found

    def _process(self, items: list[Item], loaded: list[np.ndarray | Exception]) -> list[ImageResult]:
        from kerasface.faces.detect import select_faces

        results = [ImageResult(item.name) for item in items]
        good = []
        for k, (item, img) in enumerate(zip(items, loaded)):
            if isinstance(img, Exception):
                results[k].error = _error_text(item, img)
            else:
                results[k].height, results[k].width = int(img.shape[0]), int(img.shape[1])
                good.append(k)
        detections = self._detect([loaded[k] for k in good]) if good else []
        # (image k, face rank, Face) for every reported face
        chosen: list[tuple[int, int, Any]] = []
        for k, faces in zip(good, detections):
            if isinstance(faces, Exception):
                results[k].error = _error_text(items[k], faces)
                continue
            keep = select_faces(faces, self.rule, image_shape=loaded[k].shape)
            for face in keep:
                chosen.append((k, faces.index(face), face))
        # one crop per (face, scheme), shared by the models reading that scheme
        crops: dict[str, list[Crop | Exception]] = {}
        for scheme in dict.fromkeys(m.info.crop for m in self.models):
            cut = []
            for k, _, face in chosen:
                try:
                    cut.append(cut_crop(loaded[k], face.points, scheme))
                except Exception as exc:
                    cut.append(exc)
            crops[scheme] = cut
        per_face: list[dict[str, dict]] = [{} for _ in chosen]
        for model in self.models:
            cut = crops[model.info.crop]
            rows = [j for j, c in enumerate(cut) if not isinstance(c, Exception)]
            for j, c in enumerate(cut):
                if isinstance(c, Exception):
                    k = chosen[j][0]
                    results[k].error = results[k].error or _error_text(items[k], c, f"crop {model.info.crop}")
            for start in range(0, len(rows), self.batch_size):
                part = rows[start : start + self.batch_size]
                try:
                    out = model.predict_faces([cut[j] for j in part])
                    for row, j in enumerate(part):
                        per_face[j][model.name] = interpret_outputs(model, out, row, cut[j], cut[j].pixels.shape[:2])
                except Exception as exc:  # a model failing on this batch fails these images only
                    for j in part:
                        k = chosen[j][0]
                        results[k].error = results[k].error or _error_text(items[k], exc, f"model {model.name}")
        for (k, rank, face), attrs in zip(chosen, per_face):
            if results[k].error is not None:
                continue
            results[k].faces.append(FaceResult(
                index=rank, box=tuple(float(v) for v in face.box), score=float(face.score),
                landmarks={n: (float(x), float(y)) for n, (x, y) in zip(LANDMARK_NAMES, face.landmarks)},
                attributes=attrs))
        for k in range(len(results)):
            if results[k].error is not None:
                results[k].faces = []
                results[k].width = results[k].height = None
            elif self.annotate_dir is not None:
                self._annotate(items[k], loaded[k], results[k])
        return results

    def _annotate(self, item: Item, image: np.ndarray, result: ImageResult) -> None:
        try:
            save_image(self.annotate_dir / annotated_name(item.rel), annotate(image, result.faces, self.models),
                       quality=92)
        except Exception as exc:  # a full disk is worth knowing, but it is not this image's fault
            print(f"warning: {item.name}: cannot write the annotated image ({one_line(exc)})", file=sys.stderr)

    # -------------------------------------------------------------- many images

    def run(self, inputs) -> Iterator[ImageResult]:
        """Analyse paths / folders / globs / arrays / bytes; yields results in input order."""
        items = inputs if isinstance(inputs, list) and all(isinstance(i, Item) for i in inputs) \
            else expand_inputs(inputs)
        chunks = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        if not chunks:
            return

        def load_all(chunk: list[Item]) -> list[np.ndarray | Exception]:
            out: list[np.ndarray | Exception] = []
            for item in chunk:
                try:
                    out.append(load_item(item))
                except Exception as exc:  # ImageError, MemoryError, ...
                    out.append(exc)
            return out

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kerasface-load") as pool:
            pending = pool.submit(load_all, chunks[0])
            for n, chunk in enumerate(chunks):
                loaded = pending.result()
                if n + 1 < len(chunks):
                    pending = pool.submit(load_all, chunks[n + 1])
                yield from self._process(chunk, loaded)
                del loaded


def _error_text(item: Item, exc: BaseException, what: str | None = None) -> str:
    msg = one_line(exc)
    if isinstance(exc, ImageError) and what is None:
        return msg if msg.startswith(item.name) else f"{item.name}: {msg}"
    where = f"{item.name}: {what}: " if what else f"{item.name}: "
    return f"{where}{type(exc).__name__}: {msg}" if not isinstance(exc, ImageError) else where + msg


def analyze(image_or_paths, models, *, face: str = "all", batch_size: int = DEFAULT_BATCH_SIZE,
            annotate_dir: str | os.PathLike | None = None, models_dirs: Sequence[str | os.PathLike] | None = None,
            progress: bool = False, **detect_kwargs) -> list[ImageResult]:
    """Faces and attributes of images.

    image_or_paths: a path (image file, folder searched recursively, or glob), encoded bytes, an
        image array (HxW, HxWx1/3/4; see kerasface.faces.to_rgb_uint8), or a list of those.
    models: one or a list of: a SavedModel folder (models/NAME or a version folder), a .tflite
        file, grpc://host:port/NAME or http://host:port/NAME, or `Model`s from `load_models`
        (loaded once, reused across calls; not closed here). [] detects faces only.
    face: "all" (default), "largest" or "centre".
    detect_kwargs: min_face_size, threshold, max_side (see kerasface.faces.detect).
    Returns one `ImageResult` per image, in order (bad images carry `error`, never raise).
    Raises ModelError when a model cannot be used.
    """
    given = models if isinstance(models, (list, tuple)) else [models]
    owned = not all(isinstance(m, Model) for m in given)
    predictor = Predictor(list(given), face=face, batch_size=batch_size, models_dirs=models_dirs,
                          annotate_dir=annotate_dir, **detect_kwargs)
    try:
        items = expand_inputs(image_or_paths)
        results = []
        bar = progress_bar(len(items), not progress)
        for r in predictor.run(items):
            results.append(r)
            bar.update(1)
        bar.close()
        return results
    finally:
        if owned:
            for m, spec in zip(predictor.models, given):
                if not isinstance(spec, Model):
                    m.close()


def progress_bar(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="predict", unit="img", file=sys.stderr, disable=disable,
                dynamic_ncols=True, mininterval=0.5)
