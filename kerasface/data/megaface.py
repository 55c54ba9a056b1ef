"""MegaFace challenge 1 lists (Kemelmacher-Shlizerman et al., CVPR 2016), as the devkit ships them.

    devkit/templatelists/facescrub_features_list.json           the probe set (FaceScrub)
    devkit/templatelists/megaface_features_list.json_<N>_<S>    a distractor set of N images, set S
                                                                (N = 10, 100, ..., 1000000; S = 1, 2, 3)

Format (from the devkit's run_experiment.py, which reads `json.load(f)['path']` from both lists,
and published MegaFace evaluators, which pair FaceScrub's `['path']` with `['id']` by position):
    probe list:       {"id": [identity, ...], "path": [relative image path, ...], ...}
                      two lists of equal length; entry i is image path[i] of person id[i]
    distractor list:  {"path": [relative image path, ...], ...}
Other keys are ignored. Format assumed (not confirmed against a real copy, none is on this
machine): that the paths are relative to the FaceScrub / MegaFace image roots (the devkit joins
them with a feature root and a suffix such as `_ALGO.bin`), that identities are strings (numbers
are read as their text) and that paths use forward slashes. All the parsing is `_parse_list`.

Python API (returning (path, identity) pairs; a distractor's identity is None):
    probes = read_probe_list("devkit/templatelists/facescrub_features_list.json")
    distractors = read_distractor_list("devkit/templatelists/megaface_features_list.json_1000000_1")
    probes, distractors = read_megaface("devkit", size=1000000, set_index=1)
Errors (MegaFaceFormatError) name the file, the line and column of bad JSON, or the JSON key and
index of a bad entry. Embeddings of these images are scored with kerasface.evaluators.megaface.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from kerasface.data.common import FormatError

PROBE_LIST = "facescrub_features_list.json"
DISTRACTOR_LIST = "megaface_features_list.json"
SIZES = (10, 100, 1000, 10000, 100000, 1000000)


class MegaFaceFormatError(FormatError):
    """A MegaFace list file that does not have the expected form."""


def distractor_list_name(size: int = 1000000, set_index: int = 1) -> str:
    return f"{DISTRACTOR_LIST}_{int(size)}_{int(set_index)}"


def _parse_list(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, list[str]]:
    """The one place that reads a list file: a JSON object whose `keys` are lists of equal length
    (strings, or numbers read as text)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such MegaFace list file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MegaFaceFormatError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise MegaFaceFormatError(f"{path}: expected a JSON object with key(s) {', '.join(map(repr, keys))}, "
                                  f"got a JSON {type(data).__name__}")
    result: dict[str, list[str]] = {}
    for key in keys:
        if key not in data:
            raise MegaFaceFormatError(f"{path}: JSON key {key!r} missing (keys present: "
                                      f"{', '.join(map(repr, data)) or 'none'})")
        values = data[key]
        if not isinstance(values, list):
            raise MegaFaceFormatError(f"{path}: JSON key {key!r}: expected a list, got {type(values).__name__}")
        out = []
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, str) and not v.strip()):
                raise MegaFaceFormatError(f"{path}: JSON key {key!r}[{i}]: expected a non-empty string, got {v!r}")
            out.append(str(v).strip())
        result[key] = out
    lengths = {k: len(v) for k, v in result.items()}
    if len(set(lengths.values())) > 1:
        raise MegaFaceFormatError(f"{path}: lists of different lengths ("
                                  + ", ".join(f"{k!r}: {n}" for k, n in lengths.items()) + ")")
    return result


def read_probe_list(path: str | os.PathLike) -> list[tuple[str, str]]:
    """facescrub_features_list.json -> [(relative path, identity), ...] in file order."""
    data = _parse_list(path, ("path", "id"))
    return list(zip(data["path"], data["id"]))


def read_distractor_list(path: str | os.PathLike) -> list[tuple[str, None]]:
    """megaface_features_list.json_<N>_<S> -> [(relative path, None), ...] in file order."""
    return [(p, None) for p in _parse_list(path, ("path",))["path"]]


