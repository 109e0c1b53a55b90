"""Providers are found lazily, plugins through entry points, and duplicates are refused."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from retouch.api import Toolkit
from retouch.errors import ConfigurationError, InvalidRequest, UnsupportedOperation
from retouch.registry import Registry

from .conftest import require

PLUGIN = textwrap.dedent(
    """
    import numpy as np
    from retouch.types import ImageResult, OperationSpec, ProviderInfo, ProviderStatus, ResultImage

    class MirrorProvider:
        info = ProviderInfo(
            name="mirror", kind="local", description="flips the masked area (test plugin)",
            operations={"erase": OperationSpec()}, priority=5,
        )

        def status(self):
            return ProviderStatus(ready=True)

        def run(self, request, progress):
            return ImageResult(images=[ResultImage(pixels=request.image.pixels[:, ::-1].copy())], provider="mirror")
    """
)


def _install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    (tmp_path / "retouch_test_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "retouch_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: retouch-test-plugin\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[retouch.providers]\n{name} = retouch_test_plugin:MirrorProvider\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "retouch_test_plugin", raising=False)


def test_builtin_listing_imports_no_provider_module() -> None:
    sys.modules.pop("retouch.providers.classic", None)
    registry = Registry(entry_points=False)
    assert "classic" in registry.names()
    assert "retouch.providers.classic" not in sys.modules
    assert registry.get("classic").info.name == "classic"
    assert registry.get("classic") is registry.get("classic")  # loaded once


def test_entry_point_plugin_is_discovered_and_preferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_photo: np.ndarray
) -> None:
    _install_plugin(tmp_path, monkeypatch, "mirror")
    toolkit = Toolkit()
    assert "mirror" in toolkit.registry.names()
    mask = np.zeros(small_photo.shape[:2], np.uint8)
    mask[10:20, 10:20] = 255
    result = toolkit.erase(small_photo, mask)
    assert result.provider == "mirror"  # higher priority than classic
    assert np.array_equal(result.image.pixels[10:20, 10:20], small_photo[:, ::-1][10:20, 10:20])
    assert np.array_equal(result.image.pixels[mask == 0], small_photo[mask == 0])


def test_duplicate_names_are_an_error_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_plugin(tmp_path, monkeypatch, "classic")
    with pytest.raises(ConfigurationError) as info:
        Registry()
    assert "retouch-test-plugin" in str(info.value) and "registered twice" in str(info.value)


def test_injected_instance_and_unknown_name(small_photo: np.ndarray) -> None:
    from retouch.providers.classic import ClassicProvider

    mine = ClassicProvider()
    registry = Registry({"mine": mine}, builtins=False, entry_points=False)
    assert registry.get("mine") is mine
    with pytest.raises(InvalidRequest, match="known providers: mine"):
        registry.get("nope")


def test_broken_plugin_is_a_configuration_error() -> None:
    registry = Registry({"broken": "no_such_module_xyz:Thing"}, builtins=False, entry_points=False)
    with pytest.raises(ConfigurationError, match="failed to load"):
        registry.get("broken")
    registry = Registry({"notprovider": "os.path:join"}, builtins=False, entry_points=False)
    with pytest.raises(ConfigurationError):
        registry.get("notprovider")


def test_explicit_provider_must_do_the_operation() -> None:
    with pytest.raises(UnsupportedOperation, match="does not do inpaint"):
        Toolkit().provider_for("inpaint", "classic")


def test_plain_upscale_stays_with_realesrgan_and_detail_goes_to_diffusion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_photo: np.ndarray
) -> None:
    """The diffusers provider declares upscale (for --detail) at a priority under
    realesrgan's and classic's: with a diffusion model ready, a plain upscale is unchanged."""
    from retouch.api import Toolkit
    from retouch.imageio import picture_from_array
    from retouch.models.store import ModelStore
    from retouch.types import UpscaleRequest

    require("diffusers")
    monkeypatch.setenv("RETOUCH_HOME", str(tmp_path))
    folder = tmp_path / "some-model"
    folder.mkdir()
    ModelStore().add("some-model", folder, task="inpaint")  # diffusers is ready
    toolkit = Toolkit()
    assert toolkit.registry.get("diffusers").status().ready
    picture = picture_from_array(small_photo)
    names = [p.info.name for p in toolkit.registry.supporting("upscale")]
    assert names.index("realesrgan") < names.index("classic") < names.index("diffusers")
    assert toolkit.provider_for("upscale").info.name == "realesrgan"
    plain = UpscaleRequest(image=picture)
    assert toolkit.provider_for("upscale", request=plain).info.name == "realesrgan"
    detailed = UpscaleRequest(image=picture, detail=True)
    assert toolkit.provider_for("upscale", request=detailed).info.name == "diffusers"
    upscalers = next(o for o in toolkit.describe_operations() if o["name"] == "upscale")
    assert [p["name"] for p in upscalers["providers"]].index("diffusers") > 0
