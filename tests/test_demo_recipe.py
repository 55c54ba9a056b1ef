"""The demo recipe end to end: the synthetic faces are learnable, the multi-task TCDCN of canal_mtfl
reaches at least 90% smile accuracy on their test split (this proves the pipeline learns; it says
nothing about real faces), and its int8 TFLite export stays within 2 points of Keras."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_multitask_tcdcn_reaches_90_percent_smile(tmp_path):
    cmd = [sys.executable, "-m", "kerasface.train", "--paper=canal_mtfl", "--demo", "--model", "tcdcn_multitask",
           "--crop", "nose_centred_150", "--run-dir", "run", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rendering the synthetic demo dataset (not real faces)" in done.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test = metrics["models"]["tcdcn_multitask-nose_centred_150-all"]["test"]
    assert test["smile"]["accuracy"] >= 0.90, test["smile"]
    assert test["smile"]["count"] == 400
    assert test["landmarks"]["nme"] < 0.35
    assert (tmp_path / "run" / "models" / "tcdcn_multitask-nose_centred_150-all" / "saved_model" / "saved_model.pb").exists()
    assert "Demo run on synthetic faces" in (tmp_path / "run" / "results.md").read_text()

    # full-integer TFLite keeps every attribute within 2 points of Keras on the demo test split
    export = [sys.executable, "-m", "kerasface.export"]
    done = subprocess.run(export + ["tflite", "run", "--quant", "int8", "--out", "int8.tflite", "--no-parity"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run(export + ["parity", "run", "--tflite", "int8.tflite", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["quant"] == "int8" and report["images"] == 400
    for name in ("gender", "smile", "glasses", "pose"):
        parity = report["attributes"][name]
        assert abs(parity["tflite_accuracy"] - parity["keras_accuracy"]) <= 0.02, (name, parity)
