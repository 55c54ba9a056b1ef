"""Shared test setup: two logical CPU devices (so mirrored code really runs with 2 replicas),
fixtures that write MTFL-format data, and the real-data location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tensorflow as tf

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
REAL_MTFL = Path(os.environ.get("KERASFACE_MTFL", SHARED_DATASETS / "MTFL"))


def real_mtfl_or_skip() -> Path:
    if not (REAL_MTFL / "training.txt").is_file():
        pytest.skip(f"real MTFL not found at {REAL_MTFL} (set KERASFACE_MTFL to run this test)")
    return REAL_MTFL


def real_dataset_or_skip(dataset: str) -> Path:
    """The real copy of a registered dataset: $<its env var>, default ../shared/datasets/<NAME>
    (FER2013, GENKI-4K, ...); skips, saying where it looked, when the reader finds none there."""
    from kerasface.data import DATASETS

    spec = DATASETS.get(dataset)
    folder = {"fer2013": "FER2013", "genki4k": "GENKI-4K", "imdb": "IMDB", "wiki": "WIKI"}.get(dataset, dataset)
    where = os.environ.get(spec.env_var, str(SHARED_DATASETS / folder))
    try:
        return spec.resolve_root(where)
    except FileNotFoundError:
        pytest.skip(f"real {dataset} not found at {where} (set {spec.env_var} to run this test)")


@pytest.fixture(scope="session")
def demo_mtfl(tmp_path_factory) -> Path:
    """A small synthetic MTFL-format dataset, rendered once per test session."""
    from kerasface.data.synthetic import write_demo_mtfl

    return write_demo_mtfl(tmp_path_factory.mktemp("demo") / "MTFL", num_train=240, num_test=60, seed=0)


@pytest.fixture(scope="session")
def demo_records(demo_mtfl, tmp_path_factory) -> Path:
    """The demo dataset converted with the canal nose-centred crop."""
    from kerasface.data.convert import convert

    out = tmp_path_factory.mktemp("records") / "mtfl-nose_centred_150"
    convert("mtfl", str(demo_mtfl), out, crop="nose_centred_150", shards=2, workers=1, progress=False)
    return out


# The longest test files start first: under `./dev.sh test` (pytest-xdist, --dist loadfile) files
# are handed to the workers in collection order, and a 5-minute file handed out last would run
# alone at the end while the other worker sits idle.
LONGEST_FIRST = ("test_demo_recipe.py", "test_custom_data.py", "test_train.py", "test_registry_config.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file and among the others is kept
