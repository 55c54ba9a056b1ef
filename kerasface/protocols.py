"""Face-recognition protocols run on a trained run's embedding once training ends
(PaperConfig.protocols: protocol name -> its options):

  lfw       verification on LFW's pairs, 10 folds (kerasface.verify): accuracy +- std
  megaface  identification against a distractor set (kerasface.identify): CMC rank-1, TAR at FAR

Each is run on the embedding of every model key in PaperConfig.protocol_models (empty: the one the
run's export picks, named "run") and writes RUN/protocols/<model>-<protocol>.json with its plot
beside it (.png); `kerasface.evaluate.write_reports` quotes them in results.md with the paper's
number (PaperConfig.reported["<protocol>/<model>"] or ["<protocol>"]). Options: "faces" (detect:
find and cut the face as the model was trained; crops: the images are aligned crops) and, for
megaface, "size" (the distractor list). A protocol is one registry entry: where its data is
(resolve_root, write_demo for --demo), how to run it and its one-line headline.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kerasface.registry import Registry


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    resolve_root: Callable[[str | None], Path]
    write_demo: Callable[[Path, int], Any]
    # run(model, root, options, json_out, plot_out, label) -> report; model: a SavedModel folder
    # (run_protocols exports each trained model once for all protocols), label: what the report names
    run: Callable[..., dict]
    headline: Callable[[dict], str]
    # the report's numbers copied into metrics.json
    keys: tuple[str, ...] = ()


PROTOCOLS: Registry[Protocol] = Registry("protocol")
RUN_PICK = "run"  # the file name of the embedding the run's export picks (no protocol_models)


def _lfw_root(root):
    from kerasface.data import DATASETS

    return DATASETS.get("lfw").resolve_root(root)


def _lfw_demo(root, seed):
    from kerasface.data import DATASETS

    return DATASETS.get("lfw").write_demo(root, seed)


def _verify(model, root, options, json_out, plot_out, label):
    from kerasface.verify import summary_lines, verify_model

    report = verify_model(model, root, json_out=json_out, roc_out=plot_out, faces=options.get("faces", "detect"),
                          label=label)
    print("\n".join(summary_lines(report)), file=sys.stderr)
    return report


def _lfw_headline(report):
    return (f"{100 * report['accuracy']:.2f}% +- {100 * report['std']:.2f} over 10 folds, "
            f"{report['pairs']['used']} of {report['pairs']['total']} pairs scored")


def _megaface_root(root):
    from kerasface.data.megaface import resolve_root

    return resolve_root(root)


def _megaface_demo(root, seed):
    from kerasface.data.megaface import write_demo

    return write_demo(root, seed)


def _identify(model, root, options, json_out, plot_out, label):
    from kerasface.identify import identify_model, summary_lines

    size = int(options["size"]) if options.get("size") else None
    report = identify_model(model, root, size, faces=options.get("faces", "detect"), json_out=json_out,
                            plot_out=plot_out, label=label)
    print("\n".join(summary_lines(report)), file=sys.stderr)
    return report


def _tar(report, far: float = 1e-6) -> str:
    entry = {float(k): v for k, v in report["tar_at_far"].items()}.get(far)
    if not entry or not entry.get("resolvable", True):
        return f"TAR at FAR {far:g}: not resolvable ({report['impostor_pairs']} impostor pairs)"
    return f"TAR at FAR {far:g} {100 * entry['tar']:.2f}%"


def _megaface_headline(report):
    return (f"rank-1 {100 * report['rank1']:.2f}% with {report['distractors']} distractors "
            f"({report['trials']} trials), {_tar(report)}")


PROTOCOLS.register("lfw")(Protocol("lfw", "LFW verification (pairs protocol)", _lfw_root, _lfw_demo, _verify,
                                   _lfw_headline, ("accuracy", "std", "auc", "pairs")))
PROTOCOLS.register("megaface")(Protocol("megaface", "MegaFace identification", _megaface_root, _megaface_demo,
                                        _identify, _megaface_headline,
                                        ("rank1", "cmc", "tar_at_far", "distractors", "trials")))


def report_path(run_dir: Path, model: str, protocol: str) -> Path:
    return Path(run_dir) / "protocols" / f"{model}-{protocol}.json"


def trained_models(run_dir: Path) -> set[str]:
    """The model keys with a trained unit in `run_dir` (its models/*/unit.json)."""
    return {json.loads(p.read_text()).get("model_key") for p in Path(run_dir).glob("models/*/unit.json")}


def run_protocols(cfg, run_dir: Path, root_of: Callable[[Protocol], Path]) -> dict[str, dict]:
    """Every protocol of the recipe on every protocol model trained in `run_dir`: {"<model>/<protocol>":
    report}. Each model is exported once for all its protocols. A protocol whose data is not here,
    or a protocol model this run did not train (--model), is skipped with one line."""
    from kerasface.verify import exported_model

    roots = {}
    for name in cfg.protocols:
        protocol = PROTOCOLS.get(name)
        try:
            roots[name] = root_of(protocol)
        except FileNotFoundError as exc:
            print(f"{protocol.title} skipped: {exc}", file=sys.stderr)
    reports = {}
    if not roots:
        return reports
    trained = trained_models(run_dir)
    for model in cfg.protocol_models or (None,):
        if model is not None and model not in trained:
            print(f"protocols of {model} skipped: not trained in {run_dir}", file=sys.stderr)
            continue
        key = model or RUN_PICK
        with exported_model(run_dir, model) as saved_model:
            for name, root in roots.items():
                protocol, out, started = PROTOCOLS.get(name), report_path(run_dir, key, name), time.perf_counter()
                print(f"{protocol.title} of {model or 'the run'}'s embedding", file=sys.stderr)
                reports[f"{key}/{name}"] = protocol.run(saved_model, root, dict(cfg.protocols[name]), out,
                                                        out.with_suffix(".png"), f"{run_dir} ({key})")
                print(f"{protocol.title} of {model or 'the run'}: {time.perf_counter() - started:.0f} s",
                      file=sys.stderr)
    return reports


def protocol_lines(cfg, run_dir: Path) -> tuple[dict, str]:
    """(metrics.json's "protocols" entry, results.md's lines) from the reports on disk."""
    metrics, lines = {}, []
    for name in cfg.protocols:
        protocol = PROTOCOLS.get(name)
        for model in cfg.protocol_models or (RUN_PICK,):
            path = report_path(run_dir, model, name)
            if not path.exists():
                continue
            report = json.loads(path.read_text())
            metrics[f"{model}/{name}"] = {k: report[k] for k in protocol.keys if k in report}
            paper = cfg.reported.get(f"{name}/{model}", cfg.reported.get(name))
            quoted = "" if paper is None else f"; paper {_paper_text(paper)}"
            lines.append(f"{protocol.title}, {model}: {protocol.headline(report)}{quoted}")
    return metrics, "".join(f"\n{line}\n" for line in lines)


def _paper_text(paper) -> str:
    if isinstance(paper, dict):
        return ", ".join(f"{k} {100 * v:.2f}%" for k, v in paper.items())
    return f"{100 * paper:.2f}%"
