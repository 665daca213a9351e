"""Micro-batching: concurrent cache misses become fewer, larger forwards (recorded in /metrics) whose
results equal unbatched ones; identical prompts share a slot; timed-out jobs never reach the backend; past the
shedding budget, new prompts are refused at once (a slow backend) and not otherwise (a fast one)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from app.batcher import MicroBatcher
from app.errors import BackendError, LoadShedError
from tests.app.conftest import CountingBackend, metric_value, serve

pytestmark = pytest.mark.anyio


def histories(n: int) -> list[list[int]]:
    return [[1 + (u * 7 + j * 3) % 60 for j in range(2 + u % 9)] for u in range(n)]


async def test_concurrent_misses_are_batched_and_equal_unbatched(make_settings, hf_backend) -> None:
    backend = CountingBackend(hf_backend)
    users = histories(8)
    async with serve(make_settings(batch_window_ms=100, max_batch_size=32), backend=backend) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/recommend", json={"history": h, "k": 5}) for h in users)
        )
        metrics = (await client.get("/metrics")).text
    assert all(r.status_code == 200 and not r.json()["cache_hit"] for r in responses)
    assert sum(backend.batch_sizes) == 8 and backend.calls < 8 and max(backend.batch_sizes) > 1
    assert metric_value(metrics, "llmrec_llm_batch_size_count") == backend.calls
    assert metric_value(metrics, "llmrec_llm_batch_size_sum") == 8.0
    # Left padding + position ids: a prompt's vector does not depend on its batch mates.
    alone = CountingBackend(hf_backend)
    async with serve(make_settings(batch_window_ms=0, redis_url=None), backend=alone) as client:  # cold cache
        for h, batched in zip(users, responses, strict=True):
            single = (await client.post("/v1/recommend", json={"history": h, "k": 5})).json()
            got = batched.json()["items"]
            assert [i["item_id"] for i in got] == [i["item_id"] for i in single["items"]]
            np.testing.assert_allclose(
                [i["score"] for i in got], [i["score"] for i in single["items"]], atol=1e-4
            )
    assert alone.batch_sizes == [1] * 8


async def test_identical_concurrent_misses_share_one_forward(make_settings, hf_backend) -> None:
    backend = CountingBackend(hf_backend)
    async with serve(make_settings(batch_window_ms=50), backend=backend) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/recommend", json={"history": [4, 5, 6]}) for _ in range(5))
        )
    assert backend.batch_sizes == [1]
    assert len({tuple(i["item_id"] for i in r.json()["items"]) for r in responses}) == 1


@dataclass(frozen=True)
class Job:
    """A prompt's history window: the batcher is generic over what a job is."""

    items: tuple[int, ...]


