"""kerasface.faces: detection, alignment, crop schemes, robust loading and the CLI.

Everything runs on a real photograph that ships offline (skimage.data.astronaut) and on files the
tests write themselves; one MTCNN detector is shared by the whole module (it is one per process).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("mtcnn")
skdata = pytest.importorskip("skimage.data")

from PIL import Image  # noqa: E402

from kerasface.faces import (  # noqa: E402
    CROPS,
    LANDMARK_NAMES,
    Face,
    ImageError,
    align_np,
    align_tf,
    apply_crop,
    detect_and_crop,
    detect_faces,
    detect_faces_batch,
    draw_faces,
    face_box_from_landmarks,
    load_image,
    pick_face,
    select_faces,
    similarity_transform,
    similarity_transform_tf,
    template,
    to_rgb_uint8,
)
from kerasface.faces.detect import LANDMARK_COLOURS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCHEMES = [name for name in CROPS.names() if name != "original"]


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def astronaut_faces(astronaut) -> list[Face]:
    return detect_faces(astronaut)


@pytest.fixture(scope="module")
def face(astronaut_faces) -> Face:
    assert len(astronaut_faces) == 1
    return astronaut_faces[0]


@pytest.fixture(scope="module")
def no_face_image() -> np.ndarray:
    """A non-face patch of LFW's subset (its second hundred are not faces), as 256x256 RGB."""
    patch = (skdata.lfw_subset()[150] * 255).round().astype(np.uint8)
    big = cv2.resize(patch, (256, 256), interpolation=cv2.INTER_CUBIC)
    return np.repeat(big[..., None], 3, axis=2)


def _is_json_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_json_plain(v) for v in value)
    return type(value) in (str, int, float, bool) or value is None


# ------------------------------------------------------------------------------------------------
# detection
# ------------------------------------------------------------------------------------------------


def test_astronaut_one_face_with_ordered_landmarks(astronaut_faces):
    assert len(astronaut_faces) == 1
    f = astronaut_faces[0]
    assert f.score > 0.95
    x, y, w, h = f.box
    assert 60 < w < 130 and 80 < h < 150  # her face is about 85x110 pixels
    pts = f.points
    assert pts.shape == (5, 2) and pts.dtype == np.float32
    inside = (pts[:, 0] >= x) & (pts[:, 0] <= x + w) & (pts[:, 1] >= y) & (pts[:, 1] <= y + h)
    assert inside.all(), (f.box, pts)
    le, re, nose, ml, mr = pts
    assert le[0] < nose[0] < re[0]  # left eye is on the image's left
    assert ml[0] < mr[0]
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])  # eyes above nose above mouth


def test_face_to_dict_is_json_safe(face):
    d = face.to_dict()
    assert _is_json_plain(d)
    assert list(d["landmarks"]) == list(LANDMARK_NAMES)
    assert len(d["box"]) == 4 and isinstance(d["score"], float)
    json.dumps(d)
    back = Face.from_dict(d)
    np.testing.assert_allclose(back.points, face.points, atol=0.01)


def test_no_face_image_gives_empty_list(no_face_image):
    assert detect_faces(no_face_image) == []
    assert detect_faces(np.zeros((64, 64, 3), np.uint8)) == []
    assert detect_faces(np.zeros((1, 1, 3), np.uint8)) == []  # smaller than MTCNN's 12-pixel window


def test_batch_matches_one_by_one(astronaut, astronaut_faces, no_face_image):
    no_face_512 = cv2.resize(no_face_image, (512, 512))
    batch = detect_faces_batch([no_face_512, astronaut, astronaut[:, ::-1]])
    assert [len(b) for b in batch] == [0, 1, 1]
    np.testing.assert_allclose(batch[1][0].box, astronaut_faces[0].box, atol=1e-3)
    np.testing.assert_allclose(batch[1][0].points, astronaut_faces[0].points, atol=1e-3)
    # the mirrored photo: the face moves to the mirrored place
    mirrored = batch[2][0]
    assert abs(mirrored.centre[0] - (511 - astronaut_faces[0].centre[0])) < 6


def test_detector_settings_and_inputs(astronaut):
    assert detect_faces(astronaut, score_threshold=0.99999999) == []  # nobody is that sure
    assert detect_faces(astronaut, min_face_size=600) == []  # no 600-px face fits in 512x512
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)  # HxW arrays are accepted
    assert len(detect_faces(gray)) == 1
    assert len(detect_faces(astronaut.astype(np.float32) / 255.0)) == 1  # floats in [0, 1]


