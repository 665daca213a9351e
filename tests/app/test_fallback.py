"""Degradation: an LLM backend that times out or fails gives SASRec rankings of the same history with
degraded=true (never an error); the fallback is counted and is not cached as an LLM-SRec vector."""

from __future__ import annotations

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
