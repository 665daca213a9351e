"""Startup: a bad bundle or an LLM that does not match it stops the service with a message naming the
problem; settings are strict; readiness, OpenAPI docs and a SASRec-only bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from app.errors import StartupError
from app.main import create_app
from app.settings import Settings
from tests.app.conftest import assert_envelope, serve
from training.common.llm import write_tiny_llama
from training.export import export_bundle

pytestmark = pytest.mark.anyio


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_a_hash_mismatch_refuses_to_start_naming_the_file(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    weights = bundle / "sasrec" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(StartupError, match=r"sasrec/model\.safetensors: sha256 mismatch"):
        create_app(Settings(bundle=bundle, device="cpu"))


def test_missing_files_and_non_bundles_are_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    (bundle / "item_vectors.npy").unlink()
    with pytest.raises(StartupError, match=r"item_vectors\.npy: listed in the manifest but missing"):
        create_app(Settings(bundle=bundle, device="cpu"))
    with pytest.raises(StartupError, match=r"manifest\.json is missing"):
        create_app(Settings(bundle=tmp_path, device="cpu"))


def test_a_prompt_template_this_code_does_not_know_is_refused_before_loading(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["llm"]["prompt_template_version"] = "llmsrec-v0"  # the manifest is not among the hashed files
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StartupError, match=r"llm prompt_template_version 'llmsrec-v0' is not one this code"):
        create_app(Settings(bundle=bundle, device="cpu"))


async def test_an_llm_that_does_not_match_the_bundle_is_refused(make_settings, tmp_path: Path) -> None:
    other = write_tiny_llama(tmp_path / "other-llm", hidden=16)
    with pytest.raises(StartupError, match=r"hidden size 16 != llmsrec llm_hidden 32"):
        async with serve(make_settings(llm_path=str(other))):
            pass
    with pytest.raises(StartupError, match=r"cannot load the LLM from"):
        async with serve(make_settings(llm_path=str(tmp_path / "nowhere"))):
            pass


async def test_the_vllm_backend_is_refused_clearly(make_settings) -> None:
    # On CPU: no vllm installed here, and vLLM needs CUDA where it is (tests/app/backends/test_vllm.py).
    with pytest.raises(StartupError, match=r"vllm is not installed|needs device cuda"):
        async with serve(make_settings(llm_backend="vllm")):
            pass


def test_settings_are_strict(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        Settings(bundle=tiny_bundle, colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="device"):
        Settings(bundle=tiny_bundle, device="tpu")
    with pytest.raises(ValidationError, match="llm_backend"):
        Settings(bundle=tiny_bundle, llm_backend="onnx")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="at least 8 characters"):
        Settings(bundle=tiny_bundle, api_keys=["short"])
    with pytest.raises(ValidationError, match="max_batch_size"):
        Settings.from_flat(bundle=tiny_bundle, max_batch_size=0)
    with pytest.raises(ValidationError, match=r"redis\.prefix"):  # a group's bounds hold too
        Settings.from_flat(bundle=tiny_bundle, redis_prefix="has space")
    with pytest.raises(ValidationError, match=r"redis\.colour"):
        Settings(bundle=tiny_bundle, redis={"colour": "red"})
    monkeypatch.setenv("LLMREC_BUNDLE", str(tiny_bundle))
    monkeypatch.setenv("LLMREC_API_KEYS", "first-key-1, second-key-2")
    monkeypatch.setenv("LLMREC_BATCH_WINDOW_MS", "7.5")
    monkeypatch.setenv("LLMREC_REDIS_RETRY_AFTER_S", "3")  # grouped settings keep their variables' names
    monkeypatch.setenv("LLMREC_MAX_HISTORY", "12")
    monkeypatch.setenv("LLMREC_LOG_LEVEL", "DEBUG")  # another tool's variable: ignored, not an error
    settings = Settings()  # type: ignore[call-arg]
    assert settings.api_keys == ["first-key-1", "second-key-2"] and settings.llm_stage.batch_window_ms == 7.5
    assert settings.redis.retry_after_s == 3.0 and settings.redis.prefix == "llmrec"
    assert settings.limits.max_history == 12 and settings.limits.max_events == 1000
    assert "first-key-1" not in repr(settings)


async def test_readiness_and_openapi(make_settings) -> None:
    async with serve(make_settings()) as client:
        ready = (await client.get("/readyz")).json()
        schema = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
        health = (await client.get("/healthz")).json()
    assert ready["status"] == "ready" and ready["checks"]["store"] == "ok" and ready["checks"]["llm"] == "ok"
    assert health == {"status": "ok"} and docs.status_code == 200
    assert {
        "/v1/recommend",
        "/v1/users/{user_id}/events",
        "/v1/users/{user_id}/history",
        "/v1/items/{item_id}",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(schema["paths"])
    assert "ErrorResponse" in schema["components"]["schemas"]


async def test_a_sasrec_only_bundle_serves_sasrec(tiny_work: Path, make_settings, tmp_path: Path) -> None:
    bundle = export_bundle(tiny_work / "data", tiny_work / "sasrec", None, tmp_path / "sasrec-only")
    async with serve(make_settings(bundle=bundle)) as client:
        body = (await client.post("/v1/recommend", json={"history": [1, 2, 3], "k": 4})).json()
        ready = (await client.get("/readyz")).json()
        asked = await client.post("/v1/recommend", json={"history": [1, 2, 3], "model": "llmsrec"})
    assert body["model"] == "sasrec" and not body["degraded"] and len(body["items"]) == 4
    assert "model 'llmsrec' is not in bundle" in assert_envelope(asked, 422, "invalid_request")["message"]
    assert ready["status"] == "ready" and ready["checks"]["llm"].startswith("ok (none")


async def test_requests_before_startup_get_503_not_ready(make_settings) -> None:
    app = create_app(make_settings())  # lifespan not run: nothing is loaded yet
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/v1/items/1")
        health = await client.get("/healthz")
    assert_envelope(response, 503, "not_ready") and health.status_code == 200