# her face is ~110 px; min_face_size sets the first pyramid level, not a hard size filter, so
# MTCNN still refines a 200-px window onto it (as the original MTCNN does)
@pytest.mark.parametrize("min_face_size,found", [(5, 1), (12, 1), (20, 1), (110, 1), (200, 1),
                                                 (600, 0)])
def test_detection_never_breaks_on_image_or_face_size(astronaut, min_face_size, found):
    # every image size from 1x1 to the full photo, square and thin: a list (maybe empty), no error
    # (mtcnn 1.0's own pyramid fed P-Net levels under 12 px, which Keras >= 3.15 rejects)
    sizes = [(1, 1), (11, 11), (12, 12), (13, 40), (40, 13), (64, 64), (199, 201), (512, 512)]
    for h, w in sizes:
        image = cv2.resize(astronaut, (w, h), interpolation=cv2.INTER_AREA)
        faces = detect_faces(image, min_face_size=min_face_size)
        assert isinstance(faces, list), (h, w)
        for one in faces:
            assert 0 <= one.box[0] <= w and 0 <= one.box[1] <= h
    assert len(detect_faces(astronaut, min_face_size=min_face_size)) == found


def test_pyramid_levels_hold_pnet_window():
    from kerasface.faces.detect import pyramid_scales

    for side in (1, 11, 12, 13, 50, 512, 3000):
        for mfs in (5, 12, 20, 200, 2999):
            scales = pyramid_scales(side, side + 7, mfs)
            assert all(np.floor(side * scales) >= 12), (side, mfs)
            if len(scales):
                assert scales[0] == pytest.approx(12 / mfs)  # MTCNN's first level
                assert np.floor(side * scales[-1] * 0.709) < 12  # and no level is missing
            else:
                assert side * 12 / mfs < 12
    assert len(pyramid_scales(512, 512, 20)) == 10  # what mtcnn itself uses for this photo


def test_face_box_from_landmarks_matches_detector_box(face):
    def iou(a, b):
        ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
        iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
        return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)

    assert iou(face_box_from_landmarks(face.points), face.box) > 0.85


# ------------------------------------------------------------------------------------------------
# which face
# ------------------------------------------------------------------------------------------------


def _fake(x, y, w, h, score=0.9) -> Face:
    cx, cy = x + w / 2, y + h / 2
    marks = (
        (cx - w / 4, cy - h / 6),
        (cx + w / 4, cy - h / 6),
        (cx, cy),
        (cx - w / 5, cy + h / 4),
        (cx + w / 5, cy + h / 4),
    )
    return Face((float(x), float(y), float(w), float(h)), score, marks)


def test_face_rules():
    small_centre = _fake(290, 190, 20, 20, 0.95)
    big_corner = _fake(0, 0, 120, 150, 0.90)
    right = _fake(480, 300, 60, 70, 0.99)
    faces = [small_centre, big_corner, right]
    shape = (400, 600, 3)
    assert select_faces(faces, "all") == [right, small_centre, big_corner]
    assert pick_face(faces, "centre", image_shape=shape) is small_centre
    assert pick_face(faces, "center", image_shape=shape) is small_centre
    assert pick_face(faces, "largest") is big_corner
    assert pick_face(faces, "box", box=(470, 310, 70, 60)) is right  # best overlap
    assert pick_face(faces, "box", box=(560, 0, 30, 30)) is right  # no overlap: nearest centre
    assert pick_face([], "centre", image_shape=shape) is None
    with pytest.raises(ValueError, match="known: all, centre, largest, box"):
        pick_face(faces, "biggest")
    with pytest.raises(ValueError, match="needs box"):
        pick_face(faces, "box")


def test_detect_and_crop(astronaut, no_face_image, face):
    crop, points = detect_and_crop(astronaut, "wang_112x96")
    assert crop.shape == (112, 96, 3) and crop.dtype == np.uint8 and points.shape == (5, 2)
    # GNet/SNet training: the face closest to the dataset's box
    crop, points, picked = detect_and_crop(
        astronaut, "gnet_aligned_face", rule="box", box=(180, 60, 90, 110), return_face=True
    )
    assert crop.shape == (224, 224, 3)
    np.testing.assert_allclose(picked.points, face.points, atol=1e-3)
    assert detect_and_crop(no_face_image, "bknet_48_gray") is None
    with pytest.raises(KeyError, match="known:"):
        detect_and_crop(astronaut, "no_such_scheme")


