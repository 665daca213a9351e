r"""Redis outage bench (loopback only): the same warm workload before, during and after a `kill -9` of the
service's Redis, at each concurrency; then a cold burst (all-new histories) with load shedding on, and the
same burst on a second service with shedding and the L1 cache off (the behaviour before them), which also
repeats the outage at one concurrency for comparison.

Workload (each phase runs `--phase-s` seconds): 80% POST /v1/recommend with a body history from a warm set
(`--histories` distinct, all computed before the first phase), 10% recommend for stored-history users, 10%
POST /v1/users/{id}/events, one new event each. Redis runs with appendfsync=always, so an event it
acknowledged must survive the kill: after the run every acknowledged event is looked up in Redis
("events lost"). An events POST answered 503 during the outage was refused, not lost, and is counted apart;
"errors" are transport failures, any recommend that is not 200 and any events answer other than 200 or 503.

    nice -n 15 .venv/bin/python bench/outage_bench.py --bundle work/i16/bundle \
        --json bench/results/outage_bench_ml100k.json
Service settings come from LLMREC_* variables, as in bench/serve_bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from portable import portable_args
from serve_bench import SERVER, free_port, histories, process, ready, redis_up, wait_until

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="Bundle with an LLM (LLM-SRec) to serve.")
    p.add_argument("--model", default="llmsrec", help="The recommend requests' model.")
    p.add_argument("--concurrency", default="1,8,32", help="Comma-separated client concurrencies.")
    p.add_argument("--phase-s", type=float, default=8.0, help="Seconds of each before/during/after phase.")
    p.add_argument("--histories", type=int, default=150, help="Distinct warm body histories.")
    p.add_argument("--stored-users", type=int, default=16, help="Users recommended from stored history.")
    p.add_argument("--cold-burst", type=int, default=96, help="Cold-burst requests with shedding on.")
    p.add_argument("--cold-burst-off", type=int, default=64, help="Cold-burst requests with shedding off.")
    p.add_argument(
        "--baseline-concurrency", type=int, default=8, help="Outage without L1 at this c; 0 = skip."
    )
    p.add_argument("--timeout", type=float, default=60.0, help="Per-request client timeout (s).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=REPO / "work" / "bench" / "outage_bench.json")
    return p.parse_args()


class OwnRedis:
    """A redis-server with an append-only file fsynced on every write; killed with SIGKILL, restarted on
    the same port and directory (it reloads the file)."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.workdir, self.proc = free_port(), workdir, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                "--appendfsync", "always", "--dir", str(self.workdir)]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_until(lambda: redis_up(self.url), 30, "redis-server")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class Workload:
    """The request mix; remembers every event Redis acknowledged."""

    def __init__(self, model: str, warm: list[list[int]], users: list[str], n_items: int, seed: int) -> None:
        self.model, self.warm, self.users, self.n_items = model, warm, users, n_items
        self.rng = np.random.default_rng(seed)
        self.acked: list[tuple[str, int, int]] = []  # (user, item, timestamp)
        self.run_id, self.n_events = uuid.uuid4().hex[:8], 0

    def next(self) -> tuple[str, str, dict[str, Any], tuple[str, int, int] | None]:
        """(kind, path, body, event)."""
        r = self.rng.random()
        if r < 0.8:
            history = self.warm[int(self.rng.integers(len(self.warm)))]
            return "recommend", "/v1/recommend", {"history": history, "model": self.model}, None
        if r < 0.9:
            user = self.users[int(self.rng.integers(len(self.users)))]
            return "recommend", "/v1/recommend", {"user_id": user, "model": self.model}, None
        self.n_events += 1
        event = (
            f"probe-{self.run_id}-{self.n_events}",
            int(self.rng.integers(1, self.n_items + 1)),
            self.n_events,
        )
        body = {"events": [{"item_id": event[1], "timestamp": event[2]}]}
        return "event", f"/v1/users/{event[0]}/events", body, event


