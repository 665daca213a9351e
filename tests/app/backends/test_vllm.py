"""The vLLM backend on CPU: version gate, the engine arguments and shutdown (against a stand-in `vllm`
module), refusals at start-up, and the embedding path it feeds vLLM, checked against the HF backend by LAST
pooling over the very same per-prompt embeddings with transformers (the stand-in replaces only vLLM's
`LLM.embed`; the GPU parity test uses vLLM itself)."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import sys
import tomllib
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from app.backends import vllm as vllm_backend
from app.backends.base import LLMBackend, create_backend
from app.backends.hf import HFBackend
from app.backends.prompt_embeds import PromptEmbedsError
from app.backends.vllm import (
    SUPPORTED_VLLM,
    PoolingEngine,
    VLLMBackend,
    check_model_runner,
    check_vllm_version,
    prompt_encoder,
)
from app.bundle import ServingBundle, load_bundle, verify
from app.errors import BackendError, StartupError
from models.prompts import USER_OUT
from tests.conftest import REPO_ROOT

HISTORIES = [[3, 5, 8], [1], [7, 2, 9, 4, 11, 6, 13, 12, 10, 14, 15, 16]]
STAMPS: list[Sequence[float] | None] = [[8.8e8, 8.9e8, 9.0e8], None, None]


@pytest.mark.parametrize("version", ["0.17.0", "0.20.3", "0.23.9", "0.18.1.dev42+g1234abc", "0.19"])
def test_supported_versions_pass(version: str) -> None:
    check_vllm_version(version)


@pytest.mark.parametrize("version", ["0.10.2", "0.16.9", "0.24.0", "1.0.0", "nightly"])
def test_unsupported_versions_stop_startup_naming_the_supported_range(version: str) -> None:
    with pytest.raises(StartupError) as err:
        check_vllm_version(version)
    first, below = SUPPORTED_VLLM
    assert f"vLLM {version} is not supported" in str(err.value)
    assert f"vllm>={first},<{below}" in str(err.value) and "LLMREC_LLM_BACKEND=hf" in str(err.value)


@dataclasses.dataclass
class FakePoolerConfig:
    """The PoolerConfig fields of vLLM 0.17-0.23 this backend sets (any other keyword is a TypeError)."""

    pooling_type: str | None = None
    use_activation: bool | None = None


class FakeEngineCore:
    def __init__(self) -> None:
        self.shutdowns = 0

    def shutdown(self) -> None:
        self.shutdowns += 1


class FakeLLM:
    """vllm.LLM as far as PoolingEngine uses it: records its engine arguments, refuses to start like vLLM
    (v1/worker/utils.py request_memory) when asked for more than `free` of the GPU, has an engine core."""

    free = 1.0

    def __init__(self, **kwargs: Any) -> None:
        if kwargs["gpu_memory_utilization"] > self.free:
            raise ValueError(
                f"Free memory on device cuda:0 ({self.free * 80:.2f}/80.0 GiB) on startup is less than "
                f"desired GPU memory utilization ({kwargs['gpu_memory_utilization']}, ...)"
            )
        self.kwargs = kwargs
        config = SimpleNamespace(max_model_len=kwargs["max_model_len"] or 8192)
        self.llm_engine = SimpleNamespace(model_config=config, engine_core=FakeEngineCore())


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    module, config = types.ModuleType("vllm"), types.ModuleType("vllm.config")
    module.LLM, module.__version__, module.config = FakeLLM, "0.23.0", config  # type: ignore[attr-defined]
    config.PoolerConfig = FakePoolerConfig  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.config", config)
    yield module
    FakeLLM.free = 1.0


def start_engine(**kwargs: Any) -> PoolingEngine:
    args: dict[str, Any] = {"dtype": "bfloat16", "hidden": 64, "gpu_memory_utilization": 0.4}
    return PoolingEngine.start("/bundle/llm", **(args | {"max_model_len": 1024} | kwargs))


def test_pooling_engine_asks_vllm_for_raw_last_pooling_over_prompt_embeds(fake_vllm: Any) -> None:
    engine = start_engine()
    sent = engine.llm.kwargs
    assert (sent["model"], sent["runner"], sent["convert"]) == ("/bundle/llm", "pooling", "embed")
    assert sent["enable_prompt_embeds"] is True and sent["gpu_memory_utilization"] == 0.4
    assert sent["pooler_config"] == FakePoolerConfig(pooling_type="LAST", use_activation=False)
    assert sent["enforce_eager"] is False  # serving keeps torch.compile and CUDA graphs
    assert (engine.max_len, engine.dtype, engine.hidden) == (1024, torch.bfloat16, 64)
    assert start_engine(enforce_eager=True).llm.kwargs["enforce_eager"] is True  # the GPU tests' fast start


def test_an_engine_without_enough_free_gpu_memory_is_a_startup_error(fake_vllm: Any) -> None:
    FakeLLM.free = 0.5  # another engine on the GPU holds the other half
    with pytest.raises(StartupError, match=r"could not start .*less than desired GPU memory utilization"):
        start_engine(gpu_memory_utilization=0.85)
    assert start_engine(gpu_memory_utilization=0.45).llm.kwargs["gpu_memory_utilization"] == 0.45


def test_close_shuts_the_engine_core_down_once(fake_vllm: Any) -> None:
    engine = start_engine()
    core = engine.llm.llm_engine.engine_core
    engine.close()
    engine.close()
    assert core.shutdowns == 1 and engine.llm is None


def test_close_without_an_engine_core_leaves_it_to_gc_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    engine = PoolingEngine(SimpleNamespace(embed=None), 16, torch.float32, 64)
    with caplog.at_level(logging.WARNING, logger="app.backends.vllm"):
        engine.close()
    assert engine.llm is None and "no llm_engine.engine_core.shutdown()" in caplog.text


@pytest.mark.parametrize("value", ["1", "2", "true"])
def test_model_runner_v2_is_refused_with_the_way_out(value: str) -> None:
    with pytest.raises(StartupError, match=rf"VLLM_USE_V2_MODEL_RUNNER='{value}'.*unset it or set it to 0"):
        check_model_runner({"VLLM_USE_V2_MODEL_RUNNER": value})


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> ServingBundle:
    return load_bundle(tiny_bundle, verify(tiny_bundle), "cpu")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_choosing_vllm_without_vllm_installed_is_a_clear_startup_error(bundle: ServingBundle) -> None:
    with pytest.raises(StartupError, match=r"vllm is not installed.*LLMREC_LLM_BACKEND=hf"):
        create_backend("vllm", bundle, device="cuda", dtype="auto", llm_path=None)


def test_vllm_start_up_refuses_model_runner_v2_before_loading_anything(
    bundle: ServingBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm_backend, "installed_vllm_version", lambda: "0.23.0")
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")
    with pytest.raises(StartupError, match="VLLM_USE_V2_MODEL_RUNNER='1' selects vLLM's model runner V2"):
        create_backend("vllm", bundle, device="cuda", dtype="auto", llm_path=None)
    for runner_v1 in ("0", None):  # V1 passes the check and start-up goes on (to the next refusal, here)
        if runner_v1 is None:
            monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER")
        else:
            monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", runner_v1)
        with pytest.raises(StartupError, match="needs device cuda"):
            create_backend("vllm", bundle, device="cpu", dtype="auto", llm_path=None)


def test_hf_backend_refuses_options_meant_for_another_backend(bundle: ServingBundle) -> None:
    with pytest.raises(StartupError, match=r"takes no options, got \['gpu_memory_utilization'\]"):
        create_backend(
            "hf", bundle, device="cpu", dtype="auto", llm_path=None, options={"gpu_memory_utilization": 0.5}
        )


class TransformersLastPooling:
    """Stands in for vLLM's `LLM.embed` with LAST pooling: one unpadded forward per prompt embedding,
    the last position's last-layer hidden state as a list of floats; records what it was sent."""

    def __init__(self, model: Any, normalise: bool = False) -> None:
        self.decoder, self.normalise = model.base_model, normalise
        self.sent: list[Tensor] = []

    def embed(self, prompts: list[dict[str, Tensor]], use_tqdm: bool = False) -> list[Any]:
        outputs = []
        for prompt in prompts:
            row = prompt["prompt_embeds"]
            self.sent.append(row)
            hidden = self.decoder(inputs_embeds=row[None], use_cache=False).last_hidden_state[0, -1]
            if self.normalise:
                hidden = torch.nn.functional.normalize(hidden, dim=-1)
            outputs.append(SimpleNamespace(outputs=SimpleNamespace(embedding=hidden.tolist())))
        return outputs