def templatelists(root: str | os.PathLike) -> Path:
    """The folder holding the lists: ROOT itself, ROOT/templatelists or ROOT/devkit/templatelists."""
    root = Path(root)
    for candidate in (root, root / "templatelists", root / "devkit" / "templatelists"):
        if (candidate / PROBE_LIST).is_file():
            return candidate
    raise FileNotFoundError(f"{root}: no {PROBE_LIST} here, in templatelists/ or in devkit/templatelists/")


def read_megaface(root: str | os.PathLike, size: int = 1000000, set_index: int = 1,
                  probe_list: str | os.PathLike | None = None):
    """(probes, distractors) of a devkit folder: the FaceScrub list (or `probe_list`) and the
    distractor list of `size` images, set `set_index`."""
    folder = templatelists(root)
    probes = read_probe_list(probe_list or folder / PROBE_LIST)
    distractors = read_distractor_list(folder / distractor_list_name(size, set_index))
    return probes, distractors


# ----------------------------------------------------------------------------- images, root, demo

ENV_VAR = "KERASFACE_MEGAFACE"
PROBE_IMAGES, DISTRACTOR_IMAGES = "facescrub", "megaface"  # image folders under ROOT (layout assumed)


def resolve_root(root: str | os.PathLike | None) -> Path:
    """ROOT (or $KERASFACE_MEGAFACE): the devkit lists (ROOT, ROOT/templatelists or
    ROOT/devkit/templatelists) and the images at the lists' relative paths under ROOT/facescrub/
    (probes) and ROOT/megaface/ (distractors); that image layout is assumed, not the devkit's."""
    where = root or os.environ.get(ENV_VAR)
    if not where:
        raise FileNotFoundError(f"MegaFace not found: set ${ENV_VAR} to a folder holding the devkit lists and "
                                f"{PROBE_IMAGES}/ + {DISTRACTOR_IMAGES}/ images")
    templatelists(where)  # raises naming what is missing
    return Path(where)


def write_demo(root: str | os.PathLike, seed: int = 0, probes: int = 10, per_probe: int = 4,
               distractors: int = 100) -> Path:
    """A SYNTHETIC MegaFace in the layout above: `probes` people with `per_probe` images each (the
    FaceScrub list) and `distractors` other people, one image each, as a distractor list of that
    size (set 1); every image an aligned 112x96 crop (`wang_112x96`, cut from the drawn points), so
    the protocol runs with faces "crops". People differ from the other demo sets' (their own seed)."""
    import tempfile

    from PIL import Image

    from kerasface.data.common import finish_demo
    from kerasface.data.identity_folders import read_landmarks, write_demo_identity_folders
    from kerasface.faces.crops import apply_crop

    root = Path(root)
    lists = root / "devkit" / "templatelists"
    lists.mkdir(parents=True, exist_ok=True)
    entries = {}
    with tempfile.TemporaryDirectory(prefix="kerasface-megaface-demo-") as tmp:
        for folder, people, per, person_seed in ((PROBE_IMAGES, probes, per_probe, seed + 7919),
                                                 (DISTRACTOR_IMAGES, distractors, 1, seed + 104729)):
            tree = write_demo_identity_folders(Path(tmp) / folder, people, per, size=128, seed=person_seed,
                                               attributes=False)
            points = read_landmarks(tree)
            entries[folder] = []
            for rel in sorted(points):
                crop, _ = apply_crop("wang_112x96", np.asarray(Image.open(tree / rel).convert("RGB")), points[rel])
                out = root / folder / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(crop).save(out, quality=95)
                entries[folder].append(rel)
    probe_list = {"id": [rel.split("/")[0] for rel in entries[PROBE_IMAGES]], "path": entries[PROBE_IMAGES]}
    (lists / PROBE_LIST).write_text(json.dumps(probe_list))
    (lists / distractor_list_name(distractors, 1)).write_text(json.dumps({"path": entries[DISTRACTOR_IMAGES]}))
    return finish_demo(root, "DEMO_MEGAFACE.txt", [f"{len(entries[PROBE_IMAGES])} probes, {distractors} distractors"],
                       "kerasface.data.megaface.write_demo", seed,
                       "synthetic people as FaceScrub probes and MegaFace distractors, aligned 112x96 crops")
