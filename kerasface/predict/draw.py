"""Annotated copies: each reported face's box, detector landmarks, predicted landmark outputs
(crosses) and labels (one colour per attribute value) drawn on the photo."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kerasface.predict.model import Model
from kerasface.predict.results import AttributeResult, FaceResult
from kerasface.tasks import head_kind

#: Distinct colours (RGB) for attribute values. Value v of the a-th distinct classification
#: attribute (in model order, by attribute name) gets PALETTE[(first colour of a) + v]: one value
#: has one colour whichever model predicted it, and the values of one legend differ.
#: Bright colours, readable on the dark label background; green is left to the box.
PALETTE = ((255, 220, 0), (127, 219, 255), (255, 133, 27), (255, 110, 199), (190, 160, 255),
           (255, 90, 90), (57, 204, 204), (255, 255, 160), (160, 255, 200), (255, 180, 140),
           (170, 170, 170), (120, 160, 255))


def value_colour(models: Sequence[Model], attribute: str, label: str) -> tuple[int, int, int]:
    offset = 0
    seen: set[str] = set()
    for m in models:
        for o in m.info.outputs:
            if not head_kind(o.kind).has_classes or o.name in seen:
                continue
            seen.add(o.name)
            if o.name == attribute:
                idx = o.labels.index(label) if label in o.labels else 0
                return PALETTE[(offset + idx) % len(PALETTE)]
            offset += len(o.labels)
    return (255, 255, 255)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def annotate(image: np.ndarray, faces: Sequence[FaceResult], models: Sequence[Model] = ()) -> np.ndarray:
    """A copy of `image` with each face's box, detector landmarks, predicted landmark outputs
    (crosses) and predicted labels (one line per attribute, coloured by value) drawn on it.
    Line widths, point sizes and the font scale with the image's larger side."""
    from PIL import Image, ImageDraw

    from kerasface.faces.detect import LANDMARK_COLOURS

    base = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    h, w = image.shape[:2]
    side = max(h, w)
    line = max(1, round(side / 320))
    font_px = max(10, round(side / 42))
    font = _font(font_px)
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    several = len({name for f in faces for name in f.attributes}) > 1
    for face in faces:
        x, y, bw, bh = face.box
        draw.rectangle([x, y, x + bw, y + bh], outline=(0, 255, 0, 255), width=line)
        r = max(2.0, max(bw, bh) / 45.0, line * 1.5)
        for (px, py), colour in zip(face.landmarks.values(), LANDMARK_COLOURS):
            draw.ellipse([px - r, py - r, px + r, py + r], fill=colour + (255,), outline=(0, 0, 0, 255))
        lines: list[tuple[str, tuple[int, int, int]]] = [(f"face {face.index}  {face.score:.2f}", (0, 255, 0))]
        for model, attrs in face.attributes.items():
            for attr, res in attrs.items():
                prefix = f"{model}." if several else ""
                if isinstance(res, AttributeResult):
                    lines.append((f"{prefix}{attr}: {res.label} {res.score:.2f}",
                                  value_colour(models, attr, res.label)))
                else:
                    c = max(2.0, r)
                    for px, py in res.points.values():
                        draw.line([px - c, py - c, px + c, py + c], fill=(255, 255, 255, 255), width=line)
                        draw.line([px - c, py + c, px + c, py - c], fill=(255, 255, 255, 255), width=line)
        pad = max(2, font_px // 5)
        sizes = [draw.textbbox((0, 0), t, font=font) for t, _ in lines]
        tw = max(b[2] - b[0] for b in sizes) + 2 * pad
        step = font_px + pad
        th = step * len(lines) + pad
        tx = min(max(0.0, x), max(0.0, w - tw))
        if y + bh + line + th <= h:
            ty = y + bh + line
        elif y - line - th >= 0:
            ty = y - line - th
        else:
            ty = max(0.0, min(y, h - th))
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=(0, 0, 0, 170))
        for k, (text, colour) in enumerate(lines):
            draw.text((tx + pad, ty + pad + k * step), text, font=font, fill=colour + (255,))
    return np.asarray(Image.alpha_composite(base.convert("RGBA"), overlay).convert("RGB"))
