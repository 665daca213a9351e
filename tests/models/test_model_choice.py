"""The default-model rule on hand-written training records: the best validation NDCG@10 wins, swapping the
metrics swaps the choice, only 1+99 metrics compete, A-LLMRec and models without metrics are never chosen."""

from __future__ import annotations

import math
from typing import Any

import pytest

from models.model_choice import choose_default_model, comparable_metric

ALL = ("sasrec", "llmsrec", "hybrid", "allmrec", "allmrec_genre")


def record(ndcg: Any, protocol: str = "1+99") -> dict[str, Any]:
    return {"train": {}, "best_epoch": 3, "valid": {"ndcg@10": ndcg, "hr@10": 0.5, "protocol": protocol}}


def test_the_best_validation_ndcg_wins_and_swapping_metrics_swaps_the_choice() -> None:
    training = {"sasrec": record(0.40), "llmsrec": record(0.38), "hybrid": record(0.42)}
    choice = choose_default_model(training, ALL)
    assert choice.name == "hybrid"
    assert choice.reason == (
        "best validation ndcg@10 on the 1+99 candidates: hybrid 0.4200, sasrec 0.4000, llmsrec 0.3800"
    )
    swapped = training | {"sasrec": record(0.42), "hybrid": record(0.40)}
    assert choose_default_model(swapped, ALL).name == "sasrec"
    assert choose_default_model(training, ("sasrec", "llmsrec")).name == "sasrec"  # hybrid not a candidate


def test_metrics_on_other_validation_users_than_sasrecs_do_not_compete() -> None:
    def on(ndcg: float, n_users: int, seed: int = 0) -> dict[str, Any]:
        return {"valid": {"ndcg@10": ndcg, "protocol": "1+99", "n_users": n_users, "seed": seed}}

    training = {"sasrec": on(0.40, 943), "llmsrec": on(0.45, 300), "hybrid": on(0.41, 943)}
    assert choose_default_model(training, ALL).name == "hybrid"  # llmsrec's .45 is on 300 other users
    training["hybrid"] = on(0.41, 943, seed=1)
    assert choose_default_model(training, ALL).name == "sasrec"
    assert choose_default_model({"llmsrec": on(0.45, 300)}, ALL).name == "llmsrec"  # no reference: as is


def test_only_metrics_on_the_shared_1_99_candidates_compete() -> None:
    training = {
        "sasrec": record(0.30),
        "llmsrec": record(0.90, protocol="1+19"),  # easier protocol: a higher number, not comparable
        "hybrid": {"valid": {"ndcg@10": 0.95}},  # no protocol recorded
        "allmrec": record(0.99),  # re-ranks 20 SASRec candidates: never the automatic default
    }
    assert choose_default_model(training, ALL).name == "sasrec"
    assert [comparable_metric(training, name) for name in ALL] == [0.30, None, None, 0.99, None]


@pytest.mark.parametrize("bad", [math.nan, math.inf, True, "0.5", None])
def test_malformed_metrics_are_not_comparable(bad: Any) -> None:
    training = {"sasrec": record(0.10), "llmsrec": record(bad), "hybrid": "not a record"}
    assert comparable_metric(training, "llmsrec") is None and comparable_metric(training, "hybrid") is None
    assert choose_default_model(training, ALL).name == "sasrec"


def test_no_comparable_metrics_chooses_nothing_and_ties_go_to_the_cheaper_model() -> None:
    none = choose_default_model({"sasrec": {"valid": {}}, "llmsrec": {}}, ALL)
    assert none.name is None and "no model has validation ndcg@10" in none.reason
    assert choose_default_model({}, ALL).name is None
    tie = {"sasrec": record(0.4), "llmsrec": record(0.4), "hybrid": record(0.4)}
    assert choose_default_model(tie, ALL).name == "sasrec"
    assert choose_default_model(tie, ("llmsrec", "hybrid")).name == "llmsrec"