async def phase(url: str, work: Workload, concurrency: int, seconds: float, timeout: float) -> dict[str, Any]:
    """`concurrency` workers send the mix for `seconds`; rate, latency percentiles, outcomes."""
    latencies: list[float] = []
    count = {
        "recommend": 0,
        "degraded": 0,
        "cache_hits": 0,
        "errors": 0,
        "events_acked": 0,
        "events_refused": 0,
    }
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        end = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < end:
                kind, path, body, event = work.next()
                start = time.perf_counter()
                try:
                    response = await client.post(path, json=body)
                except httpx.HTTPError:
                    latencies.append(time.perf_counter() - start)
                    count["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - start)
                if kind == "recommend" and response.status_code == 200:
                    result = response.json()
                    count["recommend"] += 1
                    count["degraded"] += result["degraded"]
                    count["cache_hits"] += result["cache_hit"]
                elif kind == "event" and response.status_code == 200 and event is not None:
                    work.acked.append(event)
                    count["events_acked"] += 1
                elif kind == "event" and response.status_code == 503:
                    count["events_refused"] += 1
                else:
                    count["errors"] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000.0
    return {"requests": len(latencies), "req_per_s": len(latencies) / wall, "wall_s": wall,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "degraded_share": count["degraded"] / max(count["recommend"], 1)} | count  # fmt: skip


async def burst(url: str, bodies: list[dict[str, Any]], concurrency: int, timeout: float) -> dict[str, Any]:
    """Every body once, `concurrency` at a time: latency percentiles, statuses, how many the LLM answered."""
    latencies, statuses, degraded = [], [], 0
    queue = list(reversed(bodies))
    async with httpx.AsyncClient(
        base_url=url, timeout=timeout, limits=httpx.Limits(max_connections=concurrency)
    ) as client:

        async def worker() -> None:
            nonlocal degraded
            while queue:
                body, start = queue.pop(), time.perf_counter()
                try:
                    response = await client.post("/v1/recommend", json=body)
                    statuses.append(response.status_code)
                    degraded += response.status_code == 200 and response.json()["degraded"]
                except httpx.HTTPError:
                    statuses.append(0)
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000.0
    return {"requests": len(bodies), "concurrency": concurrency, "req_per_s": len(bodies) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "all_200": all(s == 200 for s in statuses),
            "non_200": sum(s != 200 for s in statuses), "degraded": degraded,
            "llm_answered": len(bodies) - degraded - sum(s != 200 for s in statuses)}  # fmt: skip


class ReadyWatch:
    """Polls /readyz every 0.2 s in a thread; records each change of (HTTP status, status, store check)."""

    def __init__(self, url: str) -> None:
        self.url, self.changes, self._stop = url, [], False

    def __enter__(self) -> ReadyWatch:
        import threading

        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop = True
        self._thread.join(5)

    def _run(self) -> None:
        last = None
        while not self._stop:
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2)
                body = r.json()
                state = (
                    r.status_code,
                    body.get("status", "not_ready"),
                    body.get("checks", {}).get("store", ""),
                )
            except httpx.HTTPError as err:
                state = (0, type(err).__name__, "")
            if last is None or state[:2] != last[:2]:
                self.changes.append(
                    {"t": time.monotonic(), "http": state[0], "status": state[1], "store": state[2]}
                )
            last = state
            time.sleep(0.2)

    def first_after(self, t0: float, status: str) -> float | None:
        """Seconds from t0 until /readyz first said `status` after t0."""
        return next((c["t"] - t0 for c in self.changes if c["t"] >= t0 and c["status"] == status), None)


def outage(
    url: str, work: Workload, redis: OwnRedis, levels: list[int], args: argparse.Namespace
) -> list[dict]:
    rows = []
    with ReadyWatch(url) as watch:
        for c in levels:
            before = asyncio.run(phase(url, work, c, args.phase_s, args.timeout))
            t_kill = time.monotonic()
            redis.kill()
            during = asyncio.run(phase(url, work, c, args.phase_s, args.timeout))
            t_back = time.monotonic()
            redis.start()
            after = asyncio.run(phase(url, work, c, args.phase_s, args.timeout))
            seen = {"readyz_degraded_after_kill_s": watch.first_after(t_kill, "degraded"),
                    "readyz_ready_after_restart_s": watch.first_after(t_back, "ready")}  # fmt: skip
            for name, row in (("before", before), ("during", during), ("after", after)):
                rows.append({"concurrency": c, "phase": name} | row | (seen if name != "before" else {}))
            print(f"c={c}: " + ", ".join(f"{r['phase']} {r['req_per_s']:.1f} req/s" for r in rows[-3:]))
    return rows


def events_lost(redis_url: str, prefix: str, acked: list[tuple[str, int, int]]) -> int:
    """Acknowledged events that Redis no longer holds."""
    import redis as redis_client

    from app.cache import history_key

    client = redis_client.Redis.from_url(redis_url)
    try:
        return sum(
            client.zscore(history_key(prefix, user), f"{item}:{ts}") is None for user, item, ts in acked
        )
    finally:
        client.close()


def serve(bundle: Path, redis: OwnRedis, prefix: str, extra: dict[str, str]) -> tuple[Any, str]:
    """(context manager of the service process, its URL); `extra`: LLMREC_* overrides."""
    env = dict(os.environ, LLMREC_BUNDLE=str(bundle), LLMREC_REDIS_URL=redis.url, LLMREC_REDIS_PREFIX=prefix,
               PYTHONPATH=str(REPO)) | extra  # fmt: skip
    port = free_port()
    return process([sys.executable, "-c", SERVER, str(port)], env=env), f"http://127.0.0.1:{port}"


def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    wait_until(lambda: ready(url) or server.poll() is not None, 600, "the service to be ready")
    if server.poll() is not None:
        raise SystemExit(f"the service exited with status {server.returncode}")


