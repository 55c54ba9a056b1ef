"""flickr_depth: an identity ResNet fine-tuned for each attribute from the depth that suits it
(papers/flickr_face_attribute_depth.txt; Baumgartner and Culpepper, Flickr).

Run:      python -m kerasface.train --paper=flickr_depth          (identity tree + MTFL + FER2013)
Data:     $KERASFACE_IDENTITY_FOLDERS (CASIA-WebFace layout <id>/<nnn>.jpg), $KERASFACE_MTFL,
          $KERASFACE_FER2013; verification on $KERASFACE_LFW (lfw/<name>/<name>_NNNN.jpg + pairs.txt)
Real faces here: python -m kerasface.train --paper=flickr_depth:real_here   (trunk on synthetic identities,
          the depth grid on real MTFL gender/smile and FER2013 emotion)
Ethnicity: python -m kerasface.train --paper=flickr_depth:ethnicity   (the recipe plus Sec. 4.7's multi-label
          ethnicity from your CSV: $KERASFACE_ETHNICITY_CSV, kerasface/data/ethnicity_csv.py)
Demo:     python -m kerasface.train --paper=flickr_depth --demo   (gender, emotion x conv19, conv_bn320, fc)
Verify:   python -m kerasface.verify models/flickr_depth_demo/1 --lfw data/demo/lfw

The recipe, as model keys of one run:
  identity        the base network (architectures/flickr_resnet.py, Fig. 2) trained as a softmax over
                  the identities (an `embedding` head: its 320-d "features" are the face embedding);
                  SGD momentum 0.9, batch 400, lr 0.1 divided by 4 every 10,000 batches, weights from
                  a Gaussian of variance 0.01 (the architecture's init_std=0.1)
  <task>_<point>  Table 3's grid: the identity network's weights below the branch point, frozen; the
                  branch point and every layer above it re-initialised and retrained
                  (ModelConfig.reinit_from + StageConfig.trainable "from:<point>"), a new softmax
                  for the task; points conv17, conv19, conv21, conv22, conv_bn320, fc (fc: the new
                  softmax alone, on the frozen 320-d bottleneck)
  production      one model (PaperConfig.branches): the trunk once, each task's branch from the grid
                  point with the best validation accuracy, all outputs and the embedding in one pass;
                  exported as one SavedModel and one .tflite, with its multiply-adds beside the
                  separate models' (unit.json "multiply_adds")
Verification: the production model's embedding on the LFW protocol (PaperConfig.protocols),
threshold on 9 folds, accuracy on the 10th, mean +- std; paper 95.98%.

Choices where the paper is silent (all overridable with --set):
- Attributes: the paper's emotion, age, ethnicity and gender sets are Flickr's own. Here gender and
  smile come from MTFL and emotion (the same 7 classes) from FER2013; age has no dataset on these
  machines and is not in the grid (the grid is one dict below: add a task and its source to extend
  it); ethnicity is the variant below, trained from a table you provide.
- Identity training length: 60,000 batches of 400 (about 10 epochs of CASIA-WebFace's 494K images);
  the paper gives the schedule, not its end.
- Fine-tuning: SGD momentum 0.9, batch 128, lr 0.01 divided by 4 every 5,000 steps, 15,000 steps;
  the best validation checkpoint is kept.
- Alignment: the paper's detector and aligner are not described; faces are aligned on five
  landmarks to 224x224 (`vggface_224`), MTCNN's landmarks where a dataset has none.
- Ethnicity (variant `ethnicity`): the paper's multi-target classifier, a multilabel head (one
  sigmoid per group, masked sigmoid cross-entropy) at every branch point, from a CSV whose
  `ethnicity` cells list a face's groups (`white|south-asian`); the location is
  $KERASFACE_ETHNICITY_CSV (or --set data.sources.3.root=PATH), never a path in the recipe. The
  nine groups are the paper's eight names plus native-american, which it leaves unnamed
  (kerasface/data/ethnicity_csv.py says why). Evaluated as in the paper at an operating point:
  one threshold over all nine probabilities, the lowest whose fpr on validation is <= 1.03%,
  applied to test, with tpr, fpr and the share of faces given no group (TaskConfig.operating_fpr).
  The paper's single-label 72% and its tpr 71.97% at fpr 1.03% stand beside the production model;
  no ethnicity data is on these machines, so no number of ours yet.
"""

from __future__ import annotations

import dataclasses

from kerasface.config import AugmentConfig, DataConfig, ModelConfig, PaperConfig, SourceConfig, StageConfig, TaskConfig
from kerasface.data.ethnicity_csv import GROUPS
from kerasface.papers import register_paper

CROP = "vggface_224"
POINTS = ("conv17", "conv19", "conv21", "conv22", "conv_bn320", "fc")
# task -> (the dataset it trains on, its head)
TASKS = {"gender": ("mtfl", TaskConfig("gender")), "smile": ("mtfl", TaskConfig("smile")),
         "emotion": ("fer2013", TaskConfig("emotion", num_classes=7))}
