"""SASRec behaviour: causality, padding invariance, no NaN on empty rows, the loss against hand values."""

from __future__ import annotations

import math

import pytest
import torch

from models.sasrec import SASRec, SASRecConfig, bce_loss

N_ITEMS = 40


def make_model(seed: int = 0, **kwargs: int | float) -> SASRec:
    torch.manual_seed(seed)
    config = SASRecConfig(**{"n_items": N_ITEMS, "hidden": 16, "max_len": 12, "n_heads": 2, **kwargs})
    return SASRec(config)


def left_pad(history: list[int], length: int) -> torch.Tensor:
    return torch.tensor([[0] * (length - len(history)) + history])


@pytest.mark.parametrize("changed", [3, 7, 11])
def test_a_later_item_never_changes_an_earlier_position(changed: int) -> None:
    model = make_model().eval()
    seqs = torch.randint(1, N_ITEMS + 1, (4, 12))
    seqs[1, :5] = 0  # a left-padded row too
    other = seqs.clone()
    other[:, changed] = other[:, changed] % N_ITEMS + 1
    with torch.no_grad():
        before, after = model(seqs), model(other)
    torch.testing.assert_close(before[:, :changed], after[:, :changed], rtol=0, atol=0)
    assert not torch.allclose(before[:, changed:], after[:, changed:])


def test_the_user_vector_depends_on_every_earlier_item() -> None:
    model = make_model().eval()
    seqs = torch.randint(1, N_ITEMS + 1, (1, 12))
    other = seqs.clone()
    other[0, 0] = other[0, 0] % N_ITEMS + 1
    with torch.no_grad():
        assert not torch.allclose(model.user_vector(seqs), model.user_vector(other))


def test_left_padding_and_input_length_do_not_change_the_user_vector() -> None:
    model = make_model().eval()
    history = [5, 9, 2, 33, 17]
    items = torch.tensor([[1, 5, 9, 40]])
    with torch.no_grad():
        vectors = [model.user_vector(left_pad(history, t)) for t in (5, 6, 9, 12)]
        scores = [model.score(left_pad(history, t), items) for t in (5, 12)]
    for v in vectors[1:]:
        torch.testing.assert_close(v, vectors[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores[0], scores[1], rtol=1e-5, atol=1e-5)


def test_rows_in_a_batch_do_not_influence_each_other() -> None:
    model = make_model().eval()
    a, b = left_pad([3, 4, 5], 12), left_pad([7, 8, 9, 10, 11, 12, 13], 12)
    with torch.no_grad():
        together = model.user_vector(torch.cat([a, b]))
        torch.testing.assert_close(together[0], model.user_vector(a)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_fully_padded_rows_give_no_nan_values_or_gradients(training: bool) -> None:
    model = make_model(dropout=0.3).train(training)
    seqs = torch.zeros(3, 12, dtype=torch.long)
    seqs[1, -1] = 4  # one item, the rest left padding
    out = model(seqs)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_padding_rows_of_the_tables_start_at_zero_and_never_get_gradient() -> None:
    model = make_model()
    assert model.item_emb.weight[0].abs().sum() == 0 and model.pos_emb.weight[0].abs().sum() == 0
    model(left_pad([1, 2, 3], 12)).sum().backward()
    assert model.item_emb.weight.grad[0].abs().sum() == 0
    assert model.item_embeddings().shape == (N_ITEMS + 1, 16)


def test_score_is_the_dot_product_of_user_vector_and_item_embedding() -> None:
    model = make_model().eval()
    seqs = torch.cat([left_pad([1, 2, 3], 12), left_pad([4, 5], 12)])
    items = torch.tensor([[7, 8, 9], [1, 2, 40]])
    with torch.no_grad():
        expected = torch.stack(
            [model.item_emb.weight[items[b]] @ model.user_vector(seqs)[b] for b in range(2)]
        )
        torch.testing.assert_close(model.score(seqs, items), expected)


def test_same_seed_same_weights_different_seed_different_weights() -> None:
    a, b, c = make_model(seed=3), make_model(seed=3), make_model(seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.item_emb.weight, c.item_emb.weight)


def test_bce_loss_matches_hand_computed_value() -> None:
    seq_out = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])  # (1, 3, 2)
    pos = torch.tensor([[[2.0, 0.0], [0.0, -0.5], [9.0, 9.0]]])  # logits 2, -1, (masked)
    neg = torch.tensor([[[-1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])  # logits -1, 2, (masked)
    mask = torch.tensor([[True, True, False]])
    # -log sigmoid(x) = log(1 + e^-x); -log(1 - sigmoid(x)) = log(1 + e^x)
    pos_part = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    neg_part = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(2.0))) / 2
    assert bce_loss(seq_out, pos, neg, mask).item() == pytest.approx(pos_part + neg_part, rel=1e-6)


def test_inputs_longer_than_max_len_and_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="max_len"):
        make_model()(torch.ones(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(n_items=5, hidden=10, n_heads=3)
