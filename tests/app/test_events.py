"""Stored histories through the HTTP API, on Redis and on the in-process store alike: appends are
idempotent on (item, timestamp), ordered by time, capped to the model's window; unknown items reported."""

from __future__ import annotations

import pytest

from tests.app.conftest import REDIS_URL, assert_envelope, serve
from training.tiny_bundle import SASREC_MAX_LEN

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("store", ["redis", "memory"])]


def settings_for(make_settings, store: str, **kw):
    return make_settings(redis_url=REDIS_URL if store == "redis" else None, **kw)


def events(pairs: list[tuple[int, float]]) -> dict:
    return {"events": [{"item_id": i, "timestamp": t} for i, t in pairs]}


async def test_appends_are_idempotent_and_ordered_by_time(make_settings, store: str) -> None:
    async with serve(settings_for(make_settings, store)) as client:
        first = (
            await client.post("/v1/users/bob/events", json=events([(3, 300), (1, 100), (2, 200.5)]))
        ).json()
        retry = (await client.post("/v1/users/bob/events", json=events([(3, 300), (1, 100)]))).json()
        more = (await client.post("/v1/users/bob/events", json=events([(3, 400), (1, 100)]))).json()
        history = (await client.get("/v1/users/bob/history")).json()
        other = (await client.get("/v1/users/carol/history")).json()
    assert (first["added"], first["history_length"]) == (3, 3)
    assert (retry["added"], retry["history_length"]) == (0, 3)
    assert (more["added"], more["history_length"]) == (1, 4)  # same item, new timestamp: a new event
    assert history == {
        "user_id": "bob",
        "events": [
            {"item_id": 1, "timestamp": 100.0},
            {"item_id": 2, "timestamp": 200.5},
            {"item_id": 3, "timestamp": 300.0},
            {"item_id": 3, "timestamp": 400.0},
        ],
    }
    assert other == {"user_id": "carol", "events": []}


async def test_history_is_capped_to_the_model_window(make_settings, store: str) -> None:
    window = SASREC_MAX_LEN  # max(SASRec max_len, LLM history_len)
    pairs = [(1 + n % 60, 1_000.0 + n) for n in range(window + 7)]
    async with serve(settings_for(make_settings, store)) as client:
        body = (await client.post("/v1/users/dave/events", json=events(pairs[:5]))).json()
        body = (await client.post("/v1/users/dave/events", json=events(pairs[5:]))).json()
        history = (await client.get("/v1/users/dave/history")).json()["events"]
        late = (await client.post("/v1/users/dave/events", json=events([(9, 1.0)]))).json()  # older than all
        after = (await client.get("/v1/users/dave/history")).json()["events"]
    assert body["history_length"] == window
    assert [(e["item_id"], e["timestamp"]) for e in history] == pairs[-window:]  # the newest, oldest first
    assert late["history_length"] == window and after == history  # trimmed away at once


async def test_unknown_items_are_stored_and_reported(make_settings, store: str) -> None:
    async with serve(settings_for(make_settings, store)) as client:
        body = (await client.post("/v1/users/erin/events", json=events([(5, 10), (777, 20), (6, 30)]))).json()
        recommended = (await client.post("/v1/recommend", json={"user_id": "erin", "k": 3})).json()
    assert body["unknown_items"] == [777] and body["history_length"] == 3
    assert recommended["unknown_items"] == [777] and recommended["history_length"] == 2


async def test_too_many_events_is_a_422(make_settings, store: str) -> None:
    async with serve(settings_for(make_settings, store, max_events=3)) as client:
        response = await client.post("/v1/users/frank/events", json=events([(1, n) for n in range(4)]))
        empty = await client.post("/v1/users/frank/events", json={"events": []})
    assert "limit is 3 (max_events)" in assert_envelope(response, 422, "invalid_request")["message"]
    assert "events" in assert_envelope(empty, 422, "validation_error")["message"]