# the variant `ethnicity` (Sec. 4.7): the multi-target head over the nine groups, reported at the
# paper's operating point (fpr 1.03%) with its threshold chosen on validation
ETHNICITY = {"ethnicity": ("ethnicity_csv", TaskConfig("ethnicity", kind="multilabel", num_classes=len(GROUPS),
                                                       operating_fpr=0.0103))}
IDENTITIES = (SourceConfig("identity_folders"),)
DEMO_TASKS, DEMO_POINTS = ("gender", "emotion"), ("conv19", "conv_bn320", "fc")
# Fig. 3 (validation accuracy after convergence); smile is not in the paper
PAPER_GRID = {"emotion": (0.44, 0.68, 0.30, 0.34, 0.42, 0.44), "gender": (0.98, 0.94, 0.98, 0.95, 0.97, 0.99)}
TABLE_3 = "Table 3: accuracy per branch point"


def identity_stage(steps: int = 60_000) -> StageConfig:
    return StageConfig(name="identity", optimizer="sgd", momentum=0.9, lr=0.1, schedule="step", decay_rate=0.25,
                       boundaries=tuple(range(10_000, steps, 10_000)), batch_size=400, steps=steps,
                       eval_every=5000, sources=IDENTITIES)


def branch_stage(point: str, dataset: str, steps: int = 15_000) -> StageConfig:
    return StageConfig(name="branch", optimizer="sgd", momentum=0.9, lr=0.01, schedule="step", decay_rate=0.25,
                       boundaries=tuple(range(5000, steps, 5000)), batch_size=128, steps=steps, eval_every=1000,
                       trainable="new_layers" if point == "fc" else f"from:{point}", sources=(SourceConfig(dataset),))


def grid_models(base: ModelConfig, tasks=TASKS, points=POINTS) -> dict[str, ModelConfig]:
    models = {}
    for task, (dataset, head) in tasks.items():
        new_head = "a new softmax" if head.kind == "classification" else f"a new {head.kind} head"
        for point in points:
            models[f"{task}_{point}"] = dataclasses.replace(
                base, tasks=(head,), init_from="identity",
                reinit_from="" if point == "fc" else point, stages=(branch_stage(point, dataset),),
                description=f"{task} branching at {point}: identity weights below it frozen, "
                            f"{new_head if point == 'fc' else f'{point} and above re-initialised'}")
    return models


def with_tasks(cfg: PaperConfig, tasks: dict) -> PaperConfig:
    """`cfg` with `tasks` added to the depth grid: a model per branch point, their datasets as
    sources (each labelling its tasks), a column of Table 3 and a branch of the production model."""
    labelled = {}
    for task, (dataset, _) in tasks.items():
        labelled.setdefault(dataset, []).append(task)
    sources = tuple(SourceConfig(dataset, tasks=tuple(names)) for dataset, names in labelled.items())
    cells = {f"{t}_{p}": (p, t) for t in tasks for p in POINTS}
    return dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, sources=cfg.data.sources + sources),
        models={**cfg.models, **grid_models(cfg.models["identity"], tasks)},
        grids={**cfg.grids, TABLE_3: {**cfg.grids.get(TABLE_3, {}), **cells}},
        branches={**cfg.branches, **{task: tuple(f"{task}_{p}" for p in POINTS) for task in tasks}})


def flickr_depth() -> PaperConfig:
    base = ModelConfig(arch="flickr_resnet", input_size=224, arch_kwargs={"init_std": 0.1, "width": 1.0})  # variance 0.01
    identity = dataclasses.replace(base, tasks=(TaskConfig("identity", kind="embedding", num_classes=0),),
                                   stages=(identity_stage(),),
                                   description="the base network as an identity softmax (Fig. 2)")
    augment = AugmentConfig(flip=True, max_shift=0.02, min_scale=0.98, max_scale=1.02, max_rotation=0.0,
                            brightness=0.0, contrast=0.0)
    data = DataConfig(dataset="identity_folders", crop=CROP, sources=IDENTITIES, augment=augment)
    reported = {f"{task}_{point}/{task}/*": value for task, values in PAPER_GRID.items()
                for point, value in zip(POINTS, values)}
    reported["lfw"] = 0.9598
    trunk = PaperConfig(name="flickr_depth", data=data, crops=(CROP,), models={"identity": identity},
                        reported=reported, protocols={"lfw": {}})
    return with_tasks(trunk, TASKS)


