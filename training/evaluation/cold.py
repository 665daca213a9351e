"""Cold items in evaluation: read a cold split's cold_items.json (written by training/allmrec/cold.py) and
pick the test users whose held-out target is cold. Knows nothing about how the split was made."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.common.errors import DataError
from training.data.dataset import PreparedData, read_json

COLD_FILE = "cold_items.json"


def read_cold_items(root: Path) -> list[int]:
    """The cold item ids of a prepared dataset directory ([] when it has no cold_items.json)."""
    path = Path(root) / COLD_FILE
    if not path.is_file():
        return []
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("items"), list):
        raise DataError(f"{path}: expected {{'items': [item ids]}}")
    return [int(i) for i in record["items"]]


def cold_test_users(data: PreparedData, users: np.ndarray, split: str = "test") -> np.ndarray:
    """The subset of `users` whose held-out target item is cold."""
    cold = set(read_cold_items(data.root))
    return np.asarray([u for u in users if data.split_target(int(u), split) in cold], dtype=np.int64)  # type: ignore[arg-type]
