"""wang_joint: Wang, He, Fu, Feng, Jiang, Xue, "Multi-task Deep Neural Network for Joint Face
Recognition and Facial Attribute Prediction", ICMR 2017 (papers/wang_joint_recognition_attributes.txt).

Run:      python -m kerasface.train --paper=wang_joint          (CASIA-WebFace + attribute labels)
Data:     $KERASFACE_IDENTITY_FOLDERS: CASIA-WebFace as <id>/<nnn>.jpg, with landmarks.txt (five
          points per image, SphereFace's casia_landmark.txt layout) to align 112x96 crops, and
          attributes.txt from `python -m kerasface.label_attributes CELEBA_MODEL --root TREE`
          (a CelebA-trained classifier's labels, majority-voted per identity); evaluated on
          $KERASFACE_MEGAFACE (devkit lists + FaceScrub/MegaFace images) and $KERASFACE_LFW
Demo:     python -m kerasface.train --paper=wang_joint --demo    (synthetic identities whose attributes
          the generator decides, MegaFace- and LFW-format demo sets)
Variants: wang_joint:no_attr (the "without Attribute" rows of Tables 2-3: identity loss only),
          wang_joint:blocks (Table 5: Full-, Fast- and Variant-Block, each with attributes),
          wang_joint:real_here (synthetic identities + MTFL gender as "Male": the real faces here)

The recipe, as model keys of one run:
  full            the Full-Model (architectures/wang_resnet.py, 3 convs per block): identity softmax
                  (an `embedding` head: its 1,024-d "features" are the face feature) and the seven
                  attributes (an `attribute_scores` head behind its own FC 1024: MSE on 0/1 labels)
  fast            the Fast-Model (2 convs per block), the same heads
  phase1          70k iterations, lambda1 (attributes) = 0, lambda2 (identity) = 1, SGD, lr 0.01
                  divided by 10 at 40k and 58k, batch 40 (Full) / 48 (Fast), dropout 0.5, flips
  phase2          30k more iterations, lambda1 = 0.1, lr 0.001 divided by 10 at 10k and 20k
                  (StageConfig.loss_weights sets the lambdas per stage)
One image per identity is held out for validation (identity_folders' val_per_identity = 1).
After training, each model's embedding is evaluated on MegaFace (CMC rank-1 with the distractors
streamed, TAR at FAR 1e-6, kerasface.identify) and LFW (10-fold pairs protocol, kerasface.verify):
RUN/protocols/, quoted in results.md beside Tables 2, 3 and 5; the attribute head is reported per
attribute on the validation images (Table 4's attributes; the paper's numbers are on 1,000 hand-
labelled FaceScrub images). The deployable is the Full-Model: one SavedModel with the embedding
and the seven attribute scores in one pass (PaperConfig.deploy).

Choices where the paper is silent or contradicts itself (all overridable with --set):
- Architecture: five plain convs and four pools (the text says four convs but lists five widths);
  see architectures/wang_resnet.py for the layout and the pinned parameter counts.
- Weight decay 5e-4 and momentum 0.9 (the paper gives neither; the Caffe face ResNets of the time
  used these).
- The "without Attribute" models train the identity alone over the same 100k iterations.
- Attributes an identity set lacks are -1 (unknown: no loss), as are the demo's Double_Chin and
  High_Cheekbones, which the synthetic renderer never draws.
- Alignment: the SphereFace / CenterLoss 112x96 template (crop `wang_112x96`), as [44]'s code does.
"""

from __future__ import annotations

import dataclasses

from kerasface.config import AugmentConfig, DataConfig, ModelConfig, PaperConfig, SourceConfig, StageConfig, TaskConfig
from kerasface.evaluators import WANG_ATTRIBUTES, WANG_TABLE4
from kerasface.papers import register_paper

