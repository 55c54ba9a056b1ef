"""gnet_snet: general-to-specific fine-tuning of VGG-Face for gender (GNet) and smile (SNet1 + SNet2),
CelebA then ChaLearn LAP 2016 FotW (papers/gnet_snet_vggface_fotw.txt).

Run:      python -m kerasface.train --paper=gnet_snet     (CelebA + FotW; VGG-Face weights, see below)
Data:     $KERASFACE_CELEBA, $KERASFACE_FOTW (FotW's format is assumed: kerasface.data.fotw)
Weights:  vgg_face.mat or rcmalli_vggface_tf_vgg16.h5 in $KERAS_HOME/models/vggface/ (or
          --set models.gnet_model1.weights=PATH, and the same for snet1_model1, snet2_model1)
Ablation: python -m kerasface.train --paper=gnet_snet:ablation   (Table 2, five GNet chains, one table)
Demo:     python -m kerasface.train --paper=gnet_snet:demo       (= --demo; synthetic CelebA and FotW)
Real faces here: python -m kerasface.train --paper=gnet_snet:mtfl  (MTFL gender/smile, schemes 1/2/3/5, AFLW test)
Deploy:   python -m kerasface.export saved-model RUN --name faces --photo   (one SavedModel: the photo and its
          five landmarks in, both SNet crops and GNet's cut in the graph, smile = SNet1 + SNet2 averaged;
          --export / --demo write it as MODELS/<name>_photo/)

The recipe: one chain of models per net, each step starting from the previous step's weights
(ModelConfig.init_from, by layer name) with a new last layer (its head has a new name):
  step 1  VGG-Face trained on 2,622 identities: the pretrained weights (weights="vggface")
  step 2  <net>_model1: CelebA, all 40 attributes, one multilabel sigmoid head, base lr 0.001
  step 3  <net>_model2: CelebA, the net's attribute only (head <attribute>_celeba), lr 0.01
  step 4  <net>_model3: FotW, the same attribute (head <attribute>), lr 0.01
Every step: SGD momentum 0.9, weight decay 5e-4, polynomial decay, batch 120, 110K iterations,
lr multipliers 0.1 on conv1_1 ... conv5_3, 0.5 on fc7, 1 on the new layer.
Nets and crops (kerasface.faces.crops): GNet on scheme 2 (gnet_unaligned_face), SNet1 on scheme 1
(gnet_aligned_face), SNet2 on scheme 5 (gnet_aligned_mouth_cheek); smile = the mean of SNet1's
and SNet2's probabilities (PaperConfig.ensembles: evaluated after training from both nets' saved
predictions, a results.md row of its own; exported by the photo export). Training and validation faces are the ones detected closest to FotW's
given box (kerasface.data.fotw); prediction keeps the face closest to the image centre.

Paper: FotW validation, challenge score 263.5 (the organisers' code; not computed here). Table 2
(GNet ablation) and Table 3 (crops) give accuracies that the text available here does not list.

Choices where the paper is silent or contradicts itself (all overridable with --set):
- Gender crop: section 3.3 says scheme 3, section 4.2 and Table 3 scheme 2. Default scheme 2; the
  variant `gender_scheme3` trains GNet on scheme 3 (gnet_unaligned_no_neck).
- fc6's lr multiplier is not given: 0.5, as fc7 (the two pretrained fully connected layers move
  alike; 0.1 would treat it as the convolution MatConvNet stores it as).
- "Polynomial with gamma 0.1": Caffe's poly policy has no gamma; power 1 (linear to 0 over the step).
- Weight decay as Caffe applies it (the gradient of wd/2 ||w||^2, through momentum and the lr
  multipliers): a kernel L2 of 2.5e-4 (vgg_face's `l2`), not Keras' decoupled decay; biases free.
- The FotW step validates (best checkpoint) on the union of the paper's val splits, FotW's and
  CelebA's; FotW's own numbers are the `fotw/val` rows of results.md.
- No flip or other augmentation is described: flip only.
"""

from __future__ import annotations

import dataclasses

from kerasface.config import AugmentConfig, DataConfig, ModelConfig, PaperConfig, SourceConfig, StageConfig, TaskConfig
from kerasface.data.celeba import ATTRIBUTES
from kerasface.papers import register_paper

