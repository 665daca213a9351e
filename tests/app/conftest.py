"""Service test fixtures: one tiny bundle per session (real export code), a unique key prefix on the real
Redis (deleted at the end), settings factory, the app served in-process, and backend wrappers."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from app.backends.hf import HFBackend
from app.bundle import load_bundle, verify
from app.main import create_app
from app.settings import Settings, env_names
from training.tiny_bundle import build_genre_bundle, build_tiny_bundle

REDIS_URL = os.environ.get("LLMREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_llmrec_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read LLMREC_* variables: the developer's environment must not change the tests."""
    for name in env_names():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def tiny_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle (bundle/) and what it was built from (data/, sasrec/, llmsrec/, llm/)."""
    work = tmp_path_factory.mktemp("tiny")
    build_tiny_bundle(work)
    return work


@pytest.fixture(scope="session")
def tiny_bundle(tiny_work: Path) -> Path:
    return tiny_work / "bundle"


@pytest.fixture(scope="session")
def allmrec_bundle(tiny_work: Path) -> Path:
    """The tiny bundle plus both A-LLMRec parts (recommendation and genre), built once per session."""
    return build_genre_bundle(tiny_work)


@pytest.fixture(scope="session")
def allmrec_backend(allmrec_bundle: Path) -> HFBackend:
    """The real HF backend over that bundle (A-LLMRec ranking and genre scoring)."""
    bundle = load_bundle(allmrec_bundle, verify(allmrec_bundle), "cpu")
    return HFBackend.from_bundle(bundle, device="cpu", dtype="auto", llm_path=None)


@pytest.fixture(scope="session")
def redis_run_prefix() -> Iterator[str]:
    """A key prefix unique to this test run on the real Redis; every key under it is deleted at the end."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as err:
        pytest.fail(f"the tests need Redis at {REDIS_URL} (make redis): {err!r}")
    prefix = f"llmrectest-{uuid.uuid4().hex[:10]}"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def make_settings(tiny_bundle: Path, redis_run_prefix: str) -> Callable[..., Settings]:
    """Settings for the tiny bundle on the real Redis, with a key prefix of its own per test."""
    prefix = f"{redis_run_prefix}:{uuid.uuid4().hex[:8]}"

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "bundle": tiny_bundle,
            "device": "cpu",
            "redis_url": REDIS_URL,
            "redis_prefix": prefix,
            "retrieval_top_n": 10,
            "batch_window_ms": 2.0,
        }
        return Settings.from_flat(**(base | overrides))

    return make


@asynccontextmanager
async def serve(settings: Settings, backend: Any = None) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (lifespan included) behind an in-process HTTP client."""
    app = create_app(settings, backend=backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture(scope="session")
def hf_backend(tiny_bundle: Path) -> HFBackend:
    """The real HF backend over the tiny bundle, shared by tests that wrap it."""
    bundle = load_bundle(tiny_bundle, verify(tiny_bundle), "cpu")
    return HFBackend.from_bundle(bundle, device="cpu", dtype="auto", llm_path=None)


class CountingBackend:
    """Wraps a backend: counts forwards and records batch sizes; optional delay or failure per call."""

    name = "counting"

    def __init__(self, inner: Any, delay_s: float = 0.0, fail: bool = False) -> None:
        self.inner, self.delay_s, self.fail = inner, delay_s, fail
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        return len(self.batch_sizes)

    def encode_users(self, histories: Sequence[Sequence[int]], timestamps: Sequence[Any]) -> np.ndarray:
        with self._lock:
            self.batch_sizes.append(len(histories))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("engine exploded")
        return self.inner.encode_users(histories, timestamps)

    def health(self) -> bool:
        return not self.fail

    def close(self) -> None:
        pass


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The value of one sample of Prometheus text format (0.0 when absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def assert_envelope(response: httpx.Response, status: int, type_: str | None = None) -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["message"], body
    if type_ is not None:
        assert body["error"]["type"] == type_, body
    return body["error"]
