"""Text-side retrieval of cold items: the cold item whose text is nearest the history's texts comes first,
row norms and the history's order do not matter, and an empty history scores every item 0."""

from __future__ import annotations

import torch

from models.cold_items import history_text_query, text_scores


def table() -> torch.Tensor:
    """Items 1-3 about topic A, 4-5 about topic B; cold item 6 is A-like, cold item 7 B-like."""
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    noise = 0.1 * torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    rows = torch.stack([torch.zeros(3), a, a, a, b, b, a, b]) + noise
    rows[0] = 0
    return rows


def test_the_cold_item_nearest_the_history_text_scores_highest() -> None:
    text = table()
    cold = torch.tensor([6, 7])
    assert text_scores(text, torch.tensor([1, 2, 3]), cold).argmax() == 0
    assert text_scores(text, torch.tensor([4, 5]), cold).argmax() == 1
    # cosine: scaling a row or reordering the history changes nothing
    scaled = text.clone()
    scaled[1] *= 50
    first = text_scores(text, torch.tensor([1, 4, 5]), cold)
    assert torch.allclose(text_scores(scaled, torch.tensor([5, 1, 4]), cold), first, atol=1e-6)


def test_an_empty_history_scores_every_item_zero() -> None:
    text = table()
    assert torch.equal(history_text_query(text, torch.tensor([], dtype=torch.long)), torch.zeros(3))
    assert torch.equal(
        text_scores(text, torch.tensor([], dtype=torch.long), torch.tensor([6, 7])), torch.zeros(2)
    )
