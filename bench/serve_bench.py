r"""Service load bench (bounded, loopback only): p50/p95/p99 and requests/s of POST /v1/recommend at
concurrency 1, 4, 16 for warm (cache hit) and cold (unique histories → LLM) requests, plus two ratios from
the same run: cold p50 over a bare LLM forward of the same prompts (target <= 1.2) and cold throughput at
c=16 over c=1 (target >= 2.5, micro-batching). Optionally kills a Redis it started mid-run and counts
failed requests. Prints a table, writes JSON.

Tiny test bundle (seconds):  .venv/bin/python bench/serve_bench.py --tiny --redis own --kill-redis
A real bundle:               .venv/bin/python bench/serve_bench.py --bundle work/bundle-ml-100k --redis own \
                                 --kill-redis
A running service:           .venv/bin/python bench/serve_bench.py --url http://127.0.0.1:8000 --bundle DIR
A-LLMRec re-ranking:         .venv/bin/python bench/serve_bench.py --bundle DIR --model allmrec (the bare
                                 forward is then the backend's scoring of SASRec's top 20 for each history)
Service settings come from LLMREC_* variables (e.g. LLMREC_BATCH_WINDOW_MS, LLMREC_MAX_BATCH_SIZE).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
from portable import portable_args, portable_path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SERVER = (
    "import sys, uvicorn; from app.main import create_app; from app.settings import Settings; "
    "uvicorn.run(create_app(Settings()), host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')"
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="Bundle to serve (and to time the bare LLM forward with).")
    p.add_argument("--tiny", action="store_true", help="Build and use the tiny test bundle (random weights).")
    p.add_argument("--url", help="Bench a running service (loopback only) instead of starting one.")
    p.add_argument(
        "--redis", default="none", help="none (in-process cache) | own (start a redis-server) | URL"
    )
    p.add_argument("--kill-redis", action="store_true", help="Kill the own Redis during an extra load phase.")
    p.add_argument("--concurrency", default="1,4,16", help="Comma-separated client concurrencies.")
    p.add_argument("--warm-requests", type=int, default=200, help="Warm requests per concurrency.")
    p.add_argument("--cold-requests", type=int, default=48, help="Cold requests per concurrency.")
    p.add_argument("--timeout", type=float, default=120.0, help="Per-request timeout (s).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--model",
        choices=["llmsrec", "allmrec", "sasrec"],
        help="The request's model (default: the bundle's).",
    )
    p.add_argument("--json", type=Path, default=REPO / "work" / "bench" / "serve_bench.json")
    return p.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def redis_up(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.2).ping())
    except redis.RedisError:
        return False


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def histories(
    n_items: int, history_len: int, count: int, rng: np.random.Generator, seen: set
) -> list[list[int]]:
    """`count` histories whose prompt windows (last history_len items) are new to this run."""
    out: list[list[int]] = []
    while len(out) < count:
        h = rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(3, 2 * history_len)), replace=False)
        window = tuple(int(i) for i in h[-history_len:])
        if window not in seen:
            seen.add(window)
            out.append([int(i) for i in h])
    return out


async def load(url: str, bodies: list[dict], concurrency: int, timeout: float, on_done: Any = None) -> dict:
    """Send every body once with `concurrency` workers; latency percentiles, rate, errors, cache hits."""
    latencies: list[float] = []
    errors, hits, degraded = 0, 0, 0
    queue = list(reversed(bodies))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors, hits, degraded
            while queue:
                body = queue.pop()
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/recommend", json=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                if not ok:
                    errors += 1
                else:
                    result = response.json()
                    hits += result["cache_hit"]
                    degraded += result["degraded"]
                if on_done is not None:
                    on_done(len(latencies))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000.0
    return {
        "requests": len(bodies), "concurrency": concurrency, "errors": errors, "cache_hits": hits,
        "degraded": degraded, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)), "req_per_s": len(bodies) / wall,
    }  # fmt: skip


def sasrec_candidates(bundle: Any, history: list[int], n: int) -> list[int]:
    """SASRec's top n unseen items for the history (what model=allmrec hands the LLM), by brute force."""
    import torch

    model = bundle.sasrec
    with torch.inference_mode():
        user = model.user_vector(torch.tensor([history[-model.config.max_len :]]))[0]
        scores = model.item_embeddings() @ user
        scores[0], scores[history] = -torch.inf, -torch.inf
        return torch.topk(scores, n).indices.tolist()


