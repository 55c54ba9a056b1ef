"""The built-in demo dataset: SYNTHETIC faces in the MTFL on-disk format.

Every image this module writes is a procedurally drawn cartoon face rendered from a random seed.
None of them is, shows or is derived from a real person, and they must never be presented as real
data: numbers obtained on them show that a pipeline runs and learns, nothing about real faces.
`write_demo_mtfl` also writes a `DEMO_README.txt` saying so beside the list files.

Format (the MTFL section of DATA_FORMATS.md, quirks included, so that the MTFL reader is exercised
exactly as on the real files):

    ROOT/lfw_5590/synth_NNNNNN.jpg   250x250 RGB        (training.txt, ~41.5% of its lines)
    ROOT/net_7876/synth_NNNNNN.jpg   400x400 or 160x216 (W x H), the two sizes of the real folder;
                                     big faces are drawn smaller and upscaled, as the real ones are
    ROOT/AFLW/synth_NNNNNN.jpg       150x150, about 1% saved as single-channel (grayscale) JPEG
    ROOT/training.txt  ROOT/testing.txt  ROOT/DEMO_README.txt

List lines are `path x1..x5 y1..y5 gender smile glasses pose` with `%.6f` coordinates, CRLF ends,
a leading space on every line but the first, a last line holding a single space (no newline),
backslash paths in training.txt and forward slashes in testing.txt. Codes: gender 1 male / 2 female,
smile 1 yes / 2 no, glasses 1 yes / 2 no, pose 1 left profile, 2 left, 3 frontal, 4 right, 5 right
profile. Points: left eye, right eye, nose tip, left mouth corner, right mouth corner, where "left"
is the point with the smaller x (as in MTFL). Coordinates are 0-based pixel positions with pixel
centres at integers: landmark (x, y) is image[round(y), round(x)].

How a face is drawn (`render_face`). The head is a small 3-D model, ray-cast per pixel under an
orthographic camera: a skull whose horizontal cross-sections are ellipses (half-width A(y), depth
C(y), a dome above the eyes and a jaw below them), a nose (tilted ridge ellipsoid, tip sphere and
two alae spheres), two ears, and a hair shell a little outside the skull. Eyes, brows, lips, beard
and hairline are painted on the surface in model coordinates (units of the frontal inter-ocular
distance, eyes at (+-0.5, 0)), so every landmark is the projection of the 3-D point at the centre
of the pupil, the front of the nose-tip sphere and the two ends of the mouth curve: it lies exactly
on the drawn feature, whatever the pose. Lambertian shading with a random light, a random
background (plain, gradient, blotchy texture or cluttered shapes), shoulders and neck, a linear
lighting gradient over the whole image, a colour cast, a slight blur and Gaussian noise follow.

- head pose: a yaw rotation of the 3-D head. Frontal |yaw| < 11 deg, left/right 15..32 deg,
  profiles 38..55 deg (negative yaw = pose 1/2, the face turns to the image left). The nose and the
  eyes then move sideways against the face outline (nose offset / inter-ocular distance about
  0.5 tan(yaw), as measured on the real MTFL lines); the far eye is foreshortened and may be
  partly hidden by the nose: its landmark is still reported. Face scale, position, an in-plane
  roll (sd 6.5 deg, at most 18) and proportions (nose length, mouth height and width) vary
  independently.
- smile: the mouth curve. Smiling faces have upturned corners: 85% an open crescent (dark cavity
  with a band of upper teeth), 15% a closed upturned arc; plus wider mouths, nasolabial folds and
  slightly narrowed eyes. Non-smiling faces have a flat or slightly downturned closed line (12% are
  slightly parted, without upturned corners).
- gender: hair (females: 80% long hair with a back curtain, a third with bangs; males: 87% short,
  5% bald, 8% long), jaw shape (males wider, squarer jaw and chin, females a narrower, pointed
  chin, with overlapping ranges), eyebrow thickness (overlapping), a beard, moustache or stubble on
  35% of males, lipstick (45%), eye shadow and thicker lashes on some females, earrings (20%).
  No single cue decides: the label is learnable but not trivial.
- glasses: two rings (round to rectangular) in a plane in front of the eyes, a bridge over the nose
  and temple arms to the ears, depth-tested against the head; 25% have tinted (sun) lenses, the
  others clear lenses with a faint glare.
Label balance follows MTFL roughly: smile 50%, male 58%, glasses 18%, pose frontal 68%,
left/right 12% each, profiles 4% each.

Command line:
    python -m kerasface.data.synthetic --out DIR [--train N] [--test N] [--seed S] [--extra N]
                                       [--workers N] [--grid PNG]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["render_face", "write_demo_mtfl", "sample_grid", "PARTS", "FOLDER_STYLES", "EXPRESSIONS"]

# Part codes of the optional part map returned by render_face(..., return_parts=True).
PARTS = {
    "background": 0, "skin": 1, "hair": 2, "eye_white": 3, "iris": 4, "pupil": 5, "nose_tip": 6,
    "nose": 7, "lips": 8, "mouth_opening": 9, "teeth": 10, "brow": 11, "beard": 12, "glasses": 13,
    "ear": 14, "body": 15,
}

_POSE_PROBS = (0.04, 0.12, 0.68, 0.12, 0.04)
_POSE_YAW = {1: (38.0, 55.0), 2: (15.0, 32.0), 3: (0.0, 11.0), 4: (15.0, 32.0), 5: (38.0, 55.0)}
_POSE_SIGN = {1: -1.0, 2: -1.0, 3: 0.0, 4: 1.0, 5: 1.0}

_SKIN = np.array([[255, 226, 200], [243, 200, 168], [228, 176, 140], [205, 145, 105],
                  [170, 112, 78], [128, 82, 55], [92, 60, 42]], np.float32)
_HAIR = np.array([[22, 18, 16], [45, 32, 24], [78, 52, 34], [118, 80, 48], [150, 72, 38],
                  [196, 160, 104], [225, 200, 150], [150, 148, 146], [205, 205, 205]], np.float32)
_HAIR_P_MALE = np.array([0.27, 0.25, 0.17, 0.1, 0.04, 0.05, 0.02, 0.06, 0.04])
_HAIR_P_FEMALE = np.array([0.2, 0.22, 0.2, 0.12, 0.08, 0.1, 0.05, 0.02, 0.01])
_IRIS = np.array([[70, 45, 28], [45, 30, 22], [95, 70, 40], [70, 110, 150], [85, 115, 80],
                  [110, 115, 120]], np.float32)
_IRIS_P = np.array([0.35, 0.3, 0.12, 0.11, 0.07, 0.05])
_LIPSTICK = np.array([[175, 30, 52], [200, 82, 105], [135, 38, 58], [190, 60, 60]], np.float32)
_TEETH = np.array([236, 230, 214], np.float32)


# ----------------------------------------------------------------------------- helpers


def _lerp(a, b, t):
    return a + (b - a) * t


def _soft(d_model: np.ndarray, px: float) -> np.ndarray:
    """Coverage from a signed distance in model units (positive inside), anti-aliased on a pixel."""
    return np.clip(d_model / px + 0.5, 0.0, 1.0)


def _ellipse_alpha(x, y, cx, cy, rx, ry, px):
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return _soft((1.0 - r) * min(rx, ry), px)


def _blend(col: np.ndarray, alpha: np.ndarray, colour) -> None:
    col += alpha[:, None] * (np.asarray(colour, np.float32) - col)


def _palette(rng: np.random.Generator, table: np.ndarray, probs=None) -> np.ndarray:
    i = rng.choice(len(table), p=probs)
    j = min(len(table) - 1, i + 1) if rng.random() < 0.5 else max(0, i - 1)
    c = _lerp(table[i], table[j], rng.uniform(0, 0.5))
    return np.clip(c * rng.uniform(0.94, 1.06, 3), 0, 255).astype(np.float32)


def _pose_from_yaw(yaw: float) -> int:
    a = abs(yaw)
    if a < 13.0:
        return 3
    if a < 35.0:
        return 2 if yaw < 0 else 4
    return 1 if yaw < 0 else 5


# ----------------------------------------------------------------------------- face parameters


class _Face:
    """Everything random about one face, in model units (frontal inter-ocular distance = 1)."""

    def __init__(self, rng: np.random.Generator, labels: dict[str, int] | None, yaw: float | None,
                 roll: float | None):
        labels = dict(labels or {})
        u = rng.uniform
        # Labels: always draw, then apply what the caller forced, so draws stay aligned.
        g = 1 if rng.random() < 0.58 else 2
        sm = 1 if rng.random() < 0.5 else 2
        gl = 1 if rng.random() < 0.18 else 2
        po = int(rng.choice(5, p=_POSE_PROBS)) + 1
        yaw_draw = u(*_POSE_YAW[po])
        sign_draw = 1.0 if rng.random() < 0.5 else -1.0
        roll_draw = float(np.clip(rng.normal(0.0, 6.5), -18.0, 18.0))
        self.gender = int(labels.get("gender", g))
        self.smile = int(labels.get("smile", sm))
        self.glasses = int(labels.get("glasses", gl))
        if yaw is not None:
            self.yaw = float(yaw)
            self.pose = _pose_from_yaw(self.yaw)
        else:
            self.pose = int(labels.get("pose", po))
            lo, hi = _POSE_YAW[self.pose]
            t = (yaw_draw - _POSE_YAW[po][0]) / (_POSE_YAW[po][1] - _POSE_YAW[po][0])
            mag = lo + (hi - lo) * t
            sign = _POSE_SIGN[self.pose] or sign_draw
            self.yaw = float(sign * mag)
        self.roll = float(roll) if roll is not None else roll_draw
        male = self.gender == 1
        smiling = self.smile == 1

        # Head shape.
        self.W = u(1.08, 1.22) if male else u(1.02, 1.15)
        self.jaw_p = u(2.2, 3.6) if male else u(1.7, 2.6)
        self.y_chin = u(1.62, 1.82) if male else u(1.56, 1.74)
        self.y_top = -u(1.55, 1.75)
        self.y_wide = u(-0.1, 0.2)
        self.D = u(1.12, 1.28)
        self.jaw_narrow = u(0.0, 0.1) if male else u(0.05, 0.16)

        # Features.
        self.y_nose = u(0.54, 0.68)
        self.nose_out = u(0.32, 0.48)
        self.tip_r = u(0.1, 0.14)
        self.ala_x = u(0.11, 0.14)
        self.ala_r = u(0.07, 0.09)
        self.mouth_w = u(0.42, 0.49) if smiling else u(0.36, 0.44)
        self.y_mouth = self.y_nose + u(0.38, 0.5) - (0.03 if smiling else 0.0)
        self.eye_w = u(0.18, 0.23)
        self.eye_h = u(0.07, 0.1) * (u(0.72, 0.9) if smiling else 1.0)
        self.iris_r = u(0.075, 0.095)
        self.pupil_r = u(0.032, 0.045)
        self.brow_t = u(0.065, 0.12) if male else u(0.035, 0.075)
        self.brow_y = -u(0.28, 0.36)
        self.brow_arch = u(0.02, 0.1)
        self.brow_lift = 0.0  # set by an expression (EXPRESSIONS), never drawn
        self.brow_tilt = 0.0

        # Mouth shape: (kind, k_upper, k_lower) with curves y = y_mouth + k * (1 - (x/w)^2).
        if smiling:
            if rng.random() < 0.85:
                ku = u(0.04, 0.09)
                self.mouth = ("open", ku, ku + u(0.13, 0.24), True)
            else:
                k = u(0.10, 0.18)
                self.mouth = ("closed", k, k, False)
        else:
            if rng.random() < 0.12:
                ku = u(-0.02, 0.01)
                self.mouth = ("open", ku, ku + u(0.03, 0.06), rng.random() < 0.3)
            else:
                k = u(-0.04, 0.035)
                self.mouth = ("closed", k, k, False)
        self.lip_up = u(0.045, 0.075)
        self.lip_lo = u(0.065, 0.1)
        self.teeth_h = u(0.07, 0.11)

        # Colours.
        self.skin = _palette(rng, _SKIN)
        self.hair_col = _palette(rng, _HAIR, _HAIR_P_MALE if male else _HAIR_P_FEMALE)
        self.iris_col = _palette(rng, _IRIS, _IRIS_P)
        lip_nat = self.skin * np.array([0.86, 0.62, 0.62], np.float32) * u(0.9, 1.0)
        self.lipstick = (not male) and rng.random() < 0.45
        self.lip_col = (_lerp(lip_nat, _palette(rng, _LIPSTICK), u(0.6, 0.9)) if self.lipstick
                        else lip_nat)
        blond = self.hair_col.mean() > 150
        self.brow_col = (np.minimum(self.hair_col * 0.8, self.skin * 0.55) if blond
                         else self.hair_col * 0.9)
        self.blush = u(0.0, 0.18) if not male else u(0.0, 0.08)

        # Hair.
        r = rng.random()
        if male:
            self.hair_style = "short" if r < 0.87 else ("bald" if r < 0.92 else "long")
        else:
            self.hair_style = "long" if r < 0.8 else "short"
        self.hair_h = {"short": u(0.06, 0.16), "bald": 0.0, "long": u(0.12, 0.22)}[self.hair_style]
        self.hairline = -u(0.72, 0.95) if male else -u(0.68, 0.85)
        self.recede = u(0.0, 0.25) if male else 0.0
        self.bangs = ((self.hair_style == "long" and rng.random() < 0.3)
                      or (not male and rng.random() < 0.1))
        self.bang_y = -u(0.5, 0.62)
        self.curtain = u(0.74, 0.86)
        self.long_end = u(2.3, 3.6)
        self.part = u(-0.35, 0.35)
        self.hair_phase = u(0, 2 * np.pi)
        self.hair_freq = u(28, 55)

        # Gender extras.
        b = rng.random()
        kind = ("stubble" if b < 0.4 else "full" if b < 0.65
                else "moustache" if b < 0.85 else "goatee")
        self.beard = kind if male and rng.random() < 0.35 else None
        self.beard_alpha = u(0.3, 0.45) if self.beard == "stubble" else u(0.75, 0.95)
        self.lashes = u(0.025, 0.045) if not male else u(0.012, 0.025)
        shadows = np.array([[120, 80, 120], [110, 80, 60], [80, 100, 140]], np.float32)
        shadow = _palette(rng, shadows)
        self.eyeshadow = shadow if (not male and rng.random() < 0.25) else None
        self.earrings = (not male) and rng.random() < 0.2

        # Glasses.
        self.g_rx = u(0.26, 0.33)
        self.g_ry = u(0.16, 0.24)
        self.g_n = u(2.0, 4.5)
        self.g_w = u(0.022, 0.045)
        self.g_col = _palette(rng, np.array([[20, 20, 22], [60, 40, 30], [110, 30, 35],
                                             [140, 140, 150], [170, 140, 70]], np.float32))
        self.g_tint = rng.random() < 0.25
        tints = np.array([[25, 25, 30], [60, 45, 30], [35, 50, 40]], np.float32)
        self.g_tint_col = _palette(rng, tints)
        self.g_alpha = u(0.65, 0.88) if self.g_tint else u(0.06, 0.14)

        # Lighting and body.
        az, el = math.radians(u(-70, 70)), math.radians(u(5, 55))
        self.light = np.array([math.sin(az) * math.cos(el), -math.sin(el),
                               math.cos(az) * math.cos(el)], np.float32)
        self.ambient = u(0.42, 0.6)
        self.diffuse = u(0.45, 0.65)
        self.shirt = rng.uniform(20, 235, 3).astype(np.float32)
        self.neckline = rng.random() < 0.5


# Facial expressions (FER2013's seven emotions), as changes to a face's brows, eyes and mouth in
# model units: brow lift (up), brow tilt (inner ends down), eye opening factor, and the mouth
# (kind, k_upper, k_lower, teeth) with its half-width (None keeps the drawn one). "happy" keeps the
# drawn smiling mouth (the face is drawn with smile = 1, every other expression with smile = 2).
EXPRESSIONS: dict[str, dict[str, Any]] = {
    "angry": {"lift": -0.05, "tilt": 0.24, "eyes": 0.8, "mouth": ("closed", -0.03, -0.03, False), "width": 0.33},
    "disgust": {"lift": -0.06, "tilt": 0.08, "eyes": 0.65, "mouth": ("open", -0.07, -0.015, True), "width": 0.36},
    "fear": {"lift": 0.1, "tilt": -0.1, "eyes": 1.5, "mouth": ("open", -0.015, 0.1, True), "width": 0.47},
    "happy": {"lift": 0.0, "tilt": 0.0, "eyes": 1.0, "mouth": None, "width": None},
    "sad": {"lift": 0.0, "tilt": -0.16, "eyes": 0.85, "mouth": ("closed", -0.09, -0.09, False), "width": 0.38},
    "surprise": {"lift": 0.16, "tilt": 0.0, "eyes": 1.55, "mouth": ("open", -0.12, 0.16, False), "width": 0.2},
    "neutral": {"lift": 0.0, "tilt": 0.0, "eyes": 1.0, "mouth": ("closed", 0.0, 0.0, False), "width": None},
}


def _express(f: _Face, expression: str) -> None:
    """Give face `f` an expression of EXPRESSIONS (no random draws: the rest of the image is the
    same as without it)."""
    if expression not in EXPRESSIONS:
        raise ValueError(f"unknown expression {expression!r}; known: {', '.join(EXPRESSIONS)}")
    e = EXPRESSIONS[expression]
    f.brow_lift, f.brow_tilt = e["lift"], e["tilt"]
    f.eye_h *= e["eyes"]
    if e["mouth"] is not None:
        f.mouth = e["mouth"]
    if e["width"] is not None:
        f.mouth_w = e["width"]


def person_traits(identity: int | tuple[int, ...]) -> dict[str, float]:
    """The drawn parameters of the synthetic person `identity` that attributes can be read from
    (render_face's identity): gender (MTFL code), eye_h (eye opening), ala_x (nostril spread),
    tip_r (nose-tip radius) and W (head width), in model units; the same for every photo."""
    face = _person(identity, np.random.default_rng(0), None, 0.0, 0.0, None)
    return {"gender": face.gender, "eye_h": face.eye_h, "ala_x": face.ala_x, "tip_r": face.tip_r, "W": face.W}


def _person(identity, rng: np.random.Generator, labels: dict[str, int] | None, yaw: float | None,
            roll: float | None, expression: str | None) -> _Face:
    """The face of the person `identity` (a seed) in one photo: the identity's draws are the same
    in every call (drawn with smile = 1: the draws never depend on the photo); the pose (unless
    given), the roll (unless given) and the light are drawn from `rng`, the photo's generator."""
    seed = (identity,) if isinstance(identity, (int, np.integer)) else tuple(identity)
    person_rng = np.random.default_rng([int(v) for v in seed])
    forced = {k: v for k, v in (labels or {}).items() if k != "smile"}
    if yaw is None:  # a pose drawn for this photo, as _Face draws one
        po = int(rng.choice(5, p=_POSE_PROBS)) + 1
        lo, hi = _POSE_YAW[forced.get("pose", po)]
        sign = _POSE_SIGN[forced.get("pose", po)] or (1.0 if rng.random() < 0.5 else -1.0)
        yaw = sign * rng.uniform(lo, hi)
    if roll is None:
        roll = float(np.clip(rng.normal(0.0, 6.5), -18.0, 18.0))
    forced.pop("pose", None)
    f = _Face(person_rng, {**forced, "smile": 1}, yaw, roll)  # smile forced: the same draws every time
    f.smile = 2 if expression not in (None, "happy") else 1
    az, el = math.radians(rng.uniform(-70, 70)), math.radians(rng.uniform(5, 55))
    f.light = np.array([math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el)], np.float32)
    f.ambient, f.diffuse = rng.uniform(0.42, 0.6), rng.uniform(0.45, 0.65)
    return f


