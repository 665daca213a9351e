"""The one LLM stage (cache → micro-batched LLM call with a timeout → fallback → cache write) on its own:
a miss runs the LLM once and caches its result under the content's key, an unusable cached value is a miss,
a timeout or a failure is a counted fallback with the reason, and JSON values round-trip like vectors."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from app.cache import VECTOR, MemoryStore, json_codec
from app.llm_stage import LLMStage, LLMStageSettings, StageSpec
from app.metrics import Metrics
from tests.app.conftest import metric_value

pytestmark = pytest.mark.anyio
SPEC = StageSpec(kind="t", label="test_llm", what="Test-LLM", codec=VECTOR)


class SumFn:
    """Blocking batch function: each job (a tuple of ints) → [sum]; `gate` holds it; `fail` raises."""

    def __init__(self) -> None:
        self.jobs: list[tuple[int, ...]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __call__(self, jobs: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        self.gate.wait(5)
        if self.fail:
            raise RuntimeError("engine exploded")
        self.jobs += jobs
        return [np.array([float(sum(job))], dtype=np.float32) for job in jobs]


@pytest.fixture
async def parts() -> tuple[SumFn, MemoryStore, Metrics]:
    return SumFn(), MemoryStore(max_entries=10, ttl_s=60), Metrics()


def stage_of(fn: SumFn, store: MemoryStore, metrics: Metrics, timeout_s: float = 5.0) -> LLMStage:
    settings = LLMStageSettings(batch_window_ms=0, llm_timeout_s=timeout_s, llm_shed_budget_s=0)
    return LLMStage(SPEC, fn, store, metrics, settings, key_prefix="p", bundle_version="v1")


async def test_a_miss_runs_the_llm_once_and_caches_under_the_contents_key(parts) -> None:
    fn, store, metrics = parts
    stage = stage_of(fn, store, metrics)
    stage.start()
    try:
        first = await stage.run(["t1", [1, 2]], (1, 2))
        second = await stage.run(["t1", [1, 2]], (1, 2))
        other = await stage.run(["t2", [1, 2]], (1, 2))  # another content: another key, another call
    finally:
        await stage.close()
    assert first.value is not None and first.value.tolist() == [3.0] and not first.cache_hit
    assert list(first.timing_ms) == ["cache", "llm"] and first.failure is None
    assert second.cache_hit and list(second.timing_ms) == ["cache"] and second.value.tolist() == [3.0]  # type: ignore[union-attr]
    assert not other.cache_hit and fn.jobs == [(1, 2), (1, 2)]
    assert stage.key(["t1", [1, 2]]).startswith("p:t:v1:")
    assert (await store.get(stage.key(["t1", [1, 2]]), VECTOR)).tolist() == [3.0]  # type: ignore[union-attr]


async def test_an_unusable_cached_value_is_a_miss(parts) -> None:
    fn, store, metrics = parts
    stage = stage_of(fn, store, metrics)
    await store.set(stage.key("c"), np.zeros(4, np.float32), VECTOR)  # e.g. another width
    stage.start()
    try:
        answer = await stage.run("c", (5,), usable=lambda v: v.shape == (1,))
    finally:
        await stage.close()
    assert not answer.cache_hit and answer.value.tolist() == [5.0] and fn.jobs == [(5,)]  # type: ignore[union-attr]


async def test_timeout_and_failure_are_counted_fallbacks_with_their_reason(parts) -> None:
    fn, store, metrics = parts
    stage = stage_of(fn, store, metrics, timeout_s=0.1)
    stage.start()
    try:
        fn.gate.clear()
        late = await stage.run("a", (1,))
        fn.gate.set()
        fn.fail = True
        failed = await stage.run("b", (2,))
    finally:
        await stage.close()
    assert late.value is None and late.failure == "Test-LLM timed out after 0.1 s" and "llm" in late.timing_ms
    assert failed.value is None and failed.failure == "LLM backend failed: RuntimeError: engine exploded"
    text = metrics.render()[0].decode()
    assert metric_value(text, "llmrec_fallbacks_total", 'reason="test_llm_timeout"') == 1.0
    assert metric_value(text, "llmrec_fallbacks_total", 'reason="test_llm_error"') == 1.0
    assert await store.get(stage.key("b"), VECTOR) is None  # nothing cached for a failure


@dataclass(frozen=True)
class Answer:
    scores: tuple[float, ...]
    text: str


async def test_json_values_round_trip_and_a_foreign_entry_is_a_miss() -> None:
    codec = json_codec(
        "answer", lambda a: {"s": list(a.scores), "t": a.text}, lambda r: Answer(tuple(r["s"]), r["t"])
    )
    lookups: list[str] = []
    store = MemoryStore(max_entries=10, ttl_s=60, on_lookup=lookups.append)
    await store.set("k", Answer((0.25, -1.5), "Drama, Horror."), codec)
    assert await store.get("k", codec) == Answer((0.25, -1.5), "Drama, Horror.")
    await store.set("v", np.ones(3, np.float32), VECTOR)  # bytes of another kind under a key
    assert await store.get("v", codec) is None
    assert lookups == ["l1_hit", "miss"]
