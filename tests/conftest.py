from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from retouch.demo import sample_mask_path
from retouch.models.store import default_home


def require(module: str) -> None:
    """Skip the calling test (or, at module level, the module) unless ``module`` is
    installed, without importing it: importing diffusers alone takes seconds."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed", allow_module_level=True)


SLOW_TO_COLLECT = frozenset({"test_server_fuzz.py"})
"""Modules marked slow whose collection alone takes seconds (schemathesis builds every
fuzzed operation's test while collecting): not even collected when slow tests are left out."""


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name in SLOW_TO_COLLECT and "not slow" in config.getoption("markexpr"):
        return True
    return None


REAL_HOME = default_home()
"""The developer's own model store, for the tests that use real pulled weights."""


@pytest.fixture(autouse=True, scope="session")
def empty_model_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests see an empty store, so pulled weights on this machine cannot change which
    provider they get; tests of real weights point RETOUCH_HOME back at REAL_HOME."""
    home = tmp_path_factory.mktemp("retouch-home")
    previous = os.environ.get("RETOUCH_HOME")
    os.environ["RETOUCH_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("RETOUCH_HOME", None)
    else:
        os.environ["RETOUCH_HOME"] = previous


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="session")
def shuttle_mask() -> np.ndarray:
    return np.asarray(Image.open(sample_mask_path()))


@pytest.fixture
def astronaut_file(tmp_path: Path, astronaut: np.ndarray) -> Path:
    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


@pytest.fixture
def shuttle_mask_file() -> Path:
    return sample_mask_path()


@pytest.fixture
def small_photo() -> np.ndarray:
    """A 96 x 64 crop of a real photo: fast enough for many tests."""
    return np.ascontiguousarray(data.chelsea()[100:164, 150:246])


def box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = 255
    return mask
