"""Evaluators: the protocols that turn model outputs into reported numbers, by name.

  classification  accuracy, per-class precision/recall, confusion matrix (top-1/top-5 when the
                  task has more than MAX_CONFUSION_CLASSES classes)
  multilabel      accuracy per attribute and their mean
  regression      mean absolute and root-mean-square error
  landmarks       mean point error normalised by the inter-ocular distance (NME)
  verification    the LFW pairs protocol: 10 folds, the threshold chosen on 9, accuracy on the 10th,
                  mean and std over folds; ROC and AUC over all pairs
  identification  closed-set identification against a gallery with distractors: CMC (rank-k
                  accuracy) and TAR at given FARs (MegaFace's two numbers)

Each head kind names its evaluator (HeadKind.evaluator); verification and identification run on
embeddings, with pairs or a probe/gallery split given by the dataset.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kerasface.registry import Registry

EVALUATORS: Registry = Registry("evaluator")
MAX_CONFUSION_CLASSES = 50  # a confusion matrix beyond this is unreadable (and 10,000^2 ints is 800 MB)


def evaluator(name: str):
    return EVALUATORS.register(name)


@evaluator("classification")
def classification(labels: np.ndarray, scores: np.ndarray, names: Sequence[str] = ()) -> dict:
    from kerasface.metrics import classification_report, topk_report

    classes = scores.shape[-1]
    if classes > MAX_CONFUSION_CLASSES:
        return topk_report(labels, scores, ks=(1, 5))
    return classification_report(labels, scores.argmax(-1), list(names) or [str(i) for i in range(classes)])


@evaluator("multilabel")
def multilabel(labels: np.ndarray, logits: np.ndarray, names: Sequence[str] = ()) -> dict:
    from kerasface.metrics import multilabel_report

    return multilabel_report(labels, logits > 0, list(names) or [str(i) for i in range(logits.shape[-1])])


@evaluator("regression")
def regression(target: np.ndarray, predicted: np.ndarray, names: Sequence[str] = ()) -> dict:
    from kerasface.metrics import regression_report

    return regression_report(target, predicted, list(names) or [str(i) for i in range(predicted.shape[-1])])


@evaluator("landmarks")
def landmarks(target: np.ndarray, predicted: np.ndarray, input_size: Sequence[int] = (1, 1)) -> dict:
    from kerasface.metrics import landmark_report

    return landmark_report(target, predicted, input_size[1], input_size[0])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays."""
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=-1)


def _best_threshold(similarity: np.ndarray, same: np.ndarray) -> float:
    """The threshold (similarity >= t means "same") with the highest accuracy on these pairs."""
    candidates = np.unique(similarity)
    # midpoints between neighbours, and below everything
    cuts = np.concatenate([[candidates[0] - 1e-6], (candidates[:-1] + candidates[1:]) / 2, [candidates[-1] + 1e-6]])
    accuracy = [np.mean((similarity >= t) == same) for t in cuts]
    return float(cuts[int(np.argmax(accuracy))])


def roc(similarity: np.ndarray, same: np.ndarray) -> dict:
    """ROC over all thresholds: false and true positive rates, and the area under the curve."""
    order = np.argsort(-similarity, kind="stable")
    same = same[order].astype(bool)
    tp = np.concatenate([[0], np.cumsum(same)])
    fp = np.concatenate([[0], np.cumsum(~same)])
    tpr = tp / max(same.sum(), 1)
    fpr = fp / max((~same).sum(), 1)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(np.trapezoid(tpr, fpr))}


@evaluator("verification")
def verification(first: np.ndarray, second: np.ndarray, same: np.ndarray, folds: int = 10,
                 fold_of: np.ndarray | None = None) -> dict:
    """Pairs protocol: `first[i]` and `second[i]` are embeddings of pair i, `same[i]` whether they
    show one person. `fold_of[i]` is the pair's fold (LFW's pairs.txt gives them; default: pairs
    dealt to folds in order, as the 10 consecutive blocks of pairs.txt). A fold without pairs gets
    threshold and accuracy None and is left out of the mean and std."""
    same = np.asarray(same, bool)
    similarity = cosine(np.asarray(first, np.float64), np.asarray(second, np.float64))
    fold_of = np.asarray(fold_of) if fold_of is not None else np.arange(len(same)) * folds // max(len(same), 1)
    accuracies, thresholds = [], []
    for k in range(folds):
        test = fold_of == k
        if not test.any() or test.all():  # a fold without pairs (all left out), or nothing to choose on
            thresholds.append(None)
            accuracies.append(None)
            continue
        threshold = _best_threshold(similarity[~test], same[~test])
        thresholds.append(threshold)
        accuracies.append(float(np.mean((similarity[test] >= threshold) == same[test])))
    curve = roc(similarity, same)
    scored = [a for a in accuracies if a is not None]  # folds without pairs: None, not in the mean
    return {"accuracy": float(np.mean(scored)) if scored else float("nan"),
            "std": float(np.std(scored)) if scored else float("nan"),
            "fold_accuracy": accuracies, "thresholds": thresholds, "auc": curve["auc"], "roc": curve,
            "count": int(len(same))}


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, fars: Sequence[float]) -> dict:
    """True accept rate at each false accept rate: the threshold lets through `far` of the impostor
    scores (never fewer than one impostor above it when far * count < 1, which is then reported)."""
    impostor = np.sort(np.asarray(impostor, np.float64))[::-1]
    genuine = np.asarray(genuine, np.float64)
    result = {}
    for far in fars:
        allowed = int(np.floor(far * len(impostor)))
        threshold = impostor[allowed] if allowed < len(impostor) else -np.inf  # strictly above it
        result[f"{far:g}"] = {"tar": float(np.mean(genuine > threshold)), "threshold": float(threshold),
                              "impostors": int(len(impostor)), "resolvable": bool(far * len(impostor) >= 1)}
    return result


@evaluator("identification")
def identification(probes: np.ndarray, probe_ids: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray,
                   distractors: np.ndarray | None = None, ranks: Sequence[int] = (1, 5, 10),
                   fars: Sequence[float] = (1e-6, 1e-4, 1e-2)) -> dict:
    """For every probe, rank the gallery (its identities plus the distractors, id -1) by cosine
    similarity: CMC rank-k is the fraction of probes whose identity appears among the k nearest.
    TAR at FAR compares genuine (same id) and impostor (other ids and distractors) similarities."""
    probes = np.asarray(probes, np.float64)
    gallery = np.asarray(gallery, np.float64)
    gallery_ids = np.asarray(gallery_ids)
    if distractors is not None and len(distractors):
        gallery = np.concatenate([gallery, np.asarray(distractors, np.float64)])
        gallery_ids = np.concatenate([gallery_ids, -np.ones(len(distractors), gallery_ids.dtype)])
    norm = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731
    sims = norm(probes) @ norm(gallery).T
    match = gallery_ids[None, :] == np.asarray(probe_ids)[:, None]
    best_genuine = np.where(match, sims, -np.inf).max(axis=1)
    # rank = 1 + the number of non-matching entries scoring strictly higher than the best match
    rank = 1 + np.sum(np.where(match, -np.inf, sims) > best_genuine[:, None], axis=1)
    answerable = match.any(axis=1)
    cmc = {str(k): float(np.mean(rank[answerable] <= k)) if answerable.any() else 0.0 for k in ranks}
    return {"cmc": cmc, "rank1": cmc.get("1", 0.0), "accuracy": cmc.get("1", 0.0),
            "tar_at_far": tar_at_far(sims[match], sims[~match], fars),
            "probes": int(len(probes)), "gallery": int(len(gallery))}