# ----------------------------------------------------------------------------- geometry


class _Head:
    """Tables of the skull profile, the hair shell and the nose primitives, for one face."""

    def __init__(self, f: _Face):
        self.f = f
        h = f.hair_h
        y0, y1 = f.y_top - h - 0.05, f.y_chin + 0.05
        ys = np.linspace(y0, y1, 1024).astype(np.float32)
        self.ys = ys
        self.A, self.C = self._profile(ys, f.W, f.D, f.y_top, 0.0)
        # Hair shell: a dome h above the skull, hugging it down to where the style ends.
        if f.hair_style == "bald":
            w = np.zeros_like(ys)
        elif f.hair_style == "long":
            w = np.clip((1.5 - ys) / 0.5, 0, 1)
        else:
            w = np.clip((0.4 - ys) / 0.6, 0, 1)
        Ah, Ch = self._profile(ys, f.W + h, f.D + h, f.y_top - h, h)
        self.Ah = np.where(ys <= f.y_wide, Ah, self.A + h * w) * (w > 0)
        self.Ch = np.where(ys <= f.y_wide, Ch, self.C + h * w) * (w > 0)
        self.dA = np.gradient(self.A, ys)
        self.dC = np.gradient(self.C, ys)
        self.dAh = np.gradient(self.Ah, ys)
        self.dCh = np.gradient(self.Ch, ys)

        def zs(x, y):
            a, c = np.interp(y, ys, self.A), np.interp(y, ys, self.C)
            return float(c * math.sqrt(max(0.0, 1.0 - (x / a) ** 2)))

        self.surface_z = zs
        self.eye_z = zs(0.5, 0.0)
        self.tip = np.array([0.0, f.y_nose, zs(0.0, f.y_nose) + f.nose_out], np.float32)
        yb, zb = 0.02, zs(0.0, 0.02) + 0.02
        ye, ze = f.y_nose - 0.07, self.tip[2] - 0.1
        axis = np.array([0.0, ye - yb, ze - zb], np.float32)
        half = float(np.linalg.norm(axis)) / 2 + 0.04
        axis /= np.linalg.norm(axis)
        perp = np.array([0.0, -axis[2], axis[1]], np.float32)  # points forward (toward +z)
        centre = np.array([0.0, (yb + ye) / 2, (zb + ze) / 2], np.float32) - 0.1 * perp
        ridge_q = np.stack([np.array([1.0, 0, 0], np.float32), axis, perp], axis=1)
        self.prims = [
            # (name, centre, rotation (columns = local axes), semi-axes, part)
            ("ridge", centre, ridge_q, np.array([0.13, half, 0.13], np.float32), PARTS["nose"]),
            ("tip", self.tip - np.array([0, 0, f.tip_r], np.float32), np.eye(3, dtype=np.float32),
             np.full(3, f.tip_r, np.float32), PARTS["nose_tip"]),
        ]
        for s in (-1.0, 1.0):
            ya = f.y_nose + 0.04
            ca = np.array([s * f.ala_x, ya, zs(s * f.ala_x, ya) - 0.03], np.float32)
            self.prims.append(("ala", ca, np.eye(3, dtype=np.float32),
                               np.full(3, f.ala_r, np.float32), PARTS["nose"]))
        for s in (-1.0, 1.0):
            ye_ = 0.3
            ae = float(np.interp(ye_, ys, self.A))
            self.prims.append(("ear", np.array([s * (ae + 0.03), ye_, -0.1], np.float32),
                               np.eye(3, dtype=np.float32),
                               np.array([0.11, 0.27, 0.17], np.float32), PARTS["ear"]))

    def _profile(self, ys, W, D, y_top, h):
        f = self.f
        up = ys <= f.y_wide
        r = np.clip((f.y_wide - ys) / (f.y_wide - y_top), 0, 1)
        a_up = W * (1 - r ** 2.2) ** (1 / 2.2)
        c_up = D * np.sqrt(1 - r ** 2)
        uu = np.clip((ys - f.y_wide) / (f.y_chin + h * 0.5 - f.y_wide), 0, 1)
        a_lo = W * (1 - uu ** f.jaw_p) ** (1 / f.jaw_p) * (1 - f.jaw_narrow * uu)
        c_lo = D * (1 - uu ** 3) ** (1 / 3)
        A = np.where(up, a_up, a_lo)
        C = np.where(up, c_up, c_lo)
        out = (ys < y_top) | (ys > f.y_chin + h * 0.5)
        return np.where(out, 0, A).astype(np.float32), np.where(out, 0, C).astype(np.float32)


