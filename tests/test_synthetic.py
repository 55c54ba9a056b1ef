"""kerasface.data.synthetic: the SYNTHETIC demo dataset in the exact MTFL on-disk format.

What is checked: the list files byte for byte (CRLF, leading spaces, the last line of one space,
backslash / forward-slash paths, 15 fields, %.6f coordinates, label codes), the images behind every
line (exist, open, MTFL sizes, some grayscale AFLW), determinism per seed (also across worker
counts), that every landmark lies on the feature drawn there (from the part map the ray caster
fills and, independently, from the pixels alone), and that both checks fail when the landmarks
are moved by 10 pixels, label balance, and that the smile label shows in the mouth region.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerasface.data import synthetic as S
from kerasface.data.synthetic import PARTS, render_face, write_demo_mtfl

N_TRAIN, N_TEST, N_EXTRA = 20, 10, 3
COORD = re.compile(r"^-?\d+\.\d{6}$")
PATTERNS = {
    "training.txt": re.compile(r"^(lfw_5590|net_7876)\\synth_\d{6}\.jpg$"),
    "testing.txt": re.compile(r"^AFLW/synth_\d{6}\.jpg$"),
}
SHIFTS = ((10, 0), (-10, 0), (0, 10), (0, -10))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mtfl_demo")
    out = write_demo_mtfl(root, num_train=N_TRAIN, num_test=N_TEST, seed=3, extra_unlisted=N_EXTRA)
    assert out == root
    return root


def records(raw: bytes) -> list[str]:
    """The record lines of an MTFL list file, checking its line structure byte by byte."""
    chunks = raw.split(b"\r\n")
    assert chunks[-1] == b" ", "the file must end with CRLF followed by a last line of one space"
    lines = chunks[:-1]
    for line in lines:
        assert b"\r" not in line and b"\n" not in line, "only CRLF line ends"
    assert not lines[0].startswith(b" "), "the first line has no leading space"
    for line in lines[1:]:
        assert line.startswith(b" ") and not line.startswith(b"  "), "one leading space"
    return [line.decode("ascii")[0 if i == 0 else 1:] for i, line in enumerate(lines)]


def parse(text: str):
    fields = text.split(" ")
    values = np.array([float(v) for v in fields[1:11]])
    return fields, np.stack([values[:5], values[5:]], 1), [int(v) for v in fields[11:]]


# ----------------------------------------------------------------------------- format


@pytest.mark.parametrize("name,count", [("training.txt", N_TRAIN), ("testing.txt", N_TEST)])
def test_list_files_are_byte_exact_mtfl(demo, name, count):
    raw = (demo / name).read_bytes()
    lines = records(raw)
    assert len(lines) == count
    assert raw.count(b"\r\n") == count
    for text in lines:
        fields = text.split(" ")
        assert len(fields) == 15 and all(fields), text  # single spaces, no empty field
        assert PATTERNS[name].match(fields[0]), fields[0]
        assert ("/" not in fields[0]) if name == "training.txt" else ("\\" not in fields[0])
        assert all(COORD.match(v) for v in fields[1:11]), text
        gender, smile, glasses, pose = (int(v) for v in fields[11:])
        assert all(re.fullmatch(r"\d", v) for v in fields[11:])
        assert gender in (1, 2) and smile in (1, 2) and glasses in (1, 2) and 1 <= pose <= 5
        _, marks, _ = parse(text)
        assert marks[0, 0] < marks[1, 0], "left eye (point 1) has the smaller x, as in MTFL"
    folders = {re.split(r"[\\/]", t)[0] for t in lines}
    assert folders == ({"lfw_5590", "net_7876"} if name == "training.txt" else {"AFLW"})


def test_listed_images_exist_open_and_have_mtfl_sizes(demo):
    modes = {"AFLW": set(), "lfw_5590": set(), "net_7876": set()}
    for name in ("training.txt", "testing.txt"):
        for text in records((demo / name).read_bytes()):
            fields, marks, _ = parse(text)
            rel = fields[0].replace("\\", "/")
            folder = rel.split("/")[0]
            with Image.open(demo / rel) as im:
                assert im.format == "JPEG"
                im.load()
                modes[folder].add(im.mode)
                size = im.size
            if folder == "lfw_5590":
                assert size == (250, 250)
            elif folder == "AFLW":
                assert size == (150, 150)
            else:
                assert size in {(400, 400), (160, 216)}  # the two sizes of the real net_7876 folder
            w, h = size
            assert np.all((marks >= 0) & (marks < [w, h])), (rel, marks)
    assert modes["AFLW"] == {"RGB", "L"}, "some AFLW images are grayscale JPEGs, like 28 real ones"
    assert modes["lfw_5590"] == {"RGB"} and modes["net_7876"] == {"RGB"}


def test_folders_hold_unlisted_images_and_a_synthetic_readme(demo):
    listed = {parse(t)[0][0].replace("\\", "/") for n in ("training.txt", "testing.txt")
              for t in records((demo / n).read_bytes())}
    on_disk = {p.relative_to(demo).as_posix() for p in demo.glob("*/*") if p.is_file()}
    assert listed < on_disk
    assert len(on_disk - listed) == N_EXTRA
    assert not list(demo.rglob("*.tmp")), "no half-written files left"
    readme = (demo / "DEMO_README.txt").read_text()
    assert "SYNTHETIC" in readme and "not real" in readme.lower()
    assert "synthetic" in S.__doc__.lower() and "never" in S.__doc__.lower()


def test_mtfl_reader_parses_the_demo_lists(demo):
    from kerasface.data import mtfl

    train = mtfl.read_list(demo / "training.txt")
    test = mtfl.read_list(demo / "testing.txt")
    assert len(train) == N_TRAIN and len(test) == N_TEST
    _, marks, codes = parse(records((demo / "training.txt").read_bytes())[0])
    np.testing.assert_allclose(train[0].landmarks, marks, atol=1e-4)
    assert [train[0].labels[a] + 1 for a in mtfl.ATTRIBUTES] == codes
    assert all("\\" not in f.path and (demo / f.path).is_file() for f in train + test)


# ----------------------------------------------------------------------------- determinism


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_any_worker_count_and_other_seed_differs(tmp_path):
    a = digest(write_demo_mtfl(tmp_path / "a", 6, 4, seed=11, extra_unlisted=1, workers=1))
    b = digest(write_demo_mtfl(tmp_path / "b", 6, 4, seed=11, extra_unlisted=1, workers=2))
    c = digest(write_demo_mtfl(tmp_path / "c", 6, 4, seed=12, extra_unlisted=1, workers=1))
    assert a == b
    assert len(a) == 6 + 4 + 1 + 3
    assert a["training.txt"] != c["training.txt"] and a["testing.txt"] != c["testing.txt"]
    assert a["AFLW/synth_000001.jpg"] != c["AFLW/synth_000001.jpg"]


def test_render_face_is_deterministic_and_honours_forced_labels():
    forced = {"smile": 1, "glasses": 1, "gender": 2}
    one = render_face(np.random.default_rng(5), (120, 100), labels=forced)
    two = render_face(np.random.default_rng(5), (120, 100), labels=forced)
    assert one[0].shape == (120, 100, 3) and one[0].dtype == np.uint8
    assert one[1].shape == (5, 2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    assert (one[2]["smile"], one[2]["glasses"], one[2]["gender"]) == (1, 1, 2)
    for yaw, pose in ((-50, 1), (-20, 2), (5, 3), (-5, 3), (20, 4), (50, 5)):
        assert render_face(0, (64, 64), yaw=yaw)[2]["pose"] == pose


# ----------------------------------------------------------------------------- landmarks


def win(a: np.ndarray, x: float, y: float, r: int = 1) -> np.ndarray:
    xi, yi = int(round(x)), int(round(y))
    return a[max(yi - r, 0):yi + r + 1, max(xi - r, 0):xi + r + 1]


def component(mask: np.ndarray, x: float, y: float, radius: float):
    """Pixels of `mask` 4-connected to those of the 3x3 window at (x, y), within `radius`."""
    xi, yi, r = int(round(x)), int(round(y)), int(round(radius))
    y0, x0 = max(yi - r, 0), max(xi - r, 0)
    m = mask[y0:yi + r + 1, x0:xi + r + 1]
    grow = np.zeros_like(m)
    grow[max(yi - y0 - 1, 0):yi - y0 + 2, max(xi - x0 - 1, 0):xi - x0 + 2] = True
    grow &= m
    while True:
        g = grow.copy()
        g[1:] |= grow[:-1]
        g[:-1] |= grow[1:]
        g[:, 1:] |= grow[:, :-1]
        g[:, :-1] |= grow[:, 1:]
        g &= m
        if (g == grow).all():
            break
        grow = g
    ys, xs = np.nonzero(grow)
    return xs + x0, ys + y0


def mouth_end(mask: np.ndarray, marks: np.ndarray, j: int, iod: float) -> bool:
    """marks[j] touches the mouth region and is its extreme point along the mouth axis (1.5 px)."""
    xs, ys = component(mask, *marks[j], 0.6 * iod)
    if xs.size == 0:
        return False
    axis = (marks[4] - marks[3]) / np.linalg.norm(marks[4] - marks[3])
    along = (np.stack([xs, ys], 1) - marks[j]) @ axis
    return bool((along.min() if j == 3 else -along.max()) > -1.5)


def parts_check(parts: np.ndarray, marks: np.ndarray, iod: float) -> list[bool]:
    """Per point, from the part map the renderer fills while ray casting."""
    eye = np.isin(parts, (PARTS["pupil"], PARTS["iris"]))
    mouth = np.isin(parts, (PARTS["lips"], PARTS["mouth_opening"], PARTS["teeth"]))
    return [bool(win(eye, *marks[0], 0).all()), bool(win(eye, *marks[1], 0).all()),
            bool(win(parts, *marks[2], 0).item() == PARTS["nose_tip"]),
            mouth_end(mouth, marks, 3, iod), mouth_end(mouth, marks, 4, iod)]


def dark_centroid_x(lum, x, y, half_w, rows, thr):
    xi, yi, r, q = int(round(x)), int(round(y)), int(round(half_w)), int(round(rows))
    band = lum[yi - q:yi + q + 1, xi - r:xi + r + 1]
    dark = band < thr
    if dark.sum() < 3:
        return None
    dx = np.broadcast_to(np.arange(-r, r + 1)[None, :] + (xi - x), band.shape)
    return float(dx[dark].mean())


def pixel_check(image: np.ndarray, marks: np.ndarray, iod: float) -> list[bool]:
    """Per point, from the pixels alone, against the skin level measured on both cheeks."""
    lum = image.astype(np.float64).mean(-1)
    cheek = max(np.median(win(lum, *((marks[e] + marks[m]) / 2 + [s * 0.2 * iod, 0]), 2))
                for e, m, s in ((0, 3, -1), (1, 4, 1)))
    ok = []
    for j in (0, 1):  # a dark pupil at the point, the dark iris centred on it
        cx = dark_centroid_x(lum, *marks[j], 0.15 * iod, 1, 0.5 * cheek)
        ok.append(win(lum, *marks[j]).min() < 0.35 * cheek and cx is not None and abs(cx) < 1.5)
    x, y = marks[2]  # nose tip: skin-bright, with two dark nostrils just below, symmetric about it
    nostrils = []
    for s in (-1, 1):
        cx = dark_centroid_x(lum, x + s * 0.1 * iod, y + 0.1 * iod, 0.08 * iod, 0.07 * iod,
                             0.5 * cheek)
        nostrils.append(None if cx is None else s * 0.1 * iod + cx)
    ok.append(win(lum, x, y).mean() > 0.6 * cheek and None not in nostrils
              and abs(nostrils[0] + nostrils[1]) < 2.0 and nostrils[1] - nostrils[0] > 0.08 * iod)
    axis = (marks[4] - marks[3]) / np.linalg.norm(marks[4] - marks[3])
    perp = np.array([-axis[1], axis[0]])
    for j, s in ((3, -1), (4, 1)):  # dark at the corner and just inside it, skin just outside
        corner = win(lum, *marks[j]).min()
        inner_at = marks[j] - s * axis * 0.1 * iod
        inner = min(win(lum, *(inner_at + perp * t)).min()
                    for t in np.arange(-0.1 * iod, 0.1 * iod + 0.5))
        outer = win(lum, *(marks[j] + s * axis * 0.12 * iod)).mean()
        ok.append(corner < 0.6 * cheek and inner < 0.65 * cheek
                  and outer > max(0.5 * cheek, corner + 0.25 * cheek))
    return ok


def test_landmarks_lie_on_the_drawn_features_in_all_non_profile_poses():
    for i in range(24):
        labels = {"pose": (2, 3, 4)[i % 3], "glasses": (1, 2)[i % 2]}
        _, marks, info, parts = render_face(np.random.default_rng([21, i]), (250, 250), iod=50,
                                            labels=labels, return_parts=True)
        assert info["pose"] == labels["pose"]
        assert parts_check(parts, marks, info["iod_px"]) == [True] * 5, (i, info)


def test_landmarks_match_the_pixels_alone():
    for i in range(20):
        rng = np.random.default_rng([22, i])
        image, marks, info = render_face(rng, (250, 250), iod=50, yaw=0.0,
                                         roll=float(rng.uniform(-5, 5)),
                                         labels={"gender": 2, "glasses": 2}, clean=True)
        assert pixel_check(image, marks, info["iod_px"]) == [True] * 5, (i, info)


def test_both_checks_fail_when_the_landmarks_move_by_10_pixels():
    for i in range(12):
        rng = np.random.default_rng([23, i])
        image, marks, info, parts = render_face(
            rng, (250, 250), iod=50, yaw=float(rng.uniform(-8, 8)),
            labels={"gender": 2, "glasses": 2}, clean=i % 2 == 0, return_parts=True)
        iod = info["iod_px"]
        assert parts_check(parts, marks, iod) == [True] * 5
        for shift in SHIFTS:
            moved = marks + np.array(shift, float)
            assert not any(parts_check(parts, moved, iod)), (i, shift)  # every point fails
            if i % 2 == 0:  # clean renders: the pixel check is defined on those
                assert not all(pixel_check(image, moved, iod)), (i, shift)


def test_geometry_eye_order_and_nose_offset_follow_the_pose():
    for i in range(60):
        _, marks, info = render_face(np.random.default_rng([24, i]), (160, 160))
        iod = float(np.linalg.norm(marks[1] - marks[0]))
        assert iod > 5 and abs(iod - info["iod_px"]) < 0.01 * iod + 0.01
        assert marks[0, 0] < marks[1, 0]
        # Nose offset from the eye midpoint along the (rolled) eye axis, in inter-ocular units.
        axis = (marks[1] - marks[0]) / iod
        offset = float((marks[2] - (marks[0] + marks[1]) / 2) @ axis) / iod
        pose = info["pose"]
        if pose == 3:
            assert abs(offset) < 0.15
        else:
            assert np.sign(offset) == (-1 if pose < 3 else 1) and abs(offset) > 0.1
            assert abs(offset) > 0.35 if pose in (1, 5) else abs(offset) < 0.4
        down = marks @ np.array([-axis[1], axis[0]])  # across the eye axis, growing downwards
        assert down[:2].max() < down[2] < down[3:].min()


# ----------------------------------------------------------------------------- labels


def test_label_balance_and_smile_shows_in_the_mouth_region():
    labels, darkness = [], []
    for i in range(300):
        image, marks, info = render_face(np.random.default_rng([25, i]), (112, 112))
        labels.append(info)
        lum = image.astype(np.float64).mean(-1)
        iod = float(np.linalg.norm(marks[1] - marks[0]))
        (lx, ly), (rx, ry) = marks[3], marks[4]
        cx, cy, mw = (lx + rx) / 2, (ly + ry) / 2, rx - lx
        box = lum[int(round(cy)):int(round(cy + 0.25 * iod)) + 1,
                  int(round(cx - 0.25 * mw)):int(round(cx + 0.25 * mw)) + 1]
        eye_row = lum[int(round(ly - 0.5 * iod)):int(round(ly - 0.3 * iod)),
                      int(round(lx - 0.2 * iod)):int(round(lx + 0.1 * iod))]
        darkness.append(box.mean() / np.median(eye_row))  # below the corner line, against the cheek
    frac = lambda key, value: np.mean([d[key] == value for d in labels])  # noqa: E731
    assert 0.5 < frac("gender", 1) < 0.67
    assert 0.4 < frac("smile", 1) < 0.6
    assert 0.1 < frac("glasses", 1) < 0.27
    assert 0.58 < frac("pose", 3) < 0.78
    left, right = frac("pose", 1) + frac("pose", 2), frac("pose", 4) + frac("pose", 5)
    assert 0.08 < left < 0.26 and 0.08 < right < 0.26
    assert frac("pose", 1) + frac("pose", 5) > 0.02
    darkness = np.array(darkness)
    smiling = np.array([d["smile"] == 1 for d in labels])
    a, b = darkness[smiling], darkness[~smiling]
    welch_t = (b.mean() - a.mean()) / np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert b.mean() - a.mean() > 0.05 and welch_t > 4, (a.mean(), b.mean(), welch_t)


# ----------------------------------------------------------------------------- command line


def test_cli_writes_the_dataset_and_says_where(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "kerasface.data.synthetic", "--out", str(out),
                           "--train", "3", "--test", "2", "--seed", "4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert str(out.resolve()) in proc.stdout
    assert "3 training" in proc.stdout and "2 testing" in proc.stdout
    assert len(records((out / "training.txt").read_bytes())) == 3
    assert len(records((out / "testing.txt").read_bytes())) == 2


def test_with_tensorflow_loaded_a_fresh_interpreter_renders_the_same_bytes(tmp_path, monkeypatch):
    # the trainer has TensorFlow loaded: a big demo set is rendered by a child interpreter (which
    # may fork its workers) rather than one image at a time in the trainer
    import subprocess

    import tensorflow  # noqa: F401
    import kerasface.data.synthetic as synthetic

    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(synthetic.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(synthetic.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or real_run(cmd, **kw))
    child = digest(write_demo_mtfl(tmp_path / "child", 190, 10, seed=4, extra_unlisted=1))
    assert len(calls) == 1 and calls[0][1:3] == ["-m", "kerasface.data.synthetic"]
    here = digest(write_demo_mtfl(tmp_path / "here", 190, 10, seed=4, extra_unlisted=1, workers=1))
    assert len(calls) == 1
    assert child == here and len(child) == 190 + 10 + 1 + 3
