"""GPU paths and their CPU fallback: which FAISS index a capability set gets, rankings that do not depend on
where they run, and the HF backend in bf16 on CUDA. GPU tests are marked `gpu` and skip without CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.backends.hf import HFBackend
from app.bundle import load_bundle, verify
from app.retrieval import GPU_MAX_K, ItemIndex, Ranker, choose_index_kind, cuda_index, faiss_gpu_support

N, D = 3000, 32
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
FAISS_GPU = faiss_gpu_support()


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    out = np.random.default_rng(0).standard_normal((N + 1, D)).astype(np.float32)
    out[0] = 0
    return out


def allowed_mask(device: str, blocked: list[int]) -> torch.Tensor:
    mask = torch.ones(N + 1, dtype=torch.bool, device=device)
    mask[0] = False
    mask[blocked] = False
    return mask


def brute_force(table: np.ndarray, user: np.ndarray, blocked: list[int], k: int) -> list[int]:
    scores = (table @ user).astype(np.float64)
    scores[[0, *blocked]] = -np.inf
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


@pytest.mark.parametrize(
    ("n_items", "device", "gpus", "has_gpu", "kind"),
    [
        (100, "cpu", 0, False, "flat"),
        (10_000, "cpu", 0, False, "hnsw"),
        (100, "cpu", 2, True, "flat"),  # ranking on the CPU keeps FAISS there too
        (10_000, "cuda", 1, True, "gpu-flat"),
        (100, "cuda:1", 2, True, "gpu-flat"),
        (100, "cuda:1", 1, True, "flat"),  # faiss does not see that GPU
        (10_000, "cuda", 0, True, "hnsw"),  # GPU faiss build, no GPU visible to it
        (100, "cuda", 1, False, "flat"),  # faiss-cpu on a CUDA machine
    ],
)
def test_index_kind_follows_device_and_faiss_capabilities(
    n_items: int, device: str, gpus: int, has_gpu: bool, kind: str
) -> None:
    assert choose_index_kind(n_items, 5_000, device, gpus, has_gpu) == kind


def test_cuda_index_parsing() -> None:
    assert [cuda_index(d) for d in ("cpu", "cuda", "cuda:0", "cuda:3")] == [-1, 0, 0, 3]


@pytest.mark.skipif(FAISS_GPU[0] > 0, reason="faiss here has GPU support; the fallback is not taken")
def test_cuda_setting_with_cpu_faiss_builds_a_cpu_index(table: np.ndarray) -> None:

    index = ItemIndex(table, exact_max_items=N, device="cuda")  # only the FAISS choice reads `device`
    assert index.kind == "flat" and index.max_k == N


def test_requests_past_the_faiss_k_limit_are_scored_exactly(table: np.ndarray) -> None:
    ranker = Ranker(table, "cpu", exact_max_items=N, top_n=50)
    ranker.index.max_k = 20  # as a GPU index would cap k; the ranker must not lose items over it
    user = np.random.default_rng(3).standard_normal(D).astype(np.float32)
    blocked = brute_force(table, user, [], 40)[::2]
    got = [i for i, _ in ranker.rank(user, allowed_mask("cpu", blocked), k=30, n_blocked=len(blocked))]
    assert got == brute_force(table, user, blocked, 30)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("top_n", [100, GPU_MAX_K + 500])
def test_cuda_ranking_equals_cpu_ranking(table: np.ndarray, top_n: int) -> None:
    cpu = Ranker(table, "cpu", exact_max_items=N, top_n=top_n)
    gpu = Ranker(table, "cuda", exact_max_items=N, top_n=top_n)
    assert gpu.index.kind == ("gpu-flat" if FAISS_GPU[0] > 0 and FAISS_GPU[1] else "flat")
    rng = np.random.default_rng(1)
    for _ in range(10):
        user = rng.standard_normal(D).astype(np.float32)
        blocked = [int(i) for i in rng.choice(np.arange(1, N + 1), 50, replace=False)]
        want = cpu.rank(user, allowed_mask("cpu", blocked), k=20, n_blocked=len(blocked))
        got = gpu.rank(user, allowed_mask("cuda", blocked), k=20, n_blocked=len(blocked))
        assert [i for i, _ in got] == [i for i, _ in want] == brute_force(table, user, blocked, 20)
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_hf_backend_runs_bf16_on_cuda_close_to_fp32_on_cpu(tiny_bundle: Path) -> None:
    manifest = verify(tiny_bundle)
    cpu = HFBackend.from_bundle(
        load_bundle(tiny_bundle, manifest, "cpu"), device="cpu", dtype="auto", llm_path=None
    )
    gpu = HFBackend.from_bundle(
        load_bundle(tiny_bundle, manifest, "cuda"), device="cuda", dtype="auto", llm_path=None
    )
    want_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32  # models.runtime
    assert cpu.encoder.llm_dtype == torch.float32 and gpu.encoder.llm_dtype == want_dtype
    histories = [[3, 5, 8], [1, 2], [9, 10, 11, 12]]
    a, b = cpu.encode_users(histories, [None] * 3), gpu.encode_users(histories, [None] * 3)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.99, cos
    gpu.close()
