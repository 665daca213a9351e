"""The one dtype policy of a frozen LLM (models.runtime): bf16 on a CUDA GPU that has it, else float32;
float16 only when asked for; the same answer for serving and training."""

from __future__ import annotations

import pytest
import torch

from models.runtime import resolve_llm_dtype, torch_dtype


@pytest.mark.parametrize(
    ("setting", "device", "cuda_bf16", "want"),
    [
        ("auto", "cuda", True, "bfloat16"),
        ("auto", "cuda:1", False, "float32"),  # an older GPU: exact, never a silent float16
        ("auto", "cpu", True, "float32"),  # bf16 support of a GPU says nothing about the CPU
        ("auto", "cpu", False, "float32"),
        ("float16", "cuda", True, "float16"),  # only when asked for
        ("float32", "cuda", True, "float32"),
        ("bfloat16", "cpu", False, "bfloat16"),
    ],
)
def test_auto_is_bf16_on_a_cuda_gpu_that_has_it_else_float32(
    setting: str, device: str, cuda_bf16: bool, want: str
) -> None:
    assert resolve_llm_dtype(setting, device, cuda_bf16=cuda_bf16) == want


def test_auto_asks_torch_when_not_told_and_names_map_to_torch_dtypes() -> None:
    assert resolve_llm_dtype("auto", "cpu") == "float32"
    expected = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    assert resolve_llm_dtype("auto", "cuda") == expected
    assert torch_dtype("bfloat16") is torch.bfloat16 and torch_dtype("float16") is torch.float16


def test_an_unknown_dtype_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="dtype 'int8' unknown; choose auto, float32, bfloat16, float16"):
        resolve_llm_dtype("int8", "cpu")
