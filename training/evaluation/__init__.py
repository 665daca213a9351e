"""Shared evaluation: one protocol, every model, the same stored candidates (see DESIGN §3).
`evaluate(data, scorer, protocol)` is the entry point; models plug in through `Scorer`."""

from training.evaluation.candidates import (
    NEGATIVES,
    EvalProtocol,
    Split,
    candidates_path,
    load_candidates,
    sample_negatives,
    select_users,
)
from training.evaluation.metrics import (
    METRIC_KEYS,
    compute_metrics,
    hit_rate_at_k,
    mean_reciprocal_rank,
    ndcg_at_k,
    rank_targets,
)
from training.evaluation.popularity import PopularityScorer
from training.evaluation.protocol import Scorer, UserVectorScorer, evaluate, shuffle_histories

__all__ = [
    "METRIC_KEYS",
    "NEGATIVES",
    "EvalProtocol",
    "PopularityScorer",
    "Scorer",
    "Split",
    "UserVectorScorer",
    "candidates_path",
    "compute_metrics",
    "evaluate",
    "hit_rate_at_k",
    "load_candidates",
    "mean_reciprocal_rank",
    "ndcg_at_k",
    "rank_targets",
    "sample_negatives",
    "select_users",
    "shuffle_histories",
]
