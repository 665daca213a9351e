"""POST /v1/recommend through the real app on the real Redis: results equal the training-side encoder's
ranking, seen items never come back, the cache keys on exactly what the prompt shows, stored histories,
unknown items, popularity for empty histories, caller filters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.llmsrec import LLMSRecEncoder
from models.sasrec import SASRec
from tests.app.conftest import CountingBackend, assert_envelope, serve
from training.common.llm import load_llm
from training.data.dataset import load_prepared
from training.llmsrec.checkpoint import load_llmsrec
from training.llmsrec.scorer import build_encoder
from training.sasrec.checkpoint import load_sasrec
from training.tiny_bundle import N_ITEMS, item_genres

pytestmark = pytest.mark.anyio
DAY = 86_400


@dataclass
class Oracle:
    """The training side's own path to the same numbers: its encoder, item table and SASRec."""

    encoder: LLMSRecEncoder
    item_table: np.ndarray
    sasrec: SASRec
    popularity: np.ndarray

    def llmsrec(self, items: list[int], stamps: list[float] | None, k: int) -> list[int]:
        with torch.inference_mode():
            user = self.encoder.user_vectors(
                [np.array(items)], [None if stamps is None else np.array(stamps)]
            )
        return _top(self.item_table @ user[0].numpy(), items, k)

    def sasrec_ranking(self, items: list[int], k: int) -> list[int]:
        with torch.inference_mode():
            user = self.sasrec.user_vector(torch.tensor([items[-self.sasrec.config.max_len :]]))[0]
            table = self.sasrec.item_embeddings()
            return _top((table @ user).numpy(), items, k)


def _top(scores: np.ndarray, seen: list[int], k: int) -> list[int]:
    scores = scores.astype(np.float64).copy()
    scores[[0, *seen]] = -np.inf
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


@pytest.fixture(scope="module")
def oracle(tiny_work: Path) -> Oracle:
    data = load_prepared(tiny_work / "data")
    ckpt = load_llmsrec(tiny_work / "llmsrec")
    llm = load_llm(str(tiny_work / "llm"), device="cpu", dtype="float32")
    popularity = np.load(tiny_work / "bundle" / "popularity.npy")
    return Oracle(
        build_encoder(llm, ckpt.heads, data, ckpt.prompt),
        ckpt.item_table,
        load_sasrec(tiny_work / "sasrec"),
        popularity,
    )


def ids(body: dict[str, Any]) -> list[int]:
    return [item["item_id"] for item in body["items"]]


async def test_body_history_is_ranked_like_the_training_encoder(make_settings, oracle: Oracle) -> None:
    items, stamps = [5, 9, 12, 40, 33], [9e8 + DAY * n for n in range(5)]
    history = [{"item_id": i, "timestamp": t} for i, t in zip(items, stamps, strict=True)]
    async with serve(make_settings()) as client:
        response = await client.post("/v1/recommend", json={"history": history, "k": 7})
    body = response.json()
    assert response.status_code == 200, body
    assert ids(body) == oracle.llmsrec(items, stamps, 7)
    assert body["model"] == "llmsrec" and not body["degraded"] and not body["cache_hit"]
    assert body["history_source"] == "body" and body["history_length"] == 5 and body["unknown_items"] == []
    assert body["bundle_version"].startswith("tiny-") and len(body["request_id"]) == 32
    assert response.headers["x-request-id"] == body["request_id"]
    assert all(
        item["title"] == f'Film "{item["item_id"]}" part {item["item_id"] % 7}' for item in body["items"]
    )
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("model", ["llmsrec", "sasrec"])
async def test_seen_items_are_never_returned(make_settings, model: str) -> None:
    history = [3, 17, 17, 25, 31, 44, 2, 58, 60, 1, 7, 8]  # 11 distinct, one repeated
    async with serve(make_settings()) as client:
        body = (
            await client.post("/v1/recommend", json={"history": history, "k": 100, "model": model})
        ).json()
        kept = (
            await client.post("/v1/recommend", json={"history": history, "k": 100, "exclude_seen": False})
        ).json()
    assert body["model"] == model
    assert not set(ids(body)) & set(history)
    assert sorted(ids(body)) == sorted(set(range(1, N_ITEMS + 1)) - set(history))  # everything else, once
    assert sorted(ids(kept)) == list(range(1, N_ITEMS + 1))


