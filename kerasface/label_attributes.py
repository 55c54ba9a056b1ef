"""Attribute labels for an identity dataset, from a CelebA-trained classifier, made consistent per
identity by majority vote (wang_joint, Sec. 3.2: CASIA-WebFace labelled by a MOON model).

    python -m kerasface.label_attributes MODEL --root IDENTITY_TREE [--out FILE]
        [--attributes A,B,...] [--output NAME] [--faces crops|detect] [--batch-size 64]
        [--strict] [--no-progress]

MODEL: an exported model as kerasface.predict takes it (models/NAME or a version folder, FILE.tflite,
grpc:// or http:// URL) or a training run folder (exported to a temporary folder first, as
kerasface.verify does). Its outputs must answer every attribute (default: the seven of wang_joint,
Narrow_Eyes Big_Nose Pointy_Nose Chubby Double_Chin High_Cheekbones Male): an output whose labels
name the attribute (a CelebA `multilabel` head over the 40 attributes, a 7-value `regression` head),
or an output named after the attribute (one head per attribute: its value, or for a classification
head the probability of the class named after the attribute or "present"/"yes"/"1", else of its
second class). --output restricts the search to one output. A value >= 0.5 is "present".

IDENTITY_TREE: `<root>/<identity>/<image>` (kerasface.data.identity_folders: the folders under the
root, their images searched recursively). --faces crops (default) feeds each whole image to the
model as its crop (CASIA-WebFace's images are aligned crops), resized as training did;
--faces detect finds the face nearest the centre (MTCNN) and cuts the model's own crop scheme
(kerasface.predict.Predictor).

Majority vote: per identity and attribute, the label held by more of the identity's labelled images
is given to all of them. Ties: the mean of the images' scores decides (>= 0.5: present); this is
`majority_vote(labels, identities, scores)`; without scores a tie is "absent" (0).

Output (default `<root>/attributes.txt`), written under a temporary name and renamed when every
image has been seen, so the file exists only when complete:
    Narrow_Eyes Big_Nose Pointy_Nose Chubby Double_Chin High_Cheekbones Male
    0000045/001.jpg 0 1 0 0 0 1 1
    0000045/002.jpg 0 1 0 0 0 1 1
line 1 the attribute names, then one line per labelled image: its path relative to the root (forward
slashes), one 0/1 per attribute (-1: unknown), in the header's order; images sorted by path. Read
it back with `read_labels(path)`; kerasface.data.identity_folders reads it as the label `attributes`.

Resumable: progress goes to `<out>.partial` (JSON lines: a header {"attributes", "model"}, then per
image {"path", "scores"} or {"path", "error"}), appended and flushed batch by batch; a rerun (after
Ctrl-C, a crash) reads it, skips the images already there, and continues; it is removed when the
final file is written. A partial file made for other attributes stops the run (delete it to restart).
A bad image (unreadable, no face found, a model error) is skipped, counted, listed at the end and
left out of the file and the vote (--strict: stop at the first one, exit 1).

Python API:
    summary = label_attributes("models/celeba", "data/CASIA-WebFace")     # the whole command
    majority_vote(labels, identities, scores=None) -> labels made consistent per identity
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from kerasface.evaluators import WANG_ATTRIBUTES

DEFAULT_NAME = "attributes.txt"
PARTIAL_SUFFIX = ".partial"
PRESENT_NAMES = ("present", "yes", "1", "true", "positive")


# ----------------------------------------------------------------------------- the vote


def majority_vote(labels, identities, scores=None, threshold: float = 0.5) -> np.ndarray:
    """(N, A) 0/1 labels of N images and their identities -> (N, A): each image gets, per
    attribute, the label most of its identity's images have. A tie goes to the mean score of the
    identity's images (>= threshold: 1) when `scores` (N, A) are given, else to 0."""
    labels = np.asarray(labels, np.int64)
    if labels.ndim != 2:
        raise ValueError(f"majority_vote: expected (images, attributes) labels, got shape {labels.shape}")
    _, group = np.unique(np.asarray(identities), return_inverse=True)
    group = group.reshape(-1)
    if len(group) != len(labels):
        raise ValueError(f"majority_vote: {len(labels)} label rows but {len(group)} identities")
    groups = int(group.max()) + 1 if len(group) else 0
    size = np.bincount(group, minlength=groups)[:, None]
    ones = np.zeros((groups, labels.shape[1]), np.int64)
    np.add.at(ones, group, labels)
    voted = (2 * ones > size).astype(np.int64)
    tie = 2 * ones == size
    if scores is not None and tie.any():
        mean = np.zeros(ones.shape)
        np.add.at(mean, group, np.asarray(scores, np.float64))
        mean /= size
        voted[tie] = (mean[tie] >= threshold).astype(np.int64)
    return voted[group]


