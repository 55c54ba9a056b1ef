"""Result grids (PaperConfig.grids): flickr_depth's Table 3 laid out from the units' records."""

import pytest

from kerasface.config import ModelConfig, PaperConfig, StageConfig, TaskConfig, validate
from kerasface.grids import grid_cells, grid_markdown, write_grids


def paper():
    models = {f"{task}_{point}": ModelConfig(arch="tcdcn", input_size=40, tasks=(TaskConfig(task),),
                                                    stages=(StageConfig(steps=1),))
              for task in ("gender", "emotion") for point in ("conv17", "fc")}
    grids = {"Table 3": {key: (key.split("_")[1], key.split("_")[0]) for key in models}}
    return PaperConfig(name="grid", models=models, grids=grids,
                       reported={"gender_fc/gender/*": 0.99, "emotion_conv17/emotion/*": 0.68})


def record(key, task, accuracy, split="mtfl/test"):
    return {"model_key": key, "fold": None, "evaluated": ["mtfl/val", split],
            "mtfl/val_metrics": {task: {"accuracy": 0.0}}, f"{split}_metrics": {task: {"accuracy": accuracy}}}


def test_grid_cells_take_each_unit_on_its_own_test_split_with_the_papers_number(tmp_path):
    cfg = validate(paper())
    records = [record("gender_conv17", "gender", 0.8), record("gender_fc", "gender", 0.9),
               record("emotion_conv17", "emotion", 0.6, "fer2013/test")]  # emotion_fc not trained
    grid = grid_cells(cfg, records)["Table 3"]
    assert grid["rows"] == ["conv17", "fc"] and grid["columns"] == ["gender", "emotion"]
    assert grid["ours"] == {"conv17": {"gender": 0.8, "emotion": 0.6}, "fc": {"gender": 0.9}}
    assert grid["paper"] == {"fc": {"gender": 0.99}, "conv17": {"emotion": 0.68}}
    assert grid["split"] == "mtfl/test, fer2013/test"
    text = grid_markdown("Table 3", grid)
    assert "| conv17 | 80.0% | **60.0%** (68.0%) |" in text and "| fc | **90.0%** (99.0%) | — |" in text
    metrics, markdown = write_grids(cfg, records, tmp_path)
    assert metrics["Table 3"]["ours"] == grid["ours"] and markdown == text
    assert (tmp_path / "grid1.png").stat().st_size > 0


def test_a_grid_naming_an_unknown_model_is_a_config_error():
    cfg = paper()
    bad = PaperConfig(name="grid", models=cfg.models, grids={"T": {"nope": ("a", "b")}})
    with pytest.raises(ValueError, match="grids.T: no model 'nope'"):
        validate(bad)


def test_a_cell_shows_the_last_test_split_labelled_for_its_task():
    from kerasface.grids import test_split

    rec = {"evaluated": ["val", "test", "fer2013/val", "fer2013/public_test", "mtfl/val", "mtfl/test"],
           **{f"{s}_metrics": {"gender": {"accuracy": 0.5, "count": 0 if "fer" in s else 10}}
              for s in ["val", "test", "fer2013/val", "fer2013/public_test", "mtfl/val", "mtfl/test"]}}
    assert test_split(rec, "gender") == "mtfl/test"
    assert test_split(rec, "emotion") == ""
