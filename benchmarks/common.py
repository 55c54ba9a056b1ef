"""Shared by the benchmark scripts: the repository on sys.path and the test suite's fake-run builder."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def load_fixture_module():
    """tests/run_fixture.py, which fabricates a small trained run (tests are not a package)."""
    spec = importlib.util.spec_from_file_location("run_fixture", REPO / "tests" / "run_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
