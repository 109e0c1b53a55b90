"""The service against a hostile client: every reproduction of the hardening issue as a test.

Each runs against a live server on 127.0.0.1 (the same uvicorn configuration as
`retouch serve`, header deadline included) with worker processes where the point is that
work is stopped, and checks the answer, that the server is still healthy and fast, and
that memory and CPU come back.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from retouch.api import Toolkit
from retouch.results import ImageResult, OutputImage
from retouch.server import ServerSettings, create_app
from retouch.server.run import Server, config
from retouch.types import OperationSpec, Progress, ProviderInfo, ProviderStatus


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


PHOTO = np.ascontiguousarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), np.uint8))
HOLE = np.zeros((96, 128), np.uint8)
HOLE[30:60, 40:80] = 255
FILES = {"image": ("a.png", png(PHOTO)), "mask": ("m.png", png(HOLE))}


class Spin:
    """Erase that burns CPU for ``seconds`` (options) and reports no progress meanwhile, as
    PatchMatch and model inference do: only killing its worker stops it."""

    info = ProviderInfo(
        name="spin",
        kind="local",
        description="test: busy for a while",
        operations={"erase": OperationSpec()},
        priority=-100,
    )

    def status(self) -> ProviderStatus:
        return ProviderStatus(True)

    def run(self, request: Any, progress: Any) -> ImageResult:
        seconds = float((request.options or {}).get("seconds", 30))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        progress(Progress("spin", 1, 1))
        return ImageResult(
            images=[OutputImage(pixels=request.image.pixels.copy())], provider="spin"
        )


def toolkit() -> Toolkit:
    return Toolkit(providers={"spin": Spin()})


@contextmanager
def serving(settings: ServerSettings, kit: Toolkit | None = None) -> Iterator[tuple[str, Any]]:
    """`retouch serve`'s uvicorn setup on a free port, in a thread; yields (url, app)."""
    app = create_app(kit or toolkit(), settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Server(config(app, host="127.0.0.1", port=port, log_level="warning"))
    app.state.server = server
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(30)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def idle_within(app: Any, seconds: float) -> float:
    """Seconds until the workers use no CPU (measured over 0.3 s windows)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        pids = app.state.service.executor.pids
        before = cpu_seconds(pids)
        time.sleep(0.3)
        if cpu_seconds(pids) - before < 0.03:
            return time.monotonic() - started
    raise AssertionError(f"the workers were still busy {seconds} s after the cancel")


def healthy_fast(url: str) -> float:
    started = time.monotonic()
    r = httpx.get(f"{url}/health", timeout=5)
    assert r.status_code == 200
    return time.monotonic() - started


# --- work that outlives its request ----------------------------------------------------------


@pytest.mark.slow
def test_timeout_client_gone_and_delete_stop_the_work(tmp_path: Path) -> None:
    settings = ServerSettings(workers=1, request_timeout_s=1.5, job_dir=str(tmp_path / "jobs"))
    with serving(settings) as (url, app):
        started = time.monotonic()
        r = httpx.post(
            f"{url}/v1/erase",
            files=FILES,
            data={"provider": "spin", "options": '{"seconds": 60}'},
            timeout=30,
        )
        assert r.status_code == 504 and "stopped" in r.json()["error"]["message"]
        assert time.monotonic() - started < 1.5 + 1.0 + 1.5  # timeout + stop grace + slack
        assert idle_within(app, 2.0) < 2.0

        # A client that goes away: its work stops too.
        def walk_away() -> None:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    f"{url}/v1/erase",
                    files=FILES,
                    data={"provider": "spin", "options": '{"seconds": 60}'},
                    timeout=0.7,
                )

        walk_away()
        assert idle_within(app, 3.0) < 3.0

        # DELETE of a running job stops it.
        job = httpx.post(
            f"{url}/v1/jobs",
            files=FILES,
            data={"operation": "erase", "provider": "spin", "options": '{"seconds": 60}'},
        ).json()
        for _ in range(100):
            if httpx.get(f"{url}/v1/jobs/{job['id']}").json()["status"] == "running":
                break
            time.sleep(0.05)
        time.sleep(0.3)
        assert httpx.delete(f"{url}/v1/jobs/{job['id']}").status_code == 200
        assert idle_within(app, 2.5) < 2.5
        assert httpx.get(f"{url}/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        # A fresh worker took the killed one's place: work still gets done.
        done = httpx.post(
            f"{url}/v1/erase", files=FILES, data={"provider": "spin", "options": '{"seconds": 0.1}'}
        )
        assert done.status_code == 200 and healthy_fast(url) < 0.1 + 0.2


@pytest.mark.slow
def test_shutdown_gives_jobs_their_grace_then_stops_them_with_a_final_event(
    tmp_path: Path,
) -> None:
    import signal

    settings = ServerSettings(workers=1, shutdown_grace_s=0.5, job_dir=str(tmp_path / "jobs"))
    events: list[str] = []
    with serving(settings) as (url, app):
        job = httpx.post(
            f"{url}/v1/jobs",
            files=FILES,
            data={"operation": "erase", "provider": "spin", "options": '{"seconds": 60}'},
        ).json()

        def listen() -> None:
            with httpx.stream("GET", f"{url}/v1/jobs/{job['id']}/events", timeout=30) as r:
                events.extend(line for line in r.iter_lines() if line.startswith("event:"))

        listener = threading.Thread(target=listen)
        listener.start()
        time.sleep(1.0)
        stopped = time.monotonic()
        app.state.server.handle_exit(signal.SIGTERM, None)  # what SIGTERM does
        listener.join(15)
        took = time.monotonic() - stopped
    assert events and events[-1] == "event: cancelled", events
    assert took < 0.5 + 1.0 + 3  # the grace, the stop grace, slack: not the 60 s of work


# --- one request that tries to take the machine --------------------------------------------------


@pytest.mark.parametrize(
    ("route", "data", "status", "param"),
    [
        ("upscale", {"threads": "1000000"}, 400, "threads"),
        ("upscale", {"threads": "4096"}, 400, "threads"),
        ("erase", {"feather": "20000"}, 400, "feather"),
        ("erase", {"grow_mask": "5000"}, 400, "grow_mask"),
        ("erase", {"grow_mask": "100000"}, 400, "grow_mask"),
        ("outpaint", {"width": "1000000"}, 413, None),
        ("resize", {"width": "9000", "height": "9000"}, 413, None),
        ("remove-background", {"model": "/etc/passwd"}, 400, "model"),
        ("remove-background", {"model": "/no/such/file.onnx"}, 400, "model"),
        ("erase", {"seed": "Infinity"}, 400, "seed"),
    ],
)
def test_one_request_cannot_take_the_machine(
    route: str, data: dict[str, str], status: int, param: str | None
) -> None:
    from fastapi.testclient import TestClient

    files = dict(FILES) if route == "erase" else {"image": FILES["image"]}
    with TestClient(create_app(Toolkit(), ServerSettings())) as client:
        started = time.monotonic()
        r = client.post(f"/v1/{route}", files=files, data=data)
        assert r.status_code == status, r.text
        assert time.monotonic() - started < 2
        error = r.json()["error"]
        if param:
            assert error["param"] == param
        if route == "remove-background":  # the same words whether or not the file exists
            assert "files cannot be named here" in error["message"]
        assert client.get("/health").status_code == 200


def test_the_memory_a_request_needs_is_checked_before_any_work() -> None:
    from fastapi.testclient import TestClient

    settings = ServerSettings(max_memory=50 * 2**20)  # 50 MB per request
    with TestClient(create_app(Toolkit(), settings)) as client:
        started = time.monotonic()
        r = client.post("/v1/resize", files={"image": FILES["image"]}, data={"width": "1600"})
        assert r.status_code == 413 and "GB" in r.json()["error"]["message"], r.text
        assert time.monotonic() - started < 1
        small = client.post("/v1/resize", files={"image": FILES["image"]}, data={"width": "64"})
        assert small.status_code == 200


def test_json_bodies_that_used_to_500() -> None:
    from fastapi.testclient import TestClient

    image = base64.b64encode(png(PHOTO)).decode()
    with TestClient(create_app(Toolkit(), ServerSettings()), raise_server_exceptions=False) as c:
        for body in (
            b'{"image": "' + image.encode() + b'", "mask": "subject", "seed": Infinity}',
            b"[" * 100_000,
            b'{"image": "' + image.encode() + b'", "mask": "subject", "grow_mask": 100000}',
        ):
            r = c.post("/v1/erase", content=body, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, r.text


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.mark.parametrize("case", ["zTXt", "iCCP", "first 20 bytes"])
def test_hostile_pngs_are_400s(case: str) -> None:
    from fastapi.testclient import TestClient

    raw = png(PHOTO)
    bomb = zlib.compress(b"a" * (20 * 2**20))
    data = {
        "zTXt": raw[:33] + _chunk(b"zTXt", b"Comment\x00\x00" + bomb) + raw[33:],
        "iCCP": raw[:33] + _chunk(b"iCCP", b"icc\x00\x00" + bomb) + raw[33:],
        "first 20 bytes": raw[:20],
    }[case]
    with TestClient(create_app(Toolkit(), ServerSettings()), raise_server_exceptions=False) as c:
        r = c.post("/v1/erase", files={"image": ("a.png", data), "mask": FILES["mask"]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "image", r.text
        assert "corrupt" in r.json()["error"]["message"]


# --- bodies: limited as they stream, admitted before they are read ---------------------------------


def test_a_chunked_body_is_cut_off_at_the_limit() -> None:
    limit = 2 * 2**20
    settings = ServerSettings(max_upload_bytes=limit)
    with serving(settings) as (url, _):
        sent = 0

        def body() -> Iterator[bytes]:
            nonlocal sent
            yield b'{"image": "'
            for _ in range(400):  # would be 400 MB
                sent += 2**20
                yield b"A" * 2**20
            yield b'"}'

        server_pid_rss = rss(os.getpid())
        try:
            r = httpx.post(
                f"{url}/v1/erase",
                content=body(),
                headers={"content-type": "application/json"},
                timeout=30,
            )
            assert r.status_code == 413
        except (httpx.RemoteProtocolError, httpx.WriteError):
            pass  # the server answered 413 and closed while we were still sending
        assert sent > limit  # the client did send far more than the limit...
        assert rss(os.getpid()) - server_pid_rss < 100 * 2**20  # ...and none of it was kept
        assert healthy_fast(url) < 0.5


def test_base64_images_count_as_what_they_decode_to() -> None:
    from fastapi.testclient import TestClient

    settings = ServerSettings(max_upload_bytes=20_000)
    big = base64.b64encode(os.urandom(40_000)).decode()
    with TestClient(create_app(Toolkit(), settings)) as client:
        r = client.post("/v1/erase", json={"image": big, "mask": "subject"})
        assert r.status_code == 413 and r.json()["error"]["param"] == "image"


@contextmanager
def serve_process(tmp_path: Path, **env: str) -> Iterator[tuple[str, int]]:
    """`retouch serve` in its own process (so its memory is its own); yields (url, pid)."""
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    environ = {**os.environ, "RETOUCH_JOB_DIR": str(tmp_path / "jobs"), **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "retouch", "serve", "--port", str(port)],
        env=environ,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.slow
def test_a_flood_of_big_uploads_is_refused_before_reading(tmp_path: Path) -> None:
    """64 clients send 34 MB each at a server with room for 1 + 2 in line: most are refused
    with 429 before their bodies are read, and the server's memory stays far below
    64 x 34 MB (measured on the server's own process)."""
    payload = json.dumps(
        {"image": base64.b64encode(os.urandom(34 * 2**20 * 3 // 4)).decode(), "mask": "subject"}
    ).encode()
    with serve_process(
        tmp_path,
        RETOUCH_WORKERS="1",
        RETOUCH_QUEUE_SIZE="2",
        RETOUCH_CONCURRENCY="1",
        RETOUCH_MAX_UPLOAD_BYTES=str(40 * 2**20),
    ) as (url, pid):
        before = rss(pid)
        peak = before
        done = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss(pid))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()

        def send(_: int) -> int:
            try:
                return httpx.post(
                    f"{url}/v1/erase",
                    content=payload,
                    headers={"content-type": "application/json"},
                    timeout=60,
                ).status_code
            except httpx.HTTPError:
                return 0  # refused while still sending: the connection closed under us

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(send, range(64)))
        done.set()
        watcher.join()
        assert codes.count(429) + codes.count(0) >= 40, codes
        assert all(c in (429, 400, 413, 0) for c in codes), codes
        assert peak - before < 8 * 34 * 2**20, (peak - before) / 2**20
        assert healthy_fast(url) < 0.5


# --- jobs: on disk, bounded, scoped, surviving a restart -------------------------------------------


@pytest.mark.slow
def test_jobs_are_bounded_on_disk_scoped_to_keys_and_survive_a_restart(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    folder = tmp_path / "jobs"
    keys = frozenset({"alice", "bob"})
    settings = ServerSettings(api_keys=keys, job_dir=str(folder), job_store_bytes=300_000)
    alice, bob = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}
    image = base64.b64encode(png(PHOTO)).decode()
    ids = []
    with TestClient(create_app(Toolkit(), settings)) as client:
        for _ in range(6):  # each result is a ~37 KB PNG at 128 x 96 x 4 upscaled... bounded
            job = client.post(
                "/v1/jobs", json={"operation": "upscale", "image": image, "scale": 2}, headers=alice
            ).json()
            ids.append(job["id"])
            for _ in range(200):
                state = client.get(f"/v1/jobs/{job['id']}", headers=alice).json()
                if state["status"] not in ("queued", "running"):
                    break
                time.sleep(0.05)
            assert state["status"] == "succeeded", state
        used = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        assert used <= 300_000
        assert client.get(f"/v1/jobs/{ids[0]}", headers=alice).status_code == 410  # evicted
        latest = ids[-1]
        assert client.get(f"/v1/jobs/{latest}", headers=bob).status_code == 404
        assert client.delete(f"/v1/jobs/{latest}", headers=bob).status_code == 404
        assert client.get(f"/v1/jobs/{latest}/images/0", headers=bob).status_code == 404
        picture = client.get(f"/v1/jobs/{latest}/images/0", headers=alice)
        assert Image.open(io.BytesIO(picture.content)).size == (256, 192)
    # An interrupted job as a crashed server would leave it.
    interrupted = folder / "job_interrupted"
    interrupted.mkdir()
    (interrupted / "job.json").write_text(
        json.dumps(
            {
                "id": "job_interrupted",
                "operation": "erase",
                "owner": "",
                "status": "running",
                "created": time.time(),
                "finished": None,
                "result": None,
                "images": 0,
                "error": None,
            }
        )
    )
    with TestClient(create_app(Toolkit(), settings)) as client:
        again = client.get(f"/v1/jobs/{latest}", headers=alice).json()
        assert again["status"] == "succeeded"
        assert client.get(f"/v1/jobs/{latest}/images/0", headers=alice).status_code == 200
    settings_open = ServerSettings(job_dir=str(folder))
    with TestClient(create_app(Toolkit(), settings_open)) as client:
        lost = client.get("/v1/jobs/job_interrupted").json()
        assert lost["status"] == "failed" and "restarted" in lost["error"]["message"]


# --- the HTTP details -------------------------------------------------------------------------------


def test_401_says_how_405_says_what_and_cors_is_opt_in() -> None:
    from fastapi.testclient import TestClient

    settings = ServerSettings(api_keys=frozenset({"k"}), cors_origins=("https://app.example",))
    with TestClient(create_app(Toolkit(), settings)) as client:
        r = client.post("/v1/erase", files=FILES)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        wrong = client.get("/v1/erase", headers={"X-API-Key": "k"})
        assert wrong.status_code == 405 and "POST" in wrong.headers["allow"]
        preflight = client.options(
            "/v1/erase",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    with TestClient(create_app(Toolkit(), ServerSettings())) as client:
        closed = client.options(
            "/v1/erase",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in closed.headers


def test_url_results_are_signed_links_that_need_no_key_and_expire() -> None:
    import openai

    settings = ServerSettings(api_keys=frozenset({"sk"}))
    with serving(settings, Toolkit()) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk", max_retries=0)
        rgba = np.dstack([PHOTO, np.where(HOLE > 0, 0, 255).astype(np.uint8)])
        answer = client.images.edit(
            image=("p.png", png(PHOTO)),
            mask=("m.png", png(rgba)),
            prompt="x",
            model="classic",
            response_format="url",
        )
        link = answer.data[0].url
        assert link is not None and "signature=" in link
        assert httpx.get(link).status_code == 200  # no key needed
        assert httpx.get(link.replace("signature=", "signature=0")).status_code == 401
        assert httpx.get(link.split("?")[0]).status_code == 401


@pytest.mark.slow
def test_slow_headers_are_cut_off(tmp_path: Path) -> None:
    settings = ServerSettings(header_timeout_s=1.0)
    with serving(settings, Toolkit()) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            sock.settimeout(5)
            for _ in range(20):  # one header byte every 0.2 s
                try:
                    sock.sendall(b"X")
                except OSError:
                    break
                time.sleep(0.2)
            try:
                closed = sock.recv(100) == b""
            except OSError:
                closed = True
        assert closed and time.monotonic() - started < 4.5
        assert healthy_fast(url) < 0.5


# --- random bytes and random JSON at every route -------------------------------------------------------


def test_random_bytes_and_json_at_every_route_never_5xx() -> None:
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    app = create_app(Toolkit(), ServerSettings())
    routes = [r.path for r in app.routes if "POST" in getattr(r, "methods", set())]
    json_values = st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=12,
    )
    with TestClient(app, raise_server_exceptions=False) as client:

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            route=st.sampled_from(routes),
            raw=st.binary(max_size=300),
            document=json_values,
            as_json=st.booleans(),
        )
        def hit(route: str, raw: bytes, document: Any, as_json: bool) -> None:
            path = route.replace("{job_id}", "job_x").replace("{index}", "0")
            if as_json:
                r = client.post(
                    path,
                    content=json.dumps(document).encode(),
                    headers={"content-type": "application/json"},
                )
            else:
                r = client.post(path, files={"image": ("a.png", raw)}, data={"mask": "subject"})
            assert r.status_code < 500 or r.status_code == 503, (path, r.status_code, r.text[:300])

        hit()
        assert client.get("/health").status_code == 200


def test_the_container_setup_names_only_settings_that_exist() -> None:
    """No Docker engine here to build it: check what can be checked (every variable the
    compose file sets is one the service reads; the image serves on the documented port)."""
    import re

    from retouch.server.settings import ENV

    root = Path(__file__).resolve().parents[1]
    compose = (root / "compose.yaml").read_text()
    environment = compose.split("environment:", 1)[1].split("volumes:", 1)[0]
    known = {name for name, _, _ in ENV} | {"RETOUCH_HOME"}  # the model store's folder
    set_there = set(re.findall(r"^\s+([A-Z_]+):", environment, re.M))
    assert set_there and set_there <= known, set_there - known
    dockerfile = (root / "Dockerfile").read_text()
    assert '"retouch", "serve"' in dockerfile and "8000" in dockerfile
    assert set(re.findall(r"(RETOUCH_\w+)=", dockerfile)) <= known
