"""kerasface: face-attribute recipes on TensorFlow 2.21 / Keras 3.

Five published systems as named recipes (`python -m kerasface.train --paper=KEY`), TFRecord input
pipelines, one tf.distribute training loop, SavedModel export for TF Serving and TFLite for phones.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) buries the tool's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def analyze(image_or_paths, models, **kwargs):
    """Faces, landmarks and attributes of photos: `kerasface.predict.analyze`, imported on the
    first call so that `import kerasface` stays light. Returns one `ImageResult` per image
    (dataclasses with `to_dict()`); `kerasface.predict.results_table` flattens them into rows."""
    from kerasface.predict import analyze as _analyze

    return _analyze(image_or_paths, models, **kwargs)
