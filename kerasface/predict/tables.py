"""Flat tables: one row per reported face (one per face-less or failed image), the same columns
in every row: the CSV output of the command line, `results_table` and `to_dataframe`."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from kerasface.faces.align import LANDMARK_NAMES
from kerasface.predict.model import Model, Output
from kerasface.predict.results import ImageResult, json_number
from kerasface.tasks import head_kind


def _flat_attributes(model: str, attr: str, res) -> list[str]:
    """The columns of one output: known from a model's description for classes and points (so a
    table has them even when no face was found), else from the results themselves."""
    key = f"{model}.{attr}"
    if isinstance(res, Output):
        kind = head_kind(res.kind)
        if kind.pixel_coordinates:
            return [f"{key}.{p}_{c}" for p in res.point_names for c in "xy"]
        return [key] + [f"{key}.{lab}" for lab in res.labels] if kind.has_classes else []
    return list(res.flat(key))


BASE_COLUMNS = ["path", "width", "height", "face", "box_x", "box_y", "box_w", "box_h", "score"] + [
    f"{n}_{c}" for n in LANDMARK_NAMES for c in "xy"]


def table_columns(models: Sequence[Model] = (), results: Iterable[ImageResult] = ()) -> list[str]:
    cols: dict[str, None] = dict.fromkeys(BASE_COLUMNS)
    for m in models:
        for o in m.info.outputs:
            cols.update(dict.fromkeys(_flat_attributes(m.name, o.name, o)))
    for r in results:
        for f in r.faces:
            for model, attrs in f.attributes.items():
                for attr, res in attrs.items():
                    cols.update(dict.fromkeys(_flat_attributes(model, attr, res)))
    cols["error"] = None
    return list(cols)


def table_rows(result: ImageResult, columns: list[str]) -> list[dict[str, Any]]:
    blank = dict.fromkeys(columns)
    if result.error is not None or not result.faces:
        row = dict(blank, path=result.path, width=result.width, height=result.height, error=result.error)
        return [row]
    rows = []
    for f in result.faces:
        row = dict(blank, path=result.path, width=result.width, height=result.height, face=f.index,
                   box_x=json_number(f.box[0], 2), box_y=json_number(f.box[1], 2),
                   box_w=json_number(f.box[2], 2), box_h=json_number(f.box[3], 2),
                   score=json_number(f.score, 6))
        for n, (x, y) in f.landmarks.items():
            row[f"{n}_x"], row[f"{n}_y"] = json_number(x, 2), json_number(y, 2)
        for model, attrs in f.attributes.items():
            for attr, res in attrs.items():
                row.update(res.flat(f"{model}.{attr}"))
        rows.append(row)
    return rows


def results_table(results: Iterable[ImageResult], models: Sequence[Model] = ()) -> list[dict[str, Any]]:
    """Flat rows, one per reported face (one per face-less or failed image), same keys in every
    row (the CSV columns of the kerasface.predict docstring): ready for `pandas.DataFrame(rows)`."""
    results = list(results)
    columns = table_columns(models, results)
    return [row for r in results for row in table_rows(r, columns)]


def to_dataframe(results: Iterable[ImageResult], models: Sequence[Model] = ()):
    """`results_table` as a pandas DataFrame (pandas is not a dependency of kerasface)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_dataframe needs pandas (pip install pandas); "
                          "results_table(results) gives the same rows as dicts") from None
    rows = results_table(results, models)
    return pd.DataFrame(rows, columns=table_columns(models, results) if not rows else None)