def ethnicity_config(cfg: PaperConfig) -> PaperConfig:
    """The paper's recipe plus Sec. 4.7's ethnicity at every branch point: a multilabel head over
    the nine groups (kerasface.data.ethnicity_csv.GROUPS), trained on the ethnicity CSV
    ($KERASFACE_ETHNICITY_CSV, or --set data.sources.3.root=PATH), reported at fpr 1.03%."""
    cfg = with_tasks(cfg, ETHNICITY)
    # the paper's two ethnicity numbers are of its chosen models, not of each branch point: the
    # single-label softmax (Fig. 4, 72%; Fig. 3's fc cell) and the multi-target operating point
    # (tpr 71.97% at fpr 1.03%); both stand beside the production model, which takes the branch
    # best on validation. Fig. 3's ethnicity column is single-label accuracy, not what a
    # multilabel head reports, so the grid shows ours alone.
    reported = {"production/ethnicity/*": [{"value": 0.72, "metric": "single-label accuracy"},
                                           {"value": 0.7197, "metric": "tpr at fpr 1.03%"}]}
    return dataclasses.replace(cfg, reported={**cfg.reported, **reported})


def scaled(cfg: PaperConfig, size: int, width: float, identity_steps: int, branch_steps: int, batch: int,
           note: str) -> PaperConfig:
    """The recipe at a CPU's scale: smaller inputs and widths, fewer steps, Adam (from a trunk that
    trained a few hundred steps, SGD at the paper's rates barely moves), He initialisation and
    precise BN: in a few hundred steps the moving statistics of N(0, 0.01) weights stay far from
    the batches' (the network then answers one class at inference while it learns in training)."""
    models = {}
    for key, model in cfg.models.items():
        steps = identity_steps if key == "identity" else branch_steps
        stages = tuple(dataclasses.replace(s, optimizer="adam", lr=1e-3, schedule="constant", boundaries=(),
                                           steps=steps, batch_size=batch, eval_every=max(1, steps // 2),
                                           precise_bn_batches=8)
                       for s in model.stages)
        models[key] = dataclasses.replace(model, input_size=size, stages=stages,
                                          arch_kwargs={**model.arch_kwargs, "width": width, "init_std": 0.0},
                                          description=f"{model.description} [{note}: {steps} Adam steps, "
                                                      f"{size}x{size}, {width:g} width]")
    return dataclasses.replace(cfg, models=models)


def demo_config(cfg: PaperConfig) -> PaperConfig:
    """Synthetic identities (a CASIA-format tree), the MTFL and FER2013 demo sets and an LFW-format
    demo set; 1/8 width at 64x64, a few hundred identity steps, tens per branch; gender and emotion
    at three branch points (conv19, conv_bn320, fc)."""
    cfg = scaled(cfg, size=64, width=0.125, identity_steps=300, branch_steps=40, batch=32, note="demo")
    data = dataclasses.replace(cfg.data, deterministic=True, num_shards=1)
    # the grid's corners only (emotion's and gender's best depths in the paper and the bottleneck),
    # to stay within minutes; the full grid is the recipe's and real_here's
    models = {k: m for k, m in cfg.models.items() if k == "identity" or k.split("_", 1)[1] in DEMO_POINTS
              and k.split("_", 1)[0] in DEMO_TASKS}
    keep = set(models)
    return dataclasses.replace(cfg, data=data, demo=True, models=models,
                               grids={t: {k: v for k, v in g.items() if k in keep} for t, g in cfg.grids.items()},
                               branches={t: tuple(k for k in c if k in keep) for t, c in cfg.branches.items()
                                         if any(k in keep for k in c)})


def real_here_config(cfg: PaperConfig) -> PaperConfig:
    """What real faces here show: the trunk trained on synthetic demo identities (no identity dataset
    of real faces is on these machines), the depth grid on real MTFL gender/smile and FER2013 emotion.
    On such a trunk the grid shows the mechanics, not the paper's finding."""
    cfg = scaled(cfg, size=96, width=0.25, identity_steps=2000, branch_steps=600, batch=64, note="real faces here")

    def synthetic(sources):
        return tuple(dataclasses.replace(s, synthetic=True) if s.dataset == "identity_folders" else s for s in sources)

    identity = cfg.models["identity"]
    stages = tuple(dataclasses.replace(s, sources=synthetic(s.sources)) for s in identity.stages)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=synthetic(cfg.data.sources)),
                               models={**cfg.models, "identity": dataclasses.replace(identity, stages=stages)},
                               protocols={})


register_paper("flickr_depth", variants={
    "demo": ("synthetic identities, MTFL/FER2013/LFW-format demo sets, 1/8 width at 64x64, < 10 min on 2 cores",
             demo_config),
    "real_here": ("trunk on synthetic identities, the depth grid on real MTFL gender/smile and FER2013 emotion, "
                  "1/4 width at 96x96", real_here_config),
    "ethnicity": ("the paper's recipe plus multi-label ethnicity (9 groups, tpr at fpr 1.03%) from "
                  "$KERASFACE_ETHNICITY_CSV", ethnicity_config),
})(flickr_depth)
