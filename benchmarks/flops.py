"""FLOPs per image of each registered architecture at full size (printed, never asserted).

    python benchmarks/flops.py

Counts come from TensorFlow's profiler (tf.compat.v1.profiler, "float_operation") run on the frozen
graph of one inference call with batch 1; a multiply-add counts as 2 FLOPs, as the profiler does.
InceptionV3 is measured without its training-only auxiliary head.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework.convert_to_constants import (  # noqa: E402
    convert_variables_to_constants_v2,
)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kerasface.architectures import ARCHITECTURES  # noqa: E402
from kerasface.architectures.tcdcn import MTFL_HEADS  # noqa: E402

# name -> (input_shape, heads, kwargs) at the size the recipes use.
FULL_SIZE: dict[str, tuple[tuple[int, int, int], dict[str, int], dict]] = {
    "inception_v3": ((299, 299, 3), {"gender": 2}, {"aux_head": False}),
    "cascade_cnn": ((150, 150, 3), {"gender": 2}, {}),
    "tcdcn": ((60, 60, 1), dict(MTFL_HEADS), {}),
    "tcdcn_single": ((60, 60, 3), {"smile": 2}, {}),
}


def flops_per_image(model: keras.Model) -> int:
    """Floating-point operations of one inference pass on one image (batch 1)."""
    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    info = tf.compat.v1.profiler.profile(
        graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    )
    return int(info.total_float_ops)


def main() -> None:
    tf.get_logger().setLevel("ERROR")  # the v1 profiler warns about its own deprecated helpers
    print(f"{'architecture':<14} {'input':<12} {'params':>12} {'MFLOPs/image':>14}")
    for name in ARCHITECTURES.names():
        input_shape, heads, kwargs = FULL_SIZE.get(name, ((224, 224, 3), {"gender": 2}, {}))
        model = ARCHITECTURES.get(name)(input_shape, heads, **kwargs)
        flops = flops_per_image(model)
        shape = "x".join(str(s) for s in input_shape)
        print(f"{name:<14} {shape:<12} {model.count_params():>12,} {flops / 1e6:>14,.1f}")


if __name__ == "__main__":
    main()
