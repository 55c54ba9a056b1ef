"""kerasface: face-attribute recipes on TensorFlow 2.21 / Keras 3.

Five published systems as named recipes (`python -m kerasface.train --paper=KEY`), TFRecord input
pipelines, one tf.distribute training loop, SavedModel export for TF Serving and TFLite for phones.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) buries the tool's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's default CPU allocator hands every tensor to malloc, which returns the large ones to
# the kernel when freed: each training step then page-faults its activations back in (measured on
# the wang_joint demo: 0.6 s of system time per 1.3 s step). Its BFC pool keeps them: 2.3x less CPU
# per step there (benchmarks/bench_allocator.py). Read when TensorFlow first allocates, so this
# takes effect unless tensors were made before kerasface was imported; "false" opts out.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

__version__ = "0.1.0"


def analyze(image_or_paths, models, **kwargs):
    """Faces, landmarks and attributes of photos: `kerasface.predict.analyze`, imported on the
    first call so that `import kerasface` stays light. Returns one `ImageResult` per image
    (dataclasses with `to_dict()`); `kerasface.predict.results_table` flattens them into rows."""
    from kerasface.predict import analyze as _analyze

    return _analyze(image_or_paths, models, **kwargs)
