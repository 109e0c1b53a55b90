"""Load test of `retouch serve` on 127.0.0.1: erase on 512 px images at 1, 4 and 16
concurrent clients, then an overload that must get 429/503 answers, not a crash.

    .venv/bin/python bench/serve_load.py [--seconds 8]

The server runs in its own process (so its peak memory, VmHWM, is its own) with
RETOUCH_CONCURRENCY=2 (two cores) and a queue of 32 for the measured phases, and a queue of 2
for the overload phase. Every loop is bounded in time; nothing but 127.0.0.1 is contacted.
"""

from __future__ import annotations

import io
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
from PIL import Image
from skimage import data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(queue: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = dict(os.environ, RETOUCH_CONCURRENCY="2", RETOUCH_QUEUE_SIZE=str(queue))
    process = subprocess.Popen(
        [sys.executable, "-m", "retouch", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.environ.get("SERVE_LOG", os.devnull), "ab"),  # noqa: SIM115 - lives with the process
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
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
        process.wait(20)


def peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def payload() -> tuple[bytes, bytes]:
    photo, mask = io.BytesIO(), io.BytesIO()
    Image.fromarray(data.astronaut()).save(photo, "PNG")
    hole = np.zeros((512, 512), np.uint8)
    hole[200:264, 200:264] = 255
    Image.fromarray(hole).save(mask, "PNG")
    return photo.getvalue(), mask.getvalue()


def hammer(
    url: str, clients: int, seconds: float, files: tuple[bytes, bytes]
) -> tuple[list[float], Counter[int]]:
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    lock = threading.Lock()
    stop = time.time() + seconds

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while time.time() < stop:
                started = time.perf_counter()
                try:
                    code = http.post(
                        f"{url}/v1/erase",
                        files={"image": ("a.png", files[0]), "mask": ("m.png", files[1])},
                    ).status_code
                except httpx.HTTPError:
                    code = 0  # connection refused / dropped: a crash would show here
                with lock:
                    codes[code] += 1
                    if code == 200:
                        latencies.append(time.perf_counter() - started)
                if code == 429:
                    time.sleep(0.2)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, codes


def main() -> None:
    seconds = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 8.0
    files = payload()
    print(f"erase, 512 px, 64 px mask, {seconds:g} s per phase, server concurrency 2")
    print(f"{'clients':>7} {'req/s':>7} {'p50 s':>7} {'p99 s':>7}  statuses")
    with server(queue=32) as (url, pid):
        for clients in (1, 4, 16):
            latencies, codes = hammer(url, clients, seconds, files)
            ok = sorted(latencies)
            p50 = statistics.median(ok) if ok else float("nan")
            p99 = ok[min(len(ok) - 1, int(len(ok) * 0.99))] if ok else float("nan")
            print(f"{clients:>7} {len(ok) / seconds:>7.2f} {p50:>7.3f} {p99:>7.3f}  {dict(codes)}")
        print(f"server peak memory: {peak_mb(pid):.0f} MB")
    with server(queue=2) as (url, pid):
        _, codes = hammer(url, 32, seconds, files)
        alive = httpx.get(f"{url}/health").status_code == 200
        refused = codes.get(429, 0) + codes.get(503, 0)
        crashed = sum(v for k, v in codes.items() if k == 0 or (k >= 500 and k != 503))
        print(
            f"overload (32 clients, queue 2): {dict(codes)}; refused with 429/503: {refused}; "
            f"5xx or dropped: {crashed}; healthy after: {alive}; peak {peak_mb(pid):.0f} MB"
        )


if __name__ == "__main__":
    main()