# ----------------------------------------------------------------------------- the tree and the file


def list_identity_images(root: str | os.PathLike) -> list[tuple[str, str]]:
    """(path relative to the root with forward slashes, identity) of every image, sorted by path.
    Reads the tree as kerasface.data.identity_folders does (swap this function for another layout)."""
    from kerasface.data.identity_folders import identity_folders, identity_images

    root = Path(root)
    found = []
    for folder in identity_folders(root):
        for image in identity_images(folder):
            found.append((image.relative_to(root).as_posix(), folder.name))
    return sorted(found)


def read_labels(path: str | os.PathLike) -> tuple[tuple[str, ...], dict[str, tuple[int, ...]]]:
    """An attribute file -> (attribute names, {relative path: 0/1 values, -1 where unknown})."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines:
        raise ValueError(f"{path}:1: empty; expected a header line of attribute names")
    names = tuple(lines[0].split())
    labels = {}
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        rel, *values = line.rsplit(" ", len(names))
        if len(values) != len(names) or any(v not in ("0", "1", "-1") for v in values):
            raise ValueError(f"{path}:{n}: expected a path and {len(names)} values 0/1 (-1: unknown), got {line!r}")
        labels[rel] = tuple(int(v) for v in values)
    return names, labels


def write_labels(path: str | os.PathLike, names: Sequence[str], rows: Iterable[tuple[str, Sequence[int]]]) -> Path:
    """Write the attribute file atomically (a temporary name beside it, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="\n") as fh:
        fh.write(" ".join(names) + "\n")
        for rel, values in rows:
            fh.write(rel + " " + " ".join(str(int(v)) for v in values) + "\n")
    os.replace(tmp, path)
    return path


