from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from retouch.demo import sample_mask_path


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
