"""Export a trained run: SavedModel for TF Serving, .tflite for phones, and a LiteRT parity report.

    python -m kerasface.export saved-model RUN_DIR --name NAME [--version N] [--out models] [--model KEY]
    python -m kerasface.export tflite RUN_DIR --quant {none,fp16,dynamic,int8} [--out FILE] [--model KEY]
    python -m kerasface.export parity RUN_DIR --tflite FILE

Without --model an export is the run's default deployable: the best model per attribute on the
validation split, merged into one multi-head graph reading one common crop (kerasface.export.run
explains the rule). With --model KEY (a unit name or a model key) only that model's units compete.
The SavedModel layout and signatures are described in kerasface.export.saved_model, the TFLite
modes and the int8 choice in kerasface.export.tflite.

Python API:
    run = load_run("runs/canal_mtfl")
    selection = select_heads(run, model=None)
    export_saved_model(run, selection, "faces", out="models")        # -> models/faces/1
    export_tflite(run, selection, "int8", "models/faces-int8.tflite")
    parity_report(run, "models/faces-int8.tflite")
"""

from kerasface.export.run import Run, RunError, Selection, Task, Unit, load_run, select_heads  # noqa: F401


def __getattr__(name):  # heavy TensorFlow imports only when used
    if name in ("export_saved_model", "next_version", "read_signature_defs", "existing_versions"):
        from kerasface.export import saved_model

        return getattr(saved_model, name)
    if name in ("export_tflite", "parity_report", "format_parity", "sidecar_path", "QUANT_MODES", "convert"):
        from kerasface.export import tflite

        return getattr(tflite, name)
    if name == "ServingGraph":
        from kerasface.export.graph import ServingGraph

        return ServingGraph
    raise AttributeError(f"module 'kerasface.export' has no attribute {name!r}")