class Progress:
    """The resumable progress file: what is done, appended batch by batch."""

    def __init__(self, path: Path, attributes: Sequence[str], model: str):
        self.path = path
        self.attributes = list(attributes)
        self.scores: dict[str, list[float]] = {}
        self.errors: dict[str, str] = {}
        if path.is_file():
            self._read(model)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"attributes": self.attributes, "model": model}) + "\n")

    def _read(self, model: str) -> None:
        complete = 0
        with open(self.path, "rb") as fh:
            data = fh.read()
        lines = data.split(b"\n")
        for n, raw in enumerate(lines[:-1]):  # the part after the last newline is an unfinished line
            complete += len(raw) + 1
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                raise ValueError(f"{self.path}:{n + 1}: not a progress record; delete the file to start again") from None
            if n == 0:
                if entry.get("attributes") != self.attributes:
                    raise ValueError(f"{self.path}: made for attributes {entry.get('attributes')}, not "
                                     f"{self.attributes}; delete it to start again")
                continue
            if "error" in entry:
                self.errors[entry["path"]] = entry["error"]
            else:
                self.scores[entry["path"]] = entry["scores"]
        if complete != len(data):  # cut an interrupted last line off, so that appending stays clean
            with open(self.path, "r+b") as fh:
                fh.truncate(complete)

    def done(self, rel: str) -> bool:
        return rel in self.scores or rel in self.errors

    def append(self, records: list[dict]) -> None:
        with open(self.path, "a") as fh:
            for r in records:
                fh.write(json.dumps(r) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        for r in records:
            if "error" in r:
                self.errors[r["path"]] = r["error"]
            else:
                self.scores[r["path"]] = r["scores"]


# ----------------------------------------------------------------------------- the model


def attribute_columns(model, attributes: Sequence[str], output: str | None = None) -> list[tuple[str, int]]:
    """For each attribute, the (output name, value index) that answers it (see the module notes)."""
    from kerasface.predict.model import ModelError

    outs = [o for o in model.info.outputs if output is None or o.name == output]
    if output is not None and not outs:
        raise ModelError(f"{model.info.source}: --output {output}: no such output "
                         f"(outputs: {', '.join(o.name for o in model.info.outputs)})")
    found = []
    for attr in attributes:
        hit = None
        for o in outs:
            if o.kind in ("multilabel", "regression") and attr in o.labels:
                hit = (o.name, o.labels.index(attr))
                break
        if hit is None:
            for o in outs:
                if o.name.lower() != attr.lower():
                    continue
                if o.kind == "classification":
                    lower = [label.lower() for label in o.labels]
                    named = [i for i, label in enumerate(lower) if label == attr.lower() or label in PRESENT_NAMES]
                    hit = (o.name, named[0] if named else min(1, len(o.labels) - 1))
                elif len(o.labels) <= 1:
                    hit = (o.name, 0)
                break
        if hit is None:
            raise ModelError(f"{model.info.source}: no output answers {attr} (outputs: "
                             + ", ".join(f"{o.name} ({o.kind}: {', '.join(o.labels[:5])}"
                                         f"{', ...' if len(o.labels) > 5 else ''})" for o in model.info.outputs) + ")")
        found.append(hit)
    return found


def open_model(spec):
    """MODEL -> (a loaded kerasface.predict Model, a cleanup function). A run folder is exported to
    a temporary SavedModel first; a Model instance is used as is (and not closed)."""
    from kerasface.predict import Model, load_model

    if isinstance(spec, Model):
        return spec, lambda: None
    path = Path(spec)
    temporary = None
    if path.is_dir() and (path / "config.json").is_file() and (path / "models").is_dir():
        import tempfile

        from kerasface.export.run import load_run, select_heads
        from kerasface.export.saved_model import export_saved_model

        temporary = tempfile.TemporaryDirectory(prefix="kerasface-label-")
        run = load_run(path)
        export_saved_model(run, select_heads(run), "labeller", out=temporary.name, log=lambda *a: None)
        path = Path(temporary.name) / "labeller"
    try:
        model = load_model(str(path))
    except BaseException:
        if temporary is not None:
            temporary.cleanup()
        raise

    def close() -> None:
        model.close()
        if temporary is not None:
            temporary.cleanup()

    return model, close


def _score_crops(model, columns, root: Path, rels: list[str]) -> list[dict]:
    """Whole images as the model's crops -> one record per image."""
    from kerasface.faces.images import load_image, one_line

    records, images, good = [], [], []
    for rel in rels:
        try:
            images.append(load_image(root / rel))
            good.append(rel)
        except Exception as exc:
            records.append({"path": rel, "error": one_line(exc)})
    if good:
        try:
            out = model.predict_crops(images)
            values = np.stack([np.asarray(out[name], np.float64).reshape(len(good), -1)[:, i] for name, i in columns], 1)
            records += [{"path": rel, "scores": [float(v) for v in row]} for rel, row in zip(good, values)]
        except Exception as exc:
            records += [{"path": rel, "error": f"model error: {one_line(exc)}"} for rel in good]
    return records


def _score_detected(predictor, model, columns, root: Path, rels: list[str]) -> list[dict]:
    """Each image's centre face, cut with the model's crop scheme by the predictor."""
    records = []
    for rel, result in zip(rels, predictor.run([str(root / rel) for rel in rels])):
        if result.error is not None:
            records.append({"path": rel, "error": result.error})
        elif not result.faces:
            records.append({"path": rel, "error": "no face found"})
        else:
            attrs = result.faces[0].attributes[model.name]
            scores = []
            for name, i in columns:
                out = next(o for o in model.info.outputs if o.name == name)
                r = attrs[name]
                table = getattr(r, "probabilities", None) or r.fields.get("probabilities") or r.fields.get("values")
                scores.append(float(table[out.labels[i]]))
            records.append({"path": rel, "scores": scores})
    return records


# ----------------------------------------------------------------------------- the command


def label_attributes(model, root: str | os.PathLike, out: str | os.PathLike | None = None,
                     attributes: Sequence[str] = WANG_ATTRIBUTES, *, output: str | None = None,
                     faces: str = "crops", batch_size: int = 64, strict: bool = False, progress: bool = False,
                     lister: Callable[[Path], list[tuple[str, str]]] = list_identity_images) -> dict:
    """The whole command: label every image, vote per identity, write the file (module notes).
    Returns a JSON-safe summary: out, images, labelled, skipped, resumed, failed [{path, reason}],
    flipped (labels the vote changed), attributes, complete (False when --strict stopped it)."""
    from tqdm import tqdm

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such identity folder tree")
    if faces not in ("crops", "detect"):
        raise ValueError(f"faces: expected crops or detect, got {faces!r}")
    attributes = list(attributes)
    out = Path(out) if out else root / DEFAULT_NAME
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    images = lister(root)
    if not images:
        raise ValueError(f"{root}: no images found")
    model_obj, close = open_model(model)
    predictor = None
    try:
        columns = attribute_columns(model_obj, attributes, output)
        state = Progress(partial, attributes, str(model if not hasattr(model, "info") else model.info.source))
        resumed = sum(state.done(rel) for rel, _ in images)
        todo = [rel for rel, _ in images if not state.done(rel)]
        if faces == "detect" and todo:
            from kerasface.predict import Predictor

            predictor = Predictor([model_obj], face="centre", batch_size=batch_size)
        bar = tqdm(total=len(images), initial=resumed, desc="label", unit="img", file=sys.stderr,
                   disable=not progress, dynamic_ncols=True, mininterval=0.5)
        stopped = None
        for start in range(0, len(todo), batch_size):
            part = todo[start:start + batch_size]
            records = (_score_detected(predictor, model_obj, columns, root, part) if predictor is not None
                       else _score_crops(model_obj, columns, root, part))
            state.append(records)
            bar.update(len(part))
            bad = [r for r in records if "error" in r]
            if bad and strict:
                stopped = bad[0]
                break
        bar.close()
    finally:
        if predictor is not None:
            predictor.close()
        close()
    failed = [{"path": p, "reason": r} for p, r in sorted(state.errors.items())]
    summary = {"out": str(out), "images": len(images), "resumed": int(resumed), "skipped": len(failed),
               "failed": failed, "attributes": attributes, "complete": stopped is None}
    if stopped is not None:
        summary.update(labelled=0, flipped=0)
        return summary
    labelled = [(rel, ident) for rel, ident in images if rel in state.scores]
    scores = np.array([state.scores[rel] for rel, _ in labelled], np.float64).reshape(len(labelled), len(attributes))
    raw = (scores >= 0.5).astype(np.int64)
    voted = majority_vote(raw, [ident for _, ident in labelled], scores) if len(labelled) else raw
    write_labels(out, attributes, ((rel, row) for (rel, _), row in zip(labelled, voted)))
    partial.unlink(missing_ok=True)
    summary.update(labelled=len(labelled), flipped=int(np.sum(raw != voted)))
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kerasface.label_attributes", description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL", help="an exported model (models/NAME, FILE.tflite, URL) or a run folder")
    p.add_argument("--root", required=True, metavar="IDENTITY_TREE", help="<root>/<identity>/<image>")
    p.add_argument("--out", metavar="FILE", help=f"the label file (default ROOT/{DEFAULT_NAME})")
    p.add_argument("--attributes", default=",".join(WANG_ATTRIBUTES),
                   help="comma-separated attribute names (default: the seven of wang_joint)")
    p.add_argument("--output", help="the model output to read the attributes from")
    p.add_argument("--faces", choices=("crops", "detect"), default="crops",
                   help="crops: each image is the model's crop (default); detect: find the centre face")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--strict", action="store_true", help="stop at the first bad image (exit 1)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from kerasface.cli import EXPECTED, run_command

    args = build_parser().parse_args(argv)

    def body() -> int:
        from kerasface.predict import ModelError

        attributes = [a.strip() for a in args.attributes.split(",") if a.strip()]
        try:
            s = label_attributes(args.model, args.root, args.out, attributes, output=args.output, faces=args.faces,
                                 batch_size=max(1, args.batch_size), strict=args.strict,
                                 progress=not args.no_progress)
        except ModelError as exc:
            raise ValueError(str(exc)) from None
        for item in s["failed"][:20]:
            print(f"skipped {item['path']}: {item['reason']}", file=sys.stderr)
        if len(s["failed"]) > 20:
            print(f"... and {len(s['failed']) - 20} more skipped", file=sys.stderr)
        if not s["complete"]:
            print(f"label_attributes: stopped (--strict) at a bad image; progress kept, rerun to continue "
                  f"({s['images']} images)", file=sys.stderr)
            return 1
        print(f"label_attributes: {s['labelled']} of {s['images']} images labelled ({s['resumed']} from an "
              f"earlier run), {s['skipped']} skipped, {s['flipped']} labels changed by the per-identity vote "
              f"-> {s['out']}")
        return 0

    return run_command(body, EXPECTED)


if __name__ == "__main__":
    sys.exit(main())
