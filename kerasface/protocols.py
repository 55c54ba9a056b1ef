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
    # run(run_dir, root, model_key or None, options, json_out, plot_out) -> report
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


def _verify(run_dir, root, model_key, options, json_out, plot_out):
    from kerasface.verify import summary_lines, verify_model

    report = verify_model(run_dir, root, json_out=json_out, roc_out=plot_out, model_key=model_key,
                          faces=options.get("faces", "detect"))
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


def _identify(run_dir, root, model_key, options, json_out, plot_out):
    from kerasface.identify import identify_model, summary_lines

    size = int(options["size"]) if options.get("size") else None
    report = identify_model(run_dir, root, size, faces=options.get("faces", "detect"), model_key=model_key,
                            json_out=json_out, plot_out=plot_out)
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


def run_protocols(cfg, run_dir: Path, root_of: Callable[[Protocol], Path]) -> dict[str, dict]:
    """Every protocol of the recipe on every protocol model: {"<model>/<protocol>": report}. A
    protocol whose data is not here is skipped with one line (the run itself is complete)."""
    reports = {}
    for name, options in cfg.protocols.items():
        protocol = PROTOCOLS.get(name)
        try:
            root = root_of(protocol)
        except FileNotFoundError as exc:
            print(f"{protocol.title} skipped: {exc}", file=sys.stderr)
            continue
        for model in cfg.protocol_models or (None,):
            out = report_path(run_dir, model or RUN_PICK, name)
            print(f"{protocol.title} of {model or 'the run'}'s embedding", file=sys.stderr)
            reports[f"{model or RUN_PICK}/{name}"] = protocol.run(run_dir, root, model, dict(options), out,
                                                                  out.with_suffix(".png"))
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
