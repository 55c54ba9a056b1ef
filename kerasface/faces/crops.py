"""Named crop schemes: image + five landmarks in, face crop + landmarks in crop pixels out.

Every converter and every prediction goes through `apply_crop`, so a model sees at inference
exactly the crop it was trained on. A crop that falls outside the image is zero-padded.
Landmarks are (5, 2) arrays of (x, y) in pixels, in the order left eye, right eye, nose,
left mouth corner, right mouth corner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from kerasface.registry import Registry

CropFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class CropScheme:
    name: str
    size: tuple[int, int] | None  # (height, width); None keeps the source size
    grayscale: bool
    fn: CropFn
    description: str = ""
    uses_box: bool = False  # fn accepts box=(x, y, w, h): a detector box replacing the landmarks'
    # TF twin: (5, 2) landmarks -> the (2, 3) image-to-crop map, so an exported graph can cut this
    # crop from the whole photo (`crop_tf`); None for schemes without one
    in_graph: Callable | None = None


CROPS: Registry[CropScheme] = Registry("crop scheme")


def register_crop(
    name: str,
    size: tuple[int, int] | None,
    grayscale: bool = False,
    description: str = "",
    uses_box: bool = False,
    in_graph: Callable | None = None,
):
    def add(fn: CropFn) -> CropFn:
        doc = description or (fn.__doc__ or "").strip()
        CROPS.register(name)(CropScheme(name, size, grayscale, fn, doc, uses_box, in_graph))
        return fn

    return add


def crop_box(image: np.ndarray, left: int, top: int, width: int, height: int) -> np.ndarray:
    """Cut [top:top+height, left:left+width], zero-padding whatever lies outside the image."""
    out = np.zeros((height, width) + image.shape[2:], dtype=image.dtype)
    h, w = image.shape[:2]
    src_x0, src_y0 = max(left, 0), max(top, 0)
    src_x1, src_y1 = min(left + width, w), min(top + height, h)
    if src_x1 > src_x0 and src_y1 > src_y0:
        out[src_y0 - top : src_y1 - top, src_x0 - left : src_x1 - left] = image[src_y0:src_y1, src_x0:src_x1]
    return out


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as tf.image.rgb_to_grayscale computes it; keeps a trailing channel axis."""
    if image.ndim == 3 and image.shape[2] == 1:
        return image
    gray = image[..., :3].astype(np.float32) @ np.array([0.2989, 0.5870, 0.1140], np.float32)
    return np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None]


def apply_crop(
    name: str, image: np.ndarray, landmarks: np.ndarray, box=None
) -> tuple[np.ndarray, np.ndarray]:
    """Crop `image` (uint8 HxWxC) by the scheme `name` from its five landmarks ((5, 2) x, y).

    box: optional (x, y, width, height) detector box; schemes that frame the face by a box
    (`uses_box`) use it instead of the box derived from the landmarks; others ignore it.
    Returns (crop, landmarks in crop pixels float32).
    """
    scheme = CROPS.get(name)
    landmarks = np.asarray(landmarks, np.float32)
    if box is not None and scheme.uses_box:
        cropped, points = scheme.fn(image, landmarks, box=box)
    else:
        cropped, points = scheme.fn(image, landmarks)
    if scheme.grayscale:
        cropped = to_grayscale(cropped)
    if scheme.size is not None and cropped.shape[:2] != scheme.size:
        raise AssertionError(f"crop {name} returned {cropped.shape[:2]}, expected {scheme.size}")
    return cropped, points.astype(np.float32)


