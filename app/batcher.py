"""Micro-batcher: concurrent jobs (LLM prompts) that arrive within a short window are run as one call of a
blocking batch function (one padded LLM forward) in a worker thread, off the event loop, one batch at a time.
Generic over what a job and its result are. Identical prompts in flight share one slot; a job whose every
waiter gave up (timed out) is dropped before it runs. Load shedding: a new prompt whose expected wait (the
queue ahead of it, costed by recent forward times) exceeds the budget is refused at once (LoadShedError), so
the caller answers with its fallback instead of queueing to a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.errors import BackendError, LoadShedError

log = logging.getLogger(__name__)
COST_SMOOTHING = 0.3  # weight of the newest forward in the running mean of forward times per batch size
Job = TypeVar("Job")
Result = TypeVar("Result")


@dataclass
class _Slot(Generic[Job, Result]):
    key: str
    job: Job
    future: asyncio.Future[Result]
    arrived: float
    waiters: int = 0
    running: bool = field(default=False)


BatchFn = Callable[[Sequence[Job]], Sequence[Result]]  # jobs → one result each, in order; blocking
BatchHook = Callable[[int, float], None]  # (batch size, seconds)


class MicroBatcher(Generic[Job, Result]):
    def __init__(
        self,
        fn: BatchFn[Job, Result],
        window_s: float,
        max_batch_size: int,
        on_batch: BatchHook | None = None,
        shed_budget_s: float = 0.0,
    ) -> None:
        """shed_budget_s: refuse a new prompt whose expected wait exceeds it; 0 = never refuse."""
        self.fn, self.window_s, self.max_batch_size, self.on_batch = fn, window_s, max_batch_size, on_batch
        self.shed_budget_s = shed_budget_s
        self._cost: dict[int, float] = {}  # batch size → smoothed seconds of one forward
        self._running: tuple[int, float] | None = None  # (size, perf_counter at start) of the forward
        self._pending: list[_Slot[Job, Result]] = []
        self._slots: dict[str, _Slot[Job, Result]] = {}
        self._has_work = asyncio.Event()
        self._full = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-forward")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="micro-batcher")

    async def submit(self, key: str, job: Job) -> Result:
        """The result of `job`, which `key` names (equal keys: one job); BackendError if the backend fails.
        Cancel-safe: a cancelled (timed out) caller leaves the shared slot to other waiters, or drops it if it
        has not started."""
        if self._task is None or self._task.done():
            raise BackendError("the micro-batcher is not running")
        slot = self._slots.get(key)
        if slot is None:  # joining a slot already queued adds no work, so it is never shed
            self._shed_if_late()
            loop = asyncio.get_running_loop()
            slot = _Slot(key, job, loop.create_future(), loop.time())
            slot.future.add_done_callback(_consume_exception)
            self._slots[key] = slot
            self._pending.append(slot)
            self._has_work.set()
            if len(self._pending) >= self.max_batch_size:
                self._full.set()
        slot.waiters += 1
        try:
            return await asyncio.shield(slot.future)
        finally:
            slot.waiters -= 1
            if slot.waiters == 0 and not slot.running and not slot.future.done():
                self._drop(slot)

    def expected_wait_s(self) -> float | None:
        """Seconds until a prompt submitted now would have its result: the rest of the running forward, the
        full batches queued ahead, then its own batch. None before the first forward (nothing to go by)."""
        if not self._cost:
            return None
        full, own = divmod(len(self._pending), self.max_batch_size)
        wait = full * self._batch_cost(self.max_batch_size) + self._batch_cost(own + 1)
        if self._running is not None:
            size, started = self._running
            wait += max(self._batch_cost(size) - (time.perf_counter() - started), 0.0)
        return wait

    def _batch_cost(self, size: int) -> float:
        """Recent seconds of a forward of `size` prompts: the measured size nearest to it, scaled linearly
        from a smaller one (exact when a forward costs per prompt, as on a CPU; an over-estimate where
        batching is cheaper, as on a GPU, until the larger size has been seen)."""
        near = min(self._cost, key=lambda measured: (abs(measured - size), -measured))
        return self._cost[near] * max(size / near, 1.0)

    def _shed_if_late(self) -> None:
        """Raise LoadShedError when the budget is on, the LLM busy and the expected wait over the budget.
        An idle LLM never sheds: nobody waits, and refusing would only trade the answer for a fallback."""
        if self.shed_budget_s <= 0 or (not self._pending and self._running is None):
            return
        wait = self.expected_wait_s()
        if wait is not None and wait > self.shed_budget_s:
            raise LoadShedError(
                f"LLM queue too long: expected wait {wait:.2f} s exceeds the {self.shed_budget_s:g} s "
                f"shedding budget ({len(self._pending)} prompts queued)"
            )

    def _record_cost(self, size: int, seconds: float) -> None:
        previous = self._cost.get(size)
        self._cost[size] = seconds if previous is None else previous + COST_SMOOTHING * (seconds - previous)

    def _drop(self, slot: _Slot[Job, Result]) -> None:
        self._pending.remove(slot)
        self._slots.pop(slot.key, None)
        slot.future.cancel()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._has_work.wait()
            delay = self._pending[0].arrived + self.window_s - loop.time() if self._pending else 0.0
            if delay > 0 and len(self._pending) < self.max_batch_size:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), delay)
            batch, self._pending = self._pending[: self.max_batch_size], self._pending[self.max_batch_size :]
            if not self._pending:
                self._has_work.clear()
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Slot[Job, Result]]) -> None:
        for slot in batch:
            slot.running = True
        start = time.perf_counter()
        self._running = (len(batch), start)
        try:
            jobs = [slot.job for slot in batch]
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, jobs)
            if len(results) != len(batch):
                raise BackendError(f"backend returned {len(results)} results for {len(batch)} prompts")
        except Exception as err:  # the engine boundary: any backend failure becomes a fallback, not a 500
            log.warning("LLM batch of %d failed: %r", len(batch), err)
            for slot in batch:
                _fail(slot, BackendError(f"LLM backend failed: {type(err).__name__}: {err}"))
        else:
            self._record_cost(len(batch), time.perf_counter() - start)
            for slot, result in zip(batch, results, strict=True):
                if not slot.future.done():  # a closed batcher already failed it
                    slot.future.set_result(result)
        finally:
            self._running = None
            for slot in batch:
                self._slots.pop(slot.key, None)
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - start)

    async def close(self) -> None:
        """Stop collecting; waiters of unfinished jobs get BackendError; a running forward is abandoned."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for slot in [*self._pending, *self._slots.values()]:
            _fail(slot, BackendError("the service is shutting down"))
        self._pending.clear()
        self._slots.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _fail(slot: _Slot[Any, Any], error: Exception) -> None:
    if not slot.future.done():
        slot.future.set_exception(error)


def _consume_exception(future: asyncio.Future[Any]) -> None:
    """Mark an exception as retrieved when every waiter already left (no 'never retrieved' warning)."""
    if not future.cancelled():
        future.exception()
