"""Attribute labelling of an identity tree: the vote, the resumable progress file, and the command
end to end with a fake model whose answers are written into the images themselves."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kerasface.data.celeba import ATTRIBUTES
from kerasface.evaluators import WANG_ATTRIBUTES
from kerasface.label_attributes import label_attributes, main, majority_vote, read_labels
from kerasface.predict.model import Model, ModelInfo, Output


def test_majority_vote_and_its_tie_rule():
    labels = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 1], [0, 0]])
    ids = ["a", "a", "a", "b", "b", "c"]
    voted = majority_vote(labels, ids)
    # a: 2 of 3 have attr0 -> 1, 2 of 3 attr1 -> 1; b: 1 of 2 each (ties -> 0 without scores); c: itself
    assert voted.tolist() == [[1, 1], [1, 1], [1, 1], [0, 0], [0, 0], [0, 0]]
    scores = np.array([[.9, .1], [.8, .7], [.2, .6], [.3, .1], [.9, .8], [.1, .2]])
    # b's ties: attr0 mean (0.3 + 0.9) / 2 = 0.6 -> 1; attr1 (0.1 + 0.8) / 2 = 0.45 -> 0
    assert majority_vote(labels, ids, scores)[3:5].tolist() == [[1, 0], [1, 0]]


class FakeCelebA(Model):
    """Multilabel over CelebA's 40: attribute WANG_ATTRIBUTES[r] = mean red of image row r / 255."""

    def __init__(self, fail_after: int | None = None):
        self.info = ModelInfo("fake", "fake-celeba", "saved_model", "whole_image", (8, 8), 3,
                              (Output("celeba", "multilabel", ATTRIBUTES),))
        self.seen: list[int] = []
        self.fail_after = fail_after

    def predict(self, x):
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise KeyboardInterrupt  # the user stops a long run
        self.seen.append(len(x))
        out = np.zeros((len(x), len(ATTRIBUTES)), np.float32)
        for r, name in enumerate(WANG_ATTRIBUTES):
            out[:, ATTRIBUTES.index(name)] = x[:, r, :, 0].mean(axis=1) / 255.0
        return {"celeba": out}


def write_face(path, present):
    pixels = np.zeros((8, 8, 3), np.uint8)
    for r, on in enumerate(present):
        pixels[r, :, 0] = 255 if on else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


#                  Narrow Big Pointy Chubby Double High Male
A = {"001.png": (1, 0, 0, 0, 0, 1, 1), "002.png": (1, 0, 0, 0, 0, 0, 1), "003.png": (0, 1, 0, 0, 0, 0, 0)}
B = {"x/1.png": (0, 0, 1, 1, 0, 0, 1), "x/2.png": (0, 0, 0, 1, 0, 0, 0)}  # a tie on Pointy_Nose and Male


def write_tree(root):
    for ident, images in (("0000045", A), ("0000099", B)):
        for name, present in images.items():
            write_face(root / ident / name, present)
    (root / "0000099" / "broken.jpg").write_bytes(b"not a jpeg")


# The vote, worked by hand: 0000045 -> Narrow 1, Big 0, Pointy 0, Chubby 0, Double 0, High 0, Male 1;
# 0000099: Chubby 1; its ties have mean score 0.5 (>= 0.5: present) -> Pointy 1, Male 1.
EXPECTED = ["0000045/001.png 1 0 0 0 0 0 1", "0000045/002.png 1 0 0 0 0 0 1", "0000045/003.png 1 0 0 0 0 0 1",
            "0000099/x/1.png 0 0 1 1 0 0 1", "0000099/x/2.png 0 0 1 1 0 0 1"]


def test_labels_every_image_votes_per_identity_and_skips_bad_images(tmp_path):
    write_tree(tmp_path / "tree")
    summary = label_attributes(FakeCelebA(), tmp_path / "tree", batch_size=2)
    out = tmp_path / "tree" / "attributes.txt"
    assert out.read_text().splitlines() == [" ".join(WANG_ATTRIBUTES)] + EXPECTED
    assert summary["labelled"] == 5 and summary["skipped"] == 1 and summary["images"] == 6
    assert summary["failed"][0]["path"] == "0000099/broken.jpg"
    assert summary["flipped"] == 1 + 3 + 2  # 001 High; 003 Narrow, Big, Male; x/2 Pointy, Male
    names, labels = read_labels(out)
    assert names == WANG_ATTRIBUTES and labels["0000099/x/2.png"] == (0, 0, 1, 1, 0, 0, 1)
    assert not (tmp_path / "tree" / "attributes.txt.partial").exists()


