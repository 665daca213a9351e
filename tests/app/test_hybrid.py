"""The hybrid model and the default-model choice through the real app on the real Redis: the hybrid ranks by
the blend of LLM-SRec's and SASRec's own scores, reuses LLM-SRec's cached user vector and falls back to SASRec
(degraded) when the LLM fails; a request without `model` gets the bundle's best by validation NDCG@10 (the
manifest's choice, or LLMREC_DEFAULT_MODEL); GET /v1/models lists metrics, the default and why."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from app.errors import StartupError
from app.settings import Settings
from models.bundle import read_manifest
from tests.app.conftest import CountingBackend, assert_envelope, serve
from tests.app.tiny_hybrid import HYBRID, build_hybrid_bundle, valid_metrics
from training.common.llm import load_llm
from training.data.dataset import load_prepared
from training.export import export_bundle
from training.llmsrec.checkpoint import load_llmsrec
from training.llmsrec.scorer import build_encoder
from training.sasrec.checkpoint import load_sasrec

pytestmark = pytest.mark.anyio
HISTORY = [6, 12, 18, 24, 30]
# Validation NDCG@10 per model in three bundles: each bundle's best is its key (the same models, swapped).
NDCG = {
    "hybrid": {"sasrec": 0.30, "llmsrec": 0.35, "hybrid": 0.45},
    "llmsrec": {"sasrec": 0.30, "llmsrec": 0.45, "hybrid": 0.40},
    "sasrec": {"sasrec": 0.45, "llmsrec": 0.30, "hybrid": 0.40},
}
Scores = Callable[[list[int]], tuple[np.ndarray, np.ndarray]]


@pytest.fixture(scope="module")
def bundles(tiny_work: Path) -> dict[str, Path]:
    return {best: build_hybrid_bundle(tiny_work, f"bundle-best-{best}", NDCG[best]) for best in NDCG}


@pytest.fixture(scope="module")
def model_scores(tiny_work: Path) -> Scores:
    """The two models' own scores of every item (row 0 = padding), from the training side's code."""
    data = load_prepared(tiny_work / "data")
    ckpt = load_llmsrec(tiny_work / "llmsrec")
    llm = load_llm(str(tiny_work / "llm"), device="cpu", dtype="float32")
    encoder = build_encoder(llm, ckpt.heads, data, ckpt.prompt)
    sasrec = load_sasrec(tiny_work / "sasrec")

    def scores(items: list[int]) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            user = encoder.user_vectors([np.array(items)], [None])[0].numpy()
            sas_user = sasrec.user_vector(torch.tensor([items[-sasrec.config.max_len :]]))[0]
            sas = (sasrec.item_embeddings() @ sas_user).numpy()  # SASRec.score over the whole catalogue
        return ckpt.item_table @ user, sas

    return scores


def top(scores: np.ndarray, seen: list[int], k: int) -> list[int]:
    scores = scores.astype(np.float64).copy()
    scores[[0, *seen]] = -np.inf
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


def ids(body: dict[str, Any]) -> list[int]:
    return [item["item_id"] for item in body["items"]]


async def recommend(client: Any, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/recommend", json={"history": HISTORY, "k": 10} | body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_hybrid_ranks_by_the_blend_of_both_models_scores(
    make_settings, bundles, model_scores: Scores
) -> None:
    llm, sas = model_scores(HISTORY)
    w, s_llm, s_sas = HYBRID.weight, HYBRID.scale_llmsrec, HYBRID.scale_sasrec
    blend = w * llm / s_llm + (1 - w) * sas / s_sas  # by hand, from the two models' own scores
    want = top(blend, HISTORY, 10)
    assert want != top(llm, HISTORY, 10) and want != top(sas, HISTORY, 10)  # both halves count
    async with serve(make_settings(bundle=bundles["hybrid"])) as client:
        body = await recommend(client, model="hybrid")
    assert body["model"] == "hybrid" and not body["degraded"]
    assert ids(body) == want
    assert [i["score"] for i in body["items"]] == pytest.approx(blend[want].tolist(), rel=1e-4)


async def test_hybrid_reuses_the_cached_llmsrec_user_vector(make_settings, bundles, hf_backend) -> None:
    backend = CountingBackend(hf_backend)
    async with serve(make_settings(bundle=bundles["hybrid"]), backend=backend) as client:
        llmsrec = await recommend(client, model="llmsrec")
        hybrid = await recommend(client, model="hybrid")
    assert not llmsrec["cache_hit"] and hybrid["cache_hit"] and backend.calls == 1
    assert hybrid["model"] == "hybrid" and "sasrec" in hybrid["timing_ms"]


@pytest.mark.parametrize(
    ("wrap", "reason"),
    [({"delay_s": 0.6}, "LLM timed out after 0.1 s"), ({"fail": True}, "RuntimeError: engine exploded")],
)
async def test_hybrid_falls_back_to_sasrec_when_the_llm_fails(
    make_settings, bundles, hf_backend, wrap: dict[str, Any], reason: str
) -> None:
    backend = CountingBackend(hf_backend, **wrap)
    async with serve(make_settings(bundle=bundles["hybrid"], llm_timeout_s=0.1), backend=backend) as client:
        asked = await recommend(client, model="hybrid")
        default = await recommend(client)  # the default is the hybrid here
        sasrec = await recommend(client, model="sasrec")
    for body in (asked, default):
        assert body["model"] == "sasrec" and body["degraded"] and reason in body["degraded_reason"]
        assert ids(body) == ids(sasrec) and not body["cache_hit"]
    assert not sasrec["degraded"]


@pytest.mark.parametrize("best", list(NDCG))
async def test_the_default_model_follows_the_manifests_metrics(
    make_settings, bundles, hf_backend, best: str
) -> None:
    assert read_manifest(bundles[best]).default_model == best
    backend = CountingBackend(hf_backend)
    async with serve(make_settings(bundle=bundles[best]), backend=backend) as client:
        default = await recommend(client)
        asked = await recommend(client, model=best)
        ready = (await client.get("/readyz")).json()
    assert default["model"] == best and ids(default) == ids(asked)
    assert ready["default_model"] == best
    assert backend.calls == (0 if best == "sasrec" else 1)  # SASRec needs no LLM


async def test_models_lists_metrics_the_default_and_what_serves_now(
    make_settings, bundles, hf_backend
) -> None:
    backend = CountingBackend(hf_backend)
    settings = make_settings(bundle=bundles["hybrid"], api_keys=["models-key-1"])
    async with serve(settings, backend=backend) as client:
        locked = await client.get("/v1/models")
        listed = (await client.get("/v1/models", headers={"X-API-Key": "models-key-1"})).json()
        backend.fail = True  # the backend reports itself unhealthy
        unhealthy = (await client.get("/v1/models", headers={"X-API-Key": "models-key-1"})).json()
    assert_envelope(locked, 401, "unauthorized")
    assert listed["default_model"] == "hybrid" and listed["default_source"] == "manifest"
    assert "hybrid 0.4500, llmsrec 0.3500, sasrec 0.3000" in listed["default_reason"]
    assert listed["bundle_version"].startswith("tiny-")
    assert [m["name"] for m in listed["models"]] == ["sasrec", "llmsrec", "hybrid"]
    for m in listed["models"]:
        assert m["valid"] == valid_metrics(NDCG["hybrid"][m["name"]])
        assert m["comparable"] and m["recommends"] and m["servable"] and m["note"] == "ok"
        assert m["default"] == (m["name"] == "hybrid")
    now = {m["name"]: m for m in unhealthy["models"]}
    assert {name: m["servable"] for name, m in now.items()} == {
        "sasrec": True,
        "llmsrec": False,
        "hybrid": False,
    }
    assert "unhealthy" in now["hybrid"]["note"] and unhealthy["default_model"] == "hybrid"


async def test_a_bundle_without_comparable_metrics_keeps_llmsrec_as_default(
    make_settings, hf_backend
) -> None:
    async with serve(make_settings(), backend=hf_backend) as client:  # the tiny bundle: no 1+99 metrics
        listed = (await client.get("/v1/models")).json()
        default = await recommend(client)
        hybrid = await client.post("/v1/recommend", json={"history": HISTORY, "model": "hybrid"})
    assert listed["default_model"] == "llmsrec" and listed["default_source"] == "fallback"
    assert "no model has validation ndcg@10 on the 1+99 candidates" in listed["default_reason"]
    assert not any(m["comparable"] for m in listed["models"]) and default["model"] == "llmsrec"
    assert "model 'hybrid' is not in bundle" in assert_envelope(hybrid, 422, "invalid_request")["message"]


async def test_an_older_manifest_without_default_model_is_chosen_by_its_metrics(
    make_settings, bundles, hf_backend, tmp_path: Path
) -> None:
    bundle = shutil.copytree(bundles["llmsrec"], tmp_path / "older")
    raw = json.loads((bundle / "manifest.json").read_text())
    del raw["default_model"]  # the manifest is not among the hashed files
    (bundle / "manifest.json").write_text(json.dumps(raw))
    async with serve(make_settings(bundle=bundle), backend=hf_backend) as client:
        listed = (await client.get("/v1/models")).json()
        default = await recommend(client)
    assert listed["default_model"] == "llmsrec" and listed["default_source"] == "metrics"
    assert default["model"] == "llmsrec"


async def test_the_default_model_setting_overrides_the_manifest(
    make_settings, bundles, hf_backend, tiny_work: Path, tmp_path: Path
) -> None:
    async with serve(
        make_settings(bundle=bundles["hybrid"], default_model="sasrec"), backend=hf_backend
    ) as c:
        default = await recommend(c)
        listed = (await c.get("/v1/models")).json()
    assert default["model"] == "sasrec" and not default["degraded"]
    assert (listed["default_source"], listed["default_reason"]) == ("setting", "LLMREC_DEFAULT_MODEL=sasrec")
    with pytest.raises(StartupError, match=r"LLMREC_DEFAULT_MODEL=hybrid, but bundle tiny-\w+ served here"):
        async with serve(make_settings(default_model="hybrid"), backend=hf_backend):
            pass
    sasrec_only = export_bundle(tiny_work / "data", tiny_work / "sasrec", None, tmp_path / "sasrec-only")
    with pytest.raises(StartupError, match=r"LLMREC_DEFAULT_MODEL=llmsrec, .* offers only sasrec \("):
        async with serve(make_settings(bundle=sasrec_only, default_model="llmsrec")):
            pass
    with pytest.raises(ValidationError, match="default_model"):
        Settings(bundle=sasrec_only, default_model="best")  # type: ignore[arg-type]
