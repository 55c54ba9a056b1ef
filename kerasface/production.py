"""The production model of a branching recipe (PaperConfig.branches): one trunk, each task's branch
from the depth that suits it, every output and the embedding in one forward pass.

After training, for each task the candidate unit (one per branch point) with the best validation
score gives the task's branch; `kerasface.architectures.branching.branched_model` rebuilds the
layers above each branch point on the trunk's activation there, with the fine-tuned weights. The
result is saved as one more unit of the run (models/production-<crop>-all/) and evaluated like
any other, so its table rows are measured, not copied, and the exporter picks it over the separate
models (the same validation scores, more attributes per model). Its unit.json records the branches
and the multiply-adds per image of the one pass against running the separate models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kerasface.config import PaperConfig, write_json

PRODUCTION = "production"


def choose_branches(cfg: PaperConfig, records: list[dict]) -> dict[str, dict]:
    """task -> the record of its best candidate on the first (validation) split."""
    from kerasface.evaluate import evaluated_splits

    chosen = {}
    for task, candidates in cfg.branches.items():
        scored = []
        for record in records:
            if record["model_key"] in candidates and record.get("fold") is None and evaluated_splits(record):
                value = record.get(evaluated_splits(record)[0], {}).get(task)
                if value is not None:
                    scored.append((value, record["unit"], record))
        if not scored:
            raise ValueError(f"branches.{task}: none of {', '.join(candidates)} was trained and evaluated")
        chosen[task] = max(scored, key=lambda s: (s[0], s[1]))[2]
    return chosen


def assemble_production(run_dir: Path, cfg: PaperConfig) -> Path | None:
    """Build, save and evaluate the production unit of a run; returns its folder (None: the config
    has no branches)."""
    if not cfg.branches:
        return None
    from kerasface.architectures import load_trained_model
    from kerasface.architectures.branching import branched_model
    from kerasface.architectures.common import multiply_adds
    from kerasface.evaluate import evaluate_unit
    from kerasface.inference import inference_fn

    run_dir = Path(run_dir)
    records = [json.loads(p.read_text()) for p in sorted((run_dir / "models").glob("*/unit.json"))]
    chosen = choose_branches(cfg, records)
    trunk_key = cfg.models[next(iter(chosen.values()))["model_key"]].init_from
    crop = next(iter(chosen.values()))["crop"]
    trunk_record = next((r for r in records if r["model_key"] == trunk_key and r["crop"] == crop), None)
    if trunk_record is None:
        raise ValueError(f"branches: the trunk {trunk_key!r} was not trained at crop {crop}")
    trunk = load_trained_model(run_dir / "models" / trunk_record["unit"])
    tuned = {task: load_trained_model(run_dir / "models" / r["unit"]) for task, r in chosen.items()}
    points = {task: cfg.models[r["model_key"]].reinit_from for task, r in chosen.items()}
    model = branched_model(trunk, {task: (points[task], tuned[task]) for task in chosen})
    separate = multiply_adds(trunk) + sum(multiply_adds(m) for m in tuned.values())
    unit = f"{PRODUCTION}-{crop}-all"
    folder = run_dir / "models" / unit
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.tmp.keras"
    model.save(tmp)
    tmp.replace(folder / "model.keras")
    sources = list({s["name"]: s for r in (trunk_record, *chosen.values()) for s in r["sources"]}.values())
    tasks = list(trunk_record["tasks"]) + [next(t for t in r["tasks"] if t["name"] == task) for task, r in chosen.items()]
    record = {"unit": unit, "model_key": PRODUCTION, "arch": "branched:" + trunk_record["arch"], "crop": crop,
              "attribute": "all", "fold": None, "input_size": trunk_record["input_size"],
              "channels": trunk_record["channels"], "records": sources[0]["folder"], "sources": sources,
              "tasks": tasks,
              "branches": {task: {"unit": r["unit"], "point": points[task] or "fc"} for task, r in chosen.items()},
              "multiply_adds": {"production": multiply_adds(model), "separate_models": separate}}
    write_json(folder / "unit.json", record)
    where = ", ".join(f"{task} at {b['point']}" for task, b in record["branches"].items())
    print(f"production model: {where}; "
          f"{record['multiply_adds']['production'] / 1e6:.1f}M multiply-adds per image in one pass against "
          f"{separate / 1e6:.1f}M for the separate models", file=sys.stderr)
    evaluate_unit(inference_fn(model), folder, cfg)
    return folder