def fill(url: str, bodies: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
    """Compute every warm vector once (concurrency 1: the LLM is never busy, so nothing is shed)."""
    first = asyncio.run(burst(url, bodies, 1, timeout))
    check = asyncio.run(burst(url, bodies, 1, timeout))
    return {"fill": first, "check": check}


def main() -> None:
    args = parse_args()
    from models.bundle import read_manifest

    manifest = read_manifest(args.bundle)
    n_items, history_len = manifest.dataset.n_items, int((manifest.llm or {}).get("history_len", 10))
    rng, seen = np.random.default_rng(args.seed), set()
    warm = histories(n_items, history_len, args.histories, rng, seen)
    users = [f"stored-{uuid.uuid4().hex[:6]}-{u}" for u in range(args.stored_users)]  # fresh each run
    work = Workload(args.model, warm, users, n_items, args.seed)
    levels = [int(c) for c in args.concurrency.split(",")]
    prefix = f"outage-bench-{uuid.uuid4().hex[:8]}"

    def cold(n: int) -> list[dict[str, Any]]:  # histories no request of this run has sent
        return [{"history": h, "model": args.model} for h in histories(n_items, history_len, n, rng, seen)]

    result: dict[str, Any] = {"args": portable_args(args)}
    with tempfile.TemporaryDirectory(prefix="outage-bench-") as tmp:
        redis = OwnRedis(Path(tmp))
        redis.start()
        try:
            result |= run_both(args, redis, prefix, work, levels, cold)
            result["events_acked"] = len(work.acked)
            result["events_lost"] = events_lost(redis.url, prefix, work.acked)
        finally:
            redis.kill()
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


def run_both(args: argparse.Namespace, redis: OwnRedis, prefix: str, work: Workload, levels: list[int],
             cold: Callable[[int], list[dict[str, Any]]]) -> dict[str, Any]:  # fmt: skip
    """The service as configured (L1 and shedding on by default), then one with both off."""
    out: dict[str, Any] = {}
    cm, url = serve(args.bundle, redis, prefix, {})
    with cm as server:
        wait_ready(url, server)
        for n, user in enumerate(work.users):  # stored histories, acknowledged like any other event
            events = [
                {"item_id": int(i), "timestamp": 1000 + n * 50 + j} for j, i in enumerate(work.warm[n][:20])
            ]
            assert httpx.post(f"{url}/v1/users/{user}/events", json={"events": events}).status_code == 200
            work.acked += [(user, e["item_id"], e["timestamp"]) for e in events]
        bodies = [{"history": h, "model": args.model} for h in work.warm]
        bodies += [{"user_id": u, "model": args.model} for u in work.users]
        out["warm_fill"] = fill(url, bodies, args.timeout)
        out["outage"] = outage(url, work, redis, levels, args)
        out["cold_burst_shedding_on"] = asyncio.run(burst(url, cold(args.cold_burst), 32, args.timeout))
    off = {"LLMREC_LLM_SHED_BUDGET_S": "0", "LLMREC_L1_CACHE_MAX_ENTRIES": "0"}
    cm, url = serve(args.bundle, redis, prefix, off)
    with cm as server:
        wait_ready(url, server)
        out["cold_burst_shedding_off"] = asyncio.run(burst(url, cold(args.cold_burst_off), 32, args.timeout))
        if args.baseline_concurrency:
            out["outage_without_l1"] = outage(url, work, redis, [args.baseline_concurrency], args)
    from app.settings import Settings

    view = Settings(bundle=args.bundle).env_view()  # by the variables' names, as the runs set them
    out["settings"] = {name: view[f"LLMREC_{name.upper()}"] for name in
                       ("llm_shed_budget_s", "llm_timeout_s", "l1_cache_max_entries", "max_batch_size",
                        "redis_retry_after_s")}  # fmt: skip
    return out


def print_table(result: dict[str, Any]) -> None:
    print("| run | c | phase | requests | req/s | p50 ms | p99 ms | degraded | errors | acked | refused |")
    runs = [("L1 + shedding", r) for r in result["outage"]]
    runs += [("neither", r) for r in result.get("outage_without_l1", [])]
    for run, r in runs:
        times = [f"{r[key]:.1f}" for key in ("req_per_s", "p50_ms", "p99_ms")]
        share = f"{100 * r['degraded_share']:.1f}%"
        cells = [run, r["concurrency"], r["phase"], r["requests"], *times, share, r["errors"],
                 r["events_acked"], r["events_refused"]]  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")
    for name in ("cold_burst_shedding_on", "cold_burst_shedding_off"):
        b = result[name]
        print(f"{name}: {b['requests']} req, p50 {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms, "
              f"non-200 {b['non_200']}, degraded {b['degraded']}, LLM {b['llm_answered']}")  # fmt: skip
    print(f"events acknowledged {result['events_acked']}, lost {result['events_lost']}")


if __name__ == "__main__":
    main()