def _row_hit(X, k, A, C, dA, dC, cs, sn):
    """Front intersection of view rays with a stack of horizontal ellipses; t = view depth.

    X: view x of each ray; k: index of each ray's row (its model y) in the profile tables.
    """
    a_ = A[k]
    c_ = C[k]
    ok = (a_ > 1e-3) & (c_ > 1e-3)
    ia2 = 1.0 / np.maximum(a_, 1e-3) ** 2
    ic2 = 1.0 / np.maximum(c_, 1e-3) ** 2
    qa = sn * sn * ia2 + cs * cs * ic2
    qb = 2 * X * sn * cs * (ic2 - ia2)
    qc = X * X * (cs * cs * ia2 + sn * sn * ic2) - 1
    disc = qb * qb - 4 * qa * qc
    ok &= disc > 0
    t = (-qb + np.sqrt(np.maximum(disc, 0))) / (2 * qa)
    t = np.where(ok, t, 0)
    hw = np.sqrt(a_ * a_ * cs * cs + c_ * c_ * sn * sn)  # silhouette half-width at this row
    x = X * cs - t * sn
    z = X * sn + t * cs
    t = np.where(ok, t, -np.inf)
    da = dA[k]
    dc = dC[k]
    ny = -(x * x * da * ia2 / np.maximum(a_, 1e-3) + z * z * dc * ic2 / np.maximum(c_, 1e-3))
    n = np.stack([x * ia2, ny, z * ic2], -1)
    return t, x, z, n, hw, a_, c_


