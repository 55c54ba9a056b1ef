"""The MTFL reader on byte-exact fixtures with every quirk of the real list files."""

import numpy as np
import pytest

from kerasface.data.mtfl import LABELS, MTFLFormatError, read_list, read_splits, resolve_root, split_train_val

# Real lines (DATA_FORMATS.md), written the way the real files are: CRLF, leading space on every line
# but the first, and a last line holding a single space.
TRAIN_LINES = [
    "lfw_5590\\Aaron_Eckhart_0001.jpg 107.250000 147.750000 126.250000 106.250000 140.750000 "
    "108.750000 113.250000 143.750000 158.750000 162.750000 1 2 2 3",
    "net_7876\\0_0_0.jpg 152.000000 247.000000 210.000000 162.000000 236.000000 "
    "148.000000 149.000000 195.000000 238.000000 236.000000 1 1 2 3",
]
TEST_LINES = [
    "AFLW/0016-image55673.jpg 64.157895 101.036298 67.932849 72.578947 111.199637 "
    "45.863884 42.960073 74.030853 94.647913 86.226860 2 1 2 1",
]


def write_list(path, lines):
    path.write_bytes(("\r\n ".join(lines) + "\r\n ").encode())
    return path


def test_real_lines_parse_exactly(tmp_path):
    faces = read_list(write_list(tmp_path / "training.txt", TRAIN_LINES))
    assert len(faces) == 2  # the trailing single-space line is not a face
    first, second = faces
    assert first.path == "lfw_5590/Aaron_Eckhart_0001.jpg" and second.path == "net_7876/0_0_0.jpg"
    # five x values, then five y values -> (x, y) pairs
    np.testing.assert_allclose(first.landmarks, [[107.25, 108.75], [147.75, 113.25], [126.25, 143.75],
                                                 [106.25, 158.75], [140.75, 162.75]])
    assert first.labels == {"gender": 0, "smile": 1, "glasses": 1, "pose": 2}  # male, not smiling, no glasses, frontal
    assert second.labels == {"gender": 0, "smile": 0, "glasses": 1, "pose": 2}
    assert (first.line, second.line) == (1, 2)
    test = read_list(write_list(tmp_path / "testing.txt", TEST_LINES))[0]
    assert test.path == "AFLW/0016-image55673.jpg"
    assert LABELS["gender"][test.labels["gender"]] == "female" and LABELS["pose"][test.labels["pose"]] == "left_profile"
    np.testing.assert_allclose(test.landmarks[4], [111.199637, 86.226860], rtol=1e-6)


@pytest.mark.parametrize("line, expected", [
    ("a.jpg 1 2 3", "expected 15 fields"),
    ("a.jpg 1 2 3 4 5 6 7 8 9 x 1 1 1 1", "numeric landmark"),
    ("a.jpg 1 2 3 4 5 6 7 8 9 10 3 1 1 1", "gender must be an integer in 1..2, got '3'"),
    ("a.jpg 1 2 3 4 5 6 7 8 9 10 1 1 1 6", "pose must be an integer in 1..5"),
    ("a.jpg 1 2 3 4 5 6 7 8 9 nan 1 1 1 1", "finite"),
])
def test_malformed_line_names_file_and_line(tmp_path, line, expected):
    path = write_list(tmp_path / "training.txt", TRAIN_LINES + [line])
    with pytest.raises(MTFLFormatError) as info:
        read_list(path)
    assert str(info.value).startswith(f"{path}:3: ") and expected in str(info.value)


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    faces = read_list(write_list(tmp_path / "training.txt", TRAIN_LINES * 50))
    train, val = split_train_val(faces, 0.2, seed=0)
    assert (len(train), len(val)) == (80, 20)
    assert {f.line for f in train} | {f.line for f in val} == set(range(1, 101))
    assert not {f.line for f in train} & {f.line for f in val}
    again, _ = split_train_val(faces, 0.2, seed=0)
    other, _ = split_train_val(faces, 0.2, seed=1)
    assert [f.line for f in again] == [f.line for f in train] != [f.line for f in other]


def test_missing_root_says_where_it_looked_and_about_demo(tmp_path, monkeypatch):
    monkeypatch.delenv("KERASFACE_MTFL", raising=False)
    with pytest.raises(FileNotFoundError, match="--demo") as info:
        resolve_root(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value) and "KERASFACE_MTFL" in str(info.value)
    write_list(tmp_path / "training.txt", TRAIN_LINES)
    monkeypatch.setenv("KERASFACE_MTFL", str(tmp_path))
    assert resolve_root(None) == tmp_path


@pytest.mark.real_data
def test_real_mtfl_lists_parse_completely():
    from conftest import real_mtfl_or_skip

    splits = read_splits(real_mtfl_or_skip())
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (8000, 2000, 2995)
    sources = {f.path.split("/")[0] for f in splits["train"] + splits["val"]}
    assert sources == {"lfw_5590", "net_7876"} and {f.path.split("/")[0] for f in splits["test"]} == {"AFLW"}
