"""Optimizers, learning-rate schedules, per-layer learning-rate multipliers and layer freezing.

Learning-rate multipliers (Caffe's `lr_mult`) scale the UPDATE of the layers they match, under any
optimizer: the trainable variables are grouped by multiplier and each group gets its own optimizer
whose learning rate (schedule) is the stage's times the multiplier. Scaling the gradient instead
would be undone by Adam and RMSprop, which divide by the gradient's own magnitude. The decoupled
weight decay, applied as lr * decay, scales with it.
"""

from __future__ import annotations

import fnmatch

import keras

from kerasface.config import StageConfig

SCHEDULES = ("constant", "step", "exponential", "polynomial")
OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw")


class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`base(step) * factor`."""

    def __init__(self, base, factor: float):
        self.base, self.factor = base, float(factor)

    def __call__(self, step):
        return self.base(step) * self.factor

    def get_config(self):
        return {"base": keras.optimizers.schedules.serialize(self.base), "factor": self.factor}


def learning_rate(stage: StageConfig, total_steps: int):
    if stage.schedule == "constant":
        return stage.lr
    if stage.schedule == "step":
        values = [stage.lr * stage.decay_rate**i for i in range(len(stage.boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(list(stage.boundaries), values)
    if stage.schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(stage.lr, stage.decay_steps or total_steps,
                                                           stage.decay_rate, staircase=stage.staircase)
    if stage.schedule == "polynomial":
        return keras.optimizers.schedules.PolynomialDecay(stage.lr, stage.decay_steps or total_steps, stage.end_lr,
                                                          stage.power)
    raise ValueError(f"unknown schedule {stage.schedule!r}; known: {', '.join(SCHEDULES)}")


def make_optimizer(stage: StageConfig, total_steps: int, multiplier: float = 1.0):
    lr = learning_rate(stage, total_steps)
    if multiplier != 1.0:
        lr = lr * multiplier if isinstance(lr, float) else ScaledSchedule(lr, multiplier)
    wd = stage.weight_decay or None
    makers = {
        "sgd": lambda: keras.optimizers.SGD(lr, momentum=stage.momentum, weight_decay=wd),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr, rho=0.9, momentum=stage.momentum if stage.momentum < 1 else 0,
                                                    epsilon=1.0, weight_decay=wd),
        "adam": lambda: keras.optimizers.Adam(lr, weight_decay=wd),
        "adamw": lambda: keras.optimizers.AdamW(lr, weight_decay=stage.weight_decay or 0.004),
    }
    if stage.optimizer not in makers:
        raise ValueError(f"unknown optimizer {stage.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    optimizer = makers[stage.optimizer]()
    if wd:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def lr_multipliers(model, stage: StageConfig) -> list[float]:
    """One multiplier per trainable variable (first matching glob over its layer name wins)."""
    owner = {}
    for layer in model.layers:
        for var in layer.trainable_weights:
            owner.setdefault(id(var), layer.name)
    mults = []
    for var in model.trainable_variables:
        name = owner.get(id(var), var.path.split("/")[0])
        mults.append(next((m for pattern, m in stage.lr_multipliers if fnmatch.fnmatch(name, pattern)), 1.0))
    return mults


class GroupedOptimizer:
    """One optimizer per learning-rate multiplier, applied to its own variables.

    `slots()` names them for tf.train.Checkpoint: a stage without multipliers has one optimizer,
    checkpointed as "optimizer" as before.
    """

    def __init__(self, stage: StageConfig, total_steps: int, model, mixed_precision: bool = False):
        variables = model.trainable_variables
        mults = lr_multipliers(model, stage)
        groups: dict[float, list[int]] = {}
        for index, m in enumerate(mults):
            groups.setdefault(m, []).append(index)
        self.groups = []  # (optimizer, variable indices); multiplier 0 freezes without an optimizer
        for m, indices in sorted(groups.items(), key=lambda kv: -kv[0]):
            if m == 0.0:
                continue
            optimizer = make_optimizer(stage, total_steps, m)
            if mixed_precision:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build([variables[i] for i in indices])
            self.groups.append((m, optimizer, indices))
        if not self.groups:
            raise ValueError(f"stage {stage.name!r}: every trainable layer has lr multiplier 0; nothing would train")

    @property
    def persistent_tape(self) -> bool:
        """Several loss scales (mixed precision with multipliers) take one gradient call each."""
        return len(self.groups) > 1 and hasattr(self.first, "scale_loss")

    @property
    def first(self):
        return self.groups[0][1]

    def slots(self) -> dict:
        if len(self.groups) == 1:
            return {"optimizer": self.first}
        return {f"optimizer_lr_x{m:g}".replace(".", "_").replace("-", "m"): opt for m, opt, _ in self.groups}

    def scale_losses(self, loss) -> list:
        """The loss as each group's optimizer scales it (mixed precision); call inside the tape."""
        return [opt.scale_loss(loss) if hasattr(opt, "scale_loss") else loss for _, opt, _ in self.groups]

    def apply(self, tape, scaled: list, variables) -> None:
        """Gradients of each group's scaled loss (`scale_losses`) for its variables, and the updates."""
        same = all(s is scaled[0] for s in scaled)
        grads = tape.gradient(scaled[0], variables) if same else None
        for (m, opt, indices), target in zip(self.groups, scaled):
            group_vars = [variables[i] for i in indices]
            group_grads = [grads[i] for i in indices] if same else tape.gradient(target, group_vars)
            opt.apply_gradients(zip(group_grads, group_vars))


def set_trainable(model, rule: str) -> None:
    """Freeze or unfreeze layers by name or by depth. `rule` is 'all', 'new_layers' (layers named
    head_*), or comma-separated items, each a glob over layer names, `from:NAME` (that layer and every
    layer after it, i.e. fine-tune from that depth up) or `top:N` (the N layers with weights nearest the
    output); a layer trains when any item selects it. Layer order is the functional model's
    topological order."""
    items = {"all": ["*"], "new_layers": ["head_*"]}.get(rule, [p.strip() for p in rule.split(",") if p.strip()])
    weighted = [layer for layer in model.layers if layer.weights]
    names = [layer.name for layer in weighted]
    selected = set()
    for item in items:
        if item.startswith("from:"):
            start = item[len("from:"):]
            all_names = [layer.name for layer in model.layers]
            if start not in all_names:
                raise ValueError(f"trainable item {item!r}: no layer named {start!r} in {model.name}")
            later = {layer.name for layer in model.layers[all_names.index(start):]}
            selected.update(n for n in names if n in later)
        elif item.startswith("top:"):
            count = item[len("top:"):]
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"trainable item {item!r}: N in top:N must be a positive integer")
            selected.update(names[-int(count):])
        else:
            selected.update(n for n in names if fnmatch.fnmatch(n, item))
    if not selected:
        raise ValueError(f"trainable={rule!r} matches no layer with weights in {model.name}")
    for layer in weighted:
        layer.trainable = layer.name in selected