SCHEME = {1: "gnet_aligned_face", 2: "gnet_unaligned_face", 3: "gnet_unaligned_no_neck",
          4: "gnet_unaligned_with_neck", 5: "gnet_aligned_mouth_cheek"}
NETS = {"gnet": ("gender", 2), "snet1": ("smile", 1), "snet2": ("smile", 5)}  # net -> (attribute, scheme)
LR_MULTIPLIERS = (("conv*", 0.1), ("fc6", 0.5), ("fc7", 0.5), ("head_*", 1.0))
CELEBA = (SourceConfig("celeba", tasks=("attributes", "gender", "smile")),)
FOTW = (SourceConfig("fotw"),)
# Table 2: the GNet chains of the ablation, by the steps they include (step 1 = VGG-Face weights)
ABLATION = {"no_steps_123": (4,), "no_steps_23": (1, 4), "no_step_2": (1, 3, 4), "no_step_3": (1, 2, 4),
            "all_steps": (1, 2, 3, 4)}


def stage(lr: float) -> StageConfig:
    return StageConfig(name="finetune", optimizer="sgd", momentum=0.9, lr=lr, schedule="polynomial", power=1.0,
                       batch_size=120, steps=110_000, eval_every=5000, lr_multipliers=LR_MULTIPLIERS)


def chain(net: str, attribute: str, crop: str, steps=(1, 2, 3, 4), weights: str = "vggface") -> dict[str, ModelConfig]:
    """The models of one net's steps 2-4 (those of `steps`), each initialised from the one before;
    the first takes the VGG-Face weights when step 1 is included."""
    base = ModelConfig(arch="vgg_face", input_size=224, arch_kwargs={"l2": 2.5e-4}, crops=(crop,))
    specs = {
        2: ("model1", TaskConfig("attributes", kind="multilabel", num_classes=len(ATTRIBUTES)), 0.001, CELEBA,
            "CelebA, 40 attributes"),
        3: ("model2", TaskConfig(f"{attribute}_celeba", label=attribute), 0.01, CELEBA, f"CelebA, {attribute}"),
        4: ("model3", TaskConfig(attribute), 0.01, FOTW, f"FotW, {attribute}"),
    }
    models, previous = {}, ""
    for number in (2, 3, 4):
        if number not in steps:
            continue
        name, task, lr, sources, what = specs[number]
        key = f"{net}_{name}"
        start = dict(init_from=previous) if previous else dict(weights=weights if 1 in steps else "")
        models[key] = dataclasses.replace(
            base, tasks=(task,), stages=(dataclasses.replace(stage(lr), sources=sources),), **start,
            description=f"{net} step {number}: {what}, from {previous or ('VGG-Face' if 1 in steps else 'random init')}")
        previous = key
    return models


def configure(gender_scheme: int = 2) -> PaperConfig:
    models = {}
    schemes = {**{net: scheme for net, (_, scheme) in NETS.items()}, "gnet": gender_scheme}
    for net, (attribute, _) in NETS.items():
        models.update(chain(net, attribute, SCHEME[schemes[net]]))
    crops = tuple(dict.fromkeys(SCHEME[s] for s in sorted(schemes.values())))
    augment = AugmentConfig(flip=True, max_shift=0.0, min_scale=1.0, max_scale=1.0, max_rotation=0.0,
                            brightness=0.0, contrast=0.0)
    data = DataConfig(dataset="celeba", crop=crops[0], sources=CELEBA + FOTW, mixing="size", augment=augment)
    return PaperConfig(name="gnet_snet", data=data, crops=crops, models=models,
                       ensembles={"smile": ("smile", ("snet1_model3", "snet2_model3"))},
                       photo_tasks=("gender", "smile"))


def gnet_snet() -> PaperConfig:
    return configure(2)


def ablation_config(cfg: PaperConfig) -> PaperConfig:
    """Table 2: GNet trained without steps 1-3 (random init, lr 0.01), without 2-3, without 2,
    without 3, and with all steps; results.md lists every chain's last model on fotw/val."""
    models = {}
    for name, steps in ABLATION.items():
        models.update(chain(f"gnet_{name}", "gender", SCHEME[2], steps))
    return dataclasses.replace(cfg, models=models, crops=(SCHEME[2],), ensembles={}, photo_tasks=())


