"""Cold items in the service, on a real tiny bundle extended by `llmrec export add-items` (A-LLMRec stage 1
over MiniLM texts): model=allmrec adds the allowed cold items whose text is nearest the history's to SASRec's
candidates and blends them with the warm candidates' mean SASRec score (or, when the scoring has a
cold_offset, SASRec's score of their text-predicted embedding); sasrec, llmsrec and popularity never return
them (a history holding one still encodes); the item route shows them; 0 cold candidates = off."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.backends.hf import HFBackend
from app.bundle import load_bundle, verify
from models.allmrec_encoder import prompt_order
from models.allmrec_scoring import blend
from models.bundle import compute_bundle_version, sha256_file
from tests.app.conftest import serve
from tests.models.tiny_llm import one_torch_thread
from training.add_items import add_items
from training.sasrec.scorer import SASRecScorer
from training.tiny_bundle import N_ITEMS, build_genre_bundle

pytestmark = pytest.mark.anyio
COLD_A = {
    "item_id": "cold-a",
    "title": 'Film "7" part 0',
    "genres": ["Horror"],
    "year": 1987,
}  # item 7's text
COLD_B = {"item_id": "cold-b", "title": "A Quiet Documentary About Bees", "genres": ["Documentary"]}
A, B = N_ITEMS + 1, N_ITEMS + 2
WARM = [1, 2, 3]


@pytest.fixture(scope="module")
def cold_bundle(tiny_work: Path) -> Path:
    with one_torch_thread():
        source = build_genre_bundle(tiny_work, "minilm")
    items = tiny_work / "cold.jsonl"
    items.write_text(json.dumps(COLD_A) + "\n" + json.dumps(COLD_B) + "\n")
    return add_items(source, items, tiny_work / "bundle_cold")


@pytest.fixture(scope="module")
def cold_backend(cold_bundle: Path) -> HFBackend:
    bundle = load_bundle(cold_bundle, verify(cold_bundle), "cpu")
    return HFBackend.from_bundle(bundle, device="cpu", dtype="auto", llm_path=None)


def body(history: list[int], model: str, include: list[int] | None, k: int, **extra: object) -> dict:
    filters = {} if include is None else {"filters": {"include_item_ids": include}}
    return {"history": history, "model": model, "k": k, **filters, **extra}


async def test_allmrec_adds_the_cold_item_nearest_the_history_text(
    make_settings, cold_bundle: Path, cold_backend: HFBackend
) -> None:
    settings = make_settings(bundle=cold_bundle, allmrec_cold_candidates=1)
    async with serve(settings, backend=cold_backend) as client:
        sasrec = await client.post("/v1/recommend", json=body([7], "sasrec", WARM, 3))
        r = await client.post("/v1/recommend", json=body([7], "allmrec", [*WARM, A, B], 4))
        # a history holding a cold item (exclude_seen off): now B's text is the nearest
        r_b = await client.post(
            "/v1/recommend", json=body([B], "allmrec", [*WARM, A, B], 4, exclude_seen=False)
        )
    assert r.status_code == 200 and r.json()["model"] == "allmrec", r.text
    got = {i["item_id"]: i["score"] for i in r.json()["items"]}
    assert set(got) == {*WARM, A}  # the one cold candidate: A, whose text is item 7's
    assert {i["item_id"] for i in r_b.json()["items"]} == {*WARM, B}
    # the served scores: LLM scores blended with SASRec's, the cold item at the warm candidates' mean
    warm = {i["item_id"]: i["score"] for i in sasrec.json()["items"]}
    ids = np.array([*warm, A])
    shown = ids[prompt_order(ids, 0)]
    llm = cold_backend.rank_candidates([[7]], [shown.tolist()])[0]
    bundle = load_bundle(cold_bundle, verify(cold_bundle), "cpu")
    assert bundle.allmrec is not None and bundle.allmrec.scoring.sasrec_weight > 0  # the blend matters
    cf = np.array([[warm.get(int(i), float(np.mean(list(warm.values())))) for i in shown]])
    expected = blend(llm[None], cf, bundle.allmrec.scoring)[0]
    for item, score in zip(shown.tolist(), expected.tolist(), strict=True):
        assert got[item] == pytest.approx(score, rel=1e-4, abs=1e-5)


async def test_allmrec_scores_a_cold_item_from_its_text_predicted_embedding(
    make_settings, cold_bundle: Path, cold_backend: HFBackend, tmp_path: Path
) -> None:
    """A bundle whose scoring carries a cold_offset: the cold candidate's SASRec side is SASRec's user vector
    against stage 1's text-predicted embedding of it, plus the offset (no longer the warm mean)."""
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(cold_bundle, bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["allmrec"]["scoring"] |= {"sasrec_weight": 0.5, "cold_offset": -0.5}
    (bundle_dir / "allmrec" / "config.json").write_text(json.dumps(manifest["allmrec"]))
    manifest["files"]["allmrec/config.json"] = sha256_file(bundle_dir / "allmrec" / "config.json")
    manifest["bundle_version"] = compute_bundle_version(manifest["dataset"]["name"], manifest["files"])
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(bundle_dir, verify(bundle_dir), "cpu")
    assert bundle.allmrec is not None and bundle.allmrec.scoring.cold_offset == -0.5
    settings = make_settings(bundle=bundle_dir, allmrec_cold_candidates=1)
    async with serve(settings, backend=cold_backend) as client:
        sasrec = await client.post("/v1/recommend", json=body([7], "sasrec", WARM, 3))
        r = await client.post("/v1/recommend", json=body([7], "allmrec", [*WARM, A, B], 4))
    assert r.status_code == 200 and r.json()["model"] == "allmrec", r.text
    got = {i["item_id"]: i["score"] for i in r.json()["items"]}
    warm = {i["item_id"]: i["score"] for i in sasrec.json()["items"]}
    ids = np.array([*warm, A])
    shown = ids[prompt_order(ids, 0)]
    llm = cold_backend.rank_candidates([[7]], [shown.tolist()])[0]
    user = SASRecScorer(bundle.sasrec).user_vectors([np.array([7])])[0]
    imputed = bundle.allmrec.stage1.imputed_table().double().numpy()[shown] @ user
    cold = np.isin(shown, [A])
    cf = np.array([[warm.get(int(i), 0.0) for i in shown]])
    expected = blend(llm[None], cf, bundle.allmrec.scoring, cold[None], imputed[None])[0]
    neutral = dataclasses.replace(bundle.allmrec.scoring, cold_offset=None)
    assert expected[cold][0] != pytest.approx(blend(llm[None], cf, neutral, cold[None])[0][cold][0])
    for item, score in zip(shown.tolist(), expected.tolist(), strict=True):
        assert got[item] == pytest.approx(score, rel=1e-4, abs=1e-5)


async def test_other_models_never_return_cold_items(make_settings, cold_bundle: Path, cold_backend) -> None:
    settings = make_settings(bundle=cold_bundle)
    async with serve(settings, backend=cold_backend) as client:
        models = (await client.get("/v1/models")).json()
        served = [m["name"] for m in models["models"] if m["recommends"] and m["name"] != "allmrec"]
        for model in served:
            only_cold = await client.post("/v1/recommend", json=body([7, A], model, [1, A, B], 3))
            everything = await client.post("/v1/recommend", json=body([7, A], model, None, 100))
            assert only_cold.status_code == 200, only_cold.text
            assert [i["item_id"] for i in only_cold.json()["items"]] == [1], model
            assert {i["item_id"] for i in everything.json()["items"]} == set(range(1, N_ITEMS + 1)) - {7}
        popular = await client.post("/v1/recommend", json={"history": [], "k": 100})
        item, warm_item = await client.get(f"/v1/items/{A}"), await client.get("/v1/items/1")
    assert {"sasrec", "llmsrec"} <= set(served)
    assert (
        popular.json()["model"] == "popularity"
        and max(i["item_id"] for i in popular.json()["items"]) <= N_ITEMS
    )
    assert item.json() == {
        "item_id": A,
        "original_id": "cold-a",
        "title": COLD_A["title"],
        "year": 1987,
        "genres": ["Horror"],
        "cold": True,
    }
    assert warm_item.json()["cold"] is False


async def test_zero_cold_candidates_turns_the_text_path_off(
    make_settings, cold_bundle: Path, cold_backend: HFBackend
) -> None:
    settings = make_settings(bundle=cold_bundle, allmrec_cold_candidates=0)
    async with serve(settings, backend=cold_backend) as client:
        r = await client.post("/v1/recommend", json=body([7], "allmrec", [*WARM, A, B], 3))
    assert r.json()["model"] == "allmrec" and {i["item_id"] for i in r.json()["items"]} == set(WARM)