CROP = "wang_112x96"
IDENTITIES = (SourceConfig("identity_folders", options={"val_per_identity": "1"}),)
BATCH = {"wang_full": 40, "wang_fast": 48, "wang_variant": 40}
# Tables 2, 3 and 5 (MegaFace with 1M distractors: rank-1, TAR at FAR 1e-6; LFW accuracy)
PAPER_MEGAFACE = {"full": {"rank1": 0.7774, "tar_at_1e-6": 0.7924}, "fast": {"rank1": 0.7307, "tar_at_1e-6": 0.6856},
                  "full_no_attr": {"rank1": 0.7425, "tar_at_1e-6": 0.7622},
                  "fast_no_attr": {"rank1": 0.7028, "tar_at_1e-6": 0.5820},
                  "block_full": {"rank1": 0.7774}, "block_fast": {"rank1": 0.7307}, "block_variant": {"rank1": 0.6963}}
DEMO_STEPS = (150, 100)  # phase 1, phase 2
PAPER_LFW = {"full": 0.9815, "fast": 0.9762, "block_full": 0.9815, "block_fast": 0.9762, "block_variant": 0.9750}


ATTRIBUTE_TASK = TaskConfig("attributes", kind="attribute_scores", num_classes=len(WANG_ATTRIBUTES))


def phases(batch: int, attribute: str | None, sources=IDENTITIES) -> tuple[StageConfig, StageConfig]:
    """lambda1 (the attribute task `attribute`) 0 then 0.1; lambda2 (identity) 1 throughout."""
    common = dict(optimizer="sgd", momentum=0.9, weight_decay=5e-4, schedule="step", decay_rate=0.1,
                  batch_size=batch, eval_every=5000, sources=sources)
    return tuple(StageConfig(name=name, lr=lr, boundaries=boundaries, steps=steps,
                             loss_weights=(("identity", 1.0), *(((attribute, weight),) if attribute else ())), **common)
                 for name, lr, boundaries, steps, weight in (("phase1", 0.01, (40_000, 58_000), 70_000, 0.0),
                                                             ("phase2", 0.001, (10_000, 20_000), 30_000, 0.1)))


def joint_model(arch: str, attribute: TaskConfig | None = ATTRIBUTE_TASK, sources=IDENTITIES, **arch_kwargs) -> ModelConfig:
    """The identity softmax, and `attribute` (None: none) behind the extra FC 1024 of the attribute head."""
    tasks = (TaskConfig("identity", kind="embedding", num_classes=0),) + ((attribute,) if attribute else ())
    # the attribute head's own FC (a list: as config.json gives it back)
    arch_kwargs["attribute_heads"] = [attribute.name] if attribute else []
    what = (f"identity softmax + {attribute.name} ({attribute.kind}), two phases ({attribute.name} weighted 0, "
            f"then 0.1)" if attribute else "identity softmax only, two phases")
    return ModelConfig(arch=arch, input_size=(112, 96), arch_kwargs=dict(arch_kwargs), tasks=tasks,
                       stages=phases(BATCH[arch], attribute.name if attribute else None, sources),
                       description=f"{arch}: {what}")


def wang_joint() -> PaperConfig:
    models = {"full": joint_model("wang_full"), "fast": joint_model("wang_fast")}
    data = DataConfig(dataset="identity_folders", crop=CROP, sources=IDENTITIES,
                      augment=AugmentConfig(flip=True, max_shift=0.0, min_scale=1.0, max_scale=1.0, max_rotation=0.0,
                                            brightness=0.0, contrast=0.0))
    mean_table4 = sum(WANG_TABLE4["Ours"].values()) / len(WANG_TABLE4["Ours"])
    reported = {f"{key}/attributes/*": mean_table4 for key in ("full", "fast", "block_full", "block_fast", "block_variant")}
    reported.update({f"megaface/{key}": value for key, value in PAPER_MEGAFACE.items()})
    reported.update({f"lfw/{key}": value for key, value in PAPER_LFW.items()})
    return PaperConfig(name="wang_joint", data=data, crops=(CROP,), models=models, reported=reported,
                       protocols={"megaface": {}, "lfw": {}}, protocol_models=tuple(models), deploy="full")


def no_attr_config(cfg: PaperConfig) -> PaperConfig:
    """Tables 2-3's "without Attribute" rows beside the joint models."""
    models = {**cfg.models, "full_no_attr": joint_model("wang_full", None),
              "fast_no_attr": joint_model("wang_fast", None)}
    return dataclasses.replace(cfg, models=models, protocol_models=tuple(models))


