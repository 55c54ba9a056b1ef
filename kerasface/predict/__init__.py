"""Photos in, faces and attributes out: detect once, crop per model, predict, report and draw.

    python -m kerasface.predict PATH... --model models/NAME [--model ...]
        [--format jsonl|csv] [--out FILE] [--annotate DIR] [--face all|largest|centre]
        [--batch-size 32] [--models-dir DIR] [--min-face-size N] [--threshold T] [--max-side N]
        [--threads N] [--strict] [--no-progress]

PATH is an image file, a folder (searched recursively for image files) or a glob ("photos/*.jpg",
"photos/**/*.png"; quote it so that the shell leaves it alone). A file named explicitly is read
whatever its extension, so a bad file is reported rather than skipped.

MODEL is one of
  models/NAME                 a SavedModel folder in TF Serving's layout: its highest integer
                              version folder is used; a version folder (models/NAME/3) works too
  FILE.tflite                 a TFLite export, described by FILE.tflite.json beside it
  grpc://host:port/NAME       a TF Serving compatible server (TF Serving or kerasface.serving);
  http://host:port/NAME       .../NAME/versions/N pins a version. The crop scheme comes from the
                              export.json of the served version, looked up under --models-dir
                              (default ./models: DIR/NAME/<version>/export.json), or is given in
                              the URL: grpc://host:8500/faces?crop=nose_centred_150
  ALIAS=MODEL                 any of the above, reported under the name ALIAS
A model is reported under its name: ALIAS, else export.json's "name", FILE for FILE.tflite, NAME
for a URL; a repeated name gets its kind appended (faces, faces-tflite, faces-grpc, faces-http).
gRPC sends float crops to serving_default; REST sends lossless PNG crops to predict_images (JSON
floats would be ~1 MB a face), which the graph decodes and resizes exactly as training did.
Each model's crop scheme, input size, colour mode and labels come from the description exported
with it (export.json or FILE.tflite.json), so every model sees the crop it was trained on. Faces
are detected once (MTCNN, kerasface.faces) and shared by all models; each crop scheme is cut once
and shared by the models that read it. A model that is not a kerasface export, or whose inputs do
not match its description, stops the run at start with one line naming it (exit status 2).

Output schema (JSON lines, the default: one object per image, on stdout or in --out FILE)
    {"path": "photos/a.jpg", "width": 640, "height": 480,
     "faces": [
       {"index": 0,                              # rank among ALL detected faces (best score = 0)
        "box": [x, y, width, height],            # image pixels, pixel centres at integers
        "score": 0.9993,                         # detector confidence
        "landmarks": {"left_eye": [x, y], "right_eye": [x, y], "nose": [x, y],
                      "mouth_left": [x, y], "mouth_right": [x, y]},   # detector's, image pixels
        "attributes": {
          "MODEL": {                             # one entry per --model (its name or ALIAS)
            "smile": {"label": "smiling", "score": 0.91,           # classification output
                      "probabilities": {"not_smiling": 0.09, "smiling": 0.91}},
            "landmarks": {"points": {"left_eye": [x, y], ...}},    # landmark output, mapped
                                                                     #   back to image pixels
            "celeba": {"probabilities": {"Smiling": 0.93, ...},    # multilabel output
                       "present": ["Smiling", ...]},
            "age": {"values": {"age": 31.2}},                      # regression output
            "identity": {"embedding": [0.01, ...]}                 # embedding (L2-normalised)
          }}}]}
  Each output is read by its head kind (kerasface.tasks.HEAD_KINDS: `HeadKind.read`).
  An image with no face: "faces": [] (not a failure). An image that cannot be used (missing,
  unreadable, not an image, truncated, too large, or a model error on it):
    {"path": "photos/bad.jpg", "error": "photos/bad.jpg: truncated or corrupt image file (...)"}
  "left"/"right" are the image's left and right, as MTCNN and MTFL name them. Plain JSON numbers
  only: boxes and points rounded to 0.01 px, probabilities to 1e-6.

CSV (--format csv): one row per reported face (an image with no face or with an error still gets
one row, with empty face columns). Columns, in this order:
    path, width, height, face, box_x, box_y, box_w, box_h, score,
    left_eye_x, left_eye_y, ..., mouth_right_x, mouth_right_y,
    per model and attribute:  MODEL.ATTR (the label), MODEL.ATTR.LABEL (each probability),
                              landmark outputs: MODEL.ATTR.POINT_x, MODEL.ATTR.POINT_y,
    error
`results_table(results)` returns these rows as a list of dicts (pandas: `pd.DataFrame(rows)`,
or `to_dataframe(results)` when pandas is installed).

--annotate DIR writes every readable image with each reported face's box, detector landmarks and
predicted labels drawn (one colour per attribute value; line widths and font scale with the image;
predicted landmark outputs as crosses), keeping the folder structure below each PATH.

Exit status: 0 when every image was read and predicted (images without faces included), 1 when
some failed (they are in the output with "error" and in the summary), 2 for a bad model or bad
arguments, 130 when interrupted (Ctrl-C): the images finished by then are kept, with --out FILE
as complete records in FILE (never a line or an image's rows cut short), and stderr says how many.
A progress bar (tqdm) and a closing summary (images, faces, failures, images/s) go to stderr.

Python API:
    import kerasface
    results = kerasface.analyze("photos/", models=["models/faces", "models/faces.tflite"])
    results[0].faces[0].attributes["faces"]["smile"].label
    [r.to_dict() for r in results]                       # the JSON-lines objects above
    rows = kerasface.predict.results_table(results)       # the CSV rows above

For repeated calls, load the models once: `models = load_models([...])`, then
`analyze(images, models=models)`, or keep a `Predictor`.

Modules, one per role, in the order data flows through them:
    inputs       expand_inputs, Item: paths / folders / globs / bytes / arrays -> images
    model        Model, ModelInfo, Output, ModelError: the backend interface and description checks
    saved_model  SavedModelModel, resolve_saved_model
    tflite       TFLiteModel
    remote       RemoteModel (gRPC / REST)
    loading      load_model, load_models: a --model argument -> one of the three backends
    geometry     crops and their map back to the image; model_inputs
    results      ImageResult, FaceResult, AttributeResult, LandmarksResult, ValuesResult, Summary
    predictor    Predictor, analyze
    draw         annotate, value_colour, PALETTE
    tables       results_table, to_dataframe, table_columns (the CSV columns)
    cli          main, build_parser (python -m kerasface.predict)
"""

