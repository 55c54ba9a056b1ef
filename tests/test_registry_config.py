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


# recipes complete without command-line options (custom needs --data and --arch: tests/test_custom_data.py)
RECIPES = [(name, variant) for name in PAPERS.names() if PAPERS.get(name).configure is None
           for variant in ["", *PAPERS.get(name).variants]]


@pytest.mark.parametrize("name,variant", RECIPES, ids=[f"{n}:{v}" if v else n for n, v in RECIPES])
def test_every_recipe_and_variant_validates_plans_and_round_trips(name, variant, tmp_path):
    from kerasface.config import validate
    from kerasface.papers import paper_config
    from kerasface.train import plan_units

    cfg = validate(paper_config(f"{name}:{variant}" if variant else name))
    assert cfg.name == name and cfg.variant == variant
    units = plan_units(cfg)
    assert units and len({u.name for u in units}) == len(units)
    from kerasface.config import data_sources, target_key
    from kerasface.data import DATASETS

    labels = {name for s in data_sources(cfg.data) for name in DATASETS.get(s.dataset).label_specs}
    for unit in units:  # every task learns from a label some data source has
        for task in unit.model.tasks:
            assert target_key(task) in labels or task.kind == "landmarks", (unit.name, task.name, sorted(labels))
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


def _tiny_models():
    """Every distinct model that a recipe variant trains (per unit), with its data sources."""
    from kerasface.config import data_sources
    from kerasface.papers import paper_config
    from kerasface.train import plan_units

    seen, cases = set(), []
    for name, variant in RECIPES:
        cfg = paper_config(f"{name}:{variant}" if variant else name)
        for unit in plan_units(cfg):
            key, model = unit.model_key, unit.model
            signature = (model.arch, model.channels, tuple((t.kind, t.num_classes) for t in model.tasks),
                         tuple(sorted(model.arch_kwargs)), tuple(s.dataset for s in data_sources(cfg.data)))
            if signature not in seen:
                seen.add(signature)
                cases.append(pytest.param(cfg, key, model, id=f"{name}:{variant or '-'}:{unit.name}"))
    return cases


@pytest.mark.parametrize("cfg,key,model_cfg", _tiny_models())
def test_every_recipe_model_takes_a_training_step_on_every_data_source(cfg, key, model_cfg):
    # built tiny (test_architectures' tiny settings), one optimizer step on a batch laid out as each
    # of the recipe's data sources labels it (the others' labels unknown)
    import keras
    import numpy as np
    import tensorflow as tf
    from test_architectures import tiny_config

    from kerasface.architectures import build_model
    from kerasface.config import data_sources
    from kerasface.data import DATASETS
    from kerasface.optim import GroupedOptimizer
    from kerasface.train import make_train_step, with_class_count

    tiny = tiny_config(model_cfg.arch)
    kwargs = {**model_cfg.arch_kwargs, **tiny["kwargs"]}
    model_cfg = dataclasses.replace(model_cfg, arch_kwargs=kwargs, input_size=tiny["input_shape"][0], weights="")
    sources = data_sources(cfg.data)
    labels = {}
    for source in sources:
        labels.update(DATASETS.get(source.dataset).label_specs)
    # identity heads count their classes from the data: here the datasets' declared label specs
    model_cfg = dataclasses.replace(model_cfg, tasks=tuple(with_class_count(t, labels) for t in model_cfg.tasks))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_model(model_cfg)
        optimizer = GroupedOptimizer(model_cfg.stages[0], 10, model)
    active = {t.name: tf.constant(1.0) for t in model_cfg.tasks}
    step = make_train_step(strategy, model, optimizer, model_cfg.tasks, active, 4)
    rng = np.random.default_rng(0)
    h, w = model_cfg.input_hw
    for source in sources:
        own = DATASETS.get(source.dataset).label_specs
        targets = {"landmarks": rng.uniform(0.2, 0.8, (4, 10)).astype(np.float32)}
        for name, spec in labels.items():
            if spec.type == "value":
                values = rng.normal(size=(4, spec.width)) if name in own else np.full((4, spec.width), np.nan)
                targets[name] = values.astype(np.float32)
            elif spec.type == "multilabel":
                targets[name] = (rng.integers(0, 2, (4, spec.width)) if name in own
                                 else -np.ones((4, spec.width))).astype(np.int32)
            else:
                count = len(spec.names) or spec.count
                targets[name] = (rng.integers(0, count, 4) if name in own else -np.ones(4)).astype(np.int32)
        images = rng.uniform(0, 255, (4, h, w, model_cfg.channels)).astype(np.float32)
        ds = tf.data.Dataset.from_tensors((images, targets)).repeat()
        loss, per_task, _ = step(iter(strategy.experimental_distribute_dataset(ds)))
        assert np.isfinite(float(loss)), (key, source.dataset)