def demo_config(cfg: PaperConfig) -> PaperConfig:
    """The recipe on the synthetic CelebA- and FotW-format demo sets: VGG-Face at 1/16 width on 64x64
    inputs, random init (no VGG-Face file ships: step 1 is skipped and says so), a few hundred
    steps per model with Adam (SGD at the paper's rates learns nothing from random init in so few
    steps) and without the lr multipliers (0.1 on the convolutions protects pretrained layers;
    from random init it kept the demo nets at chance)."""
    models = {}
    steps = {"model1": 120, "model2": 80, "model3": 120}
    for key, model in cfg.models.items():
        n = steps[key.rpartition("_")[2]]
        stages = tuple(dataclasses.replace(s, steps=n, batch_size=32, eval_every=n // 2, optimizer="adam", lr=1e-3,
                                           lr_multipliers=()) for s in model.stages)
        models[key] = dataclasses.replace(model, input_size=64, weights="", stages=stages,
                                          arch_kwargs={**model.arch_kwargs, "width": 1 / 16, "l2": 0.0},
                                          description=f"{model.description.replace('VGG-Face', 'random init')} "
                                                      f"[demo: {n} Adam steps, 64x64, 1/16 width]")
    data = dataclasses.replace(cfg.data, deterministic=True, num_shards=1)
    return dataclasses.replace(cfg, models=models, data=data, demo=True)


def mtfl_config(cfg: PaperConfig, width: float = 0.125, size: int = 64, epochs: float = 8.0) -> PaperConfig:
    """What real faces here can show (no CelebA, FotW or VGG-Face weights on these machines): the
    nets from scratch on MTFL, gender and smile on crop schemes 1, 2, 3 and 5, tested on AFLW.
    VGG-Face's layout at 1/8 width on 64x64 inputs, random init, no lr multipliers (they only make
    sense for pretrained layers), Adam 3e-4 with linear decay, batch 64, 8 epochs, flip and small
    shifts. `smile_ensemble` is SNet1 + SNet2 (schemes 1 and 5), the recipe's smile answer."""
    augment = AugmentConfig(flip=True, max_shift=0.03, min_scale=0.97, max_scale=1.03, max_rotation=5.0,
                            brightness=0.1, contrast=0.1)
    scratch = StageConfig(name="scratch", optimizer="adam", lr=3e-4, schedule="polynomial", power=1.0,
                          batch_size=64, epochs=epochs, eval_every=0)
    models = {}
    for attribute in ("gender", "smile"):
        for scheme in (1, 2, 3, 5):
            models[f"{attribute}_scheme{scheme}"] = ModelConfig(
                arch="vgg_face", input_size=size, arch_kwargs={"width": width, "l2": 0.0}, tasks=(TaskConfig(attribute),),
                crops=(SCHEME[scheme],), stages=(scratch,),
                description=f"{attribute} on scheme {scheme} ({SCHEME[scheme]}), VGG-Face layout at {width:g} width, "
                            f"{size}x{size}, from scratch")
    crops = tuple(SCHEME[s] for s in (1, 2, 3, 5))
    data = DataConfig(dataset="mtfl", crop=crops[0], augment=augment)
    return dataclasses.replace(cfg, data=data, crops=crops, models=models,
                               ensembles={"smile_ensemble": ("smile", ("smile_scheme1", "smile_scheme5"))},
                               photo_tasks=("gender", "smile"))


register_paper("gnet_snet", variants={
    "mtfl": ("real faces here: gender and smile on MTFL with crop schemes 1, 2, 3, 5, from scratch at 1/8 width, "
             "tested on AFLW, with the SNet1 + SNet2 smile ensemble", mtfl_config),
    "gender_scheme3": ("GNet on crop scheme 3 (section 3.3) instead of scheme 2 (section 4.2, Table 3)",
                       lambda cfg: configure(3)),
    "ablation": ("Table 2: five GNet chains (without steps 1-3 / 2-3 / 2 / 3, all steps), one results table",
                 ablation_config),
    "ablation_demo": ("the ablation on the demo sets", lambda cfg: demo_config(ablation_config(cfg))),
    "demo": ("synthetic CelebA and FotW sets, 1/16-width VGG-Face at 64x64, < 10 min on 2 CPU cores", demo_config),
})(gnet_snet)
