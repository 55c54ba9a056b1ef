"""SavedModels in TF Serving's own test styles, built by the serving tests themselves.

- `write_tf1_half_plus_two(dir)`: TF1 graph mode (tf.compat.v1 placeholders, reference variables,
  SavedModelBuilder), as TF Serving's saved_model_half_plus_two: y = 0.5 x + 2 with a parsed
  tf.Example "x" feeding Predict (x -> y, x declared [?,1]), Regress (inputs -> outputs) and
  Classify (inputs -> scores, classes) signatures, and a one-record warmup file.
- `write_tf2_half_plus_two(dir)`: `tf.saved_model.save` of a tf.Module: Predict on float x [None],
  Regress on serialized tf.Example, and `lengths` (string [None] -> int32 lengths, for b64).
- `write_keras_export(dir)`: Keras `model.export`: Dense(1), all-ones kernel and bias, on "feat" [None, 2].
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

LABELS = (b"low", b"high")


def example(x: float) -> bytes:
    feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tf1_half_plus_two(out: Path) -> Path:
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        x = tf.identity(v1.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"], name="x")
        a = v1.Variable(0.5, name="a", use_resource=False)
        b = v1.Variable(2.0, name="b", use_resource=False)
        y = tf.add(tf.multiply(a, x), b, name="y")
        high = tf.sigmoid(y - 3.0)
        scores = tf.concat([1.0 - high, high], axis=1, name="scores")
        classes = tf.tile(tf.constant([list(LABELS)]), [tf.shape(x)[0], 1], name="classes")
        info = v1.saved_model.utils.build_tensor_info
        build = v1.saved_model.signature_def_utils.build_signature_def
        signatures = {
            "serving_default": build({"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict"),
            "regress_x_to_y": build({"inputs": info(serialized)}, {"outputs": info(y)}, "tensorflow/serving/regress"),
            "classify_x": build({"inputs": info(serialized)}, {"scores": info(scores), "classes": info(classes)},
                                "tensorflow/serving/classify"),
        }
        builder = v1.saved_model.Builder(str(out))
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures,
                                                 main_op=v1.tables_initializer())
        builder.save()
    _write_warmup(out)
    return out


def _write_warmup(out: Path) -> None:
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
    record = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    (out / "assets.extra").mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(out / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        writer.write(record.SerializeToString())


class _HalfPlusTwo(tf.Module):
    def __init__(self):
        super().__init__()
        self.a = tf.Variable(0.5)
        self.b = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def predict(self, x):
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, serialized):
        x = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        return {"outputs": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def lengths(self, text):
        return {"length": tf.strings.length(text)}


def write_tf2_half_plus_two(out: Path) -> Path:
    module = _HalfPlusTwo()
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.predict,
                                                       "regress_x_to_y": module.regress,
                                                       "lengths": module.lengths})
    return out


def write_keras_export(out: Path) -> Path:
    import keras

    inputs = keras.Input((2,), name="feat")
    dense = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="ones", name="dense")
    keras.Model(inputs, dense(inputs)).export(str(out), verbose=False)
    return out