# ------------------------------------------------------------------------------------------------
# alignment
# ------------------------------------------------------------------------------------------------


def test_similarity_transform_recovers_a_known_similarity():
    src = template((112, 96)).astype(np.float64)
    angle, scale, shift = math.radians(23.0), 1.7, np.array([31.0, -12.5])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-7)
    np.testing.assert_allclose(similarity_transform_tf(src, dst).numpy(), m, atol=1e-3)
    # a mirrored point set is fitted by a rotation, never a reflection
    mirrored = similarity_transform(src, src * [-1.0, 1.0])
    assert np.linalg.det(mirrored[:, :2]) > 0


def test_template_sizes():
    np.testing.assert_allclose(template((112, 96))[0], [30.2946, 51.6963], atol=1e-4)  # SphereFace
    np.testing.assert_allclose(template((112, 112))[0], [38.2946, 51.6963], atol=1e-4)  # ArcFace
    np.testing.assert_allclose(template((224, 224)), template((112, 112)) * 2, atol=1e-4)


@pytest.mark.parametrize("size", [(112, 96), (224, 224), (60, 60), (48, 48)])
def test_alignment_puts_the_eyes_on_the_template(astronaut, face, size):
    dst = template(size)
    aligned, points = align_np(astronaut, face.points, size)
    assert aligned.shape == size + (3,)
    eye_error = np.hypot(*(points[:2] - dst[:2]).T)
    # 5-point least squares leaves her broad smile's residual partly on the eyes: 2.4-2.5 px at
    # 112 rows, i.e. 2.2% of the crop height; within 2 px at the small BKNet / TCDCN sizes.
    assert eye_error.max() < max(2.0, 0.025 * size[0]), eye_error
    if size[0] <= 60:
        assert eye_error.max() < 2.0
    # the pixels moved too: the detector, run again on the aligned face, finds the eyes there
    if size[0] >= 112:
        again = detect_faces(aligned)
        assert len(again) == 1
        assert np.hypot(*(again[0].points[:2] - dst[:2]).T).max() < 0.035 * size[0]


def test_tf_alignment_matches_numpy_reference(astronaut, face):
    import tensorflow as tf

    for size in [(112, 96), (224, 224), (60, 60), (48, 48)]:
        ref, ref_pts = align_np(astronaut, face.points, size)
        out, pts = align_tf(astronaut, face.points, size)
        assert out.dtype == tf.uint8 and tuple(out.shape) == size + (3,)
        diff = np.abs(out.numpy().astype(np.int32) - ref.astype(np.int32))
        assert diff.mean() < 1.0 and diff.max() <= 2, (size, diff.mean(), diff.max())
        np.testing.assert_allclose(pts.numpy(), ref_pts, atol=1e-3)
    # a big face, shrunk more than 2x: both pre-shrink by area averaging and still agree
    big = cv2.resize(astronaut, (1536, 1536), interpolation=cv2.INTER_LINEAR)
    big_points = (face.points + 0.5) * 3 - 0.5
    ref, _ = align_np(big, big_points, (48, 48))
    out, _ = align_tf(big, big_points, (48, 48))
    assert np.abs(out.numpy().astype(np.int32) - ref.astype(np.int32)).mean() < 1.0
    small_ref, _ = align_np(astronaut, face.points, (48, 48))
    assert np.abs(ref.astype(np.int32) - small_ref.astype(np.int32)).mean() < 3.0


def test_tf_alignment_in_graph_and_tf_data(astronaut, face):
    import tensorflow as tf

    ref, _ = align_np(astronaut, face.points, (112, 96))
    images = tf.constant(np.stack([astronaut, astronaut[:, ::-1]]), tf.uint8)
    mirrored = face.points.copy()
    mirrored[:, 0] = 511 - mirrored[:, 0]
    mirrored = mirrored[[1, 0, 2, 4, 3]]  # the mirror swaps left and right
    marks = tf.constant(np.stack([face.points, mirrored]))
    graph_fn = tf.function(lambda i, m: align_tf(i, m, (112, 96)))
    out, pts = graph_fn(images, marks)
    assert out.dtype == tf.uint8 and out.shape == (2, 112, 96, 3) and pts.shape == (2, 5, 2)
    assert np.abs(out[0].numpy().astype(int) - ref.astype(int)).mean() < 1.0
    # each image of the batch gets its own transform
    ref_mirror, _ = align_np(astronaut[:, ::-1], mirrored, (112, 96))
    assert np.abs(out[1].numpy().astype(int) - ref_mirror.astype(int)).mean() < 1.0
    ds = tf.data.Dataset.from_tensor_slices((images, marks))
    ds = ds.map(lambda i, m: align_tf(i, m, (112, 96))[0])
    first = next(iter(ds))
    assert np.abs(first.numpy().astype(int) - ref.astype(int)).mean() < 1.0


