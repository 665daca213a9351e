"""Degradation: an LLM backend that times out or fails gives SASRec rankings of the same history with
degraded=true (never an error); the fallback is counted and is not cached as an LLM-SRec vector. A busy,
slow LLM sheds new work to SASRec at once instead of queueing it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from tests.app.conftest import CountingBackend, metric_value, serve

pytestmark = pytest.mark.anyio
HISTORY = [6, 12, 18, 24, 30]


def ids(body: dict) -> list[int]:
    return [item["item_id"] for item in body["items"]]


async def test_llm_timeout_falls_back_to_sasrec(make_settings, hf_backend) -> None:
    slow = CountingBackend(hf_backend, delay_s=0.6)
    async with serve(make_settings(llm_timeout_s=0.1), backend=slow) as client:
        body = (await client.post("/v1/recommend", json={"history": HISTORY, "k": 5})).json()
        sasrec = (
            await client.post("/v1/recommend", json={"history": HISTORY, "k": 5, "model": "sasrec"})
        ).json()
        again = (await client.post("/v1/recommend", json={"history": HISTORY, "k": 5})).json()
        metrics = (await client.get("/metrics")).text
    assert (
        body["degraded"] and body["model"] == "sasrec" and "timed out after 0.1 s" in body["degraded_reason"]
    )
    assert ids(body) == ids(sasrec) and not sasrec["degraded"]
    assert not again["cache_hit"] and again["degraded"]  # a fallback is never cached as the LLM's answer
    assert metric_value(metrics, "llmrec_fallbacks_total", 'reason="llm_timeout"') == 2.0
    assert body["timing_ms"]["llm"] < 500  # the request did not wait for the slow forward


async def test_llm_error_falls_back_to_sasrec_and_readyz_says_so(make_settings, hf_backend) -> None:
    failing = CountingBackend(hf_backend, fail=True)
    async with serve(make_settings(), backend=failing) as client:
        response = await client.post("/v1/recommend", json={"history": HISTORY, "k": 5})
        sasrec = (
            await client.post("/v1/recommend", json={"history": HISTORY, "k": 5, "model": "sasrec"})
        ).json()
        ready = await client.get("/readyz")
        metrics = (await client.get("/metrics")).text
    body = response.json()
    assert response.status_code == 200 and body["degraded"] and body["model"] == "sasrec"
    assert "RuntimeError: engine exploded" in body["degraded_reason"] and ids(body) == ids(sasrec)
    assert ready.status_code == 503 and ready.json()["error"]["type"] == "not_ready"
    assert "llm: unhealthy" in ready.json()["error"]["message"] and ready.json()["checks"]["store"] == "ok"
    assert metric_value(metrics, "llmrec_fallbacks_total", 'reason="llm_error"') == 1.0


async def test_a_recovered_backend_serves_llmsrec_again(make_settings, hf_backend) -> None:
    flaky = CountingBackend(hf_backend, fail=True)
    async with serve(make_settings(), backend=flaky) as client:
        first = (await client.post("/v1/recommend", json={"history": HISTORY})).json()
        flaky.fail = False
        second = (await client.post("/v1/recommend", json={"history": HISTORY})).json()
        ready = await client.get("/readyz")
    assert first["degraded"] and not second["degraded"] and second["model"] == "llmsrec"
    assert ready.status_code == 200 and ready.json()["checks"]["llm"] == "ok"


class ConstantEncoder:
    """A stand-in LLM whose forward costs nothing: every history gets the same (real) user vector."""

    def __init__(self, vector: np.ndarray) -> None:
        self.vector = vector

    def encode_users(self, histories: Sequence[Sequence[int]], timestamps: Sequence[Any]) -> np.ndarray:
        return np.tile(self.vector, (len(histories), 1))


@pytest.mark.parametrize("delay_s", [0.5, 0.0])
async def test_a_busy_slow_llm_is_shed_to_sasrec_at_once(make_settings, hf_backend, delay_s: float) -> None:
    """Slow (0.5 s a forward, budget 0.3 s): with one forward running or queued, a new history's expected
    wait is past the budget, so SASRec answers it at once. Fast: the same traffic all reaches the LLM."""
    fake = CountingBackend(ConstantEncoder(hf_backend.encode_users([HISTORY], [None])[0]), delay_s=delay_s)
    pair = ([4, 5, 6], [7, 8, 9])
    settings = make_settings(llm_shed_budget_s=0.3, llm_timeout_s=5.0, batch_window_ms=0)
    async with serve(settings, backend=fake) as client:
        primed = (await client.post("/v1/recommend", json={"history": [1, 2, 3]})).json()  # one forward timed
        responses = await asyncio.gather(
            *(client.post("/v1/recommend", json={"history": h, "k": 5}) for h in pair)
        )
        sasrec = [
            (await client.post("/v1/recommend", json={"history": h, "k": 5, "model": "sasrec"})).json()
            for h in pair
        ]
        metrics = (await client.get("/metrics")).text
    bodies = [r.json() for r in responses]
    assert not primed["degraded"] and all(r.status_code == 200 for r in responses)
    shed = [n for n, b in enumerate(bodies) if b["degraded"]]
    if delay_s == 0.0:
        assert shed == [] and sum(fake.batch_sizes) == 3 and {b["model"] for b in bodies} == {"llmsrec"}
        assert metric_value(metrics, "llmrec_fallbacks_total", 'reason="llm_shed"') == 0.0
        return
    assert len(shed) == 1 and sum(fake.batch_sizes) == 2  # the shed history never reached the LLM
    body = bodies[shed[0]]
    assert body["model"] == "sasrec" and ids(body) == ids(sasrec[shed[0]])
    assert body["degraded_reason"].startswith("LLM queue too long: expected wait ")
    assert body["timing_ms"]["llm"] < 200  # answered without waiting for the running 0.5 s forward
    assert metric_value(metrics, "llmrec_fallbacks_total", 'reason="llm_shed"') == 1.0
