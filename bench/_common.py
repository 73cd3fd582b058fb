"""Shared helpers for the benchmark scripts: servers in their own processes
(so the load generator does not share a GIL with them) and a small
asyncio load generator. Loopback only; every run is bounded in time."""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "example_provider"))


def _run(factory_path: str, kwargs: dict, port: int, env: dict) -> None:
    import importlib
    import logging
    import os

    os.environ.update(env)
    logging.disable(logging.WARNING)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests" / "example_provider"))
    module, name = factory_path.split(":")
    app = getattr(importlib.import_module(module), name)(**kwargs)
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


@contextmanager
def server(factory_path: str, port: int, env: dict | None = None, **kwargs):
    """Run ``module:factory(**kwargs)`` under uvicorn in a child process."""
    ctx = multiprocessing.get_context("spawn")
    process = ctx.Process(target=_run, args=(factory_path, kwargs, port, env or {}), daemon=True)
    process.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or not process.is_alive():
                process.kill()
                raise RuntimeError(f"{factory_path} did not start")
            time.sleep(0.1)
    try:
        yield url
    finally:
        process.kill()
        process.join(5)


async def latencies(url: str, headers: dict, count: int) -> list[float]:
    """Sequential requests: per-request latency in seconds."""
    out = []
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        for _ in range(20):
            (await client.get(url)).raise_for_status()
        for _ in range(count):
            start = time.perf_counter()
            response = await client.get(url)
            out.append(time.perf_counter() - start)
            response.raise_for_status()
    return out


async def throughput(url: str, headers: dict, seconds: float, concurrency: int = 8) -> float:
    """Requests per second with ``concurrency`` clients for ``seconds``."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(client):
        nonlocal done
        while time.perf_counter() < stop:
            (await client.get(url)).raise_for_status()
            done += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=30, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


def p50(values: list[float]) -> float:
    return statistics.median(values)