from kerasface.predict.cli import build_parser, main
from kerasface.predict.draw import PALETTE, annotate, value_colour
from kerasface.predict.geometry import model_inputs
from kerasface.predict.inputs import Item, expand_inputs
from kerasface.predict.loading import load_model, load_models
from kerasface.predict.model import Model, ModelError, ModelInfo, Output
from kerasface.predict.predictor import DEFAULT_BATCH_SIZE, FACE_RULES, Predictor, analyze
from kerasface.predict.remote import RemoteModel
from kerasface.predict.results import (AttributeResult, FaceResult, ImageResult, LandmarksResult, Summary,
                                      ValuesResult)
from kerasface.predict.saved_model import SavedModelModel, resolve_saved_model
from kerasface.predict.tables import BASE_COLUMNS, results_table, table_columns, to_dataframe
from kerasface.predict.tflite import TFLiteModel

__all__ = [
    "BASE_COLUMNS",
    "DEFAULT_BATCH_SIZE",
    "FACE_RULES",
    "PALETTE",
    "AttributeResult",
    "FaceResult",
    "ImageResult",
    "Item",
    "LandmarksResult",
    "ValuesResult",
    "Model",
    "ModelError",
    "ModelInfo",
    "Output",
    "Predictor",
    "RemoteModel",
    "SavedModelModel",
    "Summary",
    "TFLiteModel",
    "analyze",
    "annotate",
    "build_parser",
    "expand_inputs",
    "load_model",
    "load_models",
    "main",
    "model_inputs",
    "resolve_saved_model",
    "results_table",
    "table_columns",
    "to_dataframe",
    "value_colour",
]
