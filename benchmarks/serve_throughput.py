"""Requests per second and latency of POST /predict, through a real uvicorn server.

The server (`tinycats serve`'s app) runs in this process on 127.0.0.1; clients send
photos over HTTP, one at a time and then from several threads at once, and every
request's wall time is kept. Printed: requests/s, p50 and p95 for each concurrency.

    python benchmarks/serve_throughput.py --run RUN [--out DIR] [--photos DIR] [--threads N]
    python benchmarks/serve_throughput.py           # a fresh ResNet-18 at 128 px
    python benchmarks/serve_throughput.py --smoke   # 32 px, a few requests (seconds)

Photos default to tinycats' synthetic images saved as JPEG (decoding cost included).
"""

from __future__ import annotations

import argparse
import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image

from tinycats.config import build_config
from tinycats.data.synthetic import render_synthetic
from tinycats.deploy.server import create_app
from tinycats.train.inference import untrained_model


def jpeg_photos(count: int, size: int) -> list[bytes]:
    photos = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(render_synthetic(i % 4, i, size, seed=0)).save(buffer, format="JPEG")
        photos.append(buffer.getvalue())
    return photos


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(url: str, photos: list[bytes], requests: int, concurrency: int) -> dict[str, float]:
    """Send `requests` photos with `concurrency` clients; requests/s and latency percentiles."""

    def one(i: int, client: httpx.Client) -> float:
        started = time.perf_counter()
        response = client.post(f"{url}/predict", content=photos[i % len(photos)])
        response.raise_for_status()
        return time.perf_counter() - started

    local = threading.local()

    def worker(i: int) -> float:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=120)
        return one(i, local.client)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        seconds = list(pool.map(worker, range(requests)))
    wall = time.perf_counter() - started
    p50, p95 = np.percentile(np.asarray(seconds) * 1e3, [50, 95])
    return {"requests_per_s": requests / wall, "p50_ms": float(p50), "p95_ms": float(p95)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained classifier run id or exported folder")
    parser.add_argument("--out", default="tinycats-out", help="store root of the run")
    parser.add_argument("--photos", help="a folder of photos to send (default: synthetic)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="32 px, a few requests")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run:
        from tinycats.storage import LocalStore
        from tinycats.train.inference import load_trained_model

        trained = load_trained_model(LocalStore(Path(args.out)), args.run)
    else:
        config = build_config(
            "classifier", overrides=[f"data.image_size={32 if args.smoke else 128}"]
        )
        trained = untrained_model(config, [f"breed_{i}" for i in range(12)])
    if args.photos:
        photos = [p.read_bytes() for p in sorted(Path(args.photos).iterdir()) if p.is_file()][:64]
    else:
        photos = jpeg_photos(16, 64 if args.smoke else 500)
    requests = 8 if args.smoke else args.requests

    port = free_port()
    config = uvicorn.Config(
        create_app(trained, None), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    run(url, photos, 2, 1)  # warm-up: first-call allocations
    print(
        f"POST /predict, {trained.config.eval_image_size} px model, torch threads "
        f"{torch.get_num_threads()}, {len(photos)} photos of ~{np.mean([len(p) for p in photos]) / 1e3:.0f} kB"
    )
    print(f"{'clients':>8} {'requests':>9} {'req/s':>8} {'p50 ms':>9} {'p95 ms':>9}")
    for concurrency in (1, 4):
        result = run(url, photos, requests, concurrency)
        print(
            f"{concurrency:>8} {requests:>9} {result['requests_per_s']:>8.1f} "
            f"{result['p50_ms']:>9.1f} {result['p95_ms']:>9.1f}"
        )
    server.should_exit = True
    thread.join(timeout=10)


if __name__ == "__main__":
    main()
