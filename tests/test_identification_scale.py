"""Identification and verification at scale: hand-computed CMC / TAR on tiny fixtures, and streamed
distractors (batches, iterables, a memory-mapped .npy) giving exactly the in-memory result."""

from __future__ import annotations

import numpy as np
import pytest

from kerasface.evaluators import (EVALUATORS, ImpostorCounts, RankCounts, embedding_batches, identification,
                                  megaface, tar_at_far)


def unit(deg):
    """2-d unit vectors at these angles (degrees): cosine similarity = cos(angle difference)."""
    rad = np.deg2rad(np.asarray(deg, np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=-1)


def test_megaface_protocol_by_hand():
    # identity A: images at 0 and 10 degrees; identity B: 90, 100, 130. Distractors at 5, 95, 180.
    probes = unit([0, 10, 90, 100, 130])
    ids = np.array(["A", "A", "B", "B", "B"])
    distractors = unit([5, 95, 180])
    r = megaface(probes, ids, distractors, ranks=(1, 2, 3), fars=(0.0, 0.2, 0.5))
    # trials (probe, gallery): A0-A10 (10 deg): distractor 5 is 5 deg from probe 0 -> rank 2;
    # A10-A0: distractor 5 is 5 deg from probe 10 -> rank 2; B90-B100 (10): d95 at 5 -> 2;
    # B90-B130 (40): d95 -> 2; B100-B90: d95 -> 2; B100-B130 (30): d95 -> 2; B130-B90 (40):
    # d95 35 deg from 130 -> 2; B130-B100 (30): d95 at 35 -> 1. Ranks: 2,2,2,2,2,2,2,1.
    assert r["trials"] == 8 and r["unanswerable"] == 0 and r["distractors"] == 3
    assert r["cmc"] == {"1": pytest.approx(1 / 8), "2": 1.0, "3": 1.0}
    assert r["rank1"] == pytest.approx(1 / 8) and r["cmc_curve"] == pytest.approx([1 / 8, 1, 1])
    assert r["impostor_pairs"] == 15 and r["genuine_pairs"] == 8
    # FAR 0: no impostor may reach the genuine score; the best impostor is 5 deg (cos 5 deg, from
    # probes 0, 10, 90, 100): genuine at 10, 30, 40 deg are all below it -> TAR 0.
    assert r["tar_at_far"]["0"]["tar"] == 0.0
    assert r["tar_at_far"]["0"]["threshold"] == pytest.approx(np.cos(np.deg2rad(5)))
    # FAR 0.2 (3 of 15 allowed) and 0.5 (7 allowed): against the sorted impostors, by brute force
    angles = np.abs(((np.array([0, 10, 90, 100, 130])[:, None] - np.array([5, 95, 180])[None, :]) + 180) % 360 - 180)
    imp = np.sort(np.cos(np.deg2rad(angles)).ravel())[::-1]
    gen = np.cos(np.deg2rad([10, 10, 10, 40, 10, 30, 40, 30]))
    for far in (0.2, 0.5):
        allowed = int(np.floor(far * 15))
        assert r["tar_at_far"][f"{far:g}"]["tar"] == pytest.approx(np.mean(gen > imp[allowed]))
        assert r["tar_at_far"][f"{far:g}"]["threshold"] == pytest.approx(imp[allowed])


def test_closed_set_keeps_the_old_answers():
    gallery = np.eye(4)
    probes = np.array([[1.0, 0.1, 0, 0], [0, 1.0, 0.9, 0], [0, 0.2, 1.0, 0], [0, 0, 0, 0.0]])
    distractors = np.array([[0, 1.0, 1.0, 0], [0, 0, 0, 1.0]])
    r = identification(probes, np.array([0, 1, 2, 9]), gallery, np.arange(4), distractors, ranks=(1, 2))
    assert r["cmc"] == {"1": pytest.approx(2 / 3), "2": 1.0}  # probe 9 has no gallery image
    assert r["trials"] == 3 and r["unanswerable"] == 1
    tar = tar_at_far(np.array([0.9, 0.8, 0.3]), np.array([0.95, 0.5, 0.4, 0.1]), (0.25, 0.5, 1.0))
    assert tar["0.25"]["tar"] == pytest.approx(2 / 3) and tar["0.25"]["threshold"] == 0.5
    assert tar["0.5"]["tar"] == pytest.approx(2 / 3) and tar["0.5"]["threshold"] == 0.4
    assert tar["1"]["tar"] == 1.0 and tar["1"]["threshold"] is None
    assert "identification" in EVALUATORS.names() and "megaface" in EVALUATORS.names()


def brute_force(probes, ids, distractors):
    """The MegaFace protocol with every score in memory, written independently."""
    p = probes / np.linalg.norm(probes, axis=1, keepdims=True)
    d = distractors / np.linalg.norm(distractors, axis=1, keepdims=True)
    intra, dist = p @ p.T, p @ d.T
    ranks, genuine = [], []
    for i in range(len(p)):
        for j in range(len(p)):
            if i != j and ids[i] == ids[j]:
                genuine.append(intra[i, j])
                ranks.append(1 + int(np.sum(dist[i] > intra[i, j])))
    return np.array(ranks), np.array(genuine), dist.ravel()


@pytest.mark.parametrize("per_identity", [2, 7])  # 1 trial per probe (vectorised slots) and 6 (per probe)
def test_streamed_equals_in_memory_exactly(tmp_path, per_identity):
    rng = np.random.default_rng(per_identity)
    ids = np.repeat(np.arange(6), per_identity)
    centres = rng.normal(size=(6, 16))
    probes = centres[ids] + 0.9 * rng.normal(size=(len(ids), 16))
    distractors = rng.normal(size=(2000, 16)).astype(np.float32)
    fars = (1e-3, 1e-2, 0.1)
    reference = megaface(probes, ids, distractors, ranks=(1, 5, 50), fars=fars, batch_size=len(distractors))
    ranks, genuine, impostor = brute_force(probes, ids, distractors.astype(np.float64))
    assert reference["cmc"]["1"] == pytest.approx(np.mean(ranks <= 1))
    assert reference["cmc_curve"] == pytest.approx([np.mean(ranks <= k) for k in range(1, 51)])
    imp = np.sort(impostor)[::-1]
    for far in fars:
        a = int(np.floor(far * len(imp)))
        assert reference["tar_at_far"][f"{far:g}"]["tar"] == pytest.approx(np.mean(genuine > imp[a]))
    np.save(tmp_path / "d.npy", distractors)
    streams = {"batches of 7": dict(distractors=distractors, batch_size=7),
               "memory-mapped .npy": dict(distractors=str(tmp_path / "d.npy"), batch_size=333),
               "iterable": dict(distractors=(distractors[i:i + 500] for i in range(0, 2000, 500)))}
    for name, kw in streams.items():
        streamed = megaface(probes, ids, ranks=(1, 5, 50), fars=fars, **kw)
        drop = ("batches",)
        assert {k: v for k, v in streamed.items() if k not in drop} == \
            {k: v for k, v in reference.items() if k not in drop}, name


def test_closed_set_streamed_equals_in_memory():
    rng = np.random.default_rng(3)
    gallery, gids = rng.normal(size=(20, 8)), np.arange(20) % 10
    probes, pids = rng.normal(size=(15, 8)), rng.integers(0, 12, 15)
    distractors = rng.normal(size=(999, 8))
    one = identification(probes, pids, gallery, gids, distractors, batch_size=0)
    many = identification(probes, pids, gallery, gids, iter(np.array_split(distractors, 13)))
    one.pop("batches"), many.pop("batches")
    assert one == many


def test_impostor_counts_threshold_kept_only_within_the_top_scores():
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(1, 1, 300), rng.normal(0, 1, 100_000)
    full = tar_at_far(genuine, impostor, (1e-4, 1e-2))
    small = ImpostorCounts(genuine, keep_top=50)
    for part in np.array_split(impostor, 9):
        small.add(part)
    got = small.tar_at_far((1e-4, 1e-2))
    assert got["0.0001"] == full["0.0001"]  # 10 allowed: within the 50 kept
    assert got["0.01"]["tar"] == full["0.01"]["tar"] and got["0.01"]["threshold"] is None
    roc = small.roc(max_points=None)
    assert roc["tar"][-1] == 1.0 and roc["far"] == sorted(roc["far"]) and len(roc["tar"]) == 300


def test_rank_counts_both_strategies_count_strictly_higher():
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [0.2, 0.3, 0.4, 0.6]])
    few = RankCounts([0, 1], [0.5, 0.35], 2)  # slot strategy
    few.add(scores)
    assert few.ranks().tolist() == [2, 3]  # ties (0.5) do not outrank
    many = RankCounts([0] * 6, [0.5, 0.0, 1.0, 0.5, 0.9, 0.2], 2)  # per-probe strategy
    many.add(scores[:, :2])
    many.add(scores[:, 2:])
    assert many.ranks().tolist() == [2, 5, 1, 2, 1, 4]
    assert [b.shape[0] for b in embedding_batches(np.zeros((10, 3)), 4)] == [4, 4, 2]
    with pytest.raises(ValueError, match="shape"):
        list(embedding_batches(np.zeros(5)))


