"""Cold-item split of a prepared dataset: a seeded slice of items is removed from every user's train part
(so SASRec never trains their embeddings) but kept as validation/test targets. Written as a new prepared
dataset directory plus cold_items.json; test cases whose target is cold measure the cold-item path
(reading the split back and picking those cases: training/evaluation/cold.py).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from training.common.errors import ConfigError
from training.data.dataset import (
    DATASET_FILE,
    ITEMS_FILE,
    MIN_SEQUENCE_LENGTH,
    SEQUENCES_FILE,
    STATS_FILE,
    PreparedData,
    read_json,
)
from training.evaluation.cold import COLD_FILE

log = logging.getLogger(__name__)


def choose_cold_items(n_items: int, fraction: float, seed: int) -> np.ndarray:
    """A seeded, sorted slice of round(fraction * n_items) item ids out of 1..n_items (uniform)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"cold fraction must be in (0, 1), got {fraction}")
    n = max(1, round(fraction * n_items))
    return np.sort(np.random.default_rng(seed).choice(np.arange(1, n_items + 1), n, replace=False))


def cold_sequence(seq: np.ndarray, cold: set[int]) -> np.ndarray:
    """Train part without cold items; the validation and test targets (last two) kept as they are."""
    train = [int(i) for i in seq[:-2] if int(i) not in cold]
    return np.asarray([*train, int(seq[-2]), int(seq[-1])], dtype=np.int64)


def make_cold_split(data: PreparedData, out: Path, fraction: float = 0.2, seed: int = 0) -> Path:
    """Write the cold split of `data` to OUT (same items and users, name '<name>-cold'); returns OUT.

    Users whose train part would fall below one item are dropped (counted in stats.json)."""
    cold = choose_cold_items(data.n_items, fraction, seed)
    cold_set = {int(i) for i in cold}
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} exists; choose a new directory for the cold split")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = read_json(data.root / DATASET_FILE) | {"name": f"{data.name}-cold"}
    (tmp / DATASET_FILE).write_text(json.dumps(meta, indent=2))
    shutil.copyfile(data.root / ITEMS_FILE, tmp / ITEMS_FILE)
    kept, dropped, interactions = 0, 0, 0
    with (tmp / SEQUENCES_FILE).open("w", encoding="utf-8") as fh:
        for user, seq, ts in zip(data.users, data.sequences, data.timestamps, strict=True):
            new = cold_sequence(seq, cold_set)
            if len(new) < MIN_SEQUENCE_LENGTH:
                dropped += 1
                continue
            record: dict = {"user": user, "items": new.tolist()}
            if ts is not None:
                keep = [k for k, i in enumerate(seq[:-2]) if int(i) not in cold_set] + [
                    len(seq) - 2,
                    len(seq) - 1,
                ]
                record["timestamps"] = [int(ts[k]) for k in keep]
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            kept, interactions = kept + 1, interactions + len(new)
    stats = {
        "users": kept,
        "items": data.n_items,
        "interactions": interactions,
        "dropped_users": dropped,
        "cold_items": len(cold),
        "cold_fraction": fraction,
        "source": str(data.root),
    }
    (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2))
    (tmp / COLD_FILE).write_text(json.dumps({"items": cold.tolist(), "fraction": fraction, "seed": seed}))
    tmp.rename(out)
    log.info(
        "cold split of %s: %d cold items, %d users kept, %d dropped → %s",
        data.name,
        len(cold),
        kept,
        dropped,
        out,
    )
    return out