def blocks_config(cfg: PaperConfig) -> PaperConfig:
    """Table 5: the same network with each building block of Fig. 8."""
    models = {f"block_{block}": joint_model("wang_variant", block=block) for block in ("full", "fast", "variant")}
    return dataclasses.replace(cfg, models=models, protocol_models=tuple(models), deploy="block_full")


def cpu_scale(model: ModelConfig, steps: tuple[int, int], size: tuple[int, int], width: float, note: str) -> ModelConfig:
    """A model at a CPU's scale: Adam for a few hundred or thousand steps (SGD at the paper's rates
    barely moves in so few), precise BN, a smaller input and width."""
    stages = tuple(dataclasses.replace(s, optimizer="adam", lr=1e-3, schedule="constant", boundaries=(),
                                       weight_decay=0.0, steps=n, batch_size=32, eval_every=n, precise_bn_batches=8)
                   for s, n in zip(model.stages, steps))
    return dataclasses.replace(model, input_size=size, stages=stages, arch_kwargs={**model.arch_kwargs, "width": width},
                               description=f"{model.description} [{note}: {'+'.join(map(str, steps))} Adam steps, "
                                           f"{size[0]}x{size[1]}, {width:g} width]")


def real_here_config(cfg: PaperConfig) -> PaperConfig:
    """The real-face part here: no CASIA-WebFace, CelebA or MegaFace on these machines, so the
    identity softmax learns the synthetic demo identities while the attribute head learns the one
    of the seven with real labels here, Male, from MTFL's gender (real photos, aligned 112x96 by
    their five points), tested on MTFL's AFLW test faces. Full-Model at 1/2 width."""
    identities = tuple(dataclasses.replace(s, synthetic=True) for s in IDENTITIES)
    sources = identities + (SourceConfig("mtfl", tasks=("gender",)),)
    model = joint_model("wang_full", TaskConfig("gender", num_classes=2), sources)
    model = cpu_scale(model, (1500, 1500), (112, 96), 0.5, "real faces here")
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=sources), models={"full": model},
                               protocol_models=("full",), reported={"full/gender/*": WANG_TABLE4["Ours"]["Male"]})


def demo_config(cfg: PaperConfig) -> PaperConfig:
    """The demo identity tree (40 synthetic people, their attributes and five points written by the
    generator), MegaFace- and LFW-format demo sets; 1/4 width at 56x48 (the smallest input the five
    pools allow is 48), a few hundred Adam steps (cpu_scale); Full and Fast. The "without
    Attribute" rows are the variant no_attr's, left out here: each model costs the demo about 3
    minutes on 2 shared cores, most of it tracing and evaluating the 48-conv graph rather than
    its steps. (At 1/8 width the Full-Model stays near chance for its first 150 steps.)"""
    models = {key: cpu_scale(cfg.models[key], DEMO_STEPS, (56, 48), 0.25, "demo") for key in ("full", "fast")}
    data = dataclasses.replace(cfg.data, deterministic=True, num_shards=1)
    # the demo MegaFace set is aligned 112x96 crops (kerasface.data.megaface.write_demo): no detection
    protocols = {**cfg.protocols, "megaface": {**cfg.protocols["megaface"], "faces": "crops"}}
    return dataclasses.replace(cfg, data=data, demo=True, models=models, protocol_models=tuple(models),
                               protocols=protocols)


register_paper("wang_joint", variants={
    "no_attr": ("Full and Fast, each with and without the attribute task (Tables 2-3)", no_attr_config),
    "blocks": ("Table 5: Full-, Fast- and Variant-Block networks, each with attributes", blocks_config),
    "real_here": ("synthetic identities + MTFL gender as the attribute Male (real faces), tested on AFLW",
                  real_here_config),
    "demo": ("Full and Fast on synthetic identities with generator attributes, MegaFace/LFW-format demo sets, "
             "56x48, < 10 min on 2 shared cores", demo_config),
})(wang_joint)