async def test_cache_keys_on_exactly_what_the_prompt_shows(make_settings, hf_backend) -> None:
    backend = CountingBackend(hf_backend)
    window = list(range(10, 20))  # history_len = 10: earlier items are not in the prompt
    async with serve(make_settings(), backend=backend) as client:
        first = (await client.post("/v1/recommend", json={"history": window, "k": 5})).json()
        second = (await client.post("/v1/recommend", json={"history": window, "k": 5})).json()
        assert (first["cache_hit"], second["cache_hit"], backend.calls) == (False, True, 1)
        assert ids(second) == ids(first) and "llm" not in second["timing_ms"]
        longer = (await client.post("/v1/recommend", json={"history": [1, 2, *window], "k": 5})).json()
        assert longer["cache_hit"] and backend.calls == 1  # same prompt, so the same user vector
        assert not {1, 2} & set(ids(longer))  # ... but the longer history's seen items are still excluded
        dated = [{"item_id": i, "timestamp": 9e8 + DAY * n} for n, i in enumerate(window)]
        timed = (await client.post("/v1/recommend", json={"history": dated, "k": 5})).json()
        assert not timed["cache_hit"] and backend.calls == 2  # dates are in the prompt: another key
        metrics = (await client.get("/metrics")).text
    assert 'llmrec_cache_lookups_total{result="l1_hit"} 2.0' in metrics  # this replica's L1, before Redis
    assert "llmrec_cache_hit_ratio 0.5" in metrics


async def test_stored_history_is_used_when_the_body_has_none(make_settings, oracle: Oracle) -> None:
    events = [{"item_id": i, "timestamp": 1_000 + n} for n, i in enumerate([4, 8, 15, 16, 23, 42])]
    async with serve(make_settings()) as client:
        assert (await client.post("/v1/users/alice/events", json={"events": events})).status_code == 200
        body = (await client.post("/v1/recommend", json={"user_id": "alice", "k": 6})).json()
        override = (
            await client.post("/v1/recommend", json={"user_id": "alice", "history": [1], "k": 6})
        ).json()
    assert body["history_source"] == "stored" and body["history_length"] == 6
    assert ids(body) == oracle.llmsrec([4, 8, 15, 16, 23, 42], [1_000 + n for n in range(6)], 6)
    assert override["history_source"] == "body" and override["history_length"] == 1


async def test_unknown_items_are_reported_and_skipped(make_settings) -> None:
    async with serve(make_settings()) as client:
        mixed = (await client.post("/v1/recommend", json={"history": [7, 999, 9, 5000, 999], "k": 5})).json()
        clean = (await client.post("/v1/recommend", json={"history": [7, 9], "k": 5})).json()
    assert mixed["unknown_items"] == [999, 5000] and mixed["history_length"] == 2
    assert ids(mixed) == ids(clean) and clean["cache_hit"]  # the same prompt as the mixed history


@pytest.mark.parametrize("body", [{"history": []}, {"history": [1000, 2000]}, {"user_id": "nobody-ever"}])
async def test_empty_history_gets_popularity(make_settings, oracle: Oracle, body: dict[str, Any]) -> None:
    async with serve(make_settings()) as client:
        result = (await client.post("/v1/recommend", json=body | {"k": 8})).json()
    assert result["model"] == "popularity" and not result["degraded"] and result["history_length"] == 0
    assert ids(result) == _top(oracle.popularity, [], 8)  # most popular first, ties to the lower id
    assert [item["score"] for item in result["items"]] == sorted(oracle.popularity[ids(result)], reverse=True)
    assert result["history_source"] == ("none" if "user_id" in body else "body")


async def test_caller_filters(make_settings) -> None:
    history = [1, 2, 3]
    async with serve(make_settings()) as client:

        async def recommend(filters: dict[str, Any], k: int = 100) -> dict[str, Any]:
            response = await client.post(
                "/v1/recommend", json={"history": history, "k": k, "filters": filters}
            )
            assert response.status_code == 200, response.text
            return response.json()

        horror = await recommend({"genres": ["Horror"]})
        assert ids(horror) and all("Horror" in item_genres(i) for i in ids(horror))
        assert len(ids(horror)) == sum("Horror" in item_genres(i) for i in range(4, N_ITEMS + 1))
        allowed = await recommend({"include_item_ids": [2, 10, 11, 12], "exclude_item_ids": [11]})
        assert sorted(ids(allowed)) == [10, 12]  # 2 was seen, 11 denied
        denied = await recommend({"exclude_item_ids": list(range(1, 55))}, k=10)
        assert sorted(ids(denied)) == [55, 56, 57, 58, 59, 60]  # widened past the FAISS top-N
        unknown = await client.post(
            "/v1/recommend", json={"history": history, "filters": {"genres": ["Jazz"]}}
        )
    error = assert_envelope(unknown, 422, "invalid_request")
    assert "Jazz" in error["message"] and "Horror" in error["message"]


async def test_sasrec_model_on_request(make_settings, oracle: Oracle, hf_backend) -> None:
    backend = CountingBackend(hf_backend)
    history = [11, 22, 33, 44]
    async with serve(make_settings(), backend=backend) as client:
        body = (
            await client.post("/v1/recommend", json={"history": history, "k": 6, "model": "sasrec"})
        ).json()
    assert body["model"] == "sasrec" and not body["degraded"] and backend.calls == 0
    assert ids(body) == oracle.sasrec_ranking(history, 6)
