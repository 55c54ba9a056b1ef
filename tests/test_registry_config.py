import dataclasses
import json

import pytest

from kerasface.config import (DataConfig, ModelConfig, PaperConfig, StageConfig, TaskConfig, apply_overrides,
                              read_config, write_config)
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
