"""Parity of the two LLM backends on a GPU: vLLM's pooling engine and transformers, fed the same prompt
embeddings, give the same [UserOut] hidden states and user vectors. Needs vLLM and CUDA; skipped elsewhere.
The LLM: a random Llama wide enough for vLLM's attention kernels (head dim 64), in a real exported bundle."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from app.backends.hf import HFBackend
from app.backends.vllm import VLLMBackend
from app.bundle import ServingBundle, load_bundle, verify
from models.prompts import PromptConfig
from models.soft_prompt import hidden_at_marker
from training.common.llm import load_llm, write_tiny_llama
from training.data.dataset import load_prepared
from training.export import export_bundle
from training.llmsrec.checkpoint import checkpoint_config, save_llmsrec
from training.llmsrec.item_table import compute_item_table
from training.llmsrec.scorer import build_encoder
from training.llmsrec.train import new_heads
from training.tiny_bundle import HISTORY_LEN, write_dataset, write_sasrec

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: vLLM parity needs a GPU"),
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None, reason="vllm not installed (pip install .[gpu])"
    ),
]
HISTORIES = [[3, 5, 8], [1], [7, 2, 9, 4, 11, 6, 13, 12, 10, 14, 15, 16], [20, 21]]
STAMPS = [None, None, None, [9.0e8, 9.1e8]]


@pytest.fixture(scope="module")
def wide_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle's recipe with a 256-wide Llama (4 heads of 64)."""
    work = tmp_path_factory.mktemp("parity")
    data_dir = write_dataset(work / "data")
    teacher = write_sasrec(work / "sasrec")
    llm = load_llm(str(write_tiny_llama(work / "llm", hidden=256)), device="cpu", dtype="float32")
    data = load_prepared(data_dir)
    heads = new_heads(data, teacher, llm, seed=0).eval()
    prompt = PromptConfig(data.verb, data.noun, history_len=HISTORY_LEN, max_title_tokens=24)
    table = compute_item_table(build_encoder(llm, heads, data, prompt), data.n_items, progress=False)
    config = checkpoint_config(
        "tiny", llm.spec, heads, prompt, "llmsrec", {"epochs": 0}, work / "sasrec", 1, {}
    )
    save_llmsrec(work / "llmsrec", heads, table, config)
    return export_bundle(data_dir, work / "sasrec", work / "llmsrec", work / "bundle", include_llm=True)


@pytest.fixture(scope="module")
def bundle(wide_bundle: Path) -> ServingBundle:
    return load_bundle(wide_bundle, verify(wide_bundle), "cuda")


@pytest.mark.parametrize(("dtype", "atol", "min_cos"), [("float32", 2e-3, 0.9999), ("bfloat16", 6e-2, 0.995)])
def test_vllm_and_transformers_agree_on_the_same_prompt_embeddings(
    bundle: ServingBundle, dtype: str, atol: float, min_cos: float
) -> None:
    hf = HFBackend.from_bundle(bundle, device="cuda", dtype=dtype, llm_path=None)
    # enforce_eager: no torch.compile or CUDA-graph capture, so two cold engines start within
    # bench/gpu_check.sh's test budget; the numbers compared do not depend on it
    vl = VLLMBackend.from_bundle(
        bundle, device="cuda", dtype=dtype, llm_path=None, gpu_memory_utilization=0.3, enforce_eager=True
    )
    try:
        with torch.inference_mode():
            batch = hf.encoder.user_batch(HISTORIES, STAMPS)
            want_hidden = hidden_at_marker(hf.encoder.llm, batch, vl.user_out_id).float().cpu()
            got_hidden = vl.user_hidden(HISTORIES, STAMPS).float().cpu()
        scale = float(want_hidden.abs().max())
        torch.testing.assert_close(got_hidden, want_hidden, atol=atol * scale, rtol=0)
        got, want = vl.encode_users(HISTORIES, STAMPS), hf.encode_users(HISTORIES, STAMPS)
        cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        assert cos.min() >= min_cos, cos
    finally:
        vl.close()
        hf.close()
