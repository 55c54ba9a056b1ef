"""Face verification on LFW's pairs protocol: `python -m kerasface.verify MODEL --lfw ROOT`.

    python -m kerasface.verify MODEL --lfw ROOT [--pairs FILE] [--json OUT] [--roc PNG]
        [--output NAME] [--face centre|largest] [--batch-size 32] [--no-progress]

MODEL is an exported SavedModel (models/NAME or a version folder, as kerasface.predict takes it) or
a training run folder (its best models are exported into a temporary folder first, as
`python -m kerasface.export saved-model` would). ROOT holds the images as `<name>/<name>_NNNN.jpg`
(directly, or under ROOT/lfw/) and `pairs.txt` unless --pairs names another file
(kerasface.data.lfw.read_pairs: 10 folds of matched and mismatched pairs).

Each image named by a pair is read once, its face detected (MTCNN; the face nearest the centre,
as LFW centres its subject) and cut with the model's own crop scheme by the predict machinery
(kerasface.predict.Predictor), and the model's embedding output (head kind `embedding`: the
L2-normalised features; --output picks one when the model has several) is taken. A pair's score is
the cosine similarity of its two embeddings. For each fold, the threshold is the one with the best
accuracy on the other folds' pairs, and the fold's accuracy is measured with it
(kerasface.evaluators.verification). An image that cannot be used (missing, unreadable, no face
found) is skipped and counted; the pairs that name it are left out of every fold and counted.

Prints the accuracy as mean +- std over the folds, one line per fold (threshold, accuracy, pairs),
the AUC and what was skipped. Writes the ROC curve over all pairs as a PNG (--roc; default beside
--json as OUT.roc.png, else ./lfw_roc.png) and, with --json, the report: accuracy, std, auc,
folds [{fold, threshold, accuracy, pairs, excluded_pairs}], thresholds, fold_accuracy, pairs
{total, used, excluded}, images {total, used, failed}, failed_images [{path, reason}], roc
{fpr, tpr, auc}, model, output, lfw, pairs_file, roc_png. Exit status 0, or 2 for bad arguments, a bad model or a
malformed pairs file (one line naming it), 130 when interrupted.

Python API (no model needed: any function from image paths to embeddings):
    report = verify_lfw(embed_fn, "data/lfw")        # embed_fn(paths) -> [vector | reason, ...]
    embed = model_embedder("models/faces")           # a model's embed_fn (close it with embed.close())
    report = verify_model("models/faces", "data/lfw", json_out="lfw.json")   # the whole command
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from kerasface.cli import EXPECTED, run_command
from kerasface.data.lfw import PAIRS, image_folder, read_pairs

EmbedFn = Callable[[Sequence[Path]], Sequence]


def failure_reason(value) -> str | None:
    """The failure reason of one embed_fn result (None: it is an embedding)."""
    if value is None:
        return "no embedding"
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, str):
        return value
    return None


def verify_lfw(embed_fn: EmbedFn, root: str | os.PathLike, pairs: str | os.PathLike | None = None,
               batch_size: int = 256) -> dict:
    """The pairs protocol over the images under `root` (see the module notes).

    embed_fn(paths) -> one entry per path, in order: an embedding (1-D array) or, for an image that
    cannot be used, a reason (a str, an Exception, or None). It is called on batches of at most
    `batch_size` distinct images that exist on disk (a missing one is failed as "no such file").
    `pairs`: the pairs file (default ROOT/pairs.txt). Returns the JSON-safe report of the module notes.
    """
    from kerasface.evaluators import verification

    root = Path(root)
    pairs_file = Path(pairs) if pairs else root / PAIRS
    if not pairs_file.is_file():
        raise FileNotFoundError(f"{pairs_file}: no pairs file (give --pairs FILE, or put pairs.txt in {root})")
    folds = read_pairs(pairs_file)
    if len(folds) < 2:
        raise ValueError(f"{pairs_file}: {len(folds)} fold; the protocol chooses each fold's threshold on the "
                         f"other folds, so it needs at least 2")
    images = image_folder(root)
    wanted = list(dict.fromkeys(rel for fold in folds for pair in fold for rel in pair.images))
    embeddings: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    present = []
    for rel in wanted:
        if (images / rel).is_file():
            present.append(rel)
        else:
            failed[rel] = "no such file"
    for start in range(0, len(present), batch_size):
        part = present[start:start + batch_size]
        out = list(embed_fn([images / rel for rel in part]))
        if len(out) != len(part):
            raise ValueError(f"embed_fn returned {len(out)} results for {len(part)} images")
        for rel, value in zip(part, out):
            reason = failure_reason(value)
            if reason is None:
                vector = np.asarray(value, np.float64).reshape(-1)
                if not np.all(np.isfinite(vector)) or not np.any(vector):
                    reason = "the embedding is zero or not finite"
                else:
                    embeddings[rel] = vector
            if reason is not None:
                failed[rel] = reason
    first, second, same, fold_of, excluded = [], [], [], [], [0] * len(folds)
    for k, fold in enumerate(folds):
        for pair in fold:
            a, b = pair.images
            if a in embeddings and b in embeddings:
                first.append(embeddings[a])
                second.append(embeddings[b])
                same.append(pair.same)
                fold_of.append(k)
            else:
                excluded[k] += 1
    if not same:
        raise ValueError(f"{pairs_file}: no pair could be scored: all {len(wanted)} images failed "
                         f"(first: {next(iter(failed.items()), ('', ''))[0]}: {next(iter(failed.values()), '')})")
    result = verification(np.stack(first), np.stack(second), np.asarray(same), folds=len(folds),
                          fold_of=np.asarray(fold_of))
    fold_of = np.asarray(fold_of)
    total_pairs = sum(len(f) for f in folds)
    return {
        "accuracy": result["accuracy"],
        "std": result["std"],
        "auc": result["auc"],
        "folds": [{"fold": k + 1, "threshold": result["thresholds"][k], "accuracy": result["fold_accuracy"][k],
                   "pairs": int(np.sum(fold_of == k)), "excluded_pairs": excluded[k]} for k in range(len(folds))],
        "thresholds": result["thresholds"],
        "fold_accuracy": result["fold_accuracy"],
        "pairs": {"total": total_pairs, "used": len(same), "excluded": total_pairs - len(same)},
        "images": {"total": len(wanted), "used": len(embeddings), "failed": len(failed)},
        "failed_images": [{"path": rel, "reason": reason} for rel, reason in failed.items()],
        "roc": result["roc"],
        "lfw": str(root),
        "pairs_file": str(pairs_file),
    }


# ----------------------------------------------------------------------------- a model's embed_fn


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and (path / "models").is_dir()


FACES = ("detect", "crops")  # find and cut each face as the model was trained / the images are its crops


@contextlib.contextmanager
def exported_model(model: str | os.PathLike, model_key: str | None = None):
    """`model` as a SavedModel folder for the duration: itself, or, for a training run folder, its
    model `model_key` (or the export's default pick) exported into a temporary folder, removed after."""
    spec = Path(model)
    if not _is_run_folder(spec):
        yield spec
        return
    from kerasface.export.run import load_run, select_heads
    from kerasface.export.saved_model import export_saved_model

    with tempfile.TemporaryDirectory(prefix="kerasface-verify-") as temporary:
        run = load_run(spec)
        export_saved_model(run, select_heads(run, model_key), "verify", out=temporary, log=lambda *a: None,
                           verify=False, float_only=True)
        yield Path(temporary) / "verify"


def model_embedder(model: str | os.PathLike, output: str | None = None, face: str = "centre",
                   batch_size: int = 32, progress: bool = False, model_key: str | None = None,
                   faces: str = "detect", **detect_kwargs):
    """embed_fn of an exported model (or a run folder, exported to a temporary folder first, its
    model `model_key` or the export's default pick): each path's face detected and cropped as the
    model was trained (kerasface.predict.Predictor; `faces="crops"`: each image is already the
    model's crop and is only resized), the model's embedding output read. The function has
    `.close()`, `.model` and `.output`."""
    from kerasface.predict import ModelError, Predictor

    if faces not in FACES:
        raise ValueError(f"faces: expected one of {', '.join(FACES)}, got {faces!r}")
    resources = contextlib.ExitStack()  # the predictor, then the temporary export: released by close()
    with resources:
        spec = resources.enter_context(exported_model(model, model_key))
        predictor = Predictor([str(spec)], face=face, batch_size=batch_size, **detect_kwargs)
        resources.callback(predictor.close)
        resources = resources.pop_all()
    loaded = predictor.models[0]
    embedding_outputs = [o.name for o in loaded.info.outputs if o.kind == "embedding"]
    if output is None:
        if len(embedding_outputs) != 1:
            resources.close()
            raise ModelError(f"{model}: " + ("no embedding output (head kind 'embedding'); its outputs: "
                                             + ", ".join(f"{o.name} ({o.kind})" for o in loaded.info.outputs)
                                             if not embedding_outputs else
                                             f"several embedding outputs ({', '.join(embedding_outputs)}): "
                                             f"choose one with --output"))
        output = embedding_outputs[0]
    elif output not in embedding_outputs:
        resources.close()
        raise ModelError(f"{model}: --output {output}: not an embedding output (embedding outputs: "
                         f"{', '.join(embedding_outputs) or 'none'})")
    from tqdm import tqdm

    bar = tqdm(desc="verify", unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True, mininterval=0.5)

    def embed_crops(paths: Sequence[Path]) -> list:
        from kerasface.faces.images import load_image, one_line

        out, images, where = [], [], []
        for p in paths:
            try:
                images.append(load_image(p))
                where.append(len(out))
                out.append(None)
            except Exception as exc:  # unreadable: a reason, as the detecting path gives
                out.append(one_line(exc))
        for start in range(0, len(images), batch_size):
            vectors = loaded.predict_crops(images[start:start + batch_size])[output]
            for i, vector in zip(where[start:start + batch_size], vectors):
                out[i] = np.asarray(vector)
        bar.update(len(paths))
        return out

    def embed(paths: Sequence[Path]) -> list:
        if faces == "crops":
            return embed_crops(paths)
        out = []
        for result in predictor.run([str(p) for p in paths]):
            if result.error is not None:
                out.append(result.error)
            elif not result.faces:
                out.append("no face found")
            else:
                out.append(np.asarray(result.faces[0].attributes[loaded.name][output].fields["embedding"]))
            bar.update(1)
        return out

    def close() -> None:
        bar.close()
        resources.close()

    embed.close, embed.model, embed.output = close, loaded, output
    return embed


# ----------------------------------------------------------------------------- outputs


def plot_roc(report: dict, path: str | os.PathLike, title: str = "LFW") -> Path:
    """The ROC curve over all scored pairs, written under a temporary name and renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot(report["roc"]["fpr"], report["roc"]["tpr"], lw=1.5)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{title}: {100 * report['accuracy']:.2f}% +- {100 * report['std']:.2f}, AUC {report['auc']:.4f}",
                 fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    fig.tight_layout()
    from kerasface.evaluate import save_figure

    save_figure(fig, path)
    return path


def summary_lines(report: dict) -> list[str]:
    lines = [(f"LFW verification: {100 * report['accuracy']:.2f}% +- {100 * report['std']:.2f} "
              f"over {len(report['folds'])} folds (AUC {report['auc']:.4f})")]
    for fold in report["folds"]:
        accuracy = "    n/a" if fold["accuracy"] is None else f"{100 * fold['accuracy']:6.2f}%"
        threshold = "n/a" if fold["threshold"] is None else f"{fold['threshold']:.4f}"
        lines.append(f"  fold {fold['fold']:2d}: threshold {threshold}  accuracy {accuracy}  "
                     f"({fold['pairs']} pairs{', ' + str(fold['excluded_pairs']) + ' excluded' if fold['excluded_pairs'] else ''})")
    pairs, images = report["pairs"], report["images"]
    lines.append(f"pairs: {pairs['used']} of {pairs['total']} scored, {pairs['excluded']} excluded; "
                 f"images: {images['used']} of {images['total']} used, {images['failed']} failed")
    for item in report["failed_images"][:20]:
        lines.append(f"  skipped {item['path']}: {item['reason']}")
    if len(report["failed_images"]) > 20:
        lines.append(f"  ... and {len(report['failed_images']) - 20} more (all listed in the --json report)")
    return lines


def default_roc_path(json_out: str | os.PathLike | None) -> Path:
    """OUT.roc.png beside the JSON report, else ./lfw_roc.png."""
    return Path(json_out).with_suffix(".roc.png") if json_out else Path("lfw_roc.png")


def verify_model(model: str | os.PathLike, lfw: str | os.PathLike, pairs: str | os.PathLike | None = None, *,
                 json_out: str | os.PathLike | None = None, roc_out: str | os.PathLike | None = None,
                 output: str | None = None, face: str = "centre", batch_size: int = 32,
                 progress: bool = False, model_key: str | None = None, faces: str = "detect",
                 label: str | None = None) -> dict:
    """The whole command in one call (for the trainer, after a recipe with PaperConfig.protocols):
    the model's embedder, the protocol, the ROC PNG (`roc_out`, default as --roc) and, with
    `json_out`, the JSON report; returns the report (with "model": `label` or the model's path,
    "output", "roc_png")."""
    from kerasface.config import write_json

    embed = model_embedder(model, output, face, batch_size, progress=progress, model_key=model_key, faces=faces)
    try:
        report = verify_lfw(embed, lfw, pairs)
    finally:
        embed.close()
    roc = Path(roc_out) if roc_out else default_roc_path(json_out)
    report = {"model": label or str(model), "output": embed.output, **report, "roc_png": str(plot_roc(report, roc))}
    if json_out:
        write_json(json_out, report)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kerasface.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", metavar="MODEL", help="an exported SavedModel folder (models/NAME) or a training run folder")
    parser.add_argument("--lfw", required=True, metavar="ROOT", help="LFW folder: <name>/<name>_NNNN.jpg (or lfw/...) and pairs.txt")
    parser.add_argument("--pairs", metavar="FILE", help="the pairs file (default ROOT/pairs.txt)")
    parser.add_argument("--json", metavar="OUT", help="write the report (per-fold thresholds and accuracies) as JSON")
    parser.add_argument("--roc", metavar="PNG", help="the ROC plot (default OUT.roc.png beside --json, else ./lfw_roc.png)")
    parser.add_argument("--output", help="the embedding output to use when the model has several")
    parser.add_argument("--face", choices=("centre", "largest"), default="centre", help="which detected face (default centre)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        from kerasface.predict import ModelError

        try:
            report = verify_model(args.model, args.lfw, args.pairs, json_out=args.json, roc_out=args.roc,
                                  output=args.output, face=args.face, batch_size=args.batch_size,
                                  progress=not args.no_progress)
        except ModelError as exc:
            raise ValueError(str(exc)) from None
        for line in summary_lines(report):
            print(line)
        print(f"ROC curve: {report['roc_png']}")
        if args.json:
            print(f"report: {args.json}")

    return run_command(body, EXPECTED)


if __name__ == "__main__":
    sys.exit(main())