# ------------------------------------------------------------------------------------------------
# crop schemes
# ------------------------------------------------------------------------------------------------


def test_scheme_table():
    expected = {
        "bknet_48_gray": ((48, 48), True),
        "gnet_aligned_face": ((224, 224), False),
        "gnet_unaligned_face": ((224, 224), False),
        "gnet_unaligned_no_neck": ((224, 224), False),
        "gnet_unaligned_with_neck": ((224, 224), False),
        "gnet_aligned_mouth_cheek": ((224, 224), False),
        "wang_112x96": ((112, 96), False),
        "vggface_224": ((224, 224), False),
        "nose_centred_150": ((150, 150), False),
        "original": (None, False),
    }
    for name, (size, gray) in expected.items():
        scheme = CROPS.get(name)
        assert (scheme.size, scheme.grayscale) == (size, gray), name
        assert scheme.description, name


@pytest.mark.parametrize("name", SCHEMES)
def test_crop_scheme_size_mode_and_centring(astronaut, face, name):
    scheme = CROPS.get(name)
    crop, points = apply_crop(name, astronaut, face.points)
    channels = 1 if scheme.grayscale else 3
    assert crop.shape == scheme.size + (channels,) and crop.dtype == np.uint8
    assert points.shape == (5, 2) and points.dtype == np.float32
    h, w = scheme.size
    if name == "gnet_aligned_mouth_cheek":
        centre = points[3:].mean(0)  # the mouth is the middle of this one
        assert abs(centre[0] - w / 2) < 0.1 * w and abs(centre[1] - h / 2) < 0.15 * h
        assert (points[:2, 1] < 0.1 * h).all()  # the eyes are (almost) out of it
    else:
        fx, fy, fw, fh = face_box_from_landmarks(points)
        cx, cy = fx + fw / 2, fy + fh / 2
        assert abs(cx - w / 2) < 0.1 * w, (cx, w)
        assert abs(cy - h / 2) < 0.25 * h, (cy, h)
        assert 0.25 * h < fh < 1.3 * h  # the face fills a sensible part of the crop
    # the crop is the photo, not padding
    assert (crop > 0).mean() > 0.9


@pytest.mark.parametrize("name", SCHEMES)
def test_crop_landmarks_point_at_the_same_image_content(face, name):
    """On ramp images (value = x / 2, or y / 2) the crop's value at each returned landmark equals
    the source landmark's coordinate: the returned points really are where the face went."""
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    for axis, ramp in ((0, xx), (1, yy)):
        image = np.repeat((ramp / 2).round().astype(np.uint8)[..., None], 3, axis=2)
        crop, points = apply_crop(name, image, face.points)
        plane = crop[..., 0].astype(np.float32)
        for (x, y), (px, py) in zip(points, face.points):
            if 1 <= x < crop.shape[1] - 1 and 1 <= y < crop.shape[0] - 1:
                got = plane[int(round(y)), int(round(x))] * 2
                want = (px, py)[axis]
                assert abs(got - want) <= 3.5, (name, axis, got, want)


@pytest.mark.parametrize("name", SCHEMES)
def test_crop_outside_the_image_is_padded(astronaut, face, name):
    scheme = CROPS.get(name)
    corner = face.points - face.points.mean(0) + [5.0, 5.0]  # a face at the very top-left corner
    crop, _ = apply_crop(name, astronaut, corner)
    assert crop.shape[:2] == scheme.size
    assert (crop == 0).any()  # the part beyond the image is black
    far, _ = apply_crop(name, astronaut, face.points + 5000.0)  # entirely outside: all padding
    assert far.shape[:2] == scheme.size and not far.any()


