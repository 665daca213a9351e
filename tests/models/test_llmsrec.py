"""LLM-SRec heads, hand-checked loss terms, and the encoder on a tiny random Llama."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models.llmsrec import (
    LLMSRec,
    LLMSRecConfig,
    LLMSRecEncoder,
    LossWeights,
    distill_loss,
    llmsrec_loss,
    retrieval_loss,
    uniformity_loss,
)
from models.prompts import HISTORY_EMB, USER_OUT, PromptConfig
from tests.models.tiny_llm import one_torch_thread, tiny_llm

TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)", "Copycat (1995)"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def test_uniformity_by_hand() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # squared distances: (1,2) = 2, (1,3) = 4, (2,3) = 2; mean over the 6 ordered pairs i != j
    expected = (4 * math.exp(-4) + 2 * math.exp(-8)) / 6
    assert uniformity_loss(x).item() == pytest.approx(expected, rel=1e-6)
    assert uniformity_loss(5 * x).item() == pytest.approx(expected, rel=1e-6)  # on normalised rows
    assert uniformity_loss(x[:1]).item() == 0.0


def test_uniformity_gradient_is_finite_for_identical_rows() -> None:
    x = torch.ones(3, 4, requires_grad=True)
    uniformity_loss(x).backward()
    assert torch.isfinite(x.grad).all()


def test_distill_is_mse_of_normalised_vectors() -> None:
    users, teacher = torch.tensor([[3.0, 4.0]]), torch.tensor([[10.0, 0.0]])
    # (0.6, 0.8) vs (1, 0): ((0.4)^2 + (0.8)^2) / 2
    assert distill_loss(users, teacher).item() == pytest.approx(0.4, rel=1e-6)


def test_retrieval_is_cross_entropy_with_positive_first() -> None:
    users = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[[2.0, 0.0], [0.0, 5.0], [1.0, 0.0]]])  # logits 2, 0, 1
    expected = -2 + math.log(math.exp(2) + 1 + math.exp(1))
    assert retrieval_loss(users, items).item() == pytest.approx(expected, rel=1e-6)


def test_total_loss_weights_components() -> None:
    gen = torch.Generator().manual_seed(0)
    users, items, teacher = (
        torch.randn(4, 8, generator=gen),
        torch.randn(4, 4, 8, generator=gen),
        torch.randn(4, 8),
    )
    parts = llmsrec_loss(users, items, teacher, LossWeights(1.0, 2.0, 0.5))
    expected = parts["retrieval"] + 2 * parts["distill"] + 0.5 * parts["uniformity"]
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["uniformity"].item() == pytest.approx(
        (uniformity_loss(users) + uniformity_loss(teacher)).item()
    )
    llm_only = llmsrec_loss(users, items, None, LossWeights(1.0, 0.0, 0.0))
    assert llm_only["loss"].item() == pytest.approx(parts["retrieval"].item())
    with pytest.raises(ValueError, match="teacher"):
        llmsrec_loss(users, items, None, LossWeights())


def test_heads_follow_the_paper_shapes() -> None:
    heads = LLMSRec(LLMSRecConfig(n_items=10, d_cf=64, llm_hidden=576))
    kinds = [type(m) for m in heads.item_emb_proj]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.LeakyReLU, nn.Linear]
    assert (heads.item_emb_proj[0].in_features, heads.item_emb_proj[3].out_features) == (64, 576)
    assert (heads.pred_user[0].out_features, heads.pred_user[3].out_features) == (2048, 128)
    assert (heads.pred_item[0].in_features, heads.pred_item[3].out_features) == (576, 128)
    assert isinstance(heads.pred_user_CF2[2], nn.GELU) and heads.pred_user_CF2[0].out_features == 128
    assert not heads.cf_item_emb.requires_grad


def test_cf_table_and_output_token_init() -> None:
    heads = LLMSRec(LLMSRecConfig(n_items=3, d_cf=4, llm_hidden=8))
    heads.set_cf_item_embeddings(torch.ones(4, 4))
    assert heads.cf_item_emb[0].abs().sum() == 0 and heads.cf_item_emb[1:].eq(1).all()
    with pytest.raises(ValueError, match="CF item table"):
        heads.set_cf_item_embeddings(torch.ones(5, 4))
    vocab = 3.0 + 0.5 * torch.randn(20_000, 8, generator=torch.Generator().manual_seed(0))
    heads.init_output_tokens(vocab, torch.Generator().manual_seed(1))
    assert not torch.equal(heads.user_out, heads.item_out)
    both = torch.stack([heads.user_out, heads.item_out])
    assert both.mean().item() == pytest.approx(3.0, abs=0.5)  # drawn around the vocabulary's mean


@pytest.fixture(scope="module")
def encoder() -> LLMSRecEncoder:
    llm = tiny_llm(seed=2)
    torch.manual_seed(0)
    heads = LLMSRec(LLMSRecConfig(n_items=len(TITLES), d_cf=8, llm_hidden=32, mlp_hidden=64))
    heads.set_cf_item_embeddings(torch.randn(len(TITLES) + 1, 8))
    heads.init_output_tokens(llm.model.get_input_embeddings().weight)
    prompt = PromptConfig(verb="watched", noun="movie", history_len=3, max_title_tokens=8)
    return LLMSRecEncoder(llm.model, llm.tokenizer, heads, TITLES, llm.special_tokens, prompt)


def test_user_batch_splices_the_last_items_and_the_user_token(encoder) -> None:
    histories, stamps = [[1, 2, 3, 4, 5], [2]], [[86400.0 * i for i in range(5)], None]
    batch = encoder.user_batch(histories, stamps)
    hist, out = encoder.special[HISTORY_EMB], encoder.special[USER_OUT]
    with torch.no_grad():
        expected = encoder.heads.history_rows(torch.tensor([3, 4, 5, 2]))  # last 3 of user 0, then user 1
    torch.testing.assert_close(batch.inputs_embeds[batch.input_ids == hist], expected)
    assert torch.equal(batch.input_ids[:, -1], torch.tensor([out, out]))  # left padded: marker last
    texts = encoder.user_prompts(histories, stamps)
    assert 'Time: 1970-01-05, "Copycat"' in texts[0] and "Time" not in texts[1]
    assert '"Toy Story' not in texts[0] and '"Four Roo"' in texts[0]  # cut to 3 items, titles to 8 tokens


def test_encoder_vectors_do_not_depend_on_batch_company(encoder) -> None:
    histories = [[1, 2, 3, 4], [5], [2, 4]]
    with torch.no_grad():
        together = encoder.user_vectors(histories)
        alone = torch.cat([encoder.user_vectors([h]) for h in histories])
        items = encoder.item_vectors([1, 2, 3, 4, 5])
        items_alone = torch.cat([encoder.item_vectors([i]) for i in [1, 2, 3, 4, 5]])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(items, items_alone, atol=1e-5, rtol=1e-5)
    assert together.shape == (3, 128)


def test_encoder_left_and_right_padding_agree(encoder) -> None:
    right = LLMSRecEncoder(
        encoder.llm, encoder.tokenizer, encoder.heads, TITLES, encoder.special, encoder.prompt, "right"
    )
    with torch.no_grad():
        torch.testing.assert_close(
            encoder.user_vectors([[1, 2, 3], [4]]), right.user_vectors([[1, 2, 3], [4]]), atol=1e-5, rtol=1e-5
        )


def test_order_of_history_changes_the_user_vector(encoder) -> None:
    with torch.no_grad():
        a, b = encoder.user_vectors([[1, 2, 3], [3, 2, 1]])
    assert not torch.allclose(a, b, atol=1e-4)


def test_empty_history_and_unknown_items_are_refused(encoder) -> None:
    with pytest.raises(ValueError, match="empty"):
        encoder.user_vectors([[1], []])
    with pytest.raises(ValueError, match=r"unknown item id 6 \(catalog has ids 1\.\.5\)"):
        encoder.user_vectors([[1, 6]])
    with pytest.raises(ValueError, match="unknown item id 0"):
        encoder.item_vectors([0])


def test_encoder_refuses_a_tokenizer_with_other_special_token_ids(encoder) -> None:
    record = dict(encoder.special) | {USER_OUT: encoder.special[USER_OUT] + 1}
    with pytest.raises(ValueError, match="special-token ids differ"):
        LLMSRecEncoder(encoder.llm, encoder.tokenizer, encoder.heads, TITLES, record, encoder.prompt)
