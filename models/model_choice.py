"""Which of a bundle's models answers /v1/recommend by default: the best by validation NDCG@10 among those
whose validation metrics were taken on the shared 1+99 candidates. Used by the export (the manifest's
`default_model`) and by the service (the same rule over the models it can serve). Reads only the
manifest's training record; knows no model code.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

RANKING_METRIC = "ndcg@10"
COMPARABLE_PROTOCOL = "1+99"  # every catalogue ranker is validated on these stored candidates (DESIGN §3)
# Models that rank the whole catalogue, cheapest first (ties go to the cheaper one). A-LLMRec only re-ranks
# SASRec's top `allmrec_candidates`, so k is capped for it: never an automatic default.
CATALOGUE_RANKERS = ("sasrec", "llmsrec", "hybrid")
RECOMMENDERS = (*CATALOGUE_RANKERS, "allmrec")  # the values of `model` in POST /v1/recommend


@dataclass(frozen=True)
class ModelChoice:
    """The chosen model (None when no candidate has comparable metrics) and why, in one sentence."""

    name: str | None
    reason: str


def comparable_metric(training: Mapping[str, Any], name: str) -> float | None:
    """The model's validation NDCG@10 when it was measured on the 1+99 candidates, else None."""
    record = training.get(name)
    valid = record.get("valid") if isinstance(record, Mapping) else None
    if not isinstance(valid, Mapping) or valid.get("protocol") != COMPARABLE_PROTOCOL:
        return None
    value = valid.get(RANKING_METRIC)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _users(training: Mapping[str, Any], name: str) -> tuple[Any, Any]:
    """(n_users, seed) of a model's validation record: metrics on other users do not compare."""
    valid = training[name]["valid"]
    return valid.get("n_users"), valid.get("seed")


def choose_default_model(training: Mapping[str, Any], candidates: Collection[str]) -> ModelChoice:
    """The best catalogue ranker among `candidates` by comparable validation NDCG@10; models without such
    metrics, or measured on other validation users than SASRec's (the reference every bundle has), are
    never chosen."""
    scored = [
        (value, name)
        for name in CATALOGUE_RANKERS
        if name in candidates and (value := comparable_metric(training, name)) is not None
    ]
    reference = [_users(training, name) for value, name in scored if name == "sasrec"]
    scored = [
        (value, name) for value, name in scored if not reference or _users(training, name) == reference[0]
    ]
    if not scored:
        return ModelChoice(
            None, f"no model has validation {RANKING_METRIC} on the {COMPARABLE_PROTOCOL} candidates"
        )
    ranked = sorted(scored, key=lambda pair: -pair[0])  # stable: equal values keep the cheaper model first
    listed = ", ".join(f"{name} {value:.4f}" for value, name in ranked)
    best = ranked[0][1]
    return ModelChoice(
        best, f"best validation {RANKING_METRIC} on the {COMPARABLE_PROTOCOL} candidates: {listed}"
    )
