"""CelebA and FotW readers on fixtures written in their on-disk formats (CRLF and LF, variable
spaces, count and header lines), their errors, and conversion through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerasface.data import celeba, fotw
from kerasface.data.common import FormatError

NAMES = ("000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg")


def attr_values(i: int) -> list[int]:
    values = [-1] * 40
    values[20] = 1 if i % 2 == 0 else -1  # Male
    values[31] = 1 if i < 2 else -1  # Smiling
    values[i] = 1
    return values


def write_celeba(root: Path, newline="\r\n", wild=False, images=True, attr_lines=None) -> None:
    """The six lists as the release has them: count and header lines, values padded by spaces."""
    root.mkdir(parents=True, exist_ok=True)
    rows = attr_lines or [name + "".join(f" {v:2d}" for v in attr_values(i)) for i, name in enumerate(NAMES)]
    files = {
        "list_attr_celeba.txt": [str(len(rows)), " ".join(celeba.ATTRIBUTES) + " "] + rows,
        "list_landmarks_align_celeba.txt": ["4", "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
                                            "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"]
        + [f"{n} {69 + i}  109  106  113   77  142   73  152  108  154" for i, n in enumerate(NAMES)],
        "list_landmarks_celeba.txt": ["4", "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
                                      "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"]
        + [f"{n} {165 + i} 184 244 176 196 249 194 271 266 260" for i, n in enumerate(NAMES)],
        "list_bbox_celeba.txt": ["4", "image_id x_1 y_1 width height"]
        + [f"{n}    95   71  226  313" for n in NAMES],
        "list_eval_partition.txt": [f"{n} {s}" for n, s in zip(NAMES, (0, 0, 1, 2))],
        "identity_CelebA.txt": [f"{n} {2880 + i}" for i, n in enumerate(NAMES)],
    }
    anno = root / "Anno"
    anno.mkdir(exist_ok=True)
    for name, lines in files.items():
        folder = root if name == "list_eval_partition.txt" else anno  # the release: Anno/ and Eval/ or the root
        (folder / name).write_bytes((newline.join(lines) + newline).encode("ascii"))
    if images:
        folder = root / ("img_celeba" if wild else "img_align_celeba")
        folder.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        size = (500, 400) if wild else (218, 178)
        for name in NAMES:
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_celeba_aligned_lists_parse_exactly(tmp_path, newline):
    write_celeba(tmp_path, newline)
    splits = celeba.read_faces(celeba.resolve_root(tmp_path))
    assert {k: [f.path for f in v] for k, v in splits.items()} == {
        "train": ["img_align_celeba/000001.jpg", "img_align_celeba/000002.jpg"],
        "val": ["img_align_celeba/000003.jpg"], "test": ["img_align_celeba/000004.jpg"]}
    first, second = splits["train"]
    assert first.labels["attributes"] == tuple(int(v > 0) for v in attr_values(0))
    assert first.labels["gender"] == 0 and second.labels["gender"] == 1  # male, female
    assert first.labels["smile"] == 0 and splits["val"][0].labels["smile"] == 1  # smiling, not_smiling
    assert first.labels["identity"] == 2879 and second.labels["identity"] == 2880
    np.testing.assert_array_equal(second.landmarks, [[70, 109], [106, 113], [77, 142], [73, 152], [108, 154]])
    assert first.box is None  # the list's boxes belong to the in-the-wild photos


def test_celeba_in_the_wild_uses_its_landmarks_and_boxes(tmp_path):
    write_celeba(tmp_path, wild=True)
    face = celeba.read_faces(tmp_path)["train"][0]
    assert face.path == "img_celeba/000001.jpg" and face.box == (95.0, 71.0, 226.0, 313.0)
    np.testing.assert_array_equal(face.landmarks[0], [165, 184])
    names = {p.name for p in celeba.source_files(tmp_path)}
    assert names == {"list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt",
                     "list_landmarks_celeba.txt", "list_bbox_celeba.txt"}


BAD_ATTR = [
    ("000001.jpg" + " 0" * 40, "list_attr_celeba.txt:3: attribute values must be -1 or 1"),
    ("000001.jpg" + " 1" * 39, "list_attr_celeba.txt:3: expected an image name and 40 values, got 40 fields"),
    ("000001.jpg" + " x" * 40, "list_attr_celeba.txt:3: expected 40 int values"),
]


@pytest.mark.parametrize("line,expected", BAD_ATTR)
def test_malformed_celeba_line_names_file_and_line(tmp_path, line, expected):
    write_celeba(tmp_path, attr_lines=[line] + [n + " -1" * 40 for n in NAMES[1:]], images=False)
    with pytest.raises(FormatError, match=expected):
        celeba.read_faces(tmp_path)


def test_celeba_count_header_and_missing_image_errors(tmp_path):
    write_celeba(tmp_path, images=False)
    attr = tmp_path / "Anno" / "list_attr_celeba.txt"
    text = attr.read_text()
    attr.write_text(text.replace("4", "5", 1))
    with pytest.raises(FormatError, match="list_attr_celeba.txt:1: the file says 5 images but lists 4"):
        celeba.read_faces(tmp_path)
    attr.write_text(text.replace("Male", "Female"))
    with pytest.raises(FormatError, match="list_attr_celeba.txt:2: expected the header"):
        celeba.read_faces(tmp_path)
    attr.write_text(text)
    ids = tmp_path / "Anno" / "identity_CelebA.txt"
    ids.write_text("\n".join(ids.read_text().splitlines()[:3]) + "\n")
    with pytest.raises(FormatError, match=r"list_eval_partition.txt:4: 000004.jpg is not in identity_CelebA.txt"):
        celeba.read_faces(tmp_path)
    with pytest.raises(FileNotFoundError, match="KERASFACE_CELEBA.*--demo"):
        celeba.resolve_root(tmp_path / "nowhere")


def write_fotw(root: Path, rows, name="train.csv", header="image,x,y,width,height,smile,gender"):
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("\n".join(([header] if header else []) + rows) + "\n")


def test_fotw_assumed_layout_masks_other(tmp_path):
    write_fotw(tmp_path, ["a.jpg,10,20,30,40,smiling,female", "b.jpg,1,2,3,4,Other,male", "c.jpg,1,2,3,4,0,2"])
    write_fotw(tmp_path, ["d.jpg,1,2,3,4,neutral,female"], "val.csv")
    splits = fotw.read_splits(fotw.resolve_root(tmp_path))
    assert set(splits) == {"train", "val"}
    a, b, c = splits["train"]
    assert a.box == (10.0, 20.0, 30.0, 40.0) and np.isnan(a.landmarks).all()
    assert a.labels == {"smile": 0, "gender": 1}
    assert b.labels == {"smile": -1, "gender": 0}
    assert c.labels == {"smile": 1, "gender": -1}
    assert splits["val"][0].labels == {"smile": 1, "gender": 1}


def test_fotw_column_map_without_header(tmp_path):
    write_fotw(tmp_path, ["1;x/a.jpg;Y;M;0;0;9;9;4;5;6;7;8;9;1;2"], "gt_train.txt", header=None)
    write_fotw(tmp_path, ["2;x/b.jpg;N;F;0;0;9;9;4;5;6;7;8;9;1;2"], "gt_val.txt", header=None)
    (tmp_path / fotw.COLUMNS_FILE).write_text(json.dumps({
        "files": {"train": "gt_train.txt", "val": "gt_val.txt"}, "delimiter": ";", "header": False, "image": 1,
        "box": None, "landmarks": list(range(6, 16)), "smile": 2, "gender": 3,
        "values": {"smile": {"Y": "smiling", "N": "not_smiling"}, "gender": {"M": "male", "F": "female"}}}))
    splits = fotw.read_splits(fotw.resolve_root(tmp_path))
    face = splits["train"][0]
    assert face.path == "x/a.jpg" and face.box is None and face.labels == {"smile": 0, "gender": 0}
    np.testing.assert_array_equal(face.landmarks, [[9, 9], [4, 5], [6, 7], [8, 9], [1, 2]])
    assert splits["val"][0].labels == {"smile": 1, "gender": 1}


@pytest.mark.parametrize("row,expected", [
    ("a.jpg,1,2,3,4,grinning,male", r"train.csv:2: smile 'grinning' is none of"),
    ("a.jpg,1,2,3", r"train.csv:2: 4 fields, fewer than the column map needs"),
    ("a.jpg,1,2,0,4,smiling,male", r"train.csv:2: the box width and height must be positive"),
    ("a.jpg,1,two,3,4,smiling,male", r"train.csv:2: the box and landmark columns must be numbers"),
])
def test_malformed_fotw_line_names_file_and_line(tmp_path, row, expected):
    write_fotw(tmp_path, [row])
    write_fotw(tmp_path, [], "val.csv")
    with pytest.raises(FormatError, match=expected):
        fotw.read_splits(tmp_path)


def test_fotw_missing_column_names_the_header(tmp_path):
    write_fotw(tmp_path, ["a.jpg,smiling"], header="image,smile")
    with pytest.raises(FormatError, match=r"train.csv:1: no column 'x' in the header \(image, smile\)"):
        fotw.read_splits(tmp_path)


def test_demo_sets_convert_through_the_command_line(tmp_path):
    """`convert --dataset celeba|fotw` on the demo copies: CelebA's multilabel and identity labels,
    FotW's faces found by detection next to the given box."""
    import tensorflow as tf

    from kerasface.data.convert import main as convert_main
    from kerasface.data.pipeline import read_manifest

    celeba.write_demo(tmp_path / "celeba", seed=0, count=20)
    fotw.write_demo(tmp_path / "fotw", seed=0, count=12)
    for name in ("celeba", "fotw"):
        assert convert_main(["--dataset", name, "--root", str(tmp_path / name), "--out", str(tmp_path / f"rec-{name}"),
                             "--workers", "1", "--shards", "1"]) == 0
    manifest = read_manifest(tmp_path / "rec-celeba")
    assert manifest["crop"] == "gnet_aligned_face"
    assert manifest["labels"]["attributes"] == {"type": "multilabel", "names": list(celeba.ATTRIBUTES)}
    assert {k: v["records"] for k, v in manifest["splits"].items()} == {"train": 14, "val": 3, "test": 3}
    record = next(iter(tf.data.TFRecordDataset(str(tmp_path / "rec-celeba" / manifest["splits"]["train"]["files"][0]))))
    example = tf.train.Example.FromString(record.numpy())
    attributes = example.features.feature["label/attributes"].int64_list.value
    assert len(attributes) == 40 and set(attributes) <= {0, 1}
    male = example.features.feature["label/gender"].int64_list.value[0]
    assert attributes[celeba.ATTRIBUTES.index("Male")] == 1 - male
    manifest = read_manifest(tmp_path / "rec-fotw")
    found = sum(v["records"] for v in manifest["splits"].values())
    assert found + len(manifest["skipped"]) == 12 and found >= 8
