"""The processed dataset directory as typed Python objects, and the leave-one-out split derived from it.
Knows the on-disk format written by `training.data.prepare`; knows nothing about raw dataset formats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from training.common.errors import DataError

FORMAT_VERSION = 1
DATASET_FILE = "dataset.json"
ITEMS_FILE = "items.jsonl"
SEQUENCES_FILE = "sequences.jsonl"
STATS_FILE = "stats.json"
MIN_SEQUENCE_LENGTH = 3  # leave-one-out needs one train item, one validation target, one test target

Split = Literal["train", "valid", "test"]


def seeded_subset(ids: np.ndarray, max_n: int, seed: int) -> np.ndarray:
    """`max_n` of `ids` drawn by `seed`, sorted; all of them when `max_n` is 0 or not below their count."""
    if 0 < max_n < len(ids):
        return np.sort(np.random.default_rng(seed).choice(ids, max_n, replace=False))
    return ids


@dataclass(frozen=True)
class Item:
    item_id: int
    original_id: str
    title: str
    year: int | None
    genres: tuple[str, ...]


@dataclass
class PreparedData:
    root: Path
    name: str
    verb: str
    noun: str
    genres: list[str]
    items: list[Item]  # items[i].item_id == i + 1; id 0 is padding
    users: list[str]  # original user ids; list index = user index
    sequences: list[np.ndarray]  # int64 item ids, oldest -> newest
    timestamps: list[np.ndarray | None]  # int64 unix seconds aligned with sequences, or None

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    def split_input(self, u: int, split: Split) -> np.ndarray:
        """The history fed to the model: train and valid see s[:-2], test sees s[:-1]."""
        seq = self.sequences[u]
        return seq[: _input_end(split)]

    def split_target(self, u: int, split: Literal["valid", "test"]) -> int:
        """The held-out item: s[-2] for valid, s[-1] for test."""
        if split not in ("valid", "test"):
            raise ValueError(f"split {split!r} has no target (use 'valid' or 'test')")
        return int(self.sequences[u][-2 if split == "valid" else -1])

    def split_timestamps(self, u: int, split: Split) -> np.ndarray | None:
        """Timestamps aligned with `split_input(u, split)`, or None when the user has none."""
        ts = self.timestamps[u]
        return None if ts is None else ts[: _input_end(split)]


def _input_end(split: str) -> int:
    if split in ("train", "valid"):
        return -2
    if split == "test":
        return -1
    raise ValueError(f"unknown split {split!r} (expected 'train', 'valid' or 'test')")


def read_json(path: Path) -> Any:
    """A whole JSON file; DataError naming the file when it is missing or malformed."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (not a processed dataset directory?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: malformed JSON: {err}") from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) per line; DataError naming file and line on malformed content."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (not a processed dataset directory?)")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: malformed JSON: {err}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, obj


def _load_items(path: Path) -> list[Item]:
    items = []
    for lineno, obj in iter_jsonl(path):
        try:
            item = Item(
                int(obj["item_id"]),
                str(obj["original_id"]),
                str(obj["title"]),
                None if obj.get("year") is None else int(obj["year"]),
                tuple(obj.get("genres") or ()),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path}:{lineno}: bad item record ({err!r})") from None
        if item.item_id != lineno:
            raise DataError(f"{path}:{lineno}: item_id {item.item_id} out of order (expected {lineno})")
        items.append(item)
    if not items:
        raise DataError(f"{path}: no items")
    return items


def _load_sequences(path: Path, n_items: int) -> tuple[list[str], list[np.ndarray], list[np.ndarray | None]]:
    users: list[str] = []
    sequences: list[np.ndarray] = []
    timestamps: list[np.ndarray | None] = []
    for lineno, obj in iter_jsonl(path):
        try:
            seq = np.asarray(obj["items"], dtype=np.int64)
            ts = None if obj.get("timestamps") is None else np.asarray(obj["timestamps"], dtype=np.int64)
            user = str(obj["user"])
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path}:{lineno}: bad sequence record ({err!r})") from None
        if seq.ndim != 1 or len(seq) < MIN_SEQUENCE_LENGTH:
            raise DataError(f"{path}:{lineno}: sequence shorter than {MIN_SEQUENCE_LENGTH} items")
        if seq.min() < 1 or seq.max() > n_items:
            raise DataError(f"{path}:{lineno}: item id outside 1..{n_items}")
        if ts is not None and ts.shape != seq.shape:
            raise DataError(f"{path}:{lineno}: {len(ts)} timestamps for {len(seq)} items")
        users.append(user)
        sequences.append(seq)
        timestamps.append(ts)
    if not users:
        raise DataError(f"{path}: no users")
    return users, sequences, timestamps


def load_prepared(root: Path) -> PreparedData:
    """Read a directory written by `prepare_dataset`; DataError naming the file on any problem."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: processed dataset directory not found")
    meta = read_json(root / DATASET_FILE)
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise DataError(f"{root / DATASET_FILE}: format_version {found!r} is not {FORMAT_VERSION}")
    try:
        name, verb, noun = str(meta["name"]), str(meta["verb"]), str(meta["noun"])
        genres = [str(g) for g in meta.get("genres") or []]
    except KeyError as err:
        raise DataError(f"{root / DATASET_FILE}: missing field {err}") from None
    items = _load_items(root / ITEMS_FILE)
    users, sequences, timestamps = _load_sequences(root / SEQUENCES_FILE, len(items))
    return PreparedData(root, name, verb, noun, genres, items, users, sequences, timestamps)