def stand_in_backend(bundle: ServingBundle, hf: HFBackend, normalise: bool = False) -> VLLMBackend:
    encoder, hidden, _ = prompt_encoder(bundle, device="cpu", dtype="float32", llm_path=None)
    engine = PoolingEngine(TransformersLastPooling(hf.encoder.llm, normalise), hidden, torch.float32, 4096)
    return VLLMBackend(encoder, engine, encoder.special[USER_OUT])


def test_vllm_path_gives_the_hf_backends_user_vectors(bundle: ServingBundle, hf_backend: HFBackend) -> None:
    backend = stand_in_backend(bundle, hf_backend)
    got = backend.encode_users(HISTORIES, STAMPS)
    want = hf_backend.encode_users(HISTORIES, STAMPS)
    assert got.shape == (3, bundle.heads.config.user_dim)  # type: ignore[union-attr]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert backend.health()
    sent = backend.engine.llm.sent
    reference = hf_backend.encoder.user_batch(HISTORIES, STAMPS).per_prompt()
    for row, ref in zip(sent, reference, strict=True):  # exactly the HF prompt embeddings, unpadded
        assert row.dtype == torch.float32 and torch.equal(row, ref)
        torch.testing.assert_close(row[-1], bundle.heads.user_out.detach())  # type: ignore[union-attr]


