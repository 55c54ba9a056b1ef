"""Evaluators: the protocols that turn model outputs into reported numbers, by name.

  classification  accuracy, per-class precision/recall, confusion matrix (top-1/top-5 when the
                  task has more than MAX_CONFUSION_CLASSES classes)
  multilabel      accuracy per attribute and their mean; optionally an operating point: one
                  threshold over every attribute's probability at a target false-positive rate,
                  chosen on validation and applied to the other splits, with its tpr and fpr
  regression      mean absolute and root-mean-square error
  landmarks       mean point error normalised by the inter-ocular distance (NME)
  verification    the LFW pairs protocol: 10 folds, the threshold chosen on 9, accuracy on the 10th,
                  mean and std over folds; ROC and AUC over all pairs
  identification  identification against a gallery with distractors of any size, streamed in
                  batches: CMC (rank-k accuracy, the curve to rank K) and TAR at given FARs;
                  protocol closed_set (best gallery match per probe) or megaface
  megaface        MegaFace challenge 1: FaceScrub probes as their own gallery, distractors streamed
  tar_at_far      TAR at FAR (down to 1e-6 and below) from genuine and streamed impostor scores
  attributes      accuracy per attribute of 0/1 scores (regression) or logits (multilabel), beside
                  a paper's numbers (wang_joint's Table 4)

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


@evaluator("identity")
def identity(labels: np.ndarray, scores: np.ndarray, names: Sequence[str] = ()) -> dict:
    """An identity softmax (embedding heads): top-1 and top-5 over the training identities; a
    per-identity confusion matrix says nothing at thousands of classes."""
    from kerasface.metrics import topk_report

    return topk_report(labels, scores, ks=(1, 5))


@evaluator("multilabel")
def multilabel(labels: np.ndarray, logits: np.ndarray, names: Sequence[str] = (), operating_fpr: float = 0.0,
               threshold: float | None = None) -> dict:
    """Accuracy per attribute at probability 0.5; with `operating_fpr` > 0 also the operating point
    (metrics.operating_point) on the sigmoid probabilities: its threshold chosen on these samples,
    or `threshold` (the validation split's) applied to them."""
    from kerasface.metrics import multilabel_report, operating_point

    report = multilabel_report(labels, logits > 0, list(names) or [str(i) for i in range(logits.shape[-1])])
    if operating_fpr:
        probabilities = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
        report["operating_point"] = operating_point(labels, probabilities, operating_fpr, threshold)
    return report


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


# ----------------------------------------------------------------------------- at scale: streamed scores
#
# Identification and verification against a distractor set of any size (MegaFace: 1M) never hold
# the distractors' embeddings or the probe x distractor score matrix: distractor embeddings come in
# batches (`embedding_batches`: an array, a memory-mapped .npy, or any iterable of arrays), each
# batch is scored against the probes and reduced at once to COUNTS, and the batch is dropped.
#
# Why counts are exact (no histogram, no approximation):
# - identification: a trial (a probe and one genuine score g) has rank 1 + the number of
#   competitors scoring strictly above g; that number is a sum over batches.
# - verification: with the impostor scores sorted high to low (s_1 >= s_2 >= ...), the threshold
#   at FAR f lets through a = floor(f * N) impostors: t = s_(a+1), and a genuine score g is
#   accepted when g > t. g > s_(a+1) holds exactly when fewer than a+1 impostors score >= g, so
#   TAR(f) = mean over genuine g of [count(impostors >= g) <= a]. The per-genuine counts are sums
#   over batches, and N need not be known in advance.
# - the threshold value t itself needs the (a+1)-th highest impostor: the `keep_top` highest
#   impostor scores are kept (a top-k of a union is the top-k of the parts' top-k: exact), so t is
#   reported when a < keep_top (FAR 1e-6 of 4e9 impostors: a = 4000) and None otherwise; the TAR
#   never depends on it.
# Ties: a competitor scoring exactly the genuine score does not outrank it (rank counts strictly
# higher scores; a genuine score equal to the threshold is rejected, as before).

DEFAULT_BATCH_SIZE = 8192  # distractor embeddings scored at once (x 1024-d float64: 64 MB)
DEFAULT_KEEP_TOP = 100_000  # highest impostor scores kept, for the threshold values (0.8 MB)


def _normalise(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def embedding_batches(source, batch_size: int = DEFAULT_BATCH_SIZE):
    """Distractor embeddings in batches of at most `batch_size` rows: `source` is None (nothing),
    an (N, D) array or np.memmap (sliced, so a memory map reads one batch at a time), a path to a
    .npy file (opened memory-mapped), or an iterable of (n, D) arrays (yielded as they come)."""
    import os

    if source is None:
        return
    if isinstance(source, (str, os.PathLike)):
        source = np.load(source, mmap_mode="r")
    if isinstance(source, np.ndarray):
        if source.ndim != 2:
            raise ValueError(f"distractor embeddings: expected an (N, D) array, got shape {source.shape}")
        step = max(1, int(batch_size or len(source) or 1))
        for start in range(0, len(source), step):
            yield source[start:start + step]
        return
    for batch in source:
        batch = np.asarray(batch)
        if batch.ndim != 2:
            raise ValueError(f"distractor embeddings: expected batches of shape (n, D), got {batch.shape}")
        if len(batch):
            yield batch


class ImpostorCounts:
    """Streamed impostor scores -> exact TAR at any FAR and the ROC points (see the notes above).

    `add(scores)` takes impostor scores of any shape, as many times as needed; for each genuine
    score it counts the impostors scoring >= it, and it keeps the `keep_top` highest impostors."""

    def __init__(self, genuine, keep_top: int = DEFAULT_KEEP_TOP):
        self.genuine = np.sort(np.asarray(genuine, np.float64).ravel())  # ascending
        self._hist = np.zeros(len(self.genuine) + 1, np.int64)  # by the number of genuine <= score
        self.count = 0
        self.keep_top = int(keep_top)
        self.top = np.empty(0, np.float64)  # descending

    def add(self, scores) -> None:
        scores = np.asarray(scores, np.float64).ravel()
        self.count += scores.size
        if not scores.size:
            return
        if len(self.genuine):
            relevant = scores[scores >= self.genuine[0]]  # below every genuine score: counts for none
            index = np.searchsorted(self.genuine, relevant, side="right")  # genuine scores <= each
            self._hist += np.bincount(index, minlength=len(self._hist))
        if self.keep_top > 0:
            if len(self.top) >= self.keep_top:
                scores = scores[scores > self.top[-1]]
            merged = np.concatenate([self.top, scores])
            if len(merged) > self.keep_top:
                merged = np.partition(merged, len(merged) - self.keep_top)[len(merged) - self.keep_top:]
            self.top = np.sort(merged)[::-1]

    def at_or_above(self) -> np.ndarray:
        """For each genuine score (ascending order), the number of impostors scoring >= it."""
        # an impostor with index i (i genuine scores <= it) is >= genuine[j] for every j < i
        return np.cumsum(self._hist[::-1])[::-1][1:]

    def tar_at_far(self, fars: Sequence[float]) -> dict:
        above = self.at_or_above()
        result = {}
        for far in fars:
            allowed = int(np.floor(far * self.count))
            if allowed >= self.count:
                threshold = None  # every impostor accepted
            elif allowed < len(self.top):
                threshold = float(self.top[allowed])
            else:
                threshold = None  # not among the kept top scores (the TAR is exact all the same)
            tar = float(np.mean(above <= allowed)) if len(above) else 0.0
            result[f"{far:g}"] = {"tar": tar, "threshold": threshold, "impostors": int(self.count),
                                  "resolvable": bool(far * self.count >= 1)}
        return result

    def roc(self, max_points: int | None = 1000) -> dict:
        """The ROC's corner points, one per distinct genuine score g (threshold "score >= g"):
        far = impostors >= g / N, tar = genuine >= g / G, from the strictest threshold down;
        thinned to about `max_points` (the first and last always kept)."""
        g, above = self.genuine, self.at_or_above()
        if not len(g):
            return {"far": [], "tar": [], "threshold": []}
        first = np.r_[True, g[1:] != g[:-1]]  # first copy of each distinct score: genuine >= g from there
        thresholds = g[first][::-1]
        tar = (len(g) - np.flatnonzero(first))[::-1] / len(g)
        far = above[first][::-1] / max(self.count, 1)
        keep = np.arange(len(thresholds))
        if max_points and len(keep) > max_points:
            keep = np.unique(np.linspace(0, len(keep) - 1, max_points).round().astype(int))
        return {"far": far[keep].tolist(), "tar": tar[keep].tolist(), "threshold": thresholds[keep].tolist()}


class RankCounts:
    """Identification trials (probe row, genuine score) -> the number of competitors scoring
    strictly above each trial's genuine score, summed over streamed (probes, competitors) score
    blocks. Memory: one integer per trial."""

    def __init__(self, trial_probe, trial_score, num_probes: int):
        self.trial_probe = np.asarray(trial_probe, np.int64)
        self.trial_score = np.asarray(trial_score, np.float64)
        self.above = np.zeros(len(self.trial_probe), np.int64)
        self.competitors = 0
        order = np.lexsort((self.trial_score, self.trial_probe))  # by probe, then score
        self._order = order
        counts = np.bincount(self.trial_probe, minlength=num_probes)
        self._bounds = np.r_[0, np.cumsum(counts)]
        self._sorted = self.trial_score[order]
        self.slots = int(counts.max()) if len(counts) and len(self.trial_probe) else 0
        if self.slots <= 4:  # few trials per probe (closed set: one): padded per-probe slots, vectorised
            self._slot_scores = np.full((num_probes, max(self.slots, 1)), np.inf)
            self._slot_trial = np.full((num_probes, max(self.slots, 1)), -1, np.int64)
            rank_in_probe = np.arange(len(order)) - self._bounds[self.trial_probe[order]]
            self._slot_scores[self.trial_probe[order], rank_in_probe] = self._sorted
            self._slot_trial[self.trial_probe[order], rank_in_probe] = order

    def add(self, scores) -> None:
        """scores: (num_probes, B), every probe against the same B competitors."""
        scores = np.asarray(scores, np.float64)
        self.competitors += scores.shape[1]
        if not len(self.trial_probe) or not scores.shape[1]:
            return
        if self.slots <= 4:
            for j in range(self._slot_scores.shape[1]):
                counts = np.sum(scores > self._slot_scores[:, j:j + 1], axis=1)
                used = self._slot_trial[:, j] >= 0
                self.above[self._slot_trial[used, j]] += counts[used]
            return
        for p in np.flatnonzero(np.diff(self._bounds)):  # many trials per probe (MegaFace): per probe
            lo, hi = self._bounds[p], self._bounds[p + 1]
            genuine = self._sorted[lo:hi]
            row = scores[p]
            index = np.searchsorted(genuine, row[row > genuine[0]], side="left")  # genuine < score
            self.above[self._order[lo:hi]] += np.cumsum(np.bincount(index, minlength=hi - lo + 1)[::-1])[::-1][1:]

    def ranks(self, extra=None) -> np.ndarray:
        return 1 + self.above + (0 if extra is None else np.asarray(extra, np.int64))


def cmc(ranks, ks: Sequence[int]) -> dict:
    """CMC at each rank k: the fraction of trials ranked k or better."""
    ranks = np.asarray(ranks)
    return {str(k): float(np.mean(ranks <= k)) if len(ranks) else 0.0 for k in ks}


def cmc_curve(ranks, max_rank: int) -> list[float]:
    """CMC at ranks 1..max_rank (one cumulative histogram)."""
    ranks = np.asarray(ranks)
    if not len(ranks):
        return [0.0] * max_rank
    hist = np.bincount(np.minimum(ranks, max_rank + 1), minlength=max_rank + 2)[1:max_rank + 1]
    return (np.cumsum(hist) / len(ranks)).tolist()


@evaluator("tar_at_far")
def tar_at_far(genuine: np.ndarray, impostor, fars: Sequence[float] = (1e-6, 1e-4, 1e-2),
               keep_top: int = DEFAULT_KEEP_TOP) -> dict:
    """True accept rate at each false accept rate: the threshold lets through `far` of the impostor
    scores (never fewer than one impostor above it when far * count < 1, which is then reported as
    not resolvable). `impostor`: an array, or an iterable of arrays (streamed: see ImpostorCounts);
    the result is the same either way."""
    counts = ImpostorCounts(genuine, keep_top)
    if isinstance(impostor, np.ndarray) or np.isscalar(impostor):
        counts.add(impostor)
    else:
        for part in impostor:
            counts.add(part)
    return counts.tar_at_far(fars)


def _stream_distractors(probes_n: np.ndarray, distractors, batch_size: int, consumers, progress: bool) -> tuple[int, int]:
    """Score every probe against each distractor batch and hand the block to each consumer."""
    bar = None
    total = len(distractors) if isinstance(distractors, np.ndarray) else None
    if progress:
        from tqdm import tqdm
        import sys

        bar = tqdm(total=total, desc="distractors", unit="emb", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    seen = batches = 0
    for batch in embedding_batches(distractors, batch_size):
        if batch.shape[1] != probes_n.shape[1]:
            raise ValueError(f"distractor embeddings have {batch.shape[1]} values, the probes {probes_n.shape[1]}")
        block = probes_n @ _normalise(batch).T
        for consume in consumers:
            consume(block)
        seen += len(batch)
        batches += 1
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return seen, batches


@evaluator("identification")
def identification(probes: np.ndarray, probe_ids: np.ndarray, gallery: np.ndarray | None, gallery_ids=None,
                   distractors=None, ranks: Sequence[int] = (1, 5, 10),
                   fars: Sequence[float] = (1e-6, 1e-4, 1e-2), *, protocol: str = "closed_set",
                   max_rank: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   keep_top: int = DEFAULT_KEEP_TOP, roc_points: int = 1000, progress: bool = False) -> dict:
    """Identification (CMC) and verification (TAR at FAR) by cosine similarity, with distractors of
    any size streamed (`distractors`: see embedding_batches; a 1M set is never in memory at once).

    protocol "closed_set": one trial per probe that has a gallery image of its identity; its
        genuine score is its best matching gallery image; rank = 1 + the non-matching gallery
        images and distractors scoring strictly higher. Genuine pairs: probe x matching gallery;
        impostor pairs: probe x non-matching gallery and probe x distractor.
    protocol "megaface" (MegaFace challenge 1, FaceScrub probes): one trial per (probe, gallery
        image of the same identity) pair; the gallery of that trial is the one image plus the
        distractors, so rank = 1 + the distractors scoring strictly higher than the pair's score.
        `gallery=None` uses the probes themselves as the gallery, leaving out each probe's own
        image (the devkit: every image of an identity in turn in the gallery, each other image
        probing it). Genuine pairs: those trials; impostor pairs: probe x distractor (the
        devkit's "4 billion negative pairs").
    Probes without any gallery image of their identity are not trials (reported as unanswerable).

    Returns cmc {k: rate}, rank1 (= accuracy), cmc_curve (ranks 1..max_rank, default max(ranks)),
    tar_at_far {far: {tar, threshold, impostors, resolvable}}, roc {far, tar, threshold} (corner
    points, thinned to roc_points), and the counts (probes, trials, unanswerable, gallery,
    distractors, genuine_pairs, impostor_pairs)."""
    if protocol not in ("closed_set", "megaface"):
        raise ValueError(f"identification protocol: expected closed_set or megaface, got {protocol!r}")
    probe_ids = np.asarray(probe_ids)
    probes_n = _normalise(probes)
    if gallery is None:
        if protocol != "megaface":
            raise ValueError("identification: a closed_set evaluation needs a gallery")
        gallery_n, gallery_ids, itself = probes_n, probe_ids, True
    else:
        gallery_n, gallery_ids, itself = _normalise(gallery), np.asarray(gallery_ids), False
    sims = probes_n @ gallery_n.T if len(gallery_n) else np.zeros((len(probes_n), 0))
    match = gallery_ids[None, :] == probe_ids[:, None]
    if itself:
        np.fill_diagonal(match, False)
    answerable = match.any(axis=1)
    gallery_impostors = np.empty(0)
    if protocol == "closed_set":
        trial_probe = np.flatnonzero(answerable)
        trial_score = np.where(match, sims, -np.inf).max(axis=1)[trial_probe]
        gallery_above = np.sum(np.where(match, -np.inf, sims)[trial_probe] > trial_score[:, None], axis=1)
        genuine = sims[match]
        gallery_impostors = sims[~match]
    else:
        trial_probe, trial_gallery = np.nonzero(match)
        trial_score = sims[trial_probe, trial_gallery]
        gallery_above = None
        genuine = trial_score
    rank_counts = RankCounts(trial_probe, trial_score, len(probes_n))
    impostors = ImpostorCounts(genuine, keep_top)
    impostors.add(gallery_impostors)
    seen, batches = _stream_distractors(probes_n, distractors, batch_size, (rank_counts.add, impostors.add), progress)
    trial_ranks = rank_counts.ranks(gallery_above)
    max_rank = int(max_rank or max(ranks))
    rates = cmc(trial_ranks, ranks)
    rank1 = float(np.mean(trial_ranks <= 1)) if len(trial_ranks) else 0.0
    return {"cmc": rates, "rank1": rank1, "accuracy": rank1, "cmc_curve": cmc_curve(trial_ranks, max_rank),
            "tar_at_far": impostors.tar_at_far(fars), "roc": impostors.roc(roc_points),
            "protocol": protocol, "probes": int(len(probes_n)), "trials": int(len(trial_ranks)),
            "unanswerable": int(np.sum(~answerable)), "gallery": int(len(gallery_n)), "distractors": int(seen),
            "batches": int(batches), "genuine_pairs": int(len(genuine)), "impostor_pairs": int(impostors.count)}


@evaluator("megaface")
def megaface(probes: np.ndarray, probe_ids, distractors, ranks: Sequence[int] = (1, 10, 100, 1000),
             fars: Sequence[float] = (1e-6, 1e-5, 1e-4, 1e-3), **kwargs) -> dict:
    """MegaFace challenge 1 (FaceScrub probes against a distractor set, e.g. 1M): `identification`
    with protocol "megaface" and the probes as their own gallery. Rank-1 and TAR at FAR 1e-6 are
    the two numbers wang_joint reports."""
    return identification(probes, probe_ids, None, None, distractors, ranks, fars, protocol="megaface", **kwargs)


# ----------------------------------------------------------------------------- attributes (Table 4 style)

WANG_ATTRIBUTES = ("Narrow_Eyes", "Big_Nose", "Pointy_Nose", "Chubby", "Double_Chin", "High_Cheekbones", "Male")
# wang_joint Table 4: accuracy on 1,000 FaceScrub images labelled by three annotators
WANG_TABLE4 = {
    "MOON": {"Narrow_Eyes": 0.834, "Big_Nose": 0.710, "Pointy_Nose": 0.705, "Chubby": 0.933,
             "Double_Chin": 0.948, "High_Cheekbones": 0.741, "Male": 0.969},
    "Ours": {"Narrow_Eyes": 0.856, "Big_Nose": 0.753, "Pointy_Nose": 0.739, "Chubby": 0.935,
             "Double_Chin": 0.967, "High_Cheekbones": 0.768, "Male": 0.973},
}


@evaluator("attributes")
def attributes(target: np.ndarray, predicted: np.ndarray, names: Sequence[str] = (), *, threshold: float = 0.5,
               select: Sequence[str] | None = None, reported: dict | None = None) -> dict:
    """Accuracy per attribute: predicted[:, i] >= threshold means present (0.5 for the MSE-trained
    0/1 scores of a `regression` head; pass 0.0 for the logits of a `multilabel` head). Targets are
    0/1; -1 or NaN is unknown and not counted. `select` picks attributes by name from a wider output
    (the seven of wang_joint from CelebA's 40). `reported`: {column: {attribute: accuracy}} printed
    beside ours in `table` (markdown), e.g. WANG_TABLE4."""
    target = np.asarray(target, np.float64)
    predicted = np.asarray(predicted, np.float64)
    names = list(names) or [str(i) for i in range(predicted.shape[-1])]
    if target.shape != predicted.shape or len(names) != predicted.shape[-1]:
        raise ValueError(f"attributes: target {target.shape}, predicted {predicted.shape} and {len(names)} names "
                         "do not match")
    columns = list(range(len(names)))
    if select is not None:
        missing = [a for a in select if a not in names]
        if missing:
            raise ValueError(f"attributes: {', '.join(missing)} not among the outputs ({', '.join(names)})")
        columns = [names.index(a) for a in select]
    per, counts, unlabelled = {}, {}, []
    for c in columns:
        known = np.isfinite(target[:, c]) & (target[:, c] >= 0)
        counts[names[c]] = int(known.sum())
        if known.any():
            per[names[c]] = float(np.mean((predicted[known, c] >= threshold) == (target[known, c] >= 0.5)))
        else:  # no image labels it: no accuracy, and not in the mean
            unlabelled.append(names[c])
    mean = float(np.mean(list(per.values()))) if per else 0.0
    reported = reported or {}
    head = "| attribute | this run | " + " | ".join(f"paper: {k}" for k in reported) + " |"
    lines = [head, "|" + " --- |" * (2 + len(reported))]
    for name, acc in per.items():
        paper = [f"{100 * v[name]:.2f}%" if name in v else "" for v in reported.values()]
        lines.append(f"| {name} | {100 * acc:.2f}% | " + " | ".join(paper) + " |")
    lines.append(f"| mean | {100 * mean:.2f}% | " + " | ".join(
        f"{100 * np.mean([v[n] for n in per if n in v]):.2f}%" if any(n in v for n in per) else ""
        for v in reported.values()) + " |")
    lines += [f"| {name} | no labels | " + " | ".join(
        f"{100 * v[name]:.2f}%" if name in v else "" for v in reported.values()) + " |" for name in unlabelled]
    return {"accuracy": mean, "mean_accuracy": mean, "per_attribute": per, "count": counts, "unlabelled": unlabelled,
            "threshold": float(threshold), "table": "\n".join(lines),
            "reported": {k: {n: float(v[n]) for n in per if n in v} for k, v in reported.items()}}
