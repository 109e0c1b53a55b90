"""Load test of `retouch serve` on 127.0.0.1: a mix of cheap and heavy operations at 1, 4,
16 and 64 concurrent clients, /health latency while loaded, an overload that must get 429s
and no crash, and a phase where half the clients walk away or cancel (the work must stop:
CPU back to idle, no leaked workers).

    .venv/bin/python bench/serve_load.py [--seconds 6]

The server runs in its own process with its worker processes (RETOUCH_WORKERS=2); memory is
the peak of the server and its workers together, sampled. Cheap = resize a 512 px photo to
128 px; heavy = erase a 64 px hole in it (PatchMatch). Every loop is bounded in time;
nothing but 127.0.0.1 is contacted.
"""

from __future__ import annotations

import io
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from skimage import data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(**env: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    folder = tempfile.mkdtemp(prefix="retouch-bench-")
    environ = dict(os.environ, RETOUCH_WORKERS="2", RETOUCH_JOB_DIR=folder, **env)
    process = subprocess.Popen(
        [sys.executable, "-m", "retouch", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=environ,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=open(os.environ.get("SERVE_LOG", os.devnull), "ab"),  # noqa: SIM115 - lives with the process
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    try:
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


def children(pid: int, *, workers_only: bool = False) -> list[int]:
    """The server's child processes (``workers_only``: not multiprocessing's tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and (not workers_only or b"spawn_main" in command):
            found.append(int(stat.parent.name))
    return found


def tree(pid: int) -> list[int]:
    return [pid, *children(pid)]


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


def photo_bytes() -> tuple[bytes, bytes]:
    photo, mask = io.BytesIO(), io.BytesIO()
    Image.fromarray(data.astronaut()).save(photo, "PNG")
    hole = np.zeros((512, 512), np.uint8)
    hole[200:264, 200:264] = 255
    Image.fromarray(hole).save(mask, "PNG")
    return photo.getvalue(), mask.getvalue()


class Watch:
    """Samples /health latency and the server tree's memory while a phase runs."""

    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid
        self.health: list[float] = []
        self.peak = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    http.get(f"{self.url}/health")
                    self.health.append(time.perf_counter() - started)
                except httpx.HTTPError:
                    self.health.append(float("inf"))
                self.peak = max(self.peak, rss_mb(tree(self.pid)))
                time.sleep(0.05)

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def hammer(url: str, clients: int, seconds: float, files: tuple[bytes, bytes]) -> dict[str, object]:
    latencies: dict[str, list[float]] = defaultdict(list)
    codes: Counter[int] = Counter()
    lock = threading.Lock()
    stop = time.time() + seconds

    def client(index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(timeout=300) as http:
            while time.time() < stop:
                heavy = rng.random() < 0.5
                started = time.perf_counter()
                try:
                    if heavy:
                        response = http.post(
                            f"{url}/v1/erase",
                            files={"image": ("a.png", files[0]), "mask": ("m.png", files[1])},
                        )
                    else:
                        response = http.post(
                            f"{url}/v1/resize",
                            files={"image": ("a.png", files[0])},
                            data={"max_size": "128"},
                        )
                    code = response.status_code
                except httpx.HTTPError:
                    code = 0  # connection refused / dropped: a crash would show here
                with lock:
                    codes[code] += 1
                    if code == 200:
                        latencies["erase" if heavy else "resize"].append(
                            time.perf_counter() - started
                        )
                if code == 429:
                    time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "codes": codes}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def walk_away_phase(url: str, pid: int, files: tuple[bytes, bytes], clients: int) -> str:
    """Half the clients give up on slow work (timeout), half start jobs and cancel them."""
    heavy = {"image": ("a.png", files[0]), "mask": ("m.png", files[1])}
    big_hole = np.zeros((512, 512), np.uint8)
    big_hole[64:448, 64:448] = 255  # a long PatchMatch: nothing reports progress meanwhile
    mask = io.BytesIO()
    Image.fromarray(big_hole).save(mask, "PNG")
    heavy["mask"] = ("m.png", mask.getvalue())

    def walk_away(_: int) -> None:
        with suppress(httpx.HTTPError):
            httpx.post(f"{url}/v1/erase", files=heavy, data={"crop_margin": "none"}, timeout=0.5)

    def cancel(_: int) -> None:
        job = httpx.post(f"{url}/v1/jobs", files=heavy, data={"operation": "erase"}).json()
        if "id" in job:
            time.sleep(0.5)
            httpx.delete(f"{url}/v1/jobs/{job['id']}")

    threads = [
        threading.Thread(target=walk_away if i % 2 else cancel, args=(i,)) for i in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ended = time.monotonic()
    while time.monotonic() - ended < 15:
        workers = children(pid)
        before = cpu_s(workers)
        time.sleep(0.3)
        if cpu_s(workers) - before < 0.05:
            break
    idle_after = time.monotonic() - ended
    return (
        f"{clients} clients walked away or cancelled: CPU idle {idle_after:.1f} s after the "
        f"last one; workers now {len(children(pid, workers_only=True))} (RETOUCH_WORKERS=2)"
    )


def main() -> None:
    seconds = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 6.0
    files = photo_bytes()
    print(f"mix of resize (cheap) and erase (heavy) on a 512 px photo, {seconds:g} s per phase")
    print(
        f"{'clients':>7} {'req/s':>7} {'resize p50/p99 s':>18} {'erase p50/p99 s':>18} "
        f"{'health p99/max ms':>18} {'peak MB':>8}  statuses"
    )
    with server(RETOUCH_CONCURRENCY="2", RETOUCH_QUEUE_SIZE="64") as (url, pid):
        for clients in (1, 4, 16, 64):
            with Watch(url, pid) as watch:
                out = hammer(url, clients, seconds, files)
            lat: dict[str, list[float]] = out["latencies"]  # type: ignore[assignment]
            done = sum(len(v) for v in lat.values())
            resize, erase = lat.get("resize", []), lat.get("erase", [])
            print(
                f"{clients:>7} {done / seconds:>7.2f} "
                f"{pct(resize, 0.5):>8.3f}/{pct(resize, 0.99):<9.3f} "
                f"{pct(erase, 0.5):>8.3f}/{pct(erase, 0.99):<9.3f} "
                f"{1000 * pct(watch.health, 0.99):>8.1f}/{1000 * max(watch.health):<9.1f} "
                f"{watch.peak:>8.0f}  {dict(out['codes'])}"  # type: ignore[call-overload]
            )
        print(walk_away_phase(url, pid, files, 8))
    with server(RETOUCH_CONCURRENCY="1", RETOUCH_QUEUE_SIZE="2") as (url, pid):
        with Watch(url, pid) as watch:
            out = hammer(url, 32, seconds, files)
        codes: Counter[int] = out["codes"]  # type: ignore[assignment]
        alive = httpx.get(f"{url}/health").status_code == 200
        crashed = sum(v for k, v in codes.items() if k == 0 or (k >= 500 and k != 503))
        print(
            f"overload (32 clients, queue 2 per operation): {dict(codes)}; 5xx or dropped: "
            f"{crashed}; health p99 {1000 * pct(watch.health, 0.99):.1f} ms; healthy after: "
            f"{alive}; peak {watch.peak:.0f} MB"
        )


if __name__ == "__main__":
    main()