def bare_forward_ms(bundle_dir: Path, cold: list[list[int]], model: str | None) -> float:
    """p50 of the backend alone (no HTTP, cache, batching or ranking) on the same histories, one by one:
    the LLM-SRec user vector, or for model=allmrec the scoring of SASRec's candidates."""
    from app.backends.base import create_backend
    from app.bundle import load_bundle, verify
    from app.settings import Settings

    settings = Settings(bundle=bundle_dir)
    device = settings.resolved_device()
    bundle = load_bundle(bundle_dir, verify(bundle_dir), device)
    backend = create_backend(
        settings.llm_backend, bundle, device=device, dtype=settings.llm_dtype, llm_path=settings.llm_path
    )
    if model == "allmrec":
        jobs = [(h, sasrec_candidates(bundle, h, settings.allmrec_candidates)) for h in cold]

        def forward(job: Any) -> None:
            backend.rank_candidates([job[0]], [job[1]])
    else:
        jobs = [(h, []) for h in cold]

        def forward(job: Any) -> None:
            backend.encode_users([job[0]], [None])

    for job in jobs[:3]:  # warm-up
        forward(job)
    times = []
    for job in jobs:
        start = time.perf_counter()
        forward(job)
        times.append(time.perf_counter() - start)
    backend.close()
    return float(np.median(times) * 1000.0)


def request(args: argparse.Namespace, history: list[int]) -> dict[str, Any]:
    return {"history": history} | ({"model": args.model} if args.model else {})


def run(args: argparse.Namespace, url: str, bundle_dir: Path, redis_proc: Any) -> dict[str, Any]:
    from models.bundle import read_manifest

    manifest = read_manifest(bundle_dir)
    n_items, history_len = manifest.dataset.n_items, int((manifest.llm or {}).get("history_len", 10))
    rng, seen = np.random.default_rng(args.seed), set()
    levels = [int(c) for c in args.concurrency.split(",")]
    warm_set = histories(n_items, history_len, 32, rng, seen)
    asyncio.run(load(url, [request(args, h) for h in warm_set] * 2, 4, args.timeout))  # fill the cache
    rows: list[dict[str, Any]] = []
    cold_by_level: dict[int, list[list[int]]] = {}
    for c in levels:
        warm = [request(args, warm_set[i % len(warm_set)]) for i in range(args.warm_requests)]
        rows.append({"kind": "warm"} | asyncio.run(load(url, warm, c, args.timeout)))
        cold_by_level[c] = histories(n_items, history_len, args.cold_requests, rng, seen)
        cold = [request(args, h) for h in cold_by_level[c]]
        rows.append({"kind": "cold"} | asyncio.run(load(url, cold, c, args.timeout)))
    result: dict[str, Any] = {"rows": rows}
    cold_rows = {r["concurrency"]: r for r in rows if r["kind"] == "cold"}
    llm_model = "allmrec" if args.model == "allmrec" else "llmsrec"
    if 1 in cold_rows and args.model != "sasrec" and llm_model in manifest.models:
        bare = bare_forward_ms(bundle_dir, cold_by_level[1], args.model)
        result["bare_llm_forward_p50_ms"] = bare
        result["cold_p50_over_bare_forward"] = cold_rows[1]["p50_ms"] / bare
    if 1 in cold_rows and max(levels) > 1:
        result["cold_throughput_ratio"] = cold_rows[max(levels)]["req_per_s"] / cold_rows[1]["req_per_s"]
    if args.kill_redis:
        result["redis_kill"] = kill_phase(args, url, redis_proc, warm_set, n_items, history_len, rng, seen)
    result["errors"] = sum(r["errors"] for r in rows)
    return result


