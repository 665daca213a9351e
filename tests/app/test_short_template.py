"""A bundle trained with our short LLM-SRec template: the service rebuilds that template (no dates, no item
numbers) and keys its cache on what the prompt shows, so dated and undated histories share one vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.llmsrec import LLMSRecEncoder
from models.prompts import SHORT_TEMPLATE_VERSION
from tests.app.conftest import CountingBackend, serve
from training.common.llm import load_llm
from training.data.dataset import load_prepared
from training.llmsrec.checkpoint import load_llmsrec
from training.tiny_bundle import build_tiny_bundle

DAY = 86_400
pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def short_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("short"), SHORT_TEMPLATE_VERSION)


async def test_short_template_bundle_serves_its_own_prompt_and_ignores_dates(
    make_settings, short_bundle
) -> None:
    from app.backends.hf import HFBackend
    from app.bundle import load_bundle, verify

    bundle = load_bundle(short_bundle, verify(short_bundle), "cpu")
    assert bundle.prompt is not None and bundle.prompt.version == SHORT_TEMPLATE_VERSION
    backend = CountingBackend(HFBackend.from_bundle(bundle, device="cpu", dtype="auto", llm_path=None))
    window = list(range(10, 20))
    dated = [{"item_id": i, "timestamp": 9e8 + DAY * n} for n, i in enumerate(window)]
    async with serve(make_settings(bundle=short_bundle), backend=backend) as client:
        plain = (
            await client.post("/v1/recommend", json={"history": window, "k": 5, "model": "llmsrec"})
        ).json()
        timed = (
            await client.post("/v1/recommend", json={"history": dated, "k": 5, "model": "llmsrec"})
        ).json()
    assert (plain["cache_hit"], timed["cache_hit"], backend.calls) == (False, True, 1)
    assert [i["item_id"] for i in plain["items"]] == [i["item_id"] for i in timed["items"]]
    # the served vector is the short prompt's: recompute it from the checkpoint with models/ only
    work = short_bundle.parent
    data, ckpt = load_prepared(work / "data"), load_llmsrec(work / "llmsrec")
    llm = load_llm(str(work / "llm"), device="cpu", dtype="float32")
    encoder = LLMSRecEncoder(
        llm.model, llm.tokenizer, ckpt.heads, [it.title for it in data.items], llm.special_tokens, ckpt.prompt
    )
    assert "Item No." not in encoder.user_prompts([window])[0]
    with torch.no_grad():
        user = encoder.user_vectors([window]).numpy()[0]
    scores = ckpt.item_table[1:] @ user
    scores[np.array(window) - 1] = -np.inf
    assert [i["item_id"] for i in plain["items"]] == (np.argsort(-scores, kind="stable")[:5] + 1).tolist()
