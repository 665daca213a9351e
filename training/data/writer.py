"""Writes the processed dataset directory (dataset.json, items.jsonl, sequences.jsonl, stats.json) into a
temp dir next to the target and renames it into place. Knows the layout; not how the data was filtered."""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.common.errors import DataError
from training.data.dataset import DATASET_FILE, FORMAT_VERSION, ITEMS_FILE, SEQUENCES_FILE, STATS_FILE
from training.data.readers import RawItem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserSequence:
    items: list[str]  # original item ids, oldest -> newest
    timestamps: list[int] | None

    def without(self, drop: set[str]) -> UserSequence:
        keep = [k for k, item in enumerate(self.items) if item not in drop]
        stamps = None if self.timestamps is None else [self.timestamps[k] for k in keep]
        return UserSequence([self.items[k] for k in keep], stamps)


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


def compute_stats(
    lengths: list[int], n_items: int, n_untimed: int, removed: dict[str, int]
) -> dict[str, Any]:
    n = sum(lengths)
    return {
        "users": len(lengths),
        "items": n_items,
        "interactions": n,
        "avg_length": round(n / len(lengths), 4),
        "median_length": statistics.median(lengths),
        "min_length": min(lengths),
        "max_length": max(lengths),
        "density": round(n / (len(lengths) * n_items), 6),
        "users_without_timestamps": n_untimed,
        "removed_interactions": removed,
    }


def _write_files(
    tmp: Path,
    meta: dict[str, Any],
    items: dict[str, RawItem],
    sequences: list[tuple[str, UserSequence]],
    removed: dict[str, int],
) -> None:
    ids = {original: k for k, original in enumerate(items, 1)}
    with (tmp / ITEMS_FILE).open("w", encoding="utf-8", newline="\n") as f:
        for original, item in items.items():
            record = {"item_id": ids[original], "original_id": original, "title": item.title}
            f.write(_line(record | {"year": item.year, "genres": list(item.genres)}))
    with (tmp / SEQUENCES_FILE).open("w", encoding="utf-8", newline="\n") as f:
        for user, seq in sequences:
            f.write(_line({"user": user, "items": [ids[i] for i in seq.items], "timestamps": seq.timestamps}))
    lengths = [len(seq.items) for _, seq in sequences]
    untimed = sum(seq.timestamps is None for _, seq in sequences)
    stats = compute_stats(lengths, len(items), untimed, removed)
    (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    dataset = {"format_version": FORMAT_VERSION, **meta}
    (tmp / DATASET_FILE).write_text(
        json.dumps(dataset, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def replace_dir(tmp: Path, out: Path) -> None:
    """Move `tmp` to `out`; an existing `out` is moved aside first and deleted only after the swap."""
    if not out.exists():
        tmp.rename(out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    out.rename(old / out.name)
    try:
        tmp.rename(out)
    except OSError:
        (old / out.name).rename(out)
        raise
    shutil.rmtree(old)


def check_target(out: Path) -> None:
    """Refuse to replace anything but an earlier processed dataset (or an empty directory)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / DATASET_FILE).is_file():
        raise DataError(
            f"{out}: not empty and not a processed dataset (no {DATASET_FILE}); refusing to replace it"
        )


def write_processed(
    out: Path,
    meta: dict[str, Any],
    items: dict[str, RawItem],
    sequences: list[tuple[str, UserSequence]],
    removed: dict[str, int],
) -> Path:
    """Write everything into a temp dir next to `out`, then swap it in; nothing half-written remains."""
    check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        _write_files(tmp, meta, items, sequences, removed)
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
