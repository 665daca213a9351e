"""The checks every prompt-embedding tensor passes before it may reach vLLM, the completions wire format,
and the [UserOut]-last rule that LAST pooling depends on."""

from __future__ import annotations

import base64
import io

import pytest
import torch

from app.backends.prompt_embeds import (
    PromptEmbedsError,
    check_last_marker,
    encode_prompt_embeds,
    validate_prompt_embeds,
)
from models.soft_prompt import PromptBatch, pad_ids

H = 8


def good(t: int = 5, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    return torch.randn(t, H, generator=torch.Generator().manual_seed(t)).to(dtype)


def test_valid_embeddings_come_back_as_equal_contiguous_cpu_copies() -> None:
    source = [good(3), good(7).T.contiguous().T, good(1)]  # the second one is not contiguous
    assert not source[1].is_contiguous()
    rows = validate_prompt_embeds(source, hidden=H, dtype=torch.bfloat16, max_len=7)
    assert [tuple(r.shape) for r in rows] == [(3, H), (7, H), (1, H)]
    for row, original in zip(rows, source, strict=True):
        assert row.is_contiguous() and row.device.type == "cpu" and torch.equal(row, original)


@pytest.mark.parametrize(
    ("embeds", "message"),
    [
        ([], "the batch is empty"),
        ([good(), good(4)[:, :-1]], "prompt_embeds[1] has hidden size 7; the LLM's is 8"),
        (
            [good(dtype=torch.float32)],
            "prompt_embeds[0] has dtype torch.float32; the engine runs torch.bfloat16",
        ),
        ([good(dtype=torch.int64)], "has dtype torch.int64"),
        ([torch.zeros(0, H, dtype=torch.bfloat16)], "prompt_embeds[0] is empty (0 positions)"),
        ([good()[0]], "has shape (8,); expected (seq_len, 8)"),
        ([good()[None]], "has shape (1, 5, 8); expected (seq_len, 8)"),
        ([good(9)], "prompt_embeds[0] has 9 positions; the engine takes 8"),
        ([[[0.0] * H]], "prompt_embeds[0] is a list, not a torch.Tensor"),
        ([good().to_sparse()], "layout torch.sparse_coo; only dense tensors"),
    ],
)
def test_malformed_embeddings_are_refused_with_the_problem_named(embeds: list, message: str) -> None:
    with pytest.raises(PromptEmbedsError) as err:
        validate_prompt_embeds(embeds, hidden=H, dtype=torch.bfloat16, max_len=8)
    assert message in str(err.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused(bad: float) -> None:
    embed = good(4)
    embed[2, 3] = bad
    with pytest.raises(PromptEmbedsError, match=r"prompt_embeds\[1\] contains NaN or infinite values"):
        validate_prompt_embeds([good(), embed], hidden=H, dtype=torch.bfloat16)


def test_wire_format_is_base64_of_torch_save_and_round_trips() -> None:
    embed = good(6)
    payload = encode_prompt_embeds(embed)
    loaded = torch.load(io.BytesIO(base64.b64decode(payload, validate=True)), weights_only=True)
    assert loaded.dtype == torch.bfloat16 and torch.equal(loaded, embed)


def batch(rows: list[list[int]], side: str) -> PromptBatch:
    ids, mask = pad_ids(rows, pad_id=0, side=side, device="cpu")  # type: ignore[arg-type]
    return PromptBatch(ids, mask, mask.cumsum(-1) - 1, torch.zeros(*ids.shape, H))


def test_last_marker_rule_holds_under_left_padding_and_fails_otherwise() -> None:
    marker = 99
    check_last_marker(batch([[5, 6, marker], [7, marker]], "left"), marker)
    with pytest.raises(PromptEmbedsError, match="prompt 1 does not end with token 99"):
        check_last_marker(batch([[5, marker], [marker, 6]], "left"), marker)
    check_last_marker(batch([[5, 6, marker], [marker]], "right"), marker)  # the mask finds the real end
