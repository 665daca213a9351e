"""The one LLM stage every LLM-backed answer goes through: cache → micro-batched LLM call with a timeout →
fallback → cache write. It owns the keys (bundle version + what the prompt reads), the micro-batcher, the
time budget and the failure reasons; what the LLM computes is the batch function each caller hands it (user
vectors, candidate scores, genre answers), and what answers instead is the caller's. Framework-free."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from annotated_types import Ge, Gt, Le

from app.batcher import BatchFn, MicroBatcher
from app.cache import Codec, Store, content_key
from app.errors import BackendError, LoadShedError
from app.metrics import Metrics, elapsed_ms

Job = TypeVar("Job")
Result = TypeVar("Result")


@dataclass(frozen=True)
class LLMStageSettings:
    """Micro-batching and time budgets of every LLM stage: env LLMREC_<FIELD> (e.g. LLMREC_LLM_TIMEOUT_S);
    the bounds are checked when app.settings reads them."""

    # how app.settings (pydantic) validates this group: no unknown field, the docstrings as descriptions
    __pydantic_config__: ClassVar[dict[str, object]] = {"extra": "forbid", "use_attribute_docstrings": True}

    batch_window_ms: Annotated[float, Ge(0), Le(200)] = 5.0
    """How long the micro-batcher collects concurrent cache misses."""
    max_batch_size: Annotated[int, Ge(1), Le(512)] = 16
    """Most prompts in one LLM forward."""
    llm_timeout_s: Annotated[float, Gt(0), Le(300)] = 10.0
    """Budget for an LLM answer (user vector, candidate scores, genres); past it, the fallback (degraded)."""
    llm_shed_budget_s: Annotated[float, Ge(0), Le(300)] = 2.0
    """Load shedding: when a cache miss's expected wait in the LLM queue (the batches ahead of it × their
    recent forward time) exceeds this, answer at once with the fallback (degraded) instead of queueing; keep
    it below llm_timeout_s. 0 = off."""


@dataclass(frozen=True)
class StageSpec(Generic[Result]):
    """What names one stage's work: its cache keys' kind, its fallback counters' label (<label>_timeout,
    _shed, _error), the model a timeout message names, and how its results are cached."""

    kind: str
    label: str
    what: str
    codec: Codec[Result]


@dataclass(frozen=True)
class StageAnswer(Generic[Result]):
    """The LLM's result (cached or fresh), or None with the reason it failed; timing_ms: cache, llm."""

    value: Result | None
    cache_hit: bool = False
    failure: str | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)


def _always(_: Any) -> bool:
    return True


class LLMStage(Generic[Job, Result]):
    """One LLM-backed step with its own micro-batcher over `fn`; start() it, close() it."""

    def __init__(
        self,
        spec: StageSpec[Result],
        fn: BatchFn[Job, Result],
        store: Store,
        metrics: Metrics,
        settings: LLMStageSettings,
        *,
        key_prefix: str,
        bundle_version: str,
    ) -> None:
        self.spec, self.store, self.metrics, self.timeout_s = spec, store, metrics, settings.llm_timeout_s
        self.key_prefix, self.bundle_version = key_prefix, bundle_version
        self.batcher = MicroBatcher(
            fn,
            settings.batch_window_ms / 1000.0,
            settings.max_batch_size,
            on_batch=metrics.llm_batch,
            shed_budget_s=settings.llm_shed_budget_s,
        )

    def start(self) -> None:
        self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close()

    def key(self, content: Any) -> str:
        return content_key(self.key_prefix, self.spec.kind, self.bundle_version, content)

    async def run(
        self, content: Any, job: Job, usable: Callable[[Result], bool] = _always
    ) -> StageAnswer[Result]:
        """The result for `job`, whose prompt reads exactly `content` (JSON: the cache key's digest): a cached
        one that is `usable`, else the LLM's within the time budget (then cached), else None and why."""
        key = self.key(content)
        start = time.perf_counter()
        cached = await self.store.get(key, self.spec.codec)  # the store counts the lookup
        timing = {"cache": elapsed_ms(start)}
        if cached is not None and usable(cached):
            return StageAnswer(cached, cache_hit=True, timing_ms=timing)
        start = time.perf_counter()
        value, failure = await self._call(key, job)
        timing["llm"] = elapsed_ms(start)
        if value is None:
            return StageAnswer(None, failure=failure, timing_ms=timing)
        await self.store.set(key, value, self.spec.codec)
        return StageAnswer(value, timing_ms=timing)

    async def _call(self, key: str, job: Job) -> tuple[Result | None, str | None]:
        """The LLM's result within the time budget, or None and why (counted as a fallback)."""
        try:
            return await asyncio.wait_for(self.batcher.submit(key, job), self.timeout_s), None
        except TimeoutError:
            how, reason = "timeout", f"{self.spec.what} timed out after {self.timeout_s:g} s"
        except LoadShedError as err:
            how, reason = "shed", str(err)
        except BackendError as err:
            how, reason = "error", str(err)
        self.metrics.fallbacks.labels(f"{self.spec.label}_{how}").inc()
        return None, reason