def test_interrupted_run_resumes_and_the_file_appears_only_when_complete(tmp_path):
    write_tree(tmp_path / "tree")
    out = tmp_path / "labels" / "casia.txt"
    with pytest.raises(KeyboardInterrupt):
        label_attributes(FakeCelebA(fail_after=1), tmp_path / "tree", out, batch_size=2)
    partial = out.with_name("casia.txt.partial")
    assert not out.exists() and len(partial.read_text().splitlines()) == 1 + 2  # header + first batch
    with open(partial, "a") as fh:
        fh.write('{"path": "0000099/x/1.png", "sco')  # a line cut off by the interruption
    again = FakeCelebA()
    summary = label_attributes(again, tmp_path / "tree", out, batch_size=2)
    assert summary["resumed"] == 2 and sum(again.seen) == 3  # only the images not yet done
    assert out.read_text().splitlines()[1:] == EXPECTED and not partial.exists()
    with pytest.raises(ValueError, match="made for attributes"):
        partial.write_text('{"attributes": ["Male"], "model": "m"}\n')
        label_attributes(FakeCelebA(), tmp_path / "tree", out)


def test_command_line(tmp_path, monkeypatch, capsys):
    import kerasface.label_attributes as la

    write_tree(tmp_path / "tree")
    monkeypatch.setattr(la, "open_model", lambda spec: (FakeCelebA(), lambda: None))
    assert main(["fake", "--root", str(tmp_path / "tree"), "--attributes", "Male,Chubby", "--no-progress"]) == 0
    assert (tmp_path / "tree" / "attributes.txt").read_text().splitlines()[:2] == ["Male Chubby", "0000045/001.png 1 0"]
    assert "5 of 6 images labelled" in capsys.readouterr().out
    assert main(["fake", "--root", str(tmp_path / "tree"), "--attributes", "Wings", "--out",
                 str(tmp_path / "w.txt"), "--no-progress"]) == 2
    assert "no output answers Wings" in capsys.readouterr().err
    assert main(["fake", "--root", str(tmp_path / "tree"), "--strict", "--out", str(tmp_path / "t.txt"),
                 "--no-progress"]) == 1 and not (tmp_path / "t.txt").exists()


def test_detect_mode_finds_the_face_and_skips_an_image_without_one(tmp_path):
    """--faces detect: MTCNN finds the astronaut's face, the model's crop scheme is cut by the
    predictor; a flat grey image has no face and is skipped with that reason."""
    import skimage

    root = tmp_path / "tree"
    (root / "astro").mkdir(parents=True)
    Image.fromarray(skimage.data.astronaut()).save(root / "astro" / "1.png")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(root / "astro" / "2.png")
    model = FakeCelebA()
    model.info.crop = "wang_112x96"
    summary = label_attributes(model, root, faces="detect", attributes=["Male"])
    assert summary["labelled"] == 1 and summary["failed"] == [{"path": "astro/2.png", "reason": "no face found"}]
    names, labels = read_labels(root / "attributes.txt")
    assert names == ("Male",) and set(labels) == {"astro/1.png"} and model.seen == [1]


@pytest.mark.slow
def test_a_run_folder_is_exported_and_labels_the_tree(tmp_path_factory):
    """MODEL = a training run folder (tests/run_fixture.py: smile and gender heads): exported to a
    temporary SavedModel, run on the tree's images; a head named after the attribute answers it
    (classification: the probability of its second class, "smiling" / "male")."""
    import run_fixture

    run = run_fixture.cached_run(tmp_path_factory.getbasetemp())
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    for ident in ("p1", "p2"):
        for k in range(3):
            (root / ident).mkdir(exist_ok=True)
            Image.fromarray(run_fixture.make_image(rng, smile=k % 2, gender=0)).save(root / ident / f"{k}.jpg")
    summary = label_attributes(run, root, attributes=["smile", "gender"])
    names, labels = read_labels(root / "attributes.txt")
    assert names == ("smile", "gender") and summary["labelled"] == 6 and summary["skipped"] == 0
    for ident in ("p1", "p2"):  # the vote made each identity's labels one
        assert len({labels[f"{ident}/{k}.jpg"] for k in range(3)}) == 1