@register_crop("original", None, description="the image as stored in the dataset, uncropped")
def original(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return image, landmarks


@register_crop("nose_centred_150", (150, 150))
def nose_centred_150(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """canal_mtfl: a 150x150 window centred on the nose landmark, at the image's own scale."""
    nose_x, nose_y = landmarks[2]
    left, top = int(round(nose_x)) - 75, int(round(nose_y)) - 75
    return crop_box(image, left, top, 150, 150), landmarks - np.array([left, top], np.float32)


# ------------------------------------------------------------------------------------------------
# Shared geometry for the schemes below.
#
# Every scheme below is one affine map from image pixels to crop pixels (a similarity for the
# aligned ones, a scale + shift for the unaligned ones), applied by `align.warp_affine_np`:
# bilinear sampling, zero outside the image (so a face at the border is padded, never an error),
# and area pre-shrinking when the face is shrunk by more than 2x.
# ------------------------------------------------------------------------------------------------

from kerasface.faces import align as _align  # noqa: E402  (kept below the original schemes)

Box = tuple[float, float, float, float]  # x, y, width, height in pixels
CropResult = tuple[np.ndarray, np.ndarray]  # crop, landmarks in crop pixels


def _extent_box(x0, y0, x1, y1, maximum):
    """The face box of the landmarks' extent (see face_box_from_landmarks); scalar arithmetic only,
    so NumPy floats and TF scalars go through the same lines (`maximum`: max or tf.maximum)."""
    u = maximum(maximum(x1 - x0, y1 - y0), 1e-3)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 - 0.06 * u
    w, h = 1.95 * u, 2.5 * u
    return cx - w / 2.0, cy - h / 2.0, w, h


def face_box_from_landmarks(landmarks: np.ndarray) -> Box:
    """An (x, y, width, height) face box from the five landmarks, shaped like MTCNN's boxes.

    With u = the larger side of the landmarks' extent (about the eye-to-mouth distance on a
    frontal face) and (cx, cy) its centre, the box is 1.95u wide and 2.5u high, centred at
    (cx, cy - 0.06u): from the forehead to the chin and cheek to cheek. (Fitted on MTCNN's box for
    skimage's astronaut; its box [181.6, 63.7, 83.0, 107.4] vs this box [181.1, 63.1, 85.1, 109.1].)
    """
    p = np.asarray(landmarks, np.float64)
    (x0, y0), (x1, y1) = p.min(0), p.max(0)
    return tuple(float(v) for v in _extent_box(x0, y0, x1, y1, max))


def _face_box(landmarks: np.ndarray, box) -> Box:
    if box is None:
        return face_box_from_landmarks(landmarks)
    x, y, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0):
        raise ValueError(f"face box must have a positive width and height, got {box}")
    return (x, y, w, h)


@dataclass(frozen=True)
class BoxFraming:
    """An unaligned square crop of side `side_factor * s` (s = the face box's larger side),
    centred on the face box horizontally; vertically `anchor` is "centre" (window centre = box
    centre + offset*s), "bottom" (window bottom = box bottom + offset*s) or "top" (window top = box
    top + offset*s); resampled to out x out. One map (scale + shift) from image to crop pixels."""

    out: int
    side_factor: float
    anchor: str
    offset: float

    def _matrix_rows(self, x, y, w, h, maximum):
        s = maximum(w, h)
        side = self.side_factor * s
        left = x + w / 2.0 - side / 2.0
        if self.anchor == "centre":
            top = y + h / 2.0 + self.offset * s - side / 2.0
        elif self.anchor == "bottom":
            top = y + h + self.offset * s - side
        elif self.anchor == "top":
            top = y + self.offset * s
        else:  # pragma: no cover - programming error
            raise ValueError(self.anchor)
        scale = self.out / side
        # pixel centre p (edge coordinate p + 0.5) -> crop centre q: q + 0.5 = (p + 0.5 - left) * scale
        return scale, (0.5 - left) * scale - 0.5, (0.5 - top) * scale - 0.5

    def crop(self, image, landmarks, box=None) -> CropResult:
        scale, shift_x, shift_y = self._matrix_rows(*_face_box(landmarks, box), max)
        matrix = np.array([[scale, 0.0, shift_x], [0.0, scale, shift_y]], np.float64)
        crop = _align.warp_affine_np(image, matrix, (self.out, self.out))
        return crop, _align.transform_points(matrix, landmarks)

    def matrix_tf(self, landmarks):
        """The same map from (5, 2) landmarks in a TF graph (the face box from the landmarks)."""
        import tensorflow as tf

        p = tf.cast(landmarks, tf.float32)
        x0, y0 = tf.unstack(tf.reduce_min(p, 0))
        x1, y1 = tf.unstack(tf.reduce_max(p, 0))
        scale, shift_x, shift_y = self._matrix_rows(*_extent_box(x0, y0, x1, y1, tf.maximum), tf.maximum)
        zero = tf.zeros_like(scale)
        return tf.stack([tf.stack([scale, zero, shift_x]), tf.stack([zero, scale, shift_y])])


@dataclass(frozen=True)
class AlignedFraming:
    """An aligned crop: the similarity transform of the five points onto the SphereFace template
    at `zoom`, with the reference-frame point `centre` at the middle of the output."""

    size: tuple[int, int]
    zoom: float
    centre: tuple[float, float]

    def template(self) -> np.ndarray:
        return _align.template(self.size, zoom=self.zoom, centre=self.centre)

    def crop(self, image, landmarks) -> CropResult:
        return _align.align_np(image, landmarks, self.size, self.template())

    def matrix_tf(self, landmarks):
        return _align.similarity_transform_tf(landmarks, self.template())


def crop_tf(name: str, image, landmarks):
    """TF twin of `apply_crop` without a box (landmarks only), for exported graphs that cut the
    crop from the whole photo: image HxWxC (uint8 or float in [0, 255]), landmarks (5, 2) ->
    float32 crop rounded to integers as the uint8 crops of the converter are. Schemes without
    an in-graph twin (`CropScheme.in_graph`) raise."""
    import tensorflow as tf

    scheme = CROPS.get(name)
    if scheme.in_graph is None or scheme.size is None:
        raise ValueError(f"crop {name}: no in-graph version (CropScheme.in_graph); crops that have one: "
                         f"{', '.join(n for n in CROPS.names() if CROPS.get(n).in_graph is not None)}")
    out = _align.warp_affine_tf(image, scheme.in_graph(landmarks), scheme.size)
    out = tf.clip_by_value(tf.round(out), 0.0, 255.0)
    if scheme.grayscale:
        out = tf.round(tf.image.rgb_to_grayscale(out))
    return out


#: Reference-frame point (96x112 SphereFace units) at the middle of the face, forehead to chin.
FACE_CENTRE = (48.0, 69.0)
#: Reference-frame point between the mouth and the cheeks.
MOUTH_CHEEK_CENTRE = (48.0, 92.0)

BKNET_48 = BoxFraming(48, 1.0, "centre", 0.0)
GNET_SCHEME = {
    1: AlignedFraming((224, 224), 0.75, FACE_CENTRE),
    2: BoxFraming(224, 1.3, "centre", 0.0),
    3: BoxFraming(224, 1.15, "bottom", 0.03),
    4: BoxFraming(224, 1.7, "top", -0.15),
    5: AlignedFraming((224, 224), 1.6, MOUTH_CHEEK_CENTRE),
}
WANG_112x96 = AlignedFraming((112, 96), 1.0, _align.REFERENCE_CENTRE)
VGGFACE_224 = GNET_SCHEME[1]


@register_crop("bknet_48_gray", (48, 48), grayscale=True, uses_box=True, in_graph=BKNET_48.matrix_tf)
def bknet_48_gray(image: np.ndarray, landmarks: np.ndarray, box=None) -> CropResult:
    """sang_bknet: the MTCNN face box made square (side = its larger side, same centre), unaligned,
    resized to 48x48 and converted to grayscale (ITU-R 601 luma)."""
    return BKNET_48.crop(image, landmarks, box)


@register_crop("gnet_aligned_face", (224, 224), in_graph=GNET_SCHEME[1].matrix_tf)
def gnet_aligned_face(image: np.ndarray, landmarks: np.ndarray) -> CropResult:
    """gnet_snet scheme 1 (Fig. 3b): whole face, aligned by a similarity transform of the five
    points onto the SphereFace template at zoom 0.75 with the face's middle (reference point
    (48, 69)) at the crop centre: eyes at y~0.38 and mouth at y~0.65 of the height, the whole head
    from the top of the forehead to below the chin, 224x224 RGB. Same geometry as `vggface_224`."""
    return GNET_SCHEME[1].crop(image, landmarks)


@register_crop("gnet_unaligned_face", (224, 224), uses_box=True, in_graph=GNET_SCHEME[2].matrix_tf)
def gnet_unaligned_face(image: np.ndarray, landmarks: np.ndarray, box=None) -> CropResult:
    """gnet_snet scheme 2 (Fig. 3c): whole face, not aligned (no rotation): a square of 1.3x the
    face box's larger side s, centred on the face box, resized to 224x224 RGB. The face box is the
    detector's if given, else `face_box_from_landmarks`. Frames the face like scheme 1."""
    return GNET_SCHEME[2].crop(image, landmarks, box)


@register_crop("gnet_unaligned_no_neck", (224, 224), uses_box=True, in_graph=GNET_SCHEME[3].matrix_tf)
def gnet_unaligned_no_neck(image: np.ndarray, landmarks: np.ndarray, box=None) -> CropResult:
    """gnet_snet scheme 3 (Fig. 3d): face without neck, not aligned: a square of 1.15s whose bottom
    edge is 0.03s below the face box's bottom (the chin), centred horizontally on the face box;
    the top therefore includes the hair line. 224x224 RGB."""
    return GNET_SCHEME[3].crop(image, landmarks, box)


@register_crop("gnet_unaligned_with_neck", (224, 224), uses_box=True, in_graph=GNET_SCHEME[4].matrix_tf)
def gnet_unaligned_with_neck(image: np.ndarray, landmarks: np.ndarray, box=None) -> CropResult:
    """gnet_snet scheme 4 (Fig. 3e): face with neck, not aligned: a square of 1.7s whose top edge
    is 0.15s above the face box's top, centred horizontally; it reaches 0.55s below the chin
    (neck and top of the shoulders). 224x224 RGB."""
    return GNET_SCHEME[4].crop(image, landmarks, box)


@register_crop("gnet_aligned_mouth_cheek", (224, 224), in_graph=GNET_SCHEME[5].matrix_tf)
def gnet_aligned_mouth_cheek(image: np.ndarray, landmarks: np.ndarray) -> CropResult:
    """gnet_snet scheme 5 (Fig. 3f): mouth and cheek region, aligned: the SphereFace template at
    zoom 1.6 with reference point (48, 92) (the mouth) at the crop centre; the crop spans
    reference x 13..83 and y 57..127, i.e. from just below the eyes to below the chin and cheek
    to cheek, mouth corners at x~0.29 and ~0.71 of the width. 224x224 RGB."""
    return GNET_SCHEME[5].crop(image, landmarks)


@register_crop("wang_112x96", (112, 96), in_graph=WANG_112x96.matrix_tf)
def wang_112x96(image: np.ndarray, landmarks: np.ndarray) -> CropResult:
    """wang_joint: 112 high x 96 wide RGB, aligned by a similarity transform onto the SphereFace /
    CenterLoss template exactly (`align.REFERENCE_112x96`), as the paper's [44] code does."""
    return WANG_112x96.crop(image, landmarks)


@register_crop("vggface_224", (224, 224), in_graph=VGGFACE_224.matrix_tf)
def vggface_224(image: np.ndarray, landmarks: np.ndarray) -> CropResult:
    """VGG-Face and flickr_depth: 224x224 RGB aligned whole face, the same geometry as
    `gnet_aligned_face` (SphereFace template at zoom 0.75, face middle (48, 69) at the centre),
    a loose crop like VGG-Face's training faces: the whole head with a margin."""
    return VGGFACE_224.crop(image, landmarks)


# ------------------------------------------------------------------------------------------------
# Images that are already face crops (FER2013's 48x48 faces, the 64x64 GENKI-4K copy): no
# landmarks, no detection; the whole image is the face, stored at a scheme's size and colour.
# ------------------------------------------------------------------------------------------------


def whole_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The whole image scaled to `size` (height, width): area averaging when shrinking, bilinear
    when enlarging (edges replicated, never padded); the same array when already that size."""
    import cv2

    height, width = int(size[0]), int(size[1])
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out[..., None] if out.ndim == 2 and image.ndim == 3 else out


def face_crop_as(name: str, image: np.ndarray) -> np.ndarray:
    """An image that is already a face crop (uint8 HxW, HxWx1 or HxWx3), stored as the scheme
    `name` stores faces: in its colour (grayscale by ITU-R 601 luma, or gray repeated to RGB) and,
    whole, at its size (`whole_image`; a scheme without a size keeps the image's). A 48x48 gray
    face and a 48x48 gray scheme (bknet_48_gray) keep every pixel."""
    scheme = CROPS.get(name)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if scheme.grayscale:
        image = to_grayscale(image)
    elif image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if scheme.size is not None:
        image = whole_image(image, scheme.size)
    return np.ascontiguousarray(image)