def _ellipsoid_hit(X, Y, cs, sn, centre, q, axes):
    """Front intersection of view rays with an ellipsoid given in model coordinates.

    Only rays within the ellipsoid's bounding square are traced; the others get t = -inf.
    """
    rad = float(axes.max())
    xc = float(centre[0] * cs + centre[2] * sn)
    near = np.flatnonzero((np.abs(X - xc) < rad) & (np.abs(Y - float(centre[1])) < rad))
    t_all = np.full(len(X), -np.inf, np.float32)
    n_all = np.zeros((len(X), 3), np.float32)
    if near.size == 0:
        return t_all, n_all
    X, Y = X[near], Y[near]
    o = np.stack([X * cs, Y, X * sn], -1) - centre
    d = np.array([-sn, 0.0, cs], np.float32)
    ol = (o @ q) / axes
    dl = (q.T @ d) / axes
    qa = float(dl @ dl)
    qb = 2 * (ol @ dl)
    qc = np.einsum("ij,ij->i", ol, ol) - 1
    disc = qb * qb - 4 * qa * qc
    t = np.where(disc > 0, (-qb + np.sqrt(np.maximum(disc, 0))) / (2 * qa), -np.inf)
    pl = ol + np.where(np.isfinite(t), t, 0)[:, None] * dl  # unit-sphere coordinates
    t_all[near] = t
    n_all[near] = (pl / axes) @ q.T
    return t_all, n_all


# ----------------------------------------------------------------------------- painting


def _paint_face(f: _Face, head: _Head, x, y, col, part, px, rng):
    """Eyes, brows, nose holes, mouth and beard painted on skin points (model x, y).

    Each feature is computed only on the points of a window around it (speed).
    """
    ax = np.abs(x)

    class Win:
        def __init__(self, sel):
            self.i = np.flatnonzero(sel)
            self.x, self.y, self.ax = x[self.i], y[self.i], ax[self.i]
            self.col, self.part = col[self.i], part[self.i]

        def __bool__(self):
            return bool(self.i.size)

        def done(self):
            col[self.i], part[self.i] = self.col, self.part

    # Cheek blush and eye-socket shading.
    wn = Win((y > -0.45) & (y < 1.0) & (ax < 1.0))
    if wn:
        for s in (-1.0, 1.0):
            g = np.exp(-(((wn.x - s * 0.6) / 0.28) ** 2 + ((wn.y - 0.55) / 0.22) ** 2))
            _blend(wn.col, g * f.blush, f.skin * np.array([1.0, 0.7, 0.7], np.float32))
            g = np.exp(-(((wn.x - s * 0.5) / 0.32) ** 2 + ((wn.y + 0.04) / 0.2) ** 2))
            wn.col *= (1.0 - 0.13 * g)[:, None]
        wn.done()

    # Eyebrows: an arch over each eye, thicker at the inner end (an expression may lift them and
    # tilt them: brow_tilt > 0 lowers the inner ends, a frown; < 0 raises them, sadness).
    y_brow = f.brow_y - f.brow_lift
    wn = Win((y > y_brow - f.brow_arch - 0.15 - max(-f.brow_tilt, 0.0))
             & (y < y_brow + 0.15 + max(f.brow_tilt, 0.0)) & (ax > 0.15) & (ax < 0.87))
    if wn:
        u = np.clip((wn.ax - 0.2) / 0.62, 0, 1)
        yb = y_brow - f.brow_arch * np.clip(np.sin(u * np.pi), 0, 1) ** 0.8 + 0.04 * u
        yb = yb + f.brow_tilt * (1.0 - u)
        th = f.brow_t * (1.0 - 0.55 * u)
        a = _soft(th / 2 - np.abs(wn.y - yb), px) * _soft(np.minimum(wn.ax - 0.2, 0.82 - wn.ax), px)
        _blend(wn.col, a * 0.92, f.brow_col)
        wn.part[a > 0.5] = PARTS["brow"]
        wn.done()

    # Eyes.
    for s in (-1.0, 1.0):
        cx = s * 0.5
        wn = Win((np.abs(x - cx) < 0.42) & (np.abs(y + 0.05) < 0.3))
        if not wn:
            continue
        xx, yy, sub, sp = wn.x, wn.y, wn.col, wn.part
        if f.eyeshadow is not None:
            _blend(sub, _ellipse_alpha(xx, yy, cx, -0.08, 0.27, 0.15, px) * 0.45, f.eyeshadow)
        r = np.sqrt(((xx - cx) / f.eye_w) ** 2 + (yy / f.eye_h) ** 2)
        white = _soft((1 - r) * f.eye_h, px)
        _blend(sub, white, np.array([232, 226, 220], np.float32))
        sp[white > 0.5] = PARTS["eye_white"]
        ir = np.sqrt((xx - cx) ** 2 + yy ** 2)
        iris = np.minimum(_soft(f.iris_r - ir, px), white)
        shade_iris = f.iris_col * (1.0 - 0.5 * np.clip(ir / f.iris_r, 0, 1) ** 2)[:, None]
        _blend(sub, iris, shade_iris)
        sp[iris > 0.5] = PARTS["iris"]
        pupil = np.minimum(_soft(f.pupil_r - ir, px), white)
        _blend(sub, pupil, np.array([12, 9, 8], np.float32))
        sp[pupil > 0.5] = PARTS["pupil"]
        glint = white * _ellipse_alpha(xx, yy, cx - 0.5 * f.iris_r, -0.5 * f.iris_r, 0.016, 0.016,
                                       px)
        _blend(sub, glint * 0.8, np.array([250, 250, 250], np.float32))
        # Upper lid and lashes (a dark rim above the eye), faint lower lid.
        rim = _soft(np.minimum((r - 1) * f.eye_h + 0.004, (1 - r) * f.eye_h + f.lashes), px)
        rim *= np.clip((0.25 * f.eye_h - yy) / (0.5 * f.eye_h), 0, 1)
        _blend(sub, rim * 0.9, np.array([28, 18, 16], np.float32))
        low = _soft(np.minimum((r - 1) * f.eye_h + 0.004, (1 - r) * f.eye_h + 0.012), px) * (yy > 0)
        _blend(sub, low * 0.35, f.skin * 0.45)
        wn.done()

    # Nostrils: dark ellipses just below the tip.
    wn = Win((ax < 0.2) & (np.abs(y - f.y_nose - 0.095) < 0.08))
    if wn:
        for s in (-1.0, 1.0):
            a = _ellipse_alpha(wn.x, wn.y, s * 0.085, f.y_nose + 0.095, 0.05, 0.026, px)
            _blend(wn.col, a * 0.85, f.skin * 0.3)
        wn.done()

    # Beard / moustache / stubble (under the lips, which are painted after it).
    if f.beard is not None:
        ym, w = f.y_mouth, f.mouth_w
        wn = Win(y > (0.2 if f.beard in ("full", "stubble") else ym - 0.25))
        if wn:
            xx, yy, axx = wn.x, wn.y, wn.ax
            # Moustache: a band over the upper lip, following it and drooping past the corners.
            q = np.clip(axx / (w + 0.08), 0, 1) ** 2
            mtop = ym - 0.2 + 0.1 * q
            mbot = ym - f.lip_up * np.sqrt(np.clip(1 - (axx / w) ** 2, 0, 1)) + 0.07 * q - 0.01
            must = np.minimum(np.minimum(yy - mtop, mbot - yy), w + 0.08 - axx)
            if f.beard == "moustache":
                d = must
            elif f.beard == "goatee":
                d = np.minimum(np.minimum(yy - (ym + 0.08), 0.36 - axx * (1.0 + 0.3 * (yy - ym))),
                               f.y_chin + 0.1 - yy)
                d = np.maximum(d, must)
            else:
                A = np.interp(yy, head.ys, head.A)
                nx = axx / np.maximum(A, 1e-3)
                line = 0.25 + (ym - 0.15 - 0.25) * (1 - np.clip(nx, 0, 1) ** 2)
                d = np.minimum(np.minimum(yy - line, f.y_chin + 0.1 - yy), 1.2 - axx)
            speck = rng.random(len(xx)).astype(np.float32)
            grain = (0.45 + 0.55 * speck) if f.beard == "stubble" else (0.82 + 0.18 * speck)
            a = _soft(d, px * 2) * f.beard_alpha * grain
            bc = f.hair_col * 0.85 if f.beard != "stubble" else _lerp(f.skin, f.hair_col, 0.7)
            _blend(wn.col, a, bc)
            wn.part[a > 0.4] = PARTS["beard"]
            wn.done()

    # Mouth.
    kind, ku, kl, teeth = f.mouth
    w, ym = f.mouth_w, f.y_mouth
    wn = Win((ax < w + 0.08) & (y > ym + min(ku, 0) - f.lip_up - 0.08)
             & (y < ym + max(kl, 0) + f.lip_lo + 0.08))
    if wn:
        xx, yy, axx, sub, sp = wn.x, wn.y, wn.ax, wn.col, wn.part
        xm = np.clip(xx / w, -1, 1)
        bow = 1 - xm ** 2
        taper = np.sqrt(np.clip(bow, 0, 1))
        inx = _soft((w - axx), px)
        yu, yl = ym + ku * bow, ym + kl * bow
        bow_dip = 0.012 * np.exp(-(xx / 0.07) ** 2) if kind == "closed" else 0.0  # cupid's bow
        up_out = yu - f.lip_up * taper - bow_dip
        lo_out = yl + f.lip_lo * taper
        lips = _soft(np.minimum(yy - up_out, lo_out - yy), px) * inx
        _blend(sub, lips * 0.9, f.lip_col)
        sp[lips > 0.5] = PARTS["lips"]
        if kind == "open":
            opening = _soft(np.minimum(yy - yu, yl - yy), px) * inx
            _blend(sub, opening, f.lip_col * 0.25)
            sp[opening > 0.5] = PARTS["mouth_opening"]
            if teeth:
                tb = np.minimum(yl, yu + f.teeth_h * taper)
                t = _soft(np.minimum(yy - yu, tb - yy), px) * opening
                phase = ((xx / 0.075) + 0.5) % 1.0 - 0.5  # one tooth every 0.075
                gaps = 1.0 - 0.25 * np.exp(-(phase * 0.075 / 0.008) ** 2)
                _blend(sub, t, _TEETH * gaps[:, None])
                sp[t > 0.5] = PARTS["teeth"]
        # The mouth line (dark, at least ~1 px wide) and the dark corners.
        lw = max(0.02, 0.7 * px)
        line = _soft(lw - np.abs(yy - (yu + yl) / 2) + (yl - yu) / 2, px) * inx
        _blend(sub, line * 0.85, f.lip_col * 0.35)
        cr = max(0.028, 1.1 * px)
        for s in (-1.0, 1.0):
            a = _ellipse_alpha(xx, yy, s * (w - 0.5 * cr), ym, cr, cr * 0.8, px)
            _blend(sub, a * 0.9, f.lip_col * 0.3)
            sp[a > 0.5] = PARTS["lips"]
        wn.done()

    # Smile folds from the alae to beyond the mouth corners.
    if f.smile == 1:
        wn = Win((y > f.y_nose) & (y < ym + 0.1) & (ax > f.ala_x) & (ax < w + 0.15))
        if wn:
            y0, y1 = f.y_nose + 0.02, ym + 0.05
            tt = np.clip((wn.y - y0) / (y1 - y0), 0, 1)
            for s in (-1.0, 1.0):
                xf = s * (f.ala_x + 0.08 + (w + 0.1 - f.ala_x - 0.08) * np.sin(tt * np.pi / 2))
                fade = np.sqrt(np.clip(np.sin(tt * np.pi), 0, 1))
                a = _soft(0.018 - np.abs(wn.x - xf), px) * fade
                wn.col *= (1.0 - 0.22 * a)[:, None]
            wn.done()


