import shutil

import pytest

from unimp_core.data.prepare import run_prepare
from unimp_core.specs.data import PrepareSpec

# A codebook small enough to train in a second or two on CPU: 16 px images, f=4 -> a 4x4 grid.
TINY = {"resolution": 16, "batch_size": 8,
        "codebook": {"size": 32, "dim": 4, "factor": 4, "width": 8, "steps": 12, "save_every": 5, "restart_every": 4}}


@pytest.fixture(scope="session")
def _sample_master(tmp_path_factory):
    base = tmp_path_factory.mktemp("sample")
    return run_prepare(PrepareSpec(datasets=["sample"], out=base / "ds", cache_dir=base / "cache",
                                   sample_users=60, sample_items=30, user_core=3, item_core=2))


@pytest.fixture
def sample_ds(_sample_master, tmp_path):
    """A fresh copy of a 30-item synthetic dataset folder (with images) that a test may change."""
    out = tmp_path / "ds"
    shutil.copytree(_sample_master, out)  # copies, so tests can damage images without touching the cache
    return out
