"""POST /v1/recommend with model=allmrec on a tiny bundle holding a real (trained) A-LLMRec part: SASRec's
candidates re-ranked by the backend's own title log-likelihoods, a cached second answer, the SASRec fallback
(LLM failure, timeout), filters that leave fewer candidates batched beside full prompts, and the 422s."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from app.backends.hf import HFBackend
from models.allmrec_encoder import prompt_order
from models.allmrec_scoring import ALLMRecScoring, blend
from tests.app.conftest import CountingBackend, assert_envelope, metric_value, serve
from training.tiny_bundle import item_genres

pytestmark = pytest.mark.anyio
HISTORY = [3, 6, 7, 9, 12, 15]
N_CANDIDATES = 20  # settings.allmrec_candidates default


class RankingBackend(CountingBackend):
    """CountingBackend that also wraps rank_candidates (delay, failure, batch sizes)."""

    def __init__(self, inner: Any, delay_s: float = 0.0, fail: bool = False) -> None:
        super().__init__(inner, delay_s, fail)
        self.rank_batches: list[list[int]] = []  # candidate counts per prompt of each call

    def rank_candidates(self, histories: Any, candidates: Any) -> list[np.ndarray]:
        self.rank_batches.append([len(c) for c in candidates])
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("ranking engine exploded")
        return self.inner.rank_candidates(histories, candidates)


def expected(
    backend: HFBackend, history: list[int], sasrec_items: list[dict], k: int, scoring: ALLMRecScoring
) -> list[tuple[int, float]]:
    """What A-LLMRec should answer, computed here: the prompt order, the backend's LLM scores blended with
    SASRec's retrieval scores as the bundle's scoring says, best first."""
    ids = np.array([i["item_id"] for i in sasrec_items])
    sasrec = {i["item_id"]: i["score"] for i in sasrec_items}
    shown = ids[prompt_order(ids, 0)]
    llm = backend.rank_candidates([history], [shown.tolist()])[0]
    scores = blend(llm[None], np.array([[sasrec[int(i)] for i in shown]]), scoring)[0]
    by_id = dict(zip(shown.tolist(), scores.tolist(), strict=True))
    return sorted(((int(i), by_id[int(i)]) for i in ids), key=lambda p: -p[1])[:k]


async def test_reranks_sasrec_candidates_by_title_likelihood_and_caches(
    make_settings, allmrec_bundle, allmrec_backend
) -> None:
    wrapped = RankingBackend(allmrec_backend)
    async with serve(make_settings(bundle=allmrec_bundle), backend=wrapped) as client:
        sasrec = await client.post(
            "/v1/recommend", json={"history": HISTORY, "k": N_CANDIDATES, "model": "sasrec"}
        )
        first = await client.post("/v1/recommend", json={"history": HISTORY, "k": 5, "model": "allmrec"})
        second = await client.post("/v1/recommend", json={"history": HISTORY, "k": 3, "model": "allmrec"})
        metrics = (await client.get("/metrics")).text
    assert first.status_code == 200, first.text
    body, again = first.json(), second.json()
    assert body["model"] == "allmrec" and not body["degraded"] and not body["cache_hit"]
    candidates = [i["item_id"] for i in sasrec.json()["items"]]
    assert len(candidates) == N_CANDIDATES and not set(candidates) & set(HISTORY)
    scoring = ALLMRecScoring(
        **json.loads((allmrec_bundle / "manifest.json").read_text())["allmrec"]["scoring"]
    )
    want = expected(allmrec_backend, HISTORY, sasrec.json()["items"], 5, scoring)
    assert [i["item_id"] for i in body["items"]] == [i for i, _ in want]
    assert [i["score"] for i in body["items"]] == pytest.approx([s for _, s in want], abs=1e-4)
    assert all(s < 0 for _, s in want)  # summed log-probabilities
    assert again["cache_hit"] and again["model"] == "allmrec" and len(again["items"]) == 3
    assert [i["item_id"] for i in again["items"]] == [i for i, _ in want[:3]]
    assert wrapped.rank_batches == [[N_CANDIDATES]]  # one forward for both requests
    assert "rerank" in body["timing_ms"] and "llm" in body["timing_ms"]
    assert metric_value(metrics, "llmrec_recommendations_total", 'model="allmrec"') == 2.0


async def test_llm_failure_and_timeout_answer_with_sasrec_order(
    make_settings, allmrec_bundle, allmrec_backend
) -> None:
    failing = RankingBackend(allmrec_backend, fail=True)
    async with serve(make_settings(bundle=allmrec_bundle), backend=failing) as client:
        sasrec = (await client.post("/v1/recommend", json={"history": HISTORY, "model": "sasrec"})).json()
        body = (await client.post("/v1/recommend", json={"history": HISTORY, "model": "allmrec"})).json()
        metrics = (await client.get("/metrics")).text
    assert body["degraded"] and body["model"] == "sasrec"
    assert "ranking engine exploded" in body["degraded_reason"] and "SASRec order" in body["degraded_reason"]
    assert body["items"] == sasrec["items"]
    assert metric_value(metrics, "llmrec_fallbacks_total", 'reason="allmrec_llm_error"') == 1.0
    slow = RankingBackend(allmrec_backend, delay_s=0.6)
    async with serve(make_settings(bundle=allmrec_bundle, llm_timeout_s=0.1), backend=slow) as client:
        late = (await client.post("/v1/recommend", json={"history": HISTORY, "model": "allmrec"})).json()
    assert late["degraded"] and "timed out after 0.1 s" in late["degraded_reason"]
    assert late["items"] == sasrec["items"]


async def test_filtered_and_full_prompts_share_one_batch(
    make_settings, allmrec_bundle, allmrec_backend
) -> None:
    wrapped = RankingBackend(allmrec_backend)
    settings = make_settings(bundle=allmrec_bundle, batch_window_ms=100.0)  # concurrent misses: one batch
    comedy = {"history": [1, 2, 4], "k": 4, "model": "allmrec", "filters": {"genres": ["Comedy"]}}
    async with serve(settings, backend=wrapped) as client:
        warm = client.post("/v1/recommend", json={"history": [5, 8], "model": "allmrec"})
        full = client.post("/v1/recommend", json={"history": [10, 11, 13], "k": 4, "model": "allmrec"})
        filtered = client.post("/v1/recommend", json=comedy)
        _, a, b = await asyncio.gather(warm, full, filtered)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json()["model"] == b.json()["model"] == "allmrec"
    assert all("Comedy" in item_genres(i["item_id"]) for i in b.json()["items"])
    assert all(np.isfinite(i["score"]) for i in a.json()["items"] + b.json()["items"])
    n_comedy = sum("Comedy" in item_genres(i) for i in range(1, 61) if i not in (1, 2, 4))
    assert n_comedy < N_CANDIDATES
    counts = sorted(n for batch in wrapped.rank_batches for n in batch)
    assert counts == sorted([n_comedy, N_CANDIDATES, N_CANDIDATES])
    assert any(n_comedy in batch and N_CANDIDATES in batch for batch in wrapped.rank_batches)


async def test_bad_requests(make_settings, allmrec_bundle) -> None:
    async with serve(make_settings(bundle=allmrec_bundle)) as client:
        too_many = await client.post(
            "/v1/recommend", json={"history": HISTORY, "k": N_CANDIDATES + 1, "model": "allmrec"}
        )
        empty = (await client.post("/v1/recommend", json={"history": [], "model": "allmrec"})).json()
    message = assert_envelope(too_many, 422, "invalid_request")["message"]
    assert "k=21" in message and "allmrec_candidates" in message
    assert empty["model"] == "popularity" and not empty["degraded"]
    async with serve(make_settings()) as client:  # the plain tiny bundle: SASRec + LLM-SRec only
        missing = await client.post("/v1/recommend", json={"history": HISTORY, "model": "allmrec"})
    message = assert_envelope(missing, 422, "invalid_request")["message"]
    assert "model 'allmrec' is not in bundle" in message and "llmsrec" in message


async def test_a_busy_slow_ranker_sheds_to_sasrec_order(
    make_settings, allmrec_bundle, allmrec_backend
) -> None:
    slow = RankingBackend(allmrec_backend, delay_s=0.5)
    pair = ([1, 2, 3, 4], [10, 11, 12, 13])
    settings = make_settings(bundle=allmrec_bundle, llm_shed_budget_s=0.2, batch_window_ms=0)
    async with serve(settings, backend=slow) as client:
        primed = (await client.post("/v1/recommend", json={"history": HISTORY, "model": "allmrec"})).json()
        responses = await asyncio.gather(
            *(client.post("/v1/recommend", json={"history": h, "model": "allmrec"}) for h in pair)
        )
        sasrec = [
            (await client.post("/v1/recommend", json={"history": h, "model": "sasrec"})).json() for h in pair
        ]
        metrics = (await client.get("/metrics")).text
    bodies = [r.json() for r in responses]
    shed = [n for n, b in enumerate(bodies) if b["degraded"]]
    assert primed["model"] == "allmrec" and len(shed) == 1 and len(slow.rank_batches) == 2
    body = bodies[shed[0]]
    assert body["model"] == "sasrec" and body["items"] == sasrec[shed[0]]["items"]
    assert "LLM queue too long" in body["degraded_reason"] and "SASRec order" in body["degraded_reason"]
    assert metric_value(metrics, "llmrec_fallbacks_total", 'reason="allmrec_llm_shed"') == 1.0