def test_attribute_accuracy_table_beside_the_paper():
    from kerasface.evaluators import WANG_ATTRIBUTES, WANG_TABLE4, attributes

    target = np.array([[1, 0, 1], [0, 0, 1], [1, 1, -1], [0, 1, 0]], np.float64)
    scores = np.array([[0.9, 0.2, 0.5], [0.6, 0.1, 0.49], [0.7, 0.4, 0.0], [0.1, 0.8, 0.3]])
    r = attributes(target, scores, ["Male", "Chubby", "Big_Nose"], reported=WANG_TABLE4)
    # Male: 1,0,1,0 vs >=0.5: 1,1,1,0 -> 3/4; Chubby: 0,0,1,1 vs 0,0,0,1 -> 3/4;
    # Big_Nose: 1,1,?,0 vs 1,0,-,0 -> 2/3 (the unknown is not counted; 0.5 counts as present)
    assert r["per_attribute"] == {"Male": 0.75, "Chubby": 0.75, "Big_Nose": pytest.approx(2 / 3)}
    assert r["count"] == {"Male": 4, "Chubby": 4, "Big_Nose": 3}
    assert "| Male | 75.00% | 96.90% | 97.30% |" in r["table"]
    logits = attributes(target, scores - 0.5, ["Male", "Chubby", "Big_Nose"], threshold=0.0, select=["Male"])
    assert logits["per_attribute"] == {"Male": 0.75} and set(WANG_ATTRIBUTES) == set(WANG_TABLE4["Ours"])
    with pytest.raises(ValueError, match="Narrow_Eyes"):
        attributes(target, scores, ["Male", "Chubby", "Big_Nose"], select=WANG_ATTRIBUTES)
    # an attribute no image labels (the demo's Double_Chin) has no accuracy and stays out of the mean
    target[:, 1] = -1
    r = attributes(target, scores, ["Male", "Double_Chin", "Big_Nose"], reported=WANG_TABLE4)
    assert r["per_attribute"] == {"Male": 0.75, "Big_Nose": pytest.approx(2 / 3)} and r["unlabelled"] == ["Double_Chin"]
    assert r["mean_accuracy"] == pytest.approx((0.75 + 2 / 3) / 2)
    assert "| Double_Chin | no labels | 94.80% | 96.70% |" in r["table"]
