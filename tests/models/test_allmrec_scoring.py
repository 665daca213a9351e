"""A-LLMRec's calibrated candidate scores, the lead template and the genre answer written from its ranking:
pure functions, exact values."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from models.allmrec_genre import genre_sentence
from models.allmrec_scoring import (
    ALLMRecScoring,
    GenreBlend,
    blend,
    blend_genre_scores,
    history_genre_shares,
    llm_scores,
    row_spread,
)
from models.prompts import (
    ALLMREC_USER,
    ALLMRecPromptConfig,
    allmrec_candidate_clause,
    allmrec_prompt,
    allmrec_template_version,
)

SUMS = np.array([[-4.0, -9.0, -6.0]])
COUNTS = np.array([[2.0, 6.0, 2.0]])
PRIOR = np.array([[-3.0, -10.0, -2.0]])


def test_score_modes_are_sum_mean_and_pmi() -> None:
    np.testing.assert_allclose(llm_scores(SUMS, COUNTS, None, "sum"), SUMS)
    np.testing.assert_allclose(llm_scores(SUMS, COUNTS, None, "mean"), [[-2.0, -1.5, -3.0]])
    np.testing.assert_allclose(llm_scores(SUMS, COUNTS, PRIOR, "pmi"), [[-1.0, 1.0, -4.0]])
    np.testing.assert_allclose(llm_scores(SUMS, COUNTS, PRIOR, "pmi-mean"), [[-0.5, 1 / 6, -2.0]])
    with pytest.raises(ValueError, match="needs the prior"):
        llm_scores(SUMS, COUNTS, None, "pmi")
    with pytest.raises(ValueError, match="unknown"):
        llm_scores(SUMS, COUNTS, None, "max")


def test_pmi_removes_a_title_prior_that_no_user_changes() -> None:
    """Title 0 is likelier for everyone (its prior); title 1 gains most from the user: PMI ranks it first."""
    sums = np.array([[-2.0, -5.0]])
    prior = np.array([[-1.0, -7.0]])
    assert llm_scores(sums, COUNTS[:, :2], None, "sum").argmax() == 0
    assert llm_scores(sums, COUNTS[:, :2], prior, "pmi").argmax() == 1


def test_blend_weighs_scaled_scores() -> None:
    llm, sasrec = np.array([[1.0, 0.0]]), np.array([[0.0, 4.0]])
    np.testing.assert_allclose(blend(llm, sasrec, ALLMRecScoring()), llm)  # weight 0: the LLM alone
    scoring = ALLMRecScoring("sum", 0.5, llm_scale=1.0, sasrec_scale=2.0)
    np.testing.assert_allclose(blend(llm, sasrec, scoring), [[0.5, 1.0]])
    with pytest.raises(ValueError, match="SASRec's candidate scores"):
        blend(llm, None, scoring)
    assert row_spread(np.array([[1.0, 3.0], [2.0, 2.0]])) == pytest.approx(0.5)
    assert row_spread(np.zeros((2, 3))) == 1.0


@pytest.mark.parametrize(
    "kwargs", [{"mode": "max"}, {"sasrec_weight": 1.0}, {"sasrec_weight": -0.1}, {"llm_scale": 0.0}]
)
def test_scoring_rejects_bad_values(kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        ALLMRecScoring(**kwargs)


def test_lead_template_puts_real_tokens_before_the_user_token() -> None:
    paper = allmrec_prompt(["A"], ["B"], ALLMRecPromptConfig())
    lead = allmrec_prompt(["A"], ["B"], ALLMRecPromptConfig(version=allmrec_template_version("lead")))
    assert paper.startswith(ALLMREC_USER)
    assert not lead.startswith(ALLMREC_USER) and lead.index(ALLMREC_USER) > 0
    assert paper.endswith(allmrec_candidate_clause(["B"], ALLMRecPromptConfig()))
    rest = "This user has"
    assert lead[lead.index(rest) :] == paper[paper.index(rest) :]  # only the user clause differs
    with pytest.raises(ValueError, match="unknown A-LLMRec prompt template"):
        allmrec_template_version("first")
    with pytest.raises(ValueError, match="unknown A-LLMRec prompt template version"):
        ALLMRecPromptConfig(version="allmrec-v9")


def test_prior_clause_has_no_user_and_no_history() -> None:
    clause = allmrec_candidate_clause(["B", "C"], ALLMRecPromptConfig())
    assert ALLMREC_USER not in clause and "previous" not in clause
    assert clause.count('"') == 4 and clause.endswith("The recommendation is")


GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Film-Noir", "Children's"]


def test_genre_sentences_agree_with_the_ranked_list_for_200_users() -> None:
    """The answer's sentence is written from its list: the same genres, in order, once each, ending with a
    full stop after a whole genre name (never cut mid-word)."""
    rng = random.Random(0)
    config = ALLMRecPromptConfig()
    for _ in range(200):
        ranked = rng.sample(GENRES, rng.randint(1, 5))
        sentence = genre_sentence(ranked, config)
        named = sentence.removeprefix("The movie genres this user likes most are: ").removesuffix(".")
        parts = named.replace(" and ", ", ").split(", ")
        assert parts == ranked, sentence
        assert len(set(parts)) == len(parts) and sentence.endswith(f"{ranked[-1]}.")
    assert genre_sentence(["Drama", "Drama"], config).endswith(": Drama.")


def test_genre_blend_combines_llm_evidence_with_history_shares() -> None:
    matrix = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)  # item → (G0, G1)
    shares = history_genre_shares([[1, 2], [3]], matrix)
    np.testing.assert_allclose(shares, [[1.0, 0.5], [0.0, 1.0]])
    llm = np.array([[0.0, 1.0], [0.0, 1.0]])  # the LLM prefers G1 for both
    only_llm = blend_genre_scores(llm, shares, GenreBlend())
    mostly_history = blend_genre_scores(llm, shares, GenreBlend(0.9))
    assert only_llm.argmax(1).tolist() == [1, 1]
    assert mostly_history.argmax(1).tolist() == [0, 1]
    with pytest.raises(ValueError):
        GenreBlend(1.0)


def test_blend_gives_cold_candidates_a_neutral_sasrec_score() -> None:
    """SASRec never trained a cold item's row: its score is replaced by the row's warm mean, so the LLM
    alone places it (here above the warm item SASRec dislikes, below the one it likes)."""
    llm = np.array([[0.0, 0.0, 1.0]])
    sasrec = np.array([[4.0, 0.0, -50.0]])  # the cold item's untrained row scores far below
    cold = np.array([[False, False, True]])
    scoring = ALLMRecScoring("sum", 0.5)
    assert blend(llm, sasrec, scoring).argmin() == 2
    got = blend(llm, sasrec, scoring, cold)[0]
    np.testing.assert_allclose(got, [2.0, 0.0, 0.5 + 0.5 * 2.0])
    assert got.argsort().tolist() == [1, 2, 0]
    all_cold = blend(llm, sasrec, scoring, np.ones((1, 3), bool))  # no warm reference: neutral 0
    np.testing.assert_allclose(all_cold, 0.5 * llm)


def test_blend_scores_cold_candidates_from_their_text_with_the_chosen_offset() -> None:
    """With a cold_offset the cold item's SASRec side is its text-imputed score plus offset · sasrec_scale;
    warm candidates keep SASRec's own score; no imputed scores → a clear error, not a silent neutral."""
    llm = np.array([[0.0, 0.0, 1.0]])
    sasrec = np.array([[4.0, 0.0, -50.0]])
    cold = np.array([[False, False, True]])
    imputed = np.array([[9.0, 9.0, 3.0]])  # only the cold column is read
    scoring = ALLMRecScoring("sum", 0.5, sasrec_scale=2.0, cold_offset=-1.0)
    got = blend(llm, sasrec, scoring, cold, imputed)[0]
    np.testing.assert_allclose(got, [0.5 * 4.0 / 2.0, 0.0, 0.5 * 1.0 + 0.5 * (3.0 - 1.0 * 2.0) / 2.0])
    np.testing.assert_allclose(blend(llm, sasrec, scoring, None, imputed), blend(llm, sasrec, scoring))
    with pytest.raises(ValueError, match="imputed scores are needed"):
        blend(llm, sasrec, scoring, cold)
    neutral = dataclasses.replace(scoring, cold_offset=None)  # the old rule ignores imputed scores
    np.testing.assert_allclose(blend(llm, sasrec, neutral, cold, imputed), blend(llm, sasrec, neutral, cold))
    with pytest.raises(ValueError, match="cold_offset"):
        ALLMRecScoring(cold_offset=float("nan"))