# ----------------------------------------------------------------------------- backgrounds


def _background(rng: np.random.Generator, h: int, w: int, clean: bool) -> Image.Image:
    if clean:
        return Image.new("RGB", (w, h), (128, 140, 150))
    kind = rng.choice(4, p=[0.15, 0.3, 0.25, 0.3])
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if kind == 0:
        arr = np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    elif kind in (1, 3):
        ang = rng.uniform(0, 2 * np.pi)
        t = (np.cos(ang) * np.arange(w, dtype=np.float32)[None, :] / w
             + np.sin(ang) * np.arange(h, dtype=np.float32)[:, None] / h)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        arr = c1 + (c2 - c1) * t[..., None]
    else:
        n = int(rng.integers(3, 12))
        small = rng.uniform(0, 255, (n, n, 3)).astype(np.uint8)
        arr = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.float32)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if kind == 3:
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(5, 16))):
            col = tuple(int(v) for v in rng.integers(0, 256, 3))
            x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
            x1, y1 = x0 + rng.uniform(0.05, 0.6) * w, y0 + rng.uniform(0.05, 0.6) * h
            shape = rng.integers(4)
            if shape == 0:
                d.rectangle([x0, y0, x1, y1], fill=col)
            elif shape == 1:
                d.ellipse([x0, y0, x1, y1], fill=col)
            elif shape == 2:
                d.line([x0, y0, x1, y1], fill=col, width=int(rng.integers(1, 6)))
            else:
                pts = [(float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))) for _ in range(3)]
                d.polygon(pts, fill=col)
    return img


# ----------------------------------------------------------------------------- the renderer


