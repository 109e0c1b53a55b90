"""Pulling weights from a local HTTP server: good, resumed, corrupt, failing, missing, offline."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image

from retouch.errors import ChecksumMismatch, DownloadError, InvalidRequest, ModelNotAvailable
from retouch.models.catalog import CatalogEntry, load_catalog
from retouch.models.store import ModelStore

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB of known bytes


class Weights(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    log: ClassVar[list[tuple[str, str | None]]] = []
    fail_after: ClassVar[int | None] = None

    def do_GET(self) -> None:
        self.log.append((self.path, self.headers.get("Range")))
        if self.path == "/broken":
            self.send_error(500, "boom")
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "not found")
            return
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if self.fail_after is not None:
            self.wfile.write(chunk[: self.fail_after])
            return  # the connection closes early: a broken download
        self.wfile.write(chunk)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Weights.files = {"/w.onnx": PAYLOAD, "/other.onnx": b"something else"}
    Weights.log = []
    Weights.fail_after = None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Weights)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def entry(name: str, url: str, checksum: str | None) -> CatalogEntry:
    return CatalogEntry(
        name=name, task="erase", format="onnx", file="w.onnx", urls=(url,), checksum=checksum
    )


SHA = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
MD5 = "md5:" + hashlib.md5(PAYLOAD).hexdigest()


def store(tmp_path: Path, *entries: CatalogEntry, offline: bool = False) -> ModelStore:
    return ModelStore(tmp_path / "home", catalog={e.name: e for e in entries}, offline=offline)


@pytest.mark.parametrize("checksum", [SHA, MD5])
def test_good_pull_is_verified_and_found(tmp_path: Path, server: str, checksum: str) -> None:
    s = store(tmp_path, entry("good", f"{server}/w.onnx", checksum))
    with pytest.raises(ModelNotAvailable, match="retouch models pull good"):
        s.path("good")
    reports = []
    path = s.pull("good", progress=reports.append)
    assert path.read_bytes() == PAYLOAD
    assert s.path("good") == path and s.records()[0].state == "downloaded"
    assert reports[-1].step == reports[-1].total == len(PAYLOAD)
    assert not list(path.parent.glob("*.part"))
    assert s.verify("good") == [("good", True, f"{checksum.split(':')[0]} ok")]
    assert s.pull("good") == path and len(Weights.log) == 1  # already here: no second download


def test_resumed_pull_asks_for_the_rest_only(tmp_path: Path, server: str) -> None:
    s = store(tmp_path, entry("big", f"{server}/w.onnx", SHA))
    Weights.fail_after = 300_000
    with pytest.raises(DownloadError, match="resume"):
        s.pull("big")
    part = s.models_dir / "big" / "w.onnx.part"
    assert part.stat().st_size == 300_000 and s.find("big") is None  # never under the final name
    Weights.fail_after = None
    path = s.pull("big")
    assert path.read_bytes() == PAYLOAD
    assert Weights.log[-1] == ("/w.onnx", "bytes=300000-")


def test_checksum_mismatch_deletes_the_file(tmp_path: Path, server: str) -> None:
    s = store(tmp_path, entry("bad", f"{server}/other.onnx", SHA))
    with pytest.raises(ChecksumMismatch, match="deleted"):
        s.pull("bad")
    folder = s.models_dir / "bad"
    assert not any(folder.iterdir())
    with pytest.raises(ModelNotAvailable):
        s.path("bad")


@pytest.mark.parametrize(
    ("path", "message"), [("/broken", "HTTP 500"), ("/missing.onnx", "HTTP 404")]
)
def test_server_errors_are_clear(tmp_path: Path, server: str, path: str, message: str) -> None:
    s = store(tmp_path, entry("x", f"{server}{path}", SHA))
    with pytest.raises(DownloadError, match=message):
        s.pull("x")
    assert s.find("x") is None


def test_a_second_mirror_is_tried(tmp_path: Path, server: str) -> None:
    mirrored = CatalogEntry(
        name="m",
        task="erase",
        format="onnx",
        file="w.onnx",
        urls=(f"{server}/missing.onnx", f"{server}/w.onnx"),
        checksum=SHA,
    )
    assert store(tmp_path, mirrored).pull("m").read_bytes() == PAYLOAD


def test_unreachable_server_and_offline_mode(tmp_path: Path, server: str) -> None:
    closed = entry("closed", "http://127.0.0.1:9/w.onnx", SHA)
    with pytest.raises(DownloadError, match="could not connect") as failed:
        store(tmp_path, closed).pull("closed")
    assert "retouch models add closed PATH --task erase" in str(failed.value)  # the way round
    offline = store(tmp_path, entry("off", f"{server}/w.onnx", SHA), offline=True)
    with pytest.raises(DownloadError, match="RETOUCH_OFFLINE"):
        offline.pull("off")
    assert Weights.log == []  # offline never touched the network


def test_unknown_checksum_needs_trust(tmp_path: Path, server: str) -> None:
    s = store(tmp_path, entry("loose", f"{server}/w.onnx", None))
    with pytest.raises(InvalidRequest, match="--trust"):
        s.pull("loose")
    assert Weights.log == []
    assert s.pull("loose", trust=True).read_bytes() == PAYLOAD


def test_add_path_rm_and_verify(tmp_path: Path, server: str) -> None:
    s = store(tmp_path, entry("good", f"{server}/w.onnx", SHA))
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"weights")
    s.add("mine", mine, task="erase")
    assert s.path("mine") == mine.resolve() and s.names_for("erase") == ["mine"]
    with pytest.raises(InvalidRequest, match="task must be"):
        s.add("x", mine, task="paint")
    with pytest.raises(InvalidRequest, match="no such file"):
        s.add("x", tmp_path / "nope.onnx", task="erase")
    photo = tmp_path / "photo.png"  # a picture registered by mistake: refused, not "ready"
    Image.new("RGB", (8, 8)).save(photo)
    with pytest.raises(InvalidRequest, match="is a picture, not model weights"):
        s.add("x", photo, task="erase")
    assert s.names_for("erase") == ["mine"]
    assert "forgot" in s.remove("mine") and mine.exists()
    s.pull("good")
    (s.models_dir / "good" / "w.onnx").write_bytes(b"tampered")
    assert s.verify("good")[0][1] is False
    assert "deleted" in s.remove("good") and s.find("good") is None


def test_builtin_catalog_is_sound(tmp_path: Path) -> None:
    catalog = load_catalog()
    for required in (
        "lama",
        "migan",
        "u2netp",
        "isnet-general-use",
        "gfpgan-1.4",
        "codeformer",
        "sam-vit-b",
        "sd15-inpainting",
        "sd-turbo",
        "realesrgan-x4plus-onnx",
    ):
        assert required in catalog
    s = ModelStore(tmp_path, catalog=catalog)
    assert s.verify("u2netp") == [
        ("u2netp", True, "sha256 ok")
    ]  # the published sha256 of the shipped file
    with pytest.raises(ModelNotAvailable, match="retouch models pull sd15-inpainting"):
        s.path("sd15-inpainting")
    for name in ("sd15-inpainting", "sd-turbo", "taesd", "controlnet-sd15-canny"):
        assert catalog[name].is_folder and catalog[name].downloadable
        assert catalog[name].folder_urls[0].startswith("https://huggingface.co/")
    assert catalog["lcm-lora-sdv1-5"].task == "lora"


def folder_entry(name: str, base: str, files: list[object]) -> CatalogEntry:
    from retouch.models.catalog import _entry

    raw = {"name": name, "task": "inpaint", "format": "diffusers", "file": None}
    return _entry({**raw, "files": files, "base_urls": [base]}, "test")


def test_folder_pull_file_by_file(tmp_path: Path, server: str) -> None:
    Weights.files.update({"/repo/model_index.json": b'{"a": 1}', "/repo/unet/weights.bin": PAYLOAD})
    files: list[object] = ["model_index.json", {"file": "unet/weights.bin", "checksum": SHA}]
    s = store(tmp_path, folder_entry("folder", f"{server}/repo", files))
    with pytest.raises(InvalidRequest, match="1 of its 2 files have no published checksum"):
        s.pull("folder")
    assert s.find("folder") is None
    folder = s.pull("folder", trust=True)
    assert folder == s.path("folder") == tmp_path / "home" / "models" / "folder"
    assert (folder / "unet" / "weights.bin").read_bytes() == PAYLOAD
    assert json.loads((folder / "model_index.json").read_text()) == {"a": 1}
    assert [r.state for r in s.records()] == ["downloaded"]
    # A second pull finds it complete and asks the server for nothing.
    asked = len(Weights.log)
    s.pull("folder", trust=True)
    assert len(Weights.log) == asked


def test_folder_pull_with_a_missing_file_is_not_present(tmp_path: Path, server: str) -> None:
    Weights.files.update({"/repo/model_index.json": b"{}"})
    s = store(tmp_path, folder_entry("folder", f"{server}/repo", ["model_index.json", "gone.bin"]))
    with pytest.raises(DownloadError, match="404"):
        s.pull("folder", trust=True)
    assert s.find("folder") is None  # half a folder is not a model
    with pytest.raises(ModelNotAvailable, match="retouch models pull folder"):
        s.path("folder")
    Weights.files["/repo/gone.bin"] = b"here now"
    assert (s.pull("folder", trust=True) / "gone.bin").read_bytes() == b"here now"
    offline = store(tmp_path / "o", folder_entry("f2", f"{server}/repo", ["a"]), offline=True)
    with pytest.raises(DownloadError, match="offline"):
        offline.pull("f2", trust=True)


@pytest.mark.parametrize("bad", ["../escape.bin", "/etc/passwd", "a/../../b"])
def test_folder_files_stay_inside_the_folder(bad: str) -> None:
    from retouch.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="relative path inside"):
        folder_entry("x", "http://127.0.0.1:1/", [bad])


def test_user_catalog_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "mine.json"
    extra.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "name": "house-lama",
                        "task": "erase",
                        "format": "onnx",
                        "file": "h.onnx",
                        "urls": ["http://127.0.0.1:9/h.onnx"],
                        "checksum": None,
                    }
                ]
            }
        )
    )
    monkeypatch.setenv("RETOUCH_CATALOG", str(extra))
    assert "house-lama" in load_catalog() and "lama" in load_catalog()


def test_models_cli(
    tmp_path: Path, server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from retouch.cli import main

    def run(*argv: str) -> int:
        try:
            return main(list(argv))
        except SystemExit as exc:
            return int(exc.code or 0)

    extra = tmp_path / "catalog.json"
    extra.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "name": "tiny",
                        "task": "erase",
                        "format": "onnx",
                        "file": "w.onnx",
                        "urls": [f"{server}/w.onnx"],
                        "checksum": SHA,
                    }
                ]
            }
        )
    )
    monkeypatch.setenv("RETOUCH_CATALOG", str(extra))
    monkeypatch.setenv("RETOUCH_HOME", str(tmp_path / "home"))
    assert run("models", "path", "tiny") == 5
    assert "retouch models pull tiny" in capsys.readouterr().err
    monkeypatch.setenv("RETOUCH_OFFLINE", "1")
    assert run("models", "pull", "tiny", "-q") == 13
    monkeypatch.delenv("RETOUCH_OFFLINE")
    assert run("models", "pull", "tiny", "-q") == 0
    assert Path(capsys.readouterr().out.strip()).read_bytes() == PAYLOAD
    assert run("models", "list", "--task", "erase", "--json") == 0
    states = {r["name"]: r["state"] for r in json.loads(capsys.readouterr().out)}
    assert states["tiny"] == "downloaded" and states["lama"] == "missing"
    assert run("models", "verify", "tiny") == 0
    assert run("models", "rm", "tiny") == 0 and run("models", "path", "tiny") == 5


def test_catalog_has_every_guide_and_the_new_families(tmp_path: Path) -> None:
    """A ControlNet per guide for SD 1.5 and for SDXL, each with a size and a licence; the
    guide models; FLUX.1 Fill [dev] (gated: how to get it, not a pull that cannot work) and
    SD-XL Inpainting 0.1 with their defaults."""
    from retouch.types import GUIDES

    catalog = load_catalog()
    for family in ("sd15", "sdxl"):
        for guide in (g for g in GUIDES if g != "none"):
            serving = [
                e
                for e in catalog.values()
                if e.task == "controlnet"
                and e.io.get("family") == family
                and guide
                in (e.io["control"] if isinstance(e.io["control"], list) else [e.io["control"]])
            ]
            assert serving, (family, guide)
            assert all(e.size and e.license and e.downloadable for e in serving)
    assert catalog["dwpose"].task == "pose" and catalog["dwpose"].extra_files
    assert catalog["segformer-b0-ade"].task == "segmentation"
    sdxl = catalog["sdxl-inpainting"]
    assert sdxl.repo == "diffusers/stable-diffusion-xl-1.0-inpainting-0.1" and sdxl.is_folder
    assert sdxl.io == {"steps": 20, "guidance": 8.0} and sdxl.size and sdxl.license
    flux = catalog["flux-fill-dev"]
    assert flux.gated and flux.io["guidance"] == 30.0 and flux.size and flux.license
    store = ModelStore(tmp_path, catalog=catalog)
    for call in (lambda: store.path("flux-fill-dev"), lambda: store.pull("flux-fill-dev")):
        with pytest.raises(ModelNotAvailable) as failed:
            call()
        message = str(failed.value)
        assert (
            "gated" in message and "retouch models add flux-fill-dev DIR --task inpaint" in message
        )
        assert "retouch models pull" not in message
    for family, lora, vae in (
        ("sd15", "lcm-lora-sdv1-5", "taesd"),
        ("sdxl", "lcm-lora-sdxl", "taesdxl"),
    ):
        assert catalog[lora].io["family"] == family and catalog[vae].io["family"] == family


def test_models_list_shows_licence_and_gated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from retouch.cli import main

    monkeypatch.setenv("RETOUCH_HOME", str(tmp_path))
    assert main(["models", "list", "--task", "inpaint"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "FLUX.1 [dev] Non-Commercial License (gated)" in lines["flux-fill-dev"]
    assert "OpenRAIL++" in lines["sdxl-inpainting"] and "gated" not in lines["sdxl-inpainting"]
