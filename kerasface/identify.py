"""Identification on MegaFace (challenge 1): a model's embedding of the FaceScrub probes and of a
distractor set, scored by kerasface.evaluators.megaface (CMC rank-1 and the curve, TAR at FAR down
to 1e-6), the distractors embedded and scored in batches so that a million never sit in memory.

    from kerasface.identify import identify_model
    report = identify_model("runs/wang_joint", "/data/MegaFace", size=1000000, json_out="megaface.json")

MODEL: an exported SavedModel or a run folder (kerasface.verify.model_embedder); ROOT: the layout of
kerasface.data.megaface (devkit lists, facescrub/ and megaface/ images). Images that cannot be
embedded (unreadable, no face) are left out and counted: a probe as no trial, a distractor as
absent. The CMC curve is drawn as a PNG beside the JSON report.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerasface.data.megaface import DISTRACTOR_IMAGES, DISTRACTOR_LIST, PROBE_IMAGES, read_megaface, templatelists
from kerasface.verify import failure_reason, model_embedder

BATCH = 256  # images embedded per call


def available_size(root: Path) -> int:
    """The largest distractor list (set 1, `megaface_features_list.json_<N>_1`) the devkit folder holds."""
    folder = templatelists(root)
    prefix = f"{DISTRACTOR_LIST}_"
    sizes = [int(size) for size, _, index in (p.name[len(prefix):].partition("_") for p in folder.iterdir()
                                               if p.name.startswith(prefix)) if size.isdigit() and index == "1"]
    if not sizes:
        raise FileNotFoundError(f"{folder}: no distractor list {prefix}<N>_1")
    return max(sizes)


def identify_model(model: str | os.PathLike, root: str | os.PathLike, size: int | None = None, *,
                   faces: str = "detect", model_key: str | None = None, json_out=None, plot_out=None,
                   batch_size: int = 32, label: str | None = None) -> dict:
    """The identification report of `model` (its path, or `label`, as "model"; see the module notes)."""
    from kerasface.config import write_json
    from kerasface.evaluators import megaface

    root = Path(root)
    size = size or available_size(root)
    probes, distractors = read_megaface(root, size)
    embed = model_embedder(model, batch_size=batch_size, model_key=model_key, faces=faces)
    failed = []

    def embedded(folder, entries):
        """(vector, identity) of each of the (path, identity) entries that could be embedded."""
        paths = [root / folder / rel for rel, _ in entries]
        kept = []
        for path, (_, identity), result in zip(paths, entries, embed(paths)):
            reason = failure_reason(result)
            if reason is None:
                kept.append((np.asarray(result, np.float32), identity))
            else:
                failed.append({"path": str(path), "reason": reason})
        return kept

    try:
        probe_vectors, probe_ids = [], []
        for start in range(0, len(probes), BATCH):
            for vector, identity in embedded(PROBE_IMAGES, probes[start:start + BATCH]):
                probe_vectors.append(vector)
                probe_ids.append(identity)

        def distractor_batches():
            for start in range(0, len(distractors), BATCH):
                kept = embedded(DISTRACTOR_IMAGES, distractors[start:start + BATCH])
                if kept:
                    yield np.stack([vector for vector, _ in kept])

        report = megaface(np.stack(probe_vectors), np.asarray(probe_ids), distractor_batches())
    finally:
        embed.close()
    report = {"model": label or str(model), "output": embed.output, "root": str(root), "size": size, **report,
              "failed_images": failed}
    if plot_out:
        report["cmc_png"] = str(plot_cmc(report, plot_out))
    if json_out:
        write_json(json_out, report)
    return report


def plot_cmc(report: dict, path) -> Path:
    """The CMC curve (identification rate by rank), written under a temporary name and renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    curve = report["cmc_curve"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot(range(1, len(curve) + 1), curve, lw=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate")
    ax.set_ylim(0, 1.01)
    ax.set_title(f"MegaFace, {report['distractors']} distractors: rank-1 {100 * report['rank1']:.2f}%", fontsize=9)
    fig.tight_layout()
    from kerasface.evaluate import save_figure

    save_figure(fig, path)
    return path


def summary_lines(report: dict) -> list[str]:
    lines = [f"MegaFace identification: rank-1 {100 * report['rank1']:.2f}% over {report['trials']} trials, "
             f"{report['distractors']} distractors"]
    for far, entry in sorted(((float(k), v) for k, v in report["tar_at_far"].items())):
        tar = f"{100 * entry['tar']:.2f}%" if entry.get("resolvable", True) else "not resolvable"
        lines.append(f"  TAR at FAR {far:g}: {tar}")
    if report["failed_images"]:
        lines.append(f"  {len(report['failed_images'])} images skipped (first: {report['failed_images'][0]['path']}: "
                     f"{report['failed_images'][0]['reason']})")
    return lines
