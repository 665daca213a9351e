"""Soft-prompt mechanics on a tiny random Llama (and on the real SmolLM2): splicing, padding, read-out."""

from __future__ import annotations

import pytest
import torch

from models.prompts import HISTORY_EMB, PAD_KEY, USER_OUT
from models.soft_prompt import (
    build_prompt_batch,
    hidden_at_marker,
    length_batches,
    pad_ids,
    position_ids_from_mask,
    splice_rows,
    tokenize,
)
from tests.models.tiny_llm import one_torch_thread, tiny_llm

TEXTS = [
    f'Item "A"{HISTORY_EMB}, then{USER_OUT}',
    f'Longer prompt: "Some title"{HISTORY_EMB},"Other"{HISTORY_EMB} and more words{USER_OUT}',
    f"x{HISTORY_EMB}{USER_OUT}",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def llm():
    return tiny_llm(seed=1)


def soft_rows(llm, ids, seed=0):
    """Distinct random rows for every [HistoryEmb] of `ids` (row-major) and one [UserOut] vector."""
    gen = torch.Generator().manual_seed(seed)
    hist = llm.special_tokens[HISTORY_EMB]
    n = sum(row.count(hist) for row in ids)
    h = llm.spec["hidden_size"]
    return {
        hist: torch.randn(n, h, generator=gen),
        llm.special_tokens[USER_OUT]: torch.randn(h, generator=gen),
    }


def test_pad_ids_left_and_right_with_positions() -> None:
    ids, mask = pad_ids([[5, 6, 7], [8]], pad_id=0, side="left", device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert position_ids_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    ids, mask = pad_ids([[5, 6, 7], [8]], pad_id=0, side="right", device="cpu")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert position_ids_from_mask(mask)[1, 0].item() == 0


@pytest.mark.parametrize("side", ["left", "right"])
def test_soft_rows_land_exactly_at_markers(llm, side) -> None:
    ids = tokenize(llm.tokenizer, TEXTS)
    soft = soft_rows(llm, ids)
    batch = build_prompt_batch(ids, llm.model.get_input_embeddings(), llm.special_tokens[PAD_KEY], soft, side)
    hist, out = llm.special_tokens[HISTORY_EMB], llm.special_tokens[USER_OUT]
    assert torch.equal(batch.inputs_embeds[batch.input_ids == hist], soft[hist])
    assert all(torch.equal(row, soft[out]) for row in batch.inputs_embeds[batch.input_ids == out])
    plain = llm.model.get_input_embeddings()(batch.input_ids)
    other = (batch.input_ids != hist) & (batch.input_ids != out)
    assert torch.equal(batch.inputs_embeds[other], plain[other])
    for b, row in enumerate(ids):  # per_prompt gives back exactly the unpadded rows
        assert batch.per_prompt()[b].shape[0] == len(row)


def test_splice_rejects_a_wrong_number_of_rows(llm) -> None:
    ids = torch.tensor([[1, 259, 2, 259]])
    with pytest.raises(ValueError, match="3 soft rows for 2 marker"):
        splice_rows(torch.zeros(1, 4, 32), ids, 259, torch.zeros(3, 32))


@pytest.mark.parametrize("side", ["left", "right"])
def test_masked_batched_forward_equals_unbatched(llm, side) -> None:
    ids = tokenize(llm.tokenizer, TEXTS)
    soft = soft_rows(llm, ids)
    emb, pad, out = (
        llm.model.get_input_embeddings(),
        llm.special_tokens[PAD_KEY],
        llm.special_tokens[USER_OUT],
    )
    with torch.no_grad():
        batched = hidden_at_marker(llm.model, build_prompt_batch(ids, emb, pad, soft, side), out)
        hist, start = llm.special_tokens[HISTORY_EMB], 0
        for b, row in enumerate(ids):
            n = row.count(hist)
            one = {hist: soft[hist][start : start + n], out: soft[out]}
            start += n
            single = hidden_at_marker(llm.model, build_prompt_batch([row], emb, pad, one, side), out)
            torch.testing.assert_close(batched[b], single[0], atol=1e-5, rtol=1e-5)


def test_padding_is_masked_not_just_ignored(llm) -> None:
    """Without the mask, left padding would change the hidden state: the mask is what makes them equal."""
    ids = tokenize(llm.tokenizer, TEXTS)
    soft = soft_rows(llm, ids)
    batch = build_prompt_batch(
        ids, llm.model.get_input_embeddings(), llm.special_tokens[PAD_KEY], soft, "left"
    )
    with torch.no_grad():
        masked = llm.model.base_model(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).last_hidden_state[2, -1]
        unmasked = llm.model.base_model(inputs_embeds=batch.inputs_embeds).last_hidden_state[2, -1]
    assert not torch.allclose(masked, unmasked, atol=1e-4)


def test_gradients_reach_soft_rows_through_frozen_llm(llm) -> None:
    ids = tokenize(llm.tokenizer, TEXTS)
    soft = {k: v.requires_grad_(True) for k, v in soft_rows(llm, ids).items()}
    batch = build_prompt_batch(ids, llm.model.get_input_embeddings(), llm.special_tokens[PAD_KEY], soft)
    hidden_at_marker(llm.model, batch, llm.special_tokens[USER_OUT]).sum().backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in soft.values())
    assert all(p.grad is None for p in llm.model.parameters())


def test_length_batches_group_similar_lengths() -> None:
    assert length_batches([3, 10, 1, 9, 4], batch_size=2) == [[1, 3], [4, 0], [2]]


@pytest.fixture(scope="module")
def smollm2():
    from training.common.llm import load_llm

    return load_llm("smollm2", device="cpu", dtype="float32")


@pytest.mark.slow
@pytest.mark.parametrize("side", ["left", "right"])
def test_real_smollm2_batched_equals_unbatched(smollm2, side) -> None:
    llm = smollm2
    ids = tokenize(llm.tokenizer, TEXTS)
    soft = soft_rows(llm, ids)
    emb, pad, out = (
        llm.model.get_input_embeddings(),
        llm.special_tokens[PAD_KEY],
        llm.special_tokens[USER_OUT],
    )
    hist = llm.special_tokens[HISTORY_EMB]
    with torch.no_grad():
        batched = hidden_at_marker(llm.model, build_prompt_batch(ids, emb, pad, soft, side), out)
        last = ids[-1]  # the shortest prompt: the most padding
        one = {hist: soft[hist][-last.count(hist) :], out: soft[out]}
        single = hidden_at_marker(llm.model, build_prompt_batch([last], emb, pad, one, side), out)
    torch.testing.assert_close(batched[-1], single[0], atol=1e-4, rtol=1e-4)