def test_box_schemes_use_a_detector_box_when_given(astronaut, face):
    from_marks, _ = apply_crop("gnet_unaligned_face", astronaut, face.points)
    from_box, _ = apply_crop("gnet_unaligned_face", astronaut, face.points, box=face.box)
    assert from_box.shape == from_marks.shape
    # the same face, framed nearly alike
    assert np.abs(from_box.astype(int) - from_marks.astype(int)).mean() < 40
    shifted, _ = apply_crop("gnet_unaligned_face", astronaut, face.points, box=(0, 0, 100, 100))
    assert np.abs(shifted.astype(int) - from_box.astype(int)).mean() > 20
    # aligned schemes ignore boxes
    a, _ = apply_crop("wang_112x96", astronaut, face.points, box=(0, 0, 10, 10))
    b, _ = apply_crop("wang_112x96", astronaut, face.points)
    assert np.array_equal(a, b)


def test_original_schemes_unchanged(astronaut, face):
    crop, points = apply_crop("nose_centred_150", astronaut, face.points)
    nose = face.points[2]
    left, top = int(round(nose[0])) - 75, int(round(nose[1])) - 75
    assert np.array_equal(crop, astronaut[top : top + 150, left : left + 150])
    np.testing.assert_allclose(points, face.points - [left, top])
    same, pts = apply_crop("original", astronaut, face.points)
    assert same is astronaut


def test_draw_faces(astronaut, face):
    drawn = draw_faces(astronaut, [face])
    assert drawn.shape == astronaut.shape and not np.array_equal(drawn, astronaut)
    for (x, y), colour in zip(face.landmarks, LANDMARK_COLOURS):
        assert tuple(drawn[int(round(y)), int(round(x))]) == colour
    assert np.array_equal(astronaut, skdata.astronaut())  # input untouched


# ------------------------------------------------------------------------------------------------
# bad input and the command line
# ------------------------------------------------------------------------------------------------

