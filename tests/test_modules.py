from __future__ import annotations

import sys
import types

import pytest

from retouch._modules import module_available, package_folder


def test_a_module_half_way_through_its_import_counts_as_available(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    half = types.ModuleType("retouch_half_imported")
    half.__spec__ = None  # what OpenCV's loader leaves while another thread imports it
    monkeypatch.setitem(sys.modules, "retouch_half_imported", half)
    assert module_available("retouch_half_imported")
    assert package_folder("retouch_half_imported") is None


def test_installed_and_missing() -> None:
    assert module_available("numpy") and not module_available("retouch_no_such_module")
    folder = package_folder("numpy")
    assert folder is not None and (folder / "__init__.py").exists()
