"""The production model of a branching recipe: one pass equals the separate fine-tuned models."""

import numpy as np
import pytest

from kerasface.architectures import ARCHITECTURES, copy_matching_weights
from kerasface.architectures.branching import branched_model
from kerasface.architectures.common import multiply_adds

SHAPE = (40, 40, 3)


def fine_tuned(trunk, task, classes, point, seed):
    """A model of the trunk's architecture with the trunk's weights below `point`, new ones above."""
    import keras

    keras.utils.set_random_seed(seed)
    model = ARCHITECTURES.get("flickr_resnet")(SHAPE, {task: classes}, width=0.125)
    copy_matching_weights(trunk, model, reinit_from=point)
    for layer in model.layers[[x.name for x in model.layers].index(point or f"head_{task}"):]:
        layer.set_weights([w + np.random.default_rng(seed).normal(0, 0.05, w.shape).astype(w.dtype)
                           for w in layer.get_weights()])  # moved away from init, as training would
    return model


@pytest.mark.timeout(180)
def test_one_pass_equals_each_separate_model_and_saves(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    trunk = ARCHITECTURES.get("flickr_resnet")(SHAPE, {"identity": 12}, width=0.125)
    branches = {"emotion": ("conv17", 7), "age": ("conv21", 4), "smile": ("conv_bn320", 2), "gender": ("", 2)}
    tuned = {task: fine_tuned(trunk, task, classes, point, seed)
             for seed, (task, (point, classes)) in enumerate(branches.items(), start=1)}
    model = branched_model(trunk, {task: (branches[task][0], tuned[task]) for task in branches})
    x = np.random.default_rng(0).uniform(0, 255, (3, *SHAPE)).astype(np.float32)
    out = model(x, training=False)
    np.testing.assert_allclose(out["identity"], trunk(x, training=False)["identity"], rtol=1e-5, atol=1e-5)
    for task in branches:
        np.testing.assert_allclose(out[task], tuned[task](x, training=False)[task], rtol=1e-5, atol=1e-5)
    assert model.get_layer("features") is trunk.get_layer("features")  # the embedding is the trunk's
    # one pass costs the trunk once plus each branch, less than the five models run separately
    separate = multiply_adds(trunk) + sum(multiply_adds(m) for m in tuned.values())
    assert multiply_adds(trunk) < multiply_adds(model) < separate
    model.save(tmp_path / "production.keras")
    again = keras.saving.load_model(tmp_path / "production.keras", compile=False)
    for task, value in again(x, training=False).items():
        np.testing.assert_allclose(value, out[task], rtol=1e-5, atol=1e-5)