class RecordingFn:
    """A blocking batch function that records what it ran; `gate` holds it until released."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, ...]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, jobs: Sequence[Job]) -> np.ndarray:
        self.gate.wait(5)
        self.batches.append([job.items for job in jobs])
        return np.array([[float(sum(job.items))] for job in jobs], dtype=np.float32)


async def test_batches_respect_max_batch_size() -> None:
    fn = RecordingFn()
    batcher = MicroBatcher(fn, window_s=0.05, max_batch_size=4)
    batcher.start()
    try:
        out = await asyncio.gather(*(batcher.submit(str(i), Job((i,))) for i in range(10)))
    finally:
        await batcher.close()
    assert [float(v[0]) for v in out] == [float(i) for i in range(10)]
    assert [len(b) for b in fn.batches] == [4, 4, 2]


async def test_a_job_whose_caller_timed_out_is_dropped_before_it_runs() -> None:
    fn = RecordingFn()
    batcher = MicroBatcher(fn, window_s=0.0, max_batch_size=8)
    batcher.start()
    try:
        fn.gate.clear()  # the first forward blocks the (single) worker
        first = asyncio.create_task(batcher.submit("a", Job((1,))))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.submit("b", Job((2,))), 0.05)
        fn.gate.set()
        assert float((await first)[0]) == 1.0
        assert float((await batcher.submit("c", Job((3,))))[0]) == 3.0
    finally:
        await batcher.close()
    assert fn.batches == [[(1,)], [(3,)]]  # "b" never reached the backend


async def test_a_failing_batch_fails_every_waiter_with_backend_error() -> None:
    def explode(jobs: Sequence[Job]) -> np.ndarray:
        raise ValueError("bad batch")

    batcher = MicroBatcher(explode, window_s=0.01, max_batch_size=8)
    batcher.start()
    try:
        results = await asyncio.gather(
            *(batcher.submit(str(i), Job((i,))) for i in range(3)), return_exceptions=True
        )
    finally:
        await batcher.close()
    assert all(isinstance(r, BackendError) and "ValueError: bad batch" in str(r) for r in results)
    with pytest.raises(BackendError, match="not running"):
        await batcher.submit("late", Job((1,)))


class TimedFn:
    """A blocking batch function whose forward costs `per_prompt_s` per prompt, like an LLM on a CPU."""

    def __init__(self, per_prompt_s: float) -> None:
        self.per_prompt_s = per_prompt_s
        self.batches: list[list[tuple[int, ...]]] = []

    def __call__(self, jobs: Sequence[Job]) -> np.ndarray:
        time.sleep(self.per_prompt_s * len(jobs))
        self.batches.append([job.items for job in jobs])
        return np.array([[float(sum(job.items))] for job in jobs], dtype=np.float32)


async def burst(batcher: MicroBatcher, n: int) -> list[np.ndarray | BaseException]:
    """n distinct prompts submitted together (each submit runs before the batcher's loop wakes)."""
    return await asyncio.gather(
        *(batcher.submit(f"burst{i}", Job((i,))) for i in range(n)), return_exceptions=True
    )


@pytest.mark.parametrize(
    ("per_prompt_s", "budget", "admitted"),
    [
        (0.1, "2.5c", 2),  # slow: expected waits c, 2c | 3c ... > 2.5c → the 3rd to 6th are shed
        (0.001, "0.25", 6),  # fast: the whole burst fits a 0.25 s budget
        (0.1, "0", 6),  # slow, shedding off: everyone queues
    ],
)
async def test_shedding_refuses_what_a_slow_backend_cannot_answer_in_budget(
    per_prompt_s: float, budget: str, admitted: int
) -> None:
    """The decision uses the *measured* forward cost c, so the slow case's budget is set in units of c:
    on a loaded machine a 0.1 s sleep may take 0.15 s, and the test must not depend on that."""
    fn = TimedFn(per_prompt_s)
    batcher = MicroBatcher(fn, window_s=0.01, max_batch_size=4, shed_budget_s=0.0)
    batcher.start()
    try:
        assert batcher.expected_wait_s() is None  # nothing measured yet: nothing is shed
        await batcher.submit("prime", Job((100,)))  # one forward of 1 prompt measured
        cost = batcher.expected_wait_s() or 0.0
        assert (
            per_prompt_s <= cost < per_prompt_s + 0.5
        )  # that forward (sleep, plus scheduling on a busy CPU)
        units = budget.endswith("c")
        batcher.shed_budget_s = float(budget.removesuffix("c")) * (cost if units else 1.0)
        start = time.perf_counter()
        results = await burst(batcher, 6)
    finally:
        await batcher.close()
    shed = [r for r in results if isinstance(r, LoadShedError)]
    assert len(results) - len(shed) == admitted and all(isinstance(r, np.ndarray) for r in results[:admitted])
    assert all("LLM queue too long: expected wait" in str(r) for r in shed)
    assert sorted(i for b in fn.batches[1:] for (i,) in b) == list(range(admitted))  # shed never ran
    if shed:
        assert time.perf_counter() - start < 1.0  # admitted ones answered in ~0.2 s; nobody queued to 0.6 s


async def test_an_idle_llm_never_sheds_and_a_joiner_is_never_shed() -> None:
    fn = TimedFn(0.2)
    batcher = MicroBatcher(fn, window_s=0.0, max_batch_size=4, shed_budget_s=0.05)
    batcher.start()
    try:
        await batcher.submit("prime", Job((1,)))  # one forward: 0.2 s > budget
        alone = await batcher.submit("alone", Job((2,)))  # idle LLM: admitted all the same
        first = asyncio.create_task(batcher.submit("same", Job((3,))))
        await asyncio.sleep(0.05)  # "same" is running now: a new prompt would wait ~0.15 + 0.2 s ...
        with pytest.raises(LoadShedError):
            await batcher.submit("other", Job((4,)))
        joined = await batcher.submit("same", Job((3,)))  # ... but a joiner shares the slot
        assert float(alone[0]) == 2.0 and float(joined[0]) == float((await first)[0]) == 3.0
    finally:
        await batcher.close()
    assert fn.batches == [[(1,)], [(2,)], [(3,)]]
