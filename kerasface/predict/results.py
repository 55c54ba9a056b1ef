"""What predict reports: typed, JSON-safe results per image, face and attribute, and the run's
Summary. `ImageResult.to_dict()` gives the JSON-lines objects of the schema in
`kerasface/predict/__init__.py`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kerasface.faces.align import LANDMARK_NAMES


def json_number(value: float, decimals: int) -> float:
    """A plain float rounded to `decimals` (None for NaN and infinities, which JSON lacks)."""
    v = round(float(value), decimals)
    return v if math.isfinite(v) else None  # type: ignore[return-value]


@dataclass
class AttributeResult:
    """A classification output: the most probable label, its probability, all probabilities."""

    label: str
    score: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": json_number(self.score, 6),
            "probabilities": {k: json_number(v, 6) for k, v in self.probabilities.items()},
        }

    def flat(self, key: str) -> dict[str, Any]:
        """Table columns: KEY = the label, KEY.LABEL = its probability."""
        return {key: self.label, **{f"{key}.{lab}": json_number(p, 6) for lab, p in self.probabilities.items()}}


@dataclass
class LandmarksResult:
    """A landmark output, mapped back to image pixels: point name -> (x, y)."""

    points: dict[str, tuple[float, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"points": {k: [json_number(x, 2), json_number(y, 2)] for k, (x, y) in self.points.items()}}

    def flat(self, key: str) -> dict[str, Any]:
        return {f"{key}.{p}_{c}": json_number(v, 2) for p, xy in self.points.items() for c, v in zip("xy", xy)}


@dataclass
class ValuesResult:
    """Any other head kind's output (multilabel, regression, embedding), as its kind reads it
    (`kerasface.tasks.HeadKind.read`): e.g. {"probabilities": {...}, "present": [...]}."""

    kind: str
    fields: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.fields

    def flat(self, key: str) -> dict[str, Any]:
        """Table columns: KEY.NAME per named value, KEY.I per listed number, KEY for listed names."""
        columns: dict[str, Any] = {}
        for value in self.fields.values():
            if isinstance(value, dict):
                columns.update({f"{key}.{name}": json_number(v, 6) for name, v in value.items()})
            elif value and all(isinstance(v, str) for v in value):
                columns[key] = ";".join(value)
            elif isinstance(value, list):
                columns.update({f"{key}.{i}": json_number(v, 6) for i, v in enumerate(value)})
        return columns


@dataclass
class FaceResult:
    index: int  # rank among all faces detected in the image (0 = best score)
    box: tuple[float, float, float, float]  # x, y, width, height
    score: float
    landmarks: dict[str, tuple[float, float]]  # the detector's five points
    attributes: dict[str, dict[str, AttributeResult | LandmarksResult | ValuesResult]] = field(default_factory=dict)

    @property
    def face(self):
        """The detection as a `kerasface.faces.Face`."""
        from kerasface.faces.detect import Face

        return Face(box=tuple(self.box), score=self.score,
                    landmarks=tuple(tuple(self.landmarks[n]) for n in LANDMARK_NAMES))

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": int(self.index),
            "box": [json_number(v, 2) for v in self.box],
            "score": json_number(self.score, 6),
            "landmarks": {k: [json_number(x, 2), json_number(y, 2)] for k, (x, y) in self.landmarks.items()},
            "attributes": {m: {a: r.to_dict() for a, r in attrs.items()}
                           for m, attrs in self.attributes.items()},
        }


@dataclass
class ImageResult:
    path: str  # the file as given/found; "<array N>" / "<bytes N>" for in-memory images
    width: int | None = None
    height: int | None = None
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "width": self.width, "height": self.height,
                "faces": [f.to_dict() for f in self.faces]}


@dataclass
class Summary:
    images: int = 0
    faces: int = 0
    failed: int = 0
    no_face: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: ImageResult) -> None:
        self.images += 1
        if result.error is not None:
            self.failed += 1
        else:
            self.faces += len(result.faces)
            self.no_face += not result.faces

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "faces": self.faces, "failed": self.failed,
                "no_face": self.no_face, "seconds": round(self.seconds, 3),
                "images_per_second": round(self.images_per_second, 3)}

    def __str__(self) -> str:
        return (f"{self.images} image(s), {self.faces} face(s), {self.failed} failed, "
                f"{self.no_face} without a face; {self.images_per_second:.2f} images/s "
                f"({self.seconds:.1f} s)")
