"""The MegaFace devkit list reader on lists written in the devkit's JSON layout."""

from __future__ import annotations

import json

import pytest

from kerasface.data.megaface import (MegaFaceFormatError, distractor_list_name, read_distractor_list, read_megaface,
                                     read_probe_list)


def write_devkit(root, probes, distractors, size=3):
    lists = root / "devkit" / "templatelists"
    lists.mkdir(parents=True)
    (lists / "facescrub_features_list.json").write_text(json.dumps(probes, indent=4))
    (lists / distractor_list_name(size, 1)).write_text(json.dumps(distractors, sort_keys=True, indent=4))
    return lists


def test_reads_probes_and_distractors(tmp_path):
    write_devkit(tmp_path, {"id": ["Adam_Brody", "Adam_Brody", 17], "path": [
        "Adam_Brody/Adam_Brody_1.png", "Adam_Brody/Adam_Brody_2.png", "x/y.png"], "other": 1},
        {"path": ["415/41528826@N00/4398052282_0.jpg", "1/a.jpg", "2/b.jpg"]})
    probes, distractors = read_megaface(tmp_path, size=3)
    assert probes == [("Adam_Brody/Adam_Brody_1.png", "Adam_Brody"), ("Adam_Brody/Adam_Brody_2.png", "Adam_Brody"),
                      ("x/y.png", "17")]
    assert distractors[0] == ("415/41528826@N00/4398052282_0.jpg", None) and len(distractors) == 3


def test_errors_name_the_file_line_and_key(tmp_path):
    bad = tmp_path / "facescrub_features_list.json"
    bad.write_text('{"id": ["a"],\n "path": ["p",]}')
    with pytest.raises(MegaFaceFormatError, match=r"facescrub_features_list.json:2:\d+: not valid JSON"):
        read_probe_list(bad)
    bad.write_text(json.dumps({"path": ["p"]}))
    with pytest.raises(MegaFaceFormatError, match="JSON key 'id' missing"):
        read_probe_list(bad)
    bad.write_text(json.dumps({"path": ["p", "q"], "id": ["a"]}))
    with pytest.raises(MegaFaceFormatError, match="different lengths"):
        read_probe_list(bad)
    bad.write_text(json.dumps({"path": ["p", None]}))
    with pytest.raises(MegaFaceFormatError, match=r"JSON key 'path'\[1\]"):
        read_distractor_list(bad)
    with pytest.raises(FileNotFoundError, match="no facescrub_features_list.json"):
        read_megaface(tmp_path / "nowhere")
