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

from kerasface.data.megaface import DISTRACTOR_IMAGES, PROBE_IMAGES, SIZES, read_megaface, templatelists
from kerasface.verify import failure_reason, model_embedder

BATCH = 256  # images embedded per call


def available_size(root: Path) -> int:
    """The largest distractor list (set 1) the devkit folder holds."""
    from kerasface.data.megaface import distractor_list_name

    folder = templatelists(root)
    sizes = [n for n in SIZES if (folder / distractor_list_name(n, 1)).is_file()]
    names = sorted(p.name for p in folder.iterdir())
    sizes += [int(p.split("_")[-2]) for p in names if p.startswith("megaface_features_list.json_")
              and p.endswith("_1") and p.split("_")[-2].isdigit()]
    if not sizes:
        raise FileNotFoundError(f"{folder}: no distractor list megaface_features_list.json_<N>_1")
    return max(sizes)


def identify_model(model: str | os.PathLike, root: str | os.PathLike, size: int | None = None, *,
                   faces: str = "detect", model_key: str | None = None, json_out=None, plot_out=None,
                   batch_size: int = 32) -> dict:
    from kerasface.config import write_json
    from kerasface.evaluators import megaface

    root = Path(root)
    size = size or available_size(root)
    probes, distractors = read_megaface(root, size)
    embed = model_embedder(model, batch_size=batch_size, model_key=model_key, faces=faces)
    failed = []

    def embedded(paths):
        vectors = []
        for path, result in zip(paths, embed(paths)):
            reason = failure_reason(result)
            if reason is None:
                vectors.append(np.asarray(result, np.float32))
            else:
                failed.append({"path": str(path), "reason": reason})
        return vectors

    try:
        probe_vectors, probe_ids = [], []
        for start in range(0, len(probes), BATCH):
            part = probes[start:start + BATCH]
            before = len(failed)
            vectors = embedded([root / PROBE_IMAGES / rel for rel, _ in part])
            bad = {f["path"] for f in failed[before:]}
            probe_ids += [identity for rel, identity in part if str(root / PROBE_IMAGES / rel) not in bad]
            probe_vectors += vectors

        def distractor_batches():
            for start in range(0, len(distractors), BATCH):
                vectors = embedded([root / DISTRACTOR_IMAGES / rel for rel, _ in distractors[start:start + BATCH]])
                if vectors:
                    yield np.stack(vectors)

        report = megaface(np.stack(probe_vectors), np.asarray(probe_ids), distractor_batches())
    finally:
        embed.close()
    report = {"model": str(model), "output": embed.output, "root": str(root), "size": size, **report,
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