def render_face(rng: np.random.Generator | int | None = None, size: tuple[int, int] = (250, 250), *,
                labels: dict[str, int] | None = None, iod: float | None = None,
                nose: tuple[float, float] | None = None, yaw: float | None = None,
                roll: float | None = None, clean: bool = False, return_parts: bool = False,
                expression: str | None = None, identity: int | tuple[int, ...] | None = None):
    """Render one synthetic face.

    Args:
      rng: a numpy Generator (or a seed); everything random is drawn from it.
      size: (height, width) of the image.
      labels: force any of {"gender", "smile", "glasses", "pose"} (MTFL codes); others are drawn.
      iod: frontal inter-ocular distance in pixels (the projected one is iod * cos(yaw)); default
        0.17..0.25 of the smaller side.
      nose: (x, y) pixel position of the nose tip; default near the centre.
      yaw, roll: head yaw and in-plane rotation in degrees; a given yaw decides the pose label.
      clean: a plain grey background, fixed front light, no gradient, blur or noise (for tests).
      return_parts: also return an (H, W) uint8 map of PARTS codes (what is drawn where).
      expression: one of EXPRESSIONS (FER2013's emotions: brows, eyes and mouth); it forces
        smile = 1 for "happy" and 2 otherwise. None (default) draws the face as before.
      identity: a seed (an int or a tuple of ints) that fixes the person: every parameter of
        the face (head shape, features, colours, hair, beard, glasses, gender) is drawn from it,
        the same in every call, while `rng` draws what varies between photos of that person (the
        light, the background and camera, and the pose and expression unless given). The mouth is
        drawn smiling (so that "happy" keeps it, and without an expression the person smiles);
        other expressions replace it. None (default): `rng` draws everything.

    Returns:
      image (H, W, 3) uint8; landmarks (5, 2) float64 (x, y): left eye, right eye, nose tip, left
      and right mouth corner; labels dict: gender, smile, glasses, pose (MTFL codes) plus yaw_deg,
      roll_deg, iod_px (projected), hair, beard, mouth (details, for tests and plots).
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    h, w = int(size[0]), int(size[1])
    if expression is not None:
        labels = {**(labels or {}), "smile": 1 if expression == "happy" else 2}
    if identity is None:
        f = _Face(rng, labels, yaw, roll)
    else:
        f = _person(identity, rng, labels, yaw, roll, expression)
    if expression is not None:
        _express(f, expression)
    s = float(iod) if iod is not None else float(rng.uniform(0.17, 0.25) * min(h, w))
    nose_xy = np.array(nose if nose is not None else
                       (w * rng.uniform(0.44, 0.56), h * rng.uniform(0.46, 0.58)), np.float64)
    if clean:
        f.light = np.array([0.0, -0.35, 0.94], np.float32)
        f.ambient, f.diffuse = 0.55, 0.5
    head = _Head(f)
    th = math.radians(f.yaw)
    cs, sn = math.cos(th), math.sin(th)
    ro = math.radians(f.roll)
    R = np.array([[math.cos(ro), -math.sin(ro)], [math.sin(ro), math.cos(ro)]])
    tip_view = np.array([head.tip[0] * cs + head.tip[2] * sn, head.tip[1]])
    c = nose_xy - s * R @ tip_view  # image position of the model origin (between the eyes)
    px = 1.0 / s

    def project(P):
        P = np.asarray(P, np.float64).reshape(-1, 3)
        X = P[:, 0] * cs + P[:, 2] * sn
        Z = -P[:, 0] * sn + P[:, 2] * cs
        uv = c + s * (np.stack([X, P[:, 1]], -1) @ R.T)
        return uv, Z

    # Landmarks: pupils, nose tip, mouth corners (3-D points on the drawn surface).
    zs = head.surface_z
    pts3 = np.array([[-0.5, 0.0, zs(-0.5, 0.0)], [0.5, 0.0, zs(0.5, 0.0)], head.tip,
                     [-f.mouth_w, f.y_mouth, zs(-f.mouth_w, f.y_mouth)],
                     [f.mouth_w, f.y_mouth, zs(f.mouth_w, f.y_mouth)]])
    landmarks, _ = project(pts3)

    # Background, shoulders, hair behind the head, neck (2-D polygons).
    img = _background(rng, h, w, clean)
    draw = ImageDraw.Draw(img)
    parts = np.zeros((h, w), np.uint8) if return_parts else None
    yc = f.y_chin
    body_shift = -0.6
    shirt = [(-0.55, yc + 0.75), (-1.9, yc + 1.15), (-3.2, yc + 2.0), (-3.6, yc + 9), (3.6, yc + 9),
             (3.2, yc + 2.0), (1.9, yc + 1.15), (0.55, yc + 0.75)]
    uv, _ = project([(x_, y_, body_shift) for x_, y_ in shirt])
    shirt_col = tuple(int(v) for v in (f.shirt * (1.0 if clean else rng.uniform(0.8, 1.0))))
    draw.polygon([tuple(p) for p in uv], fill=shirt_col)
    if parts is not None:
        pm = Image.new("L", (w, h), 0)
        ImageDraw.Draw(pm).polygon([tuple(p) for p in uv], fill=PARTS["body"])
        parts[:] = np.asarray(pm)
    hair_dark = tuple(int(v) for v in f.hair_col * 0.62)
    if f.hair_style == "long":
        r0 = f.W + f.hair_h + 0.12
        flare = 0.35
        poly = [(r0 * math.cos(a), 0.25 + (f.y_top - f.hair_h - 0.25) * math.sin(a), -0.4)
                for a in np.linspace(0, np.pi, 24)]
        poly = [(-r0 - flare, f.long_end, -0.4)] + poly[::-1] + [(r0 + flare, f.long_end, -0.4)]
        poly += [(x_, f.long_end + 0.12 * math.sin(7 * x_ + f.hair_phase), -0.4)
                 for x_ in np.linspace(r0 + flare, -r0 - flare, 16)]
        uv, _ = project(poly)
        draw.polygon([tuple(p) for p in uv], fill=hair_dark)
        if parts is not None:
            pm = Image.new("L", (w, h), 0)
            ImageDraw.Draw(pm).polygon([tuple(p) for p in uv], fill=1)
            parts[np.asarray(pm) > 0] = PARTS["hair"]
    nw = 0.46 * f.W
    neck = [(-nw, 0.6), (-nw * 1.04, yc + 0.8), (0.0, yc + (1.25 if f.neckline else 0.95)),
            (nw * 1.04, yc + 0.8), (nw, 0.6)]
    uv, _ = project([(x_, y_, -0.15) for x_, y_ in neck])
    draw.polygon([tuple(p) for p in uv], fill=tuple(int(v) for v in f.skin * 0.72))
    if parts is not None:
        pm = Image.new("L", (w, h), 0)
        ImageDraw.Draw(pm).polygon([tuple(p) for p in uv], fill=1)
        parts[np.asarray(pm) > 0] = PARTS["skin"]
    arr = np.asarray(img, np.float32).copy()

    # The head: ray-cast over its bounding box.
    ext = f.W + f.hair_h + 0.35
    corners = np.array([[sx * ext, sy, sz] for sx in (-1, 1)
                        for sy in (f.y_top - f.hair_h - 0.1, yc + 0.15)
                        for sz in (-f.D - f.hair_h, f.D + 0.9)])
    cuv, _ = project(corners)
    u0, v0 = np.floor(cuv.min(0)).astype(int)
    u1, v1 = np.ceil(cuv.max(0)).astype(int)
    u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, w - 1), min(v1, h - 1)
    depth = np.full((h, w), -np.inf, np.float32)
    if u1 > u0 and v1 > v0:
        vv, uu = np.mgrid[v0:v1 + 1, u0:u1 + 1]
        shp = uu.shape
        d = np.stack([uu.ravel() - c[0], vv.ravel() - c[1]], -1) @ R / s  # inverse similarity
        X, Y = d[:, 0].astype(np.float32), d[:, 1].astype(np.float32)
        dy = float(head.ys[1] - head.ys[0])
        k = np.clip(np.rint((Y - float(head.ys[0])) / dy).astype(np.int32), 0, len(head.ys) - 1)
        t_head, _, _, n_head, hw_head, A_, C_ = _row_hit(X, k, head.A, head.C, head.dA, head.dC,
                                                         cs, sn)
        t_hair, xs_, zs_, n_hair, hw_hair, Ah_, Ch_ = _row_hit(X, k, head.Ah, head.Ch, head.dAh,
                                                                head.dCh, cs, sn)

        def hair_region(xm, ym, zm, a_, c_):
            nz = zm / np.maximum(c_, 1e-3)
            if f.hair_style == "bald":
                return (ym < -0.2) & (nz < -0.35) & (ym > f.y_top * 0.3)
            temples = np.exp(-((np.abs(xm) - 0.45) / 0.18) ** 2)
            line = f.hairline + 0.3 * xm ** 2 - f.recede * temples
            if f.bangs:
                line = np.where(np.abs(xm) < 0.75, np.maximum(line, f.bang_y), line)
            r = (ym < line) | ((ym < 0.0) & (nz < 0.45)) | ((ym < 0.45) & (nz < -0.15))
            if f.hair_style == "long":
                # The curtain hangs straight: beside the cheeks, off the narrowing jaw.
                r |= (ym < 1.45) & ((np.abs(xm) > f.curtain * f.W) | (nz < 0.35))
            return r

        ys_h = Y
        hair_ok = np.isfinite(t_hair) & hair_region(xs_, ys_h, zs_, Ah_, Ch_)
        # Primitives: nose parts and ears compete with the skull by depth.
        best_t = t_head.copy()
        prim_id = np.where(np.isfinite(t_head), 0, -1)
        normals = n_head.copy()
        for j, (name, centre, q, axes, _) in enumerate(head.prims):
            if name == "ear" and f.hair_style == "long":
                continue
            tk, nk = _ellipsoid_hit(X, Y, cs, sn, centre, q, axes)
            better = tk > best_t
            best_t = np.where(better, tk, best_t)
            prim_id = np.where(better, j + 1, prim_id)
            normals = np.where(better[:, None], nk, normals)
        use_hair = hair_ok & (t_hair > best_t - 1e-4)
        # A ring of hair shell without skull behind (the hair outline) is hair too.
        use_hair |= np.isfinite(t_hair) & ~np.isfinite(best_t)
        t_final = np.where(use_hair, t_hair, best_t)
        normals = np.where(use_hair[:, None], n_hair, normals)
        hit = np.isfinite(t_final)
        t_safe = np.where(hit, t_final, 0)
        xm = X * cs - t_safe * sn
        zm = X * sn + t_safe * cs
        on_skull = hit & ~use_hair & (prim_id == 0)
        skull_hair = on_skull & hair_region(xm, Y, zm, A_, C_)
        hairy = use_hair | skull_hair
        # Lighting in view space.
        nv = np.stack([normals[:, 0] * cs + normals[:, 2] * sn, normals[:, 1],
                       -normals[:, 0] * sn + normals[:, 2] * cs], -1)
        nv /= np.maximum(np.linalg.norm(nv, axis=1, keepdims=True), 1e-6)
        lam = np.clip(nv @ f.light, 0, 1)
        shade = f.ambient + f.diffuse * lam
        ao = 0.78 + 0.22 * np.clip(nv[:, 2], 0, 1)
        colours = np.zeros((len(X), 3), np.float32)
        part_flat = np.zeros(len(X), np.uint8)
        skin = hit & ~hairy
        idx = np.flatnonzero(skin)
        if idx.size:
            col = np.broadcast_to(f.skin, (idx.size, 3)).copy()
            pc = np.full(idx.size, PARTS["skin"], np.uint8)
            pid = prim_id[idx]
            for k, (name, _, _, _, code) in enumerate(head.prims):
                pc[pid == k + 1] = code
            ear = pid >= 1 + len(head.prims) - 2
            col[ear] *= 0.93
            nose_tip = pid == 2
            redder = f.skin * np.array([1.0, 0.8, 0.8], np.float32)
            col[nose_tip] = _lerp(col[nose_tip], redder, 0.15)
            _paint_face(f, head, xm[idx], Y[idx], col, pc, px, rng)
            if f.earrings:
                for sgn in (-1.0, 1.0):
                    lobe_x = sgn * (np.interp(0.55, head.ys, head.A) + 0.02)
                    a = _ellipse_alpha(xm[idx], Y[idx], lobe_x, 0.58, 0.045, 0.045, px) * ear
                    _blend(col, a, np.array([215, 180, 70], np.float32))
            colours[idx] = col * (shade[idx] * ao[idx])[:, None]
            part_flat[idx] = pc
        idx = np.flatnonzero(hit & hairy)
        if idx.size:
            hx = np.where(use_hair[idx], xs_[idx], xm[idx])
            hz = np.where(use_hair[idx], zs_[idx], zm[idx])
            azim = np.arctan2(hx - f.part * 0.3, hz)  # strands run down from the parting
            wave = 2 * np.sin(4 * Y[idx]) + f.hair_phase
            streak = 0.82 + 0.18 * np.sin(f.hair_freq * 0.35 * azim + wave)
            half = nv[idx] + np.array([0, 0, 1.0], np.float32) + f.light
            half /= np.linalg.norm(half, axis=1, keepdims=True)
            spec = 60.0 * np.clip(half @ f.light, 0, 1) ** 12
            colours[idx] = f.hair_col * (streak * shade[idx])[:, None] * 0.95 + spec[:, None]
            part_flat[idx] = PARTS["hair"]
        # Anti-aliased outline of skull and hair shell; primitives are binary.
        alpha = np.maximum(np.where(np.isfinite(t_head), _soft((hw_head - np.abs(X)), px), 0),
                           np.where(np.isfinite(t_hair), _soft((hw_hair - np.abs(X)), px), 0))
        alpha = np.where(hit & (prim_id > 0) & ~use_hair, 1.0, alpha) * hit
        region = arr[v0:v1 + 1, u0:u1 + 1].reshape(-1, 3)
        region += alpha[:, None] * (colours - region)
        arr[v0:v1 + 1, u0:u1 + 1] = region.reshape(shp + (3,))
        depth[v0:v1 + 1, u0:u1 + 1] = np.where(hit, t_final, -np.inf).reshape(shp)
        if parts is not None:
            pr = parts[v0:v1 + 1, u0:u1 + 1].reshape(-1)
            pr[hit] = part_flat[hit]
            parts[v0:v1 + 1, u0:u1 + 1] = pr.reshape(shp)

        # Glasses: lenses (ray/plane), then the frame splatted with a depth test.
        if f.glasses == 1:
            zl = head.eye_z + 0.2
            cy = 0.02
            tl = (zl - X * sn) / cs
            xl = X * cs - tl * sn
            lens_a = np.zeros(len(X), np.float32)
            for sgn in (-1.0, 1.0):
                e = (np.abs(xl - sgn * 0.5) / f.g_rx) ** f.g_n + (np.abs(Y - cy) / f.g_ry) ** f.g_n
                lens_a = np.maximum(lens_a, _soft((1 - e) * f.g_ry / f.g_n * 2, px))
            vis = tl >= np.where(hit, t_final, -np.inf) - 0.02
            lens_a *= vis
            region = arr[v0:v1 + 1, u0:u1 + 1].reshape(-1, 3)
            if f.g_tint:
                region += (lens_a * f.g_alpha)[:, None] * (f.g_tint_col - region)
            else:
                glare = np.clip(np.sin((xl + Y) * 9.0), 0, 1) ** 6
                region += (lens_a * f.g_alpha * (0.5 + glare))[:, None] * (np.float32(245) - region)
            arr[v0:v1 + 1, u0:u1 + 1] = region.reshape(shp + (3,))
            pts = []
            for sgn in (-1.0, 1.0):
                ph = np.linspace(0, 2 * np.pi, 180, endpoint=False)
                cph, sph = np.cos(ph), np.sin(ph)
                gx = sgn * 0.5 + f.g_rx * np.sign(cph) * np.abs(cph) ** (2 / f.g_n)
                gy = cy + f.g_ry * np.sign(sph) * np.abs(sph) ** (2 / f.g_n)
                pts.append(np.stack([gx, gy, np.full_like(gx, zl)], -1))
                # Temple arm from the outer edge back to the ear.
                a_ear = float(np.interp(cy, head.ys, head.A)) + 0.03
                tt = np.linspace(0, 1, 60)[:, None]
                p0 = np.array([sgn * (0.5 + f.g_rx), cy - 0.04, zl])
                p1 = np.array([sgn * a_ear, cy + 0.04, -0.15])
                pts.append(p0 + (p1 - p0) * tt)
            xi = 0.5 - f.g_rx
            zb = max(zl, head.surface_z(0.0, cy - 0.06) + 0.16)
            tt = np.linspace(-1, 1, 50)
            arch = 1 - tt ** 2
            pts.append(np.stack([tt * xi, cy - 0.03 - 0.06 * arch, zl + (zb - zl) * arch], -1))
            P = np.concatenate(pts)
            uvp, zp = project(P)
            rad = max(0.7, f.g_w * s * cs ** 0.3)
            kr = int(math.ceil(rad + 1))
            oy, ox = np.mgrid[-kr:kr + 1, -kr:kr + 1]
            ox, oy = ox.ravel(), oy.ravel()
            U = np.rint(uvp[:, 0])[:, None].astype(int) + ox
            V = np.rint(uvp[:, 1])[:, None].astype(int) + oy
            dist = np.hypot(U - uvp[:, :1], V - uvp[:, 1:])
            cov = np.clip(rad + 0.5 - dist, 0, 1)
            inside = (U >= 0) & (U < w) & (V >= 0) & (V < h) & (cov > 0)
            Ui, Vi, ci = U[inside], V[inside], cov[inside]
            zi = np.broadcast_to(zp[:, None], U.shape)[inside]
            ok = zi >= depth[Vi, Ui] - 0.03
            fa = np.zeros((h, w), np.float32)
            np.maximum.at(fa, (Vi[ok], Ui[ok]), ci[ok].astype(np.float32))
            sel = fa > 0
            arr[sel] += fa[sel][:, None] * (f.g_col * (0.6 + 0.4 * f.ambient) - arr[sel])
            if parts is not None:
                parts[fa > 0.5] = PARTS["glasses"]

    # Whole-image effects: lighting gradient, colour cast, blur, noise.
    if not clean:
        ang = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.0, 0.45)
        gx = (np.arange(w, dtype=np.float32) / w - 0.5) * np.cos(ang)
        gy = (np.arange(h, dtype=np.float32) / h - 0.5) * np.sin(ang)
        arr *= (1.0 + amp * (gy[:, None] + gx[None, :]))[..., None]
        arr *= rng.uniform(0.9, 1.1, 3).astype(np.float32) * rng.uniform(0.8, 1.15)
    out = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
    if not clean:
        out = out.filter(ImageFilter.BoxBlur(rng.uniform(0.3, 0.9)))
        # Sensor-like noise: mostly luminance, a little chroma.
        sigma = rng.uniform(1.0, 7.0)
        noise = rng.standard_normal((h, w, 1), dtype=np.float32) * sigma
        chroma = rng.standard_normal((1, 1, 3), dtype=np.float32) * (0.15 * sigma)
        noise = noise + chroma * np.sign(noise)
        image = np.clip(np.asarray(out, np.float32) + noise + 0.5, 0, 255).astype(np.uint8)
    else:
        image = np.asarray(out).copy()

    info: dict[str, Any] = {
        "gender": f.gender, "smile": f.smile, "glasses": f.glasses, "pose": f.pose,
        "yaw_deg": round(f.yaw, 3), "roll_deg": round(f.roll, 3), "iod_px": round(s * cs, 3),
        "hair": f.hair_style, "beard": f.beard or "none", "mouth": f.mouth[0], "bangs": bool(f.bangs),
    }
    if expression is not None:
        info["expression"] = expression
    if return_parts:
        return image, landmarks, info, parts
    return image, landmarks, info


# ----------------------------------------------------------------------------- the dataset

# Image size and face placement per MTFL folder, from the real files' statistics.
FOLDER_STYLES = {
    "lfw_5590": {"sizes": [((250, 250), 1.0)], "iod": (37.0, 49.0),
                 "nose_x": (0.46, 0.54), "nose_y": (0.52, 0.58)},
    "net_7876": {"sizes": [((400, 400), 0.57), ((216, 160), 0.43)], "iod_frac": (0.17, 0.27),
                 "nose_x": (0.4, 0.6), "nose_y": (0.45, 0.58)},
    "AFLW": {"sizes": [((150, 150), 1.0)], "iod": (38.0, 52.0),
             "nose_x": (0.39, 0.61), "nose_y": (0.43, 0.6)},
}
_TRAIN_LFW_FRACTION = 4151 / 10000
_GRAY_FRACTION = 28 / 2995


_MAX_RENDER_IOD = 50.0


def _render_for_folder(rng: np.random.Generator, folder: str):
    """One image in the style of an MTFL folder. Large faces (the 400x400 net_7876 images, whose
    real counterparts are upscaled crops) are drawn at a smaller size and resized up (bicubic)."""
    st = FOLDER_STYLES[folder]
    sizes = st["sizes"]
    (h, w) = sizes[int(rng.choice(len(sizes), p=[p for _, p in sizes]))][0]
    iod = rng.uniform(*st["iod"]) if "iod" in st else rng.uniform(*st["iod_frac"]) * w
    nose = (rng.uniform(*st["nose_x"]) * w, rng.uniform(*st["nose_y"]) * h)
    k = iod / _MAX_RENDER_IOD
    if k <= 1.0:
        return render_face(rng, (h, w), iod=iod, nose=nose)
    hr, wr = max(8, round(h / k)), max(8, round(w / k))
    sx, sy = w / wr, h / hr
    small, marks, info = render_face(rng, (hr, wr), iod=iod / sx,
                                     nose=((nose[0] + 0.5) / sx - 0.5, (nose[1] + 0.5) / sy - 0.5))
    image = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))
    marks = (marks + 0.5) * np.array([sx, sy]) - 0.5  # PIL maps pixel edges onto pixel edges
    info["iod_px"] = round(info["iod_px"] * sx, 3)
    return image, marks, info


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _job(args):
    root, rel, folder, rng, gray = args
    image, marks, info = _render_for_folder(rng, folder)
    pil = Image.fromarray(image)
    if gray:
        pil = pil.convert("L")
    path = Path(root) / rel.replace("\\", "/")
    tmp = path.with_name(path.name + ".tmp")
    pil.save(tmp, format="JPEG", quality=90)
    os.replace(tmp, path)
    return rel, marks, info


def _format_line(rel: str, marks: np.ndarray, info: dict) -> str:
    coords = " ".join("%.6f" % v for v in list(marks[:, 0]) + list(marks[:, 1]))
    return f"{rel} {coords} {info['gender']} {info['smile']} {info['glasses']} {info['pose']}"


def _list_text(lines: list[str]) -> str:
    """MTFL list-file text: CRLF ends, a leading space on later lines, a last line of one space."""
    return "".join(("" if i == 0 else " ") + line + "\r\n" for i, line in enumerate(lines)) + " "


_README = """\
SYNTHETIC DEMO DATA - NOT REAL FACES