def test_vllm_backend_meets_the_interface_and_declines_genres_as_a_backend_error(
    bundle: ServingBundle, hf_backend: HFBackend
) -> None:
    backend = stand_in_backend(bundle, hf_backend)
    assert isinstance(backend, LLMBackend)
    with pytest.raises(BackendError, match="LLMREC_VLLM_HF_SCORING=true"):
        backend.explain_genres([[1, 2]])
    assert backend.health()


def test_a_normalising_pooler_is_caught_at_startup(bundle: ServingBundle, hf_backend: HFBackend) -> None:
    stand_in_backend(bundle, hf_backend).check_not_normalised()
    with pytest.raises(StartupError, match="L2-normalises"):
        stand_in_backend(bundle, hf_backend, normalise=True).check_not_normalised()


def test_embeddings_of_the_wrong_dtype_never_reach_the_engine(
    bundle: ServingBundle, hf_backend: HFBackend
) -> None:
    backend = stand_in_backend(bundle, hf_backend)
    backend.engine.dtype = torch.bfloat16  # the engine was started in bf16, the prompt rows are fp32
    with pytest.raises(PromptEmbedsError, match=r"dtype torch\.float32; the engine runs torch\.bfloat16"):
        backend.encode_users(HISTORIES, STAMPS)
    assert backend.engine.llm.sent == [] and backend.health()  # a bad input does not mark the engine sick


def test_engine_failure_marks_the_backend_unhealthy(bundle: ServingBundle, hf_backend: HFBackend) -> None:
    backend = stand_in_backend(bundle, hf_backend)

    def explode(prompts: list[dict[str, Tensor]], use_tqdm: bool = False) -> list[Any]:
        raise RuntimeError("engine died")

    backend.engine.llm.embed = explode
    backend.engine.llm.llm_engine = SimpleNamespace(engine_core=FakeEngineCore())
    core = backend.engine.llm.llm_engine.engine_core
    with pytest.raises(RuntimeError, match="engine died"):
        backend.encode_users(HISTORIES, STAMPS)
    assert not backend.health()
    backend.close()
    assert backend.engine.llm is None and not backend.health() and core.shutdowns == 1


def test_the_gpu_extra_installs_exactly_the_supported_range() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = [dep for dep in project["optional-dependencies"]["gpu"] if dep.startswith("vllm")]
    first, below = SUPPORTED_VLLM
    assert pins == [f"vllm>={first},<{below}"]
