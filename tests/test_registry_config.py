import dataclasses
import json

import pytest

from kerasface.config import (DataConfig, ModelConfig, PaperConfig, StageConfig, TaskConfig, apply_overrides,
                              read_config, write_config)
from kerasface.papers import PAPERS
from kerasface.registry import Registry


def test_registry_register_get_names_and_unknown_lists_known():
    reg = Registry("widget")
    reg.register("b")(2)
    reg.register("a")(1)
    assert reg.get("a") == 1 and reg.names() == ["a", "b"] and "b" in reg and len(reg) == 2
    with pytest.raises(KeyError, match=r"unknown widget 'c'; known: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(3)


def _paper():
    model = ModelConfig(arch="tcdcn", input_size=60, arch_kwargs={"width": 1.0},
                        tasks=(TaskConfig("smile"), TaskConfig("pose", num_classes=5)),
                        stages=(StageConfig(lr=0.1, boundaries=(10, 20)), StageConfig(name="b")))
    return PaperConfig(name="p", data=DataConfig(), models={"m": model}, reported={"m/smile/*": 0.7})


def test_overrides_reach_nested_fields_in_their_types():
    cfg = apply_overrides(_paper(), [
        "models.m.stages.0.lr=0.001", "data.augment.flip=false", "data.val_fraction=0.25",
        "models.m.arch_kwargs.width=0.5", "models.m.stages.0.boundaries=(5, 7)", "seed=3",
        "models.m.tasks.1.num_classes=3",
    ])
    model = cfg.models["m"]
    assert model.stages[0].lr == 0.001 and model.stages[1].lr == 0.01
    assert cfg.data.augment.flip is False and cfg.data.val_fraction == 0.25 and cfg.seed == 3
    assert model.arch_kwargs["width"] == 0.5 and model.stages[0].boundaries == (5, 7)
    assert model.tasks[1].num_classes == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1


@pytest.mark.parametrize("bad, message", [
    ("data.nope=1", "DataConfig has no field 'nope'"),
    ("models.zz.lr=1", "no key 'zz'"),
    ("models.m.stages.9.lr=1", "not an index"),
    ("data.augment.flip=maybe", "expected a boolean"),
    ("seed", "key=value"),
])
def test_bad_overrides_say_what_is_wrong(bad, message):
    with pytest.raises((KeyError, ValueError), match=message):
        apply_overrides(_paper(), [bad])


def test_config_json_round_trip(tmp_path):
    cfg = apply_overrides(_paper(), ["models.m.stages.0.lr_multipliers=(('conv*', 0.1),)"])
    path = write_config(cfg, tmp_path)
    assert json.loads(path.read_text())["kind"] == "PaperConfig"
    assert read_config(path) == cfg
    assert not list(tmp_path.glob("*.tmp"))


RECIPES = [(name, variant) for name in PAPERS.names() for variant in ["", *PAPERS.get(name).variants]]


@pytest.mark.parametrize("name,variant", RECIPES, ids=[f"{n}:{v}" if v else n for n, v in RECIPES])
def test_every_recipe_and_variant_validates_plans_and_round_trips(name, variant, tmp_path):
    from kerasface.config import validate
    from kerasface.papers import paper_config
    from kerasface.train import plan_units

    cfg = validate(paper_config(f"{name}:{variant}" if variant else name))
    assert cfg.name == name and cfg.variant == variant
    units = plan_units(cfg)
    assert units and len({u.name for u in units}) == len(units)
    write_config(cfg, tmp_path)
    assert read_config(tmp_path / "config.json") == cfg


def test_variants_and_validation_errors_name_what_is_wrong():
    from kerasface.config import validate
    from kerasface.papers import paper_config

    assert paper_config("canal_mtfl", demo=True) == paper_config("canal_mtfl:demo")
    cpu = paper_config("canal_mtfl:cpu").models["cascade_cnn"]
    assert cpu.stages[0].epochs == 8 and cpu.stages[0].precise_bn_batches == 20 and cpu.arch_kwargs["batch_norm"]
    with pytest.raises(KeyError, match="unknown variant canal_mtfl:gpu; canal_mtfl has: demo, cpu"):
        paper_config("canal_mtfl:gpu")
    bad = {
        "models.m.stages.0.optimizer=adamm": r"models.m.stages.0.optimizer: unknown optimizer 'adamm'",
        "models.m.stages.1.schedule=cosine": r"models.m.stages.1.schedule: unknown schedule 'cosine'",
        "models.m.tasks.0.kind=ranking": r"models.m.tasks.0.kind: unknown head kind 'ranking'",
        "models.m.tasks.1.loss=focal": r"models.m.tasks.1.loss: classification takes loss softmax or svm",
        "models.m.stages.1.name=train": r"models.m.stages: stage names must be unique",
        "models.m.arch=resnet9000": r"models.m.arch: unknown architecture 'resnet9000'",
    }
    paper = dataclasses.replace(_paper(), models={"m": dataclasses.replace(
        _paper().models["m"], stages=(StageConfig(steps=1), StageConfig(name="b", steps=1)))})
    validate(paper)
    for assignment, message in bad.items():
        with pytest.raises(ValueError, match=message):
            validate(apply_overrides(paper, [assignment]))