def kill_phase(args: argparse.Namespace, url: str, proc: Any, warm_set: list, n_items: int, history_len: int,
               rng: np.random.Generator, seen: set) -> dict[str, Any]:  # fmt: skip
    """Warm and cold requests at c=4; the Redis is killed once a third of them are done."""
    cold = histories(n_items, history_len, args.cold_requests, rng, seen)
    bodies = [request(args, h) for pair in zip(warm_set * 4, cold, strict=False) for h in pair]
    killed_at: list[int] = []

    def on_done(n: int) -> None:
        if not killed_at and n >= len(bodies) // 3:
            proc.kill()
            killed_at.append(n)

    row = asyncio.run(load(url, bodies, 4, args.timeout, on_done))
    return row | {"killed_after_requests": killed_at[0] if killed_at else None}


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    model = result["args"].get("model", "None")
    table = Table(title=f"POST /v1/recommend (loopback, model={model})")
    for col in (
        "kind",
        "c",
        "requests",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "req/s",
        "errors",
        "cache hits",
        "degraded",
    ):
        table.add_column(col, justify="right")
    rows = result["rows"] + (
        [{"kind": "redis killed"} | result["redis_kill"]] if "redis_kill" in result else []
    )
    for r in rows:
        times = [f"{r[key]:.1f}" for key in ("p50_ms", "p95_ms", "p99_ms", "req_per_s")]
        counts = [str(r[key]) for key in ("errors", "cache_hits", "degraded")]
        table.add_row(r["kind"], str(r["concurrency"]), str(r["requests"]), *times, *counts)
    Console(width=140).print(table)
    if "cold_p50_over_bare_forward" in result:
        ratio, bare = result["cold_p50_over_bare_forward"], result["bare_llm_forward_p50_ms"]
        print(f"cold p50 / bare LLM forward: {ratio:.2f} (target <= 1.2; bare p50 {bare:.1f} ms)")
    if "cold_throughput_ratio" in result:
        print(f"cold throughput c=max / c=1: {result['cold_throughput_ratio']:.2f} (target >= 2.5)")
    print(f"errors: {result['errors']}")


def main() -> None:
    args = parse_args()
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("--url must be a loopback address: this bench never loads a remote service")
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        bundle_dir = args.bundle
        if args.tiny:
            from training.tiny_bundle import build_tiny_bundle

            bundle_dir = build_tiny_bundle(Path(tmp) / "tiny")
            if args.model == "allmrec":
                from training.tiny_bundle import build_genre_bundle

                bundle_dir = build_genre_bundle(Path(tmp) / "tiny")
        if bundle_dir is None:
            raise SystemExit("give --bundle DIR or --tiny")
        result = bench(args, Path(bundle_dir), Path(tmp))
    result |= {"bundle": portable_path(bundle_dir), "args": portable_args(args),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}  # fmt: skip
    print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


def bench(args: argparse.Namespace, bundle_dir: Path, tmp: Path) -> dict[str, Any]:
    """Start Redis and the service as asked (subprocesses, loopback), run the load, stop them."""
    if args.kill_redis and args.redis != "own":
        raise SystemExit("--kill-redis needs --redis own")
    env = dict(os.environ, LLMREC_BUNDLE=str(bundle_dir))
    redis_cm: Any = nullcontext()
    if args.redis == "own":
        port = free_port()
        binary = shutil.which("redis-server") or "redis-server"
        cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        redis_cm = process([*cmd, "--dir", str(tmp)])
        env["LLMREC_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    elif args.redis != "none":
        env["LLMREC_REDIS_URL"] = args.redis
    with redis_cm as redis_proc:
        if redis_proc is not None:
            wait_until(lambda: redis_up(env["LLMREC_REDIS_URL"]), 10, "redis-server")
        if args.url:
            return run(args, args.url.rstrip("/"), bundle_dir, redis_proc)
        port = free_port()
        with process(
            [sys.executable, "-c", SERVER, str(port)], env=env | {"PYTHONPATH": str(REPO)}
        ) as server:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: ready(url) or server.poll() is not None, 600, "the service to be ready")
            if server.poll() is not None:
                raise SystemExit(f"the service exited with status {server.returncode} (see its log above)")
            return run(args, url, bundle_dir, redis_proc)


if __name__ == "__main__":
    main()