Every image in this folder was drawn by a program (kerasface.data.synthetic, seed {seed}).
No image shows, or is derived from, a real person, and none may be presented as real data.
Results obtained here show that a pipeline runs and learns; they say nothing about real faces.

The layout and the list files copy the format of MTFL (Zhang et al., ECCV 2014) with its quirks,
so the MTFL reader can be exercised without the real dataset:
  training.txt  {train} lines (lfw_5590\\ and net_7876\\ paths)
  testing.txt   {test} lines (AFLW/ paths)
Line: path x1..x5 y1..y5 gender(1 male, 2 female) smile(1 yes, 2 no) glasses(1 yes, 2 no)
      pose(1 left profile, 2 left, 3 frontal, 4 right, 5 right profile)
Points: left eye, right eye, nose tip, left mouth corner, right mouth corner (0-based pixels).
Regenerate: python -m kerasface.data.synthetic --out DIR --train {train} --test {test} --seed {seed}
"""


def write_demo_mtfl(root: str | os.PathLike, num_train: int = 1000, num_test: int = 300,
                    seed: int = 0, extra_unlisted: int = 0, workers: int | None = None,
                    progress: bool | None = None) -> Path:
    """Render the synthetic MTFL-format demo dataset under `root` and return the root path.

    Deterministic: the same arguments give byte-identical list files and images (one child
    generator per image, so the result does not depend on `workers`). `extra_unlisted` adds that
    many images that no list names (spread over the three folders, as the real folders hold more
    files than the lists). `workers`: processes (default: 1 up to 200 images, else all cores,
    in a fresh interpreter when TensorFlow is loaded); `progress`: a progress bar (default: when
    stderr is a terminal).
    """
    root = Path(root)
    for folder in FOLDER_STYLES:
        (root / folder).mkdir(parents=True, exist_ok=True)
    top = np.random.default_rng(seed)
    plan_rng, train_parent, test_parent, extra_parent = top.spawn(4)
    train_rngs = train_parent.spawn(num_train)
    test_rngs = test_parent.spawn(num_test)
    extra_rngs = extra_parent.spawn(extra_unlisted)
    in_lfw = plan_rng.random(num_train) < _TRAIN_LFW_FRACTION
    n_gray = int(round(num_test * _GRAY_FRACTION)) or (1 if num_test >= 10 else 0)
    gray = set(plan_rng.choice(num_test, n_gray, replace=False).tolist()) if n_gray else set()

    jobs = []
    for i in range(num_train):
        folder = "lfw_5590" if in_lfw[i] else "net_7876"
        jobs.append((str(root), f"{folder}\\synth_{i + 1:06d}.jpg", folder, train_rngs[i], False))
    for i in range(num_test):
        jobs.append((str(root), f"AFLW/synth_{i + 1:06d}.jpg", "AFLW", test_rngs[i], i in gray))
    folders = list(FOLDER_STYLES)
    for j in range(extra_unlisted):
        folder = folders[j % 3]
        jobs.append((str(root), f"{folder}/unlisted_{j + 1:06d}.jpg", folder, extra_rngs[j], False))

    cores = os.cpu_count() or 1
    if workers is None and len(jobs) > 200 and cores > 1 and "tensorflow" in sys.modules:
        # TensorFlow's threads make forking this process unsafe, and spawned workers would import
        # the caller's main module (TensorFlow included, seconds each): a fresh interpreter without
        # TensorFlow renders the same bytes and forks its own workers.
        package_parent = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
        subprocess.run([sys.executable, "-m", "kerasface.data.synthetic", "--out", str(root), "--train", str(num_train),
                        "--test", str(num_test), "--seed", str(seed), "--extra", str(extra_unlisted),
                        "--workers", str(cores)], check=True, env=env, stdout=subprocess.DEVNULL)
        return root
    if workers is None:
        workers = 1 if len(jobs) <= 200 else cores
    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="rendering synthetic faces", unit="img")
        except ImportError:  # pragma: no cover
            bar = None
    results = []
    if workers > 1 and len(jobs) > 1:
        linux = sys.platform.startswith("linux")
        method = "fork" if linux and "tensorflow" not in sys.modules else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            for r in pool.imap(_job, jobs, chunksize=8):
                results.append(r)
                if bar is not None:
                    bar.update(1)
    else:
        for jb in jobs:
            results.append(_job(jb))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()

    train_lines = [_format_line(*r) for r in results[:num_train]]
    test_lines = [_format_line(*r) for r in results[num_train:num_train + num_test]]
    _atomic_write_bytes(root / "training.txt", _list_text(train_lines).encode("ascii"))
    _atomic_write_bytes(root / "testing.txt", _list_text(test_lines).encode("ascii"))
    _atomic_write_bytes(root / "DEMO_README.txt",
                        _README.format(seed=seed, train=num_train, test=num_test).encode("ascii"))
    return root


# ----------------------------------------------------------------------------- a picture


def sample_grid(path: str | os.PathLike, n: int = 24, seed: int = 0, cell: int = 160, cols: int = 6,
                marks: bool = True) -> Path:
    """Save a grid of rendered faces (landmarks as dots, labels as text) to look at."""
    rngs = np.random.default_rng(seed).spawn(n)
    rows = (n + cols - 1) // cols
    grid = Image.new("RGB", (cols * cell, rows * (cell + 14)), (255, 255, 255))
    for i, rng in enumerate(rngs):
        folder = list(FOLDER_STYLES)[i % 3]
        image, lm, info = _render_for_folder(rng, folder)
        im = Image.fromarray(image)
        k = cell / max(im.size)
        im = im.resize((max(1, round(im.width * k)), max(1, round(im.height * k))), Image.BILINEAR)
        d = ImageDraw.Draw(im)
        if marks:
            for j, (x, y) in enumerate(lm * k):
                col = ((0, 255, 0), (0, 255, 0), (255, 0, 0), (0, 128, 255), (0, 128, 255))[j]
                d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=col)
        r, cl = divmod(i, cols)
        grid.paste(im, (cl * cell, r * (cell + 14)))
        text = (f"{'M' if info['gender'] == 1 else 'F'} {'smile' if info['smile'] == 1 else '-'} "
                f"{'gl' if info['glasses'] == 1 else '-'} p{info['pose']}")
        ImageDraw.Draw(grid).text((cl * cell + 2, r * (cell + 14) + cell), text, fill=(0, 0, 0))
    path = Path(path)
    grid.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m kerasface.data.synthetic",
        description="Write the SYNTHETIC MTFL-format demo dataset (drawn faces, not real people).")
    p.add_argument("--out", required=True, help="folder to write (created if missing)")
    p.add_argument("--train", type=int, default=1000, help="lines in training.txt (default 1000)")
    p.add_argument("--test", type=int, default=300, help="lines in testing.txt (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extra", type=int, default=0, help="extra images that no list names")
    p.add_argument("--workers", type=int, default=None,
                   help="processes (default: all cores above 200 images)")
    p.add_argument("--grid", default=None, help="also save a PNG grid of sample faces here")
    a = p.parse_args(argv)
    import time

    t0 = time.perf_counter()
    root = write_demo_mtfl(a.out, a.train, a.test, a.seed, a.extra, workers=a.workers)
    dt = time.perf_counter() - t0
    total = a.train + a.test + a.extra
    print(f"wrote synthetic MTFL demo data (not real faces) to {root.resolve()}: "
          f"{a.train} training + {a.test} testing images"
          + (f" + {a.extra} unlisted" if a.extra else "")
          + f", seed {a.seed}, {dt:.1f} s ({total / max(dt, 1e-9):.0f} images/s)")
    if a.grid:
        print(f"sample grid: {sample_grid(a.grid, seed=a.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
