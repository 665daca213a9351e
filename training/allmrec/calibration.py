"""Choose A-LLMRec's candidate scoring on validation: every score mode (summed, per-token, PMI, PMI per
token) alone and blended with SASRec on a grid of weights, all from one pass of the two prompts per user over
the stored 1+19 validation candidates. The best by Hit@1 (then NDCG@10, then the smaller SASRec weight) is
what `llmrec eval --model allmrec`, the bench and the service use; the whole table is kept for the record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from models.allmrec_scoring import SCORE_MODES, ALLMRecScoring, blend, llm_scores, row_spread
from training.allmrec.checkpoint import CONFIG_FILE, atomic_write, load_allmrec_encoder
from training.allmrec.scorer import ALLMRecScorer
from training.common.device import resolve_device
from training.common.errors import ConfigError
from training.data.dataset import PreparedData
from training.evaluation.candidates import load_candidates, select_users
from training.evaluation.metrics import compute_metrics, rank_targets

log = logging.getLogger(__name__)

BLEND_WEIGHTS = tuple(round(0.05 * i, 2) for i in range(20))  # 0 … 0.95: the LLM always has a say
# cold candidates' text-imputed SASRec score is shifted by these many within-row spreads (tried when the
# validation candidates hold cold items; None, the neutral score, is always a choice)
COLD_OFFSETS = (0.0, *(-0.5 * i for i in range(1, 9)))  # 0 … -4


def weight_grid(
    key: str, make: Callable[[float], Any], measure: Callable[[Any], dict[str, float]]
) -> list[dict[str, Any]]:
    """The grid search of a blend (here and the genre prompt's): one row per weight of BLEND_WEIGHTS, `key` →
    the blend `make(weight)` as a dict, then its validation metrics `measure(blend)`."""
    rows = []
    for weight in BLEND_WEIGHTS:
        chosen = make(weight)
        rows.append({key: asdict(chosen), **measure(chosen)})
    return rows


def best_row(rows: list[dict[str, Any]], key: str, weight: str, by: tuple[str, str]) -> dict[str, Any]:
    """The best grid row by the metrics `by` in turn, then by the smaller blend weight (`key`'s `weight`)."""
    return max(rows, key=lambda r: (r[by[0]], r[by[1]], -r[key][weight]))


def _metrics(scores: np.ndarray) -> dict[str, float]:
    found = compute_metrics(rank_targets(scores, 0))
    return {k: round(found[k], 6) for k in ("hr@1", "ndcg@10", "hr@10")}


def _mode_rows(
    llm: np.ndarray, mode: str, sasrec: np.ndarray, cold: np.ndarray, imputed: np.ndarray | None
) -> list[dict[str, Any]]:
    """The grid of SASRec weights for one score mode (`llm`: the LLM's scores in that mode), for each way of
    scoring cold candidates on SASRec's side when some are cold (neutral, or text-imputed + each offset)."""
    scales = row_spread(llm), row_spread(sasrec)
    rows = []
    for offset in (None, *COLD_OFFSETS) if imputed is not None else (None,):
        rows += weight_grid(
            "scoring",
            lambda w, o=offset: ALLMRecScoring(mode, w, *scales, cold_offset=o),
            lambda scoring: _metrics(blend(llm, sasrec, scoring, cold, imputed)),
        )
    return rows


def calibration_table(
    data: PreparedData, scorer: ALLMRecScorer, users: np.ndarray, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per (mode, SASRec weight): its scoring and validation Hit@1 / NDCG@10 / HR@10 on `users`."""
    candidates = load_candidates(data, "valid", "1+19", seed, users)
    histories = [data.split_input(int(u), "valid") for u in users]
    raw = scorer.raw(histories, candidates, prior=True)
    sums, counts = np.stack([r.sums for r in raw]), np.stack([r.counts for r in raw])
    prior = np.stack([r.prior for r in raw if r.prior is not None])
    sasrec, cold, imputed = scorer.sasrec_side(histories, candidates)
    rows = []
    for mode in SCORE_MODES:
        rows += _mode_rows(llm_scores(sums, counts, prior, mode), mode, sasrec, cold, imputed)
    rows.append({"scoring": None, "sasrec": True, **_metrics(sasrec)})
    return rows


def parse_cold(cold: str) -> str | float:
    """--cold: 'auto' (chosen on validation), 'neutral', or one of COLD_OFFSETS; ConfigError otherwise."""
    if cold in ("auto", "neutral"):
        return cold
    try:
        offset = float(cold)
    except ValueError:
        offset = float("nan")
    if offset not in COLD_OFFSETS:
        allowed = ", ".join(f"{o:g}" for o in COLD_OFFSETS)
        raise ConfigError(f"--cold must be auto, neutral or one of the offsets {allowed}; got {cold!r}")
    return offset


def best_scoring(table: list[dict[str, Any]], llm_only: bool = False, cold: str = "auto") -> dict[str, Any]:
    """The best row by Hit@1, then NDCG@10, then the smaller SASRec weight (`llm_only`: weight 0 only;
    `cold`: 'auto', or only the rows that score cold candidates that way: 'neutral' or an offset)."""
    rows = [r for r in table if r["scoring"] is not None]
    if llm_only:
        rows = [r for r in rows if r["scoring"]["sasrec_weight"] == 0]
    fixed = parse_cold(cold)
    if fixed != "auto":
        offset = None if fixed == "neutral" else fixed
        rows = [r for r in rows if r["scoring"].get("cold_offset") == offset]
        if not rows:
            raise ConfigError(
                f"--cold {cold}: no calibration row scores cold candidates that way (offsets are tried only "
                "when the validation candidates hold cold items)"
            )
    if not rows:
        raise ConfigError("the calibration table has no A-LLMRec rows")
    return best_row(rows, "scoring", "sasrec_weight", ("hr@1", "ndcg@10"))


def calibrate(
    data: PreparedData, scorer: ALLMRecScorer, max_users: int, seed: int = 0, cold: str = "auto"
) -> dict[str, Any]:
    """Fit on a seeded subset of validation users → the record a stage-2 config keeps as `calibration`
    (its `scoring` is the chosen one; `cold` fixes how cold candidates are scored, see best_scoring)."""
    parse_cold(cold)  # a bad value fails before any LLM work
    users = select_users(data.n_users, max_users, seed)
    table = calibration_table(data, scorer, users, seed)
    best, llm_only = best_scoring(table, cold=cold), best_scoring(table, llm_only=True)
    sasrec = next(r for r in table if r.get("sasrec"))
    log.info(
        "A-LLMRec scoring on %d validation users: best %s (Hit@1 %.4f), LLM alone %s (%.4f), SASRec %.4f",
        len(users),
        best["scoring"],
        best["hr@1"],
        llm_only["scoring"]["mode"],
        llm_only["hr@1"],
        sasrec["hr@1"],
    )
    return {
        "scoring": best["scoring"],
        "valid": {k: best[k] for k in ("hr@1", "ndcg@10", "hr@10")} | {"n_users": len(users)},
        "llm_only": llm_only,
        "sasrec": {k: sasrec[k] for k in ("hr@1", "ndcg@10", "hr@10")},
        "table": table,
        "protocol": "1+19",
        "split": "valid",
        "seed": seed,
        "cold": cold,
    }


def calibrate_checkpoint(
    stage2_dir: Path,
    data: PreparedData,
    max_users: int,
    device: str = "cpu",
    batch_size: int = 4,
    cold: str = "auto",
) -> dict[str, Any]:
    """Calibrate a stage-2 checkpoint in place: its config.json gains `scoring` and `calibration`."""
    parse_cold(cold)
    encoder, config = load_allmrec_encoder(Path(stage2_dir), data, resolve_device(device))
    scorer = ALLMRecScorer(encoder, "likelihood", batch_size, progress=True)
    seed = int(config.get("train", {}).get("eval_seed", 0))
    record = calibrate(data, scorer, max_users, seed, cold)
    write_calibration(Path(stage2_dir), config, record)
    return record


def write_calibration(stage2_dir: Path, config: dict[str, Any], record: dict[str, Any]) -> None:
    """Rewrite config.json (atomically) with the chosen scoring and its validation record."""
    updated = config | {"scoring": record["scoring"], "calibration": record}
    text = json.dumps(updated, indent=2, default=str)
    atomic_write(stage2_dir / CONFIG_FILE, lambda p: p.write_text(text))
