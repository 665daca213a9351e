"""POST /v1/explain/genre on a tiny bundle with a real A-LLMRec genre model: ranked genres equal the backend's
own scores, a cached second answer, the genre-count fallback (LLM failure, timeout, bundle without genre
model), unknown items, empty history, stored history, bad input, API keys."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.backends.hf import HFBackend
from models.allmrec_scoring import GenreBlend, blend_genre_scores, history_genre_shares
from tests.app.conftest import CountingBackend, assert_envelope, metric_value, serve
from training.tiny_bundle import GENRES, N_ITEMS, item_genres

pytestmark = pytest.mark.anyio
HISTORY = [3, 6, 7, 9, 12, 15]  # item_genres: Drama 5 of 6, Horror 3, Comedy 1, Action 1
KEY = "genre-key-123"


@pytest.fixture
def genre_bundle(allmrec_bundle: Path) -> Path:
    return allmrec_bundle


@pytest.fixture
def genre_backend(allmrec_backend: HFBackend) -> HFBackend:
    return allmrec_backend


class GenreBackend(CountingBackend):
    """CountingBackend that also wraps explain_genres (delay, failure, call count)."""

    def __init__(self, inner: Any, delay_s: float = 0.0, fail: bool = False) -> None:
        super().__init__(inner, delay_s, fail)
        self.genre_calls = 0

    def explain_genres(self, histories: Any) -> tuple[np.ndarray, list[str]]:
        self.genre_calls += 1
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("genre engine exploded")
        return self.inner.explain_genres(histories)


def counts_ranking(history: list[int]) -> list[tuple[str, float]]:
    """Genres by share of history items having them, ties in vocabulary order (hand-computed)."""
    shares = [(g, sum(g in item_genres(i) for i in history) / len(history)) for g in GENRES]
    return sorted(shares, key=lambda p: -p[1])


async def test_genres_are_the_models_ranking_and_cached(make_settings, genre_bundle, genre_backend) -> None:
    wrapped = GenreBackend(genre_backend)
    async with serve(make_settings(bundle=genre_bundle), backend=wrapped) as client:
        first = await client.post("/v1/explain/genre", json={"history": HISTORY, "top_n": 3})
        second = (await client.post("/v1/explain/genre", json={"history": HISTORY, "top_n": 4})).json()
        metrics = (await client.get("/metrics")).text
    body = first.json()
    assert first.status_code == 200, first.text
    assert body["source"] == "allmrec" and not body["degraded"] and not body["cache_hit"]
    scores, _ = genre_backend.explain_genres([HISTORY[-10:]])
    # the served ranking: the LLM's genre scores blended with the history's genre shares (bundle's weight)
    blend = GenreBlend(**json.loads((genre_bundle / "manifest.json").read_text())["allmrec_genre"]["blend"])
    matrix = np.array(
        [[i > 0 and g in item_genres(i) for g in GENRES] for i in range(N_ITEMS + 1)], dtype=float
    )
    mixed = blend_genre_scores(scores, history_genre_shares([HISTORY], matrix), blend)[0]
    probs = np.exp(mixed - mixed.max()) / np.exp(mixed - mixed.max()).sum()
    want = [GENRES[g] for g in np.argsort(-probs, kind="stable")]
    assert [g["name"] for g in body["genres"]] == want[:3]
    assert [g["score"] for g in body["genres"]] == pytest.approx(sorted(probs, reverse=True)[:3], abs=1e-5)
    # the sentence is written from the list: the same genres, in order, once each, a whole sentence
    assert (
        body["explanation"]
        == f"The movie genres this user likes most are: {want[0]}, {want[1]} and {want[2]}."
    )
    assert second["cache_hit"] and [g["name"] for g in second["genres"]] == want[:4]
    assert second["explanation"].endswith(f"{want[2]} and {want[3]}.") and wrapped.genre_calls == 1
    assert metric_value(metrics, "llmrec_llm_batch_size_count") >= 1.0


async def test_llm_failure_returns_history_genre_counts(make_settings, genre_bundle, genre_backend) -> None:
    failing = GenreBackend(genre_backend, fail=True)
    async with serve(make_settings(bundle=genre_bundle), backend=failing) as client:
        body = (await client.post("/v1/explain/genre", json={"history": HISTORY, "top_n": 2})).json()
        again = (await client.post("/v1/explain/genre", json={"history": HISTORY, "top_n": 2})).json()
        metrics = (await client.get("/metrics")).text
    want = counts_ranking(HISTORY)[:2]
    assert body["degraded"] and body["source"] == "history_counts"
    assert "genre engine exploded" in body["degraded_reason"]
    assert [(g["name"], g["score"]) for g in body["genres"]] == [(n, pytest.approx(s)) for n, s in want]
    top = want[0][0]
    assert body["explanation"] == f"Most frequent genres in this history: {top} and {want[1][0]}."
    assert not again["cache_hit"] and again["degraded"]  # a fallback is never cached
    assert metric_value(metrics, "llmrec_fallbacks_total", 'reason="genre_llm_error"') == 2.0


async def test_llm_timeout_degrades(make_settings, genre_bundle, genre_backend) -> None:
    slow = GenreBackend(genre_backend, delay_s=0.6)
    async with serve(make_settings(bundle=genre_bundle, llm_timeout_s=0.1), backend=slow) as client:
        body = (await client.post("/v1/explain/genre", json={"history": HISTORY})).json()
    assert body["degraded"] and "timed out after 0.1 s" in body["degraded_reason"]
    assert body["genres"][0]["name"] == counts_ranking(HISTORY)[0][0]


async def test_bundle_without_genre_model_degrades(make_settings) -> None:
    async with serve(make_settings()) as client:  # the plain tiny bundle: SASRec + LLM-SRec only
        body = (await client.post("/v1/explain/genre", json={"history": HISTORY, "top_n": 4})).json()
    assert body["degraded"] and body["source"] == "history_counts"
    assert "no A-LLMRec genre model" in body["degraded_reason"]
    assert [g["name"] for g in body["genres"]] == [n for n, _ in counts_ranking(HISTORY)]


async def test_unknown_items_skipped_and_empty_history_uses_popularity(make_settings, genre_bundle) -> None:
    async with serve(make_settings(bundle=genre_bundle)) as client:
        mixed = (await client.post("/v1/explain/genre", json={"history": [3, 999, {"item_id": 6}]})).json()
        empty = (await client.post("/v1/explain/genre", json={"history": [], "top_n": 4})).json()
        unknown_only = (await client.post("/v1/explain/genre", json={"history": [500, 501]})).json()
    assert mixed["unknown_items"] == [999] and mixed["history_length"] == 2 and mixed["source"] == "allmrec"
    assert empty["source"] == "popularity" and not empty["degraded"] and len(empty["genres"]) == 4
    assert sum(g["score"] for g in empty["genres"]) == pytest.approx(1.0)
    assert unknown_only["source"] == "popularity" and unknown_only["unknown_items"] == [500, 501]


async def test_stored_history_is_used_for_a_user_id(make_settings, genre_bundle) -> None:
    events = [{"item_id": i, "timestamp": 1000 + n} for n, i in enumerate(HISTORY)]
    async with serve(make_settings(bundle=genre_bundle)) as client:
        await client.post("/v1/users/g1/events", json={"events": events})
        stored = (await client.post("/v1/explain/genre", json={"user_id": "g1"})).json()
        body = (await client.post("/v1/explain/genre", json={"history": HISTORY})).json()
        nobody = (await client.post("/v1/explain/genre", json={"user_id": "nobody"})).json()
    assert stored["history_source"] == "stored" and stored["history_length"] == len(HISTORY)
    assert stored["genres"] == body["genres"]
    assert nobody["history_source"] == "none" and nobody["source"] == "popularity"


async def test_bad_input_is_a_422_in_the_envelope(make_settings) -> None:
    async with serve(make_settings(max_history=5)) as client:
        cases = [
            {},
            {"history": [1], "top_n": 0},
            {"history": [1], "top_n": 51},
            {"history": [0]},
            {"history": ["1"]},
            {"history": [1], "extra": True},
            {"user_id": "bad id!"},
        ]
        for case in cases:
            assert_envelope(await client.post("/v1/explain/genre", json=case), 422, "validation_error")
        long = await client.post("/v1/explain/genre", json={"history": list(range(1, 7))})
        assert "limit is 5 (max_history)" in assert_envelope(long, 422, "invalid_request")["message"]
        broken = await client.post(
            "/v1/explain/genre", content=b'{"history": [1,', headers={"content-type": "application/json"}
        )
        assert "invalid JSON" in assert_envelope(broken, 422, "validation_error")["message"]


async def test_api_key_is_required_when_set(make_settings) -> None:
    async with serve(make_settings(api_keys=[KEY])) as client:
        missing = await client.post("/v1/explain/genre", json={"history": [1]})
        assert_envelope(missing, 401, "unauthorized")
        ok = await client.post("/v1/explain/genre", json={"history": [1]}, headers={"X-API-Key": KEY})
    assert ok.status_code == 200 and ok.json()["genres"]


async def test_a_busy_slow_genre_llm_sheds_to_genre_counts(
    make_settings, genre_bundle, genre_backend
) -> None:
    slow = GenreBackend(genre_backend, delay_s=0.5)
    pair = (HISTORY[:-1], HISTORY[1:])  # new prompts, each with one clear favourite genre
    settings = make_settings(bundle=genre_bundle, llm_shed_budget_s=0.2, batch_window_ms=0)
    async with serve(settings, backend=slow) as client:
        primed = (await client.post("/v1/explain/genre", json={"history": HISTORY})).json()
        responses = await asyncio.gather(
            *(client.post("/v1/explain/genre", json={"history": h, "top_n": 4}) for h in pair)
        )
        metrics = (await client.get("/metrics")).text
    bodies = [r.json() for r in responses]
    shed = [n for n, b in enumerate(bodies) if b["degraded"]]
    assert primed["source"] == "allmrec" and len(shed) == 1 and slow.genre_calls == 2
    body = bodies[shed[0]]
    assert body["source"] == "history_counts" and "LLM queue too long" in body["degraded_reason"]
    assert body["genres"][0]["name"] == counts_ranking(pair[shed[0]])[0][0]
    assert metric_value(metrics, "llmrec_fallbacks_total", 'reason="genre_llm_shed"') == 1.0
