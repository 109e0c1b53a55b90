"""Masks from a phrase: the clear error until CLIPSeg is pulled, a tiny CLIPSeg built with
transformers (its real loading, preprocessing and threshold), refinement by SAM when both
are present, ``--mask text:...`` anywhere, and Stability taking the phrase itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from retouch.api import Toolkit
from retouch.errors import ModelNotAvailable
from retouch.models.store import ModelStore
from retouch.providers.stability import StabilityProvider
from retouch.types import EditRequest, InpaintRequest, MaskRequest

from .conftest import REAL_HOME
from .fakes import toolkit_with
from .fakes.stability_api import KEY, FakeStability
from .tiny_faces import efficientsam_like

SHUTTLE = [
    (405, 0), (428, 0), (436, 20), (438, 42), (447, 38), (452, 45), (453, 220), (456, 224),
    (458, 236), (462, 270), (470, 284), (370, 285), (368, 270), (372, 248), (353, 226),
    (354, 216), (380, 185), (381, 44), (386, 38), (390, 42), (398, 44), (399, 20),
]  # fmt: skip


def tiny_clipseg(folder: Path) -> Path:
    """A CLIPSeg folder as CIDAS publishes one (config, weights, CLIP tokenizer files,
    preprocessor_config.json), with a 64 px, two-layer, randomly initialised model."""
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (folder / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", "utf-8")
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16
    )
    tokenizer.save_pretrained(str(folder))
    end = vocab["<|endoftext|>"]
    config = CLIPSegConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": end,
            "pad_token_id": end,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=16,
        extract_layers=(1,),
        reduce_dim=8,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=16,
    )
    torch.manual_seed(0)
    CLIPSegForImageSegmentation(config).save_pretrained(str(folder))
    preprocessing = {
        "size": {"height": 64, "width": 64},
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessing), "utf-8")
    return folder


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    monkeypatch.setenv("RETOUCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RETOUCH_CATALOG", raising=False)
    return ModelStore()


# --- without the model ----------------------------------------------------------------------------


def test_until_clipseg_is_pulled_text_masks_say_how_to_get_it(
    home: ModelStore, astronaut: np.ndarray, astronaut_file: Path, tmp_path: Path, capsys: Any
) -> None:
    from retouch.cli import main

    toolkit = Toolkit()
    with pytest.raises(ModelNotAvailable, match=r"retouch models pull clipseg"):
        toolkit.run(MaskRequest(image=toolkit.load(astronaut), kind="text", text="a rocket"))
    with pytest.raises(ModelNotAvailable, match=r"retouch models pull clipseg"):
        toolkit.erase(astronaut, "text:a rocket", provider="classic")
    with pytest.raises(SystemExit) as exit_code:
        main(["mask", "text", str(astronaut_file), "a rocket", "-o", str(tmp_path / "m.png")])
    assert exit_code.value.code == 5
    assert "retouch models pull clipseg" in capsys.readouterr().err
    entry = home.entry_for("clipseg")
    assert entry is not None and entry.is_folder and entry.repo == "CIDAS/clipseg-rd64-refined"


@pytest.fixture
def stability(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeStability, Toolkit]:
    monkeypatch.setenv("STABILITY_API_KEY", KEY)
    monkeypatch.setenv("STABILITY_BASE_URL", "https://stability.fake")
    monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.001")
    fake = FakeStability()
    return fake, toolkit_with(stability=StabilityProvider(transport=fake.transport))


def test_stability_finds_the_phrase_itself(
    stability: tuple[FakeStability, Toolkit], astronaut: np.ndarray
) -> None:
    """No local model is needed: inpaint with a text: mask is search-and-replace, an edit
    is search-and-recolor, the phrase sent as the service's search/select prompt."""
    fake, toolkit = stability
    picture = toolkit.load(astronaut)
    result = toolkit.run(
        InpaintRequest(image=picture, mask="text:the rocket", prompt="a lighthouse", seed=3)
    )
    sent = fake.sent[-1]
    assert sent.path.endswith("/edit/search-and-replace")
    assert sent.fields["search_prompt"] == "the rocket" and sent.fields["prompt"] == "a lighthouse"
    assert "mask" not in sent.fields and result.image.width == 512
    toolkit.run(EditRequest(image=picture, mask="text:the suit", prompt="blue"))
    assert fake.sent[-1].path.endswith("/edit/search-and-recolor")
    assert fake.sent[-1].fields["select_prompt"] == "the suit"
    described = {op["name"]: op for op in toolkit.describe_operations()}
    honours = described["inpaint"]["providers"][0]["honours"]
    assert "mask_phrase" in honours


# --- a tiny CLIPSeg ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_text_masks_with_a_tiny_clipseg(
    home: ModelStore, tmp_path: Path, astronaut: np.ndarray, astronaut_file: Path, capsys: Any
) -> None:
    from retouch.cli import main

    home.add("clipseg", tiny_clipseg(tmp_path / "clipseg"), task="mask")
    toolkit = Toolkit()
    assert toolkit.registry.get("clipseg").status().ready

    def text_mask(**options: Any) -> tuple[np.ndarray, Any]:
        result = toolkit.run(
            MaskRequest(
                image=toolkit.load(astronaut), kind="text", text="a rocket", options=options
            )
        )
        return result.image.pixels[:, :, 0], result

    loose, result = text_mask(threshold=0)
    assert (result.provider, result.model) == ("clipseg", "clipseg")
    assert loose.shape == (512, 512) and set(np.unique(loose)) <= {0, 255}
    peak = result.usage["peak"]
    strict, _ = text_mask(threshold=round(peak * 255) - 1)
    assert 0 < (strict > 0).sum() < (loose > 0).sum()
    nothing, quiet = text_mask(threshold=254)
    if not nothing.any():
        assert "nothing matched" in quiet.warnings[0]
    # the phrase after the image, and --mask text: anywhere
    out = tmp_path / "rocket.png"
    assert (
        main(["mask", "text", str(astronaut_file), "a rocket", "--threshold", "0", "-o", str(out)])
        == 0
    )
    assert np.array_equal(np.asarray(Image.open(out)), loose)
    erased = toolkit.erase(
        astronaut, "text:a rocket", provider="classic", options={"method": "telea"}
    ).image.pixels
    default, _ = text_mask()
    if default.any():
        assert np.array_equal(erased[default == 0], astronaut[default == 0])
    # with Segment Anything here too, each region is refined from its box and best point
    home.add("efficientsam-vitt", efficientsam_like(tmp_path / "sam"), task="mask")
    level = round(peak * 255 * 0.7)
    refined, result = text_mask(threshold=level)
    assert result.model == "clipseg+efficientsam-vitt" and result.usage["sam_regions"] >= 1
    assert refined.any()
    plain, result = text_mask(threshold=level, sam=False)
    assert result.model == "clipseg" and not np.array_equal(plain, refined)


# --- real weights -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    ModelStore(REAL_HOME).find("clipseg") is None,
    reason="CLIPSeg is not in the store; enable with: retouch models pull clipseg --trust",
)
def test_real_clipseg_finds_the_rocket(
    astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retouch import masks

    monkeypatch.setenv("RETOUCH_HOME", str(REAL_HOME))
    toolkit = Toolkit()
    result = toolkit.run(MaskRequest(image=toolkit.load(astronaut), kind="text", text="a rocket"))
    mask = result.image.pixels[:, :, 0] > 127
    shuttle = masks.polygon((512, 512), SHUTTLE) > 0
    assert (mask & shuttle).sum() / (mask | shuttle).sum() > 0.4
    assert not mask[:, :300].any()
