"""Prompt text: exact wording, markers last, history cut, dates, title budget."""

from __future__ import annotations

import pytest

from models.prompts import (
    HISTORY_EMB,
    ITEM_OUT,
    USER_OUT,
    PromptConfig,
    cut_history,
    format_date,
    item_prompt,
    truncate_titles,
    user_prompt,
)
from training.common.llm import tiny_tokenizer

MOVIES = PromptConfig(verb="watched", noun="movie")


def test_user_prompt_exact_text_with_dates() -> None:
    text = user_prompt(["Toy Story (1995)", "Heat (1995)"], ["1997-12-04", "1998-01-02"], MOVIES)
    assert text == (
        "This user has watched a series of movies in the following order: "
        'Item No.1, Time: 1997-12-04, "Toy Story (1995)"[HistoryEmb],'
        'Item No.2, Time: 1998-01-02, "Heat (1995)"[HistoryEmb]. '
        "Based on this sequence of movies, generate user representation token:[UserOut]"
    )


def test_user_prompt_without_timestamps_omits_time_and_ends_with_user_out() -> None:
    text = user_prompt(["A", "B", "C"], None, PromptConfig(verb="purchased", noun="item"))
    assert "Time" not in text
    assert "purchased a series of items" in text
    assert text.count(HISTORY_EMB) == 3
    assert text.endswith(USER_OUT)


def test_user_prompt_rejects_misaligned_dates() -> None:
    with pytest.raises(ValueError, match="2 dates for 1 titles"):
        user_prompt(["A"], ["2000-01-01", "2000-01-02"], MOVIES)


def test_item_prompt_has_one_history_marker_and_ends_with_item_out() -> None:
    text = item_prompt("Heat (1995)", MOVIES)
    assert text == (
        'The movie title and movie embedding are as follows: "Heat (1995)"[HistoryEmb], '
        "then generate movie representation token:[ItemOut]"
    )
    assert text.endswith(ITEM_OUT)


def test_cut_history_keeps_the_most_recent_items_with_their_dates() -> None:
    items = list(range(1, 15))
    stamps = [86400.0 * i for i in range(14)]  # day i after the epoch
    kept, dates = cut_history(items, stamps, 10)
    assert kept == list(range(5, 15))
    assert dates is not None and dates[0] == "1970-01-05" and dates[-1] == "1970-01-14"
    assert cut_history([3, 4], None, 10) == ([3, 4], None)
    with pytest.raises(ValueError, match="timestamps"):
        cut_history([1, 2], [0.0], 10)


def test_format_date_is_utc_day() -> None:
    assert format_date(0) == "1970-01-01"
    assert format_date(881250949) == "1997-12-04"


def test_titles_truncated_to_token_budget_and_sanitised() -> None:
    tok = tiny_tokenizer()  # one token per byte
    titles = ["Toy Story (1995)", 'Say "Hi"', "Evil [HistoryEmb] title", "Short"]
    cut = truncate_titles(titles, tok, max_tokens=5)
    assert cut == ["Toy S", "Say '", "Evil", "Short"]
    assert all(len(tok(t, add_special_tokens=False)["input_ids"]) <= 5 for t in cut)