GOOD = ["gray.jpg", "rgba.png", "gray16.png", "rgb16.png", "cmyk.jpg", "exif_rotated.jpg"]
GOOD += ["huge_6000.jpg"]
BAD = ["truncated.jpg", "notes.jpg", "empty.png"]


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory, astronaut) -> Path:
    """One folder with every awkward input, written by the test itself."""
    root = tmp_path_factory.mktemp("faces_inputs")
    sub = root / "nested" / "deeper"
    sub.mkdir(parents=True)
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    Image.fromarray(gray).save(root / "gray.jpg", quality=92)
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0  # a transparent corner
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(root / "gray16.png")  # mode I;16
    cv2.imwrite(str(sub / "rgb16.png"), astronaut[..., ::-1].astype(np.uint16) * 257)  # 16-bit RGB
    Image.fromarray(astronaut).convert("CMYK").save(root / "cmyk.jpg", quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(astronaut)))
    sideways.save(root / "exif_rotated.jpg", exif=exif.tobytes(), quality=92)
    huge = cv2.resize(astronaut, (6000, 6000), interpolation=cv2.INTER_LINEAR)
    Image.fromarray(huge).save(root / "huge_6000.jpg", quality=80)
    Image.fromarray(astronaut).save(root / "full.jpg", quality=92)
    data = (root / "full.jpg").read_bytes()
    (root / "full.jpg").unlink()
    (sub / "truncated.jpg").write_bytes(data[: len(data) * 6 // 10])
    (root / "notes.jpg").write_text("this is not an image\n")
    (root / "empty.png").write_bytes(b"")
    Image.fromarray(np.full((1, 1, 3), 128, np.uint8)).save(root / "one.png")
    (root / "README.txt").write_text("not an image nor named like one: folder runs skip it\n")
    return root


def _find(root: Path, name: str) -> Path:
    return next(root.rglob(name))


@pytest.mark.parametrize("name", GOOD + ["one.png"])
def test_awkward_images_load_as_rgb(bad_dir, astronaut, name):
    image = load_image(_find(bad_dir, name))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    if name == "one.png":
        assert image.shape == (1, 1, 3)
    elif name == "huge_6000.jpg":
        assert image.shape == (6000, 6000, 3)
    else:
        assert image.shape == astronaut.shape  # the EXIF-rotated one comes back upright
        ref = astronaut
        if name in ("gray.jpg", "gray16.png"):
            ref = np.repeat(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        err = np.abs(image.astype(int) - ref.astype(int))
        if name == "rgba.png":
            assert (image[:40, :40] == 255).all()  # transparent -> white
            err = err[40:]
        assert err.mean() < 6, (name, err.mean())


@pytest.mark.parametrize("name", BAD + ["missing.jpg"])
def test_unreadable_images_give_one_line_errors(bad_dir, name):
    path = bad_dir / name if name != "truncated.jpg" else _find(bad_dir, name)
    with pytest.raises(ImageError) as info:
        load_image(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "\n" not in msg


def test_to_rgb_uint8_layouts():
    assert to_rgb_uint8(np.zeros((4, 5), np.uint16)).shape == (4, 5, 3)
    assert to_rgb_uint8(np.full((2, 2, 1), 65535, np.uint16)).max() == 255
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert (to_rgb_uint8(rgba) == 255).all()  # fully transparent -> white
    with pytest.raises(ImageError, match="expected an HxW"):
        to_rgb_uint8(np.zeros((2, 2, 5), np.uint8))


def test_cli_folder_run(bad_dir, tmp_path, capsys):
    from kerasface.faces.__main__ import main

    annotate, crops = tmp_path / "annotated", tmp_path / "crops"
    rc = main(["detect", str(bad_dir), "--annotate", str(annotate)]
              + ["--crop", "wang_112x96", "--out", str(crops)])
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    by_name = {Path(r["path"]).name: r for r in records}
    assert rc == 1  # some failed
    # README.txt is skipped, nested files are found
    assert set(by_name) == set(GOOD + BAD + ["one.png"])
    for name in BAD:
        assert set(by_name[name]) == {"path", "error"}
        assert name in by_name[name]["error"] and "\n" not in by_name[name]["error"]
        assert f"error: {by_name[name]['path']}" in captured.err
    assert by_name["one.png"]["faces"] == []
    for name in GOOD:
        rec = by_name[name]
        assert len(rec["faces"]) == 1, (name, rec)
        f = rec["faces"][0]
        assert _is_json_plain(f) and set(f["landmarks"]) == set(LANDMARK_NAMES)
        # upright (EXIF applied): eyes above the mouth
        assert f["landmarks"]["left_eye"][1] < f["landmarks"]["mouth_left"][1]
        crop = Path(f["crop"])
        assert crop.is_file() and Image.open(crop).size == (96, 112)
    huge = by_name["huge_6000.jpg"]
    assert (huge["width"], huge["height"]) == (6000, 6000)
    # found on the shrunk copy, reported in full-size pixels
    assert 600 < huge["faces"][0]["box"][3] < 1800
    assert (annotate / "nested" / "deeper" / "rgb16.png").is_file()
    assert (annotate / "gray.jpg").is_file() and (annotate / "one.png").is_file()
    assert "faces" in captured.err and "3 failed" in captured.err  # progress bar and summary


CLI = [sys.executable, "-m", "kerasface.faces"]


def test_cli_as_a_program(bad_dir):
    """The real entry point; these two files need no detector, so no TensorFlow start-up."""
    proc = subprocess.run(
        [*CLI, "detect", str(bad_dir / "one.png"), str(bad_dir / "notes.jpg"), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1, proc.stderr
    assert lines[0] == {"path": str(bad_dir / "one.png"), "width": 1, "height": 1, "faces": []}
    assert lines[1]["error"].startswith(str(bad_dir / "notes.jpg"))
    bad = subprocess.run(
        [*CLI, "detect", str(bad_dir / "one.png"), "--crop", "nope", "--out", "x"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert bad.returncode == 2 and "known:" in bad.stderr


def test_detections_are_cached_per_file_until_it_changes(tmp_path, monkeypatch):
    import os

    from kerasface.faces import detect

    calls = []
    found = [detect.Face((10.0, 12.0, 30.0, 40.0), 0.99, ((1.0, 2.0),) * 5)]
    monkeypatch.setattr(detect, "detect_faces", lambda image, **kw: calls.append(1) or found)
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"pixels")
    image = np.zeros((8, 8, 3), np.uint8)
    cache = tmp_path / "cache"
    assert detect.detect_faces_cached(image, photo, cache) == found and len(calls) == 1
    assert detect.detect_faces_cached(image, photo, cache) == found and len(calls) == 1  # from the cache
    assert len(list(cache.glob("*.json"))) == 1 and not list(cache.glob("*.tmp"))
    os.utime(photo, ns=(1, 1))  # the file changed: detected again
    assert detect.detect_faces_cached(image, photo, cache) == found and len(calls) == 2
    assert detect.detect_faces_cached(image, None, cache) == found and len(calls) == 3  # in-memory pixels
