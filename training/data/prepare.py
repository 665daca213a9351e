"""`prepare_dataset`: raw files -> the processed dataset directory (catalog, chronological sequences, stats).
Owns filtering (titles, duplicates, k-core), id assignment and the atomic write; not the raw formats."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from training.common.errors import ConfigError, DataError
from training.data.dataset import MIN_SEQUENCE_LENGTH
from training.data.readers import RawDataset, RawItem, read_ml1m, read_ml1m_official, read_ml100k
from training.data.readers_amazon import RELEASES, read_amazon, read_amazon_beauty_shared
from training.data.writer import UserSequence, write_processed

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSource:
    read: Callable[[Path, str], RawDataset]  # (source directory, category) -> raw data
    help: str


def _amazon_reader(release: str) -> Callable[[Path, str], RawDataset]:
    def read(source: Path, category: str) -> RawDataset:
        return read_amazon(source, release, category)

    return read


DATASETS: dict[str, DatasetSource] = {
    "ml-100k": DatasetSource(lambda s, c: read_ml100k(s), "MovieLens 100K: u.data + u.item (+ u.genre)"),
    "ml-1m": DatasetSource(
        lambda s, c: read_ml1m(s), "MovieLens 1M: shared ml-1m.txt.gz (+ timestamps), else ratings.dat"
    ),
    "ml-1m-official": DatasetSource(
        lambda s, c: read_ml1m_official(s), "MovieLens 1M: ratings.dat + movies.dat"
    ),
    "amazon-beauty": DatasetSource(
        lambda s, c: read_amazon_beauty_shared(s),
        "shared Amazon 2014 Beauty: interactions.tsv.gz + items.tsv",
    ),
    **{
        name: DatasetSource(
            _amazon_reader(name),
            f"Amazon {name[6:]} reviews + meta of one category; also '{name}-<anything>'",
        )
        for name in RELEASES
    },
}


def resolve_dataset(name: str) -> DatasetSource:
    """A registry entry; 'amazon2014-beauty' style names map to their release ('amazon2014')."""
    if name in DATASETS:
        return DATASETS[name]
    release = name.split("-", 1)[0]
    if release in RELEASES:
        return DATASETS[release]
    raise ConfigError(f"dataset {name!r} is unknown; choose one of {', '.join(DATASETS)}")


@dataclass(frozen=True)
class PrepareConfig:
    dataset: str = field(
        metadata={"help": "ml-100k | ml-1m | ml-1m-official | amazon-beauty | amazon20{14,18,23}"}
    )
    category: str = field(
        default="",
        metadata={"help": "Amazon category (e.g. Beauty, All_Beauty); found from the files if empty."},
    )
    kcore: int = field(default=0, metadata={"help": "Iterative k-core on users and items (0 = off)."})
    min_seq_len: int = field(default=3, metadata={"help": "Drop users with fewer interactions (>= 3)."})
    dedupe: bool = field(default=True, metadata={"help": "Keep only the first interaction per (user, item)."})
    drop_untitled: bool = field(
        default=True, metadata={"help": "Drop interactions on items without a title (before k-core)."}
    )

    def __post_init__(self) -> None:
        resolve_dataset(self.dataset)
        if self.category and not self.dataset.startswith(tuple(RELEASES)):
            raise ConfigError(f"category is only for {', '.join(RELEASES)} datasets, not {self.dataset!r}")
        if self.min_seq_len < MIN_SEQUENCE_LENGTH:
            raise ConfigError(
                f"min_seq_len must be >= {MIN_SEQUENCE_LENGTH} (leave-one-out), got {self.min_seq_len}"
            )
        if self.kcore < 0:
            raise ConfigError(f"kcore must be >= 0, got {self.kcore}")


def id_order(ids: list[str]) -> list[str]:
    """Numeric order when every id is an integer (MovieLens, the shared files), else string order."""
    if all(i.isascii() and i.isdigit() for i in ids):
        return sorted(ids, key=int)
    return sorted(ids)


def first_occurrences(seq: list[tuple[str, int | None]]) -> list[tuple[str, int | None]]:
    """The earliest interaction with each item, in order (repeated reviews are data artefacts)."""
    if len({item for item, _ in seq}) == len(seq):
        return seq
    seen: set[str] = set()
    out = []
    for item, ts in seq:
        if item not in seen:
            seen.add(item)
            out.append((item, ts))
    return out


def chronological(
    raw: RawDataset, keep: Callable[[str], bool], dedupe: bool
) -> tuple[dict[str, UserSequence], int]:
    """Per user, kept interactions oldest -> newest: a stable sort by timestamp (ties keep file order)
    when every interaction of the user has one, else file order with no timestamps. Also returns how
    many interactions `keep` accepted (before dedupe)."""
    rows: dict[str, list[tuple[str, int | None]]] = {}
    for user, item, ts in raw.interactions:
        if keep(item):
            rows.setdefault(user, []).append((item, ts))
    out: dict[str, UserSequence] = {}
    for user, seq in rows.items():
        timed = all(ts is not None for _, ts in seq)
        if timed:
            seq.sort(key=itemgetter(1))
        if dedupe:
            seq = first_occurrences(seq)
        stamps = [t for _, t in seq if t is not None] if timed else None
        out[user] = UserSequence([i for i, _ in seq], stamps)
    return out, sum(len(r) for r in rows.values())


def filter_core(seqs: dict[str, UserSequence], user_min: int, item_min: int) -> dict[str, UserSequence]:
    """Repeat until stable: drop items with < item_min interactions, then users with < user_min."""
    while True:
        counts = Counter(item for s in seqs.values() for item in s.items)
        rare = {item for item, n in counts.items() if n < item_min}
        kept = {u: s.without(rare) if rare else s for u, s in seqs.items()}
        kept = {u: s for u, s in kept.items() if len(s.items) >= user_min}
        if not rare and len(kept) == len(seqs):
            return kept
        seqs = kept


def _source_info(raw: RawDataset) -> dict[str, Any]:
    files = {}
    for path in raw.files:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        files[path.name] = {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}
    return {"reader": raw.name, "files": files}


def _genres(raw: RawDataset, items: dict[str, RawItem]) -> list[str]:
    """The reader's vocabulary in its order, then any other genre the kept items use, sorted."""
    used = {g for item in items.values() for g in item.genres}
    return raw.genres + sorted(used - set(raw.genres))


def prepare_dataset(config: PrepareConfig, source: Path, out: Path) -> Path:
    """Read `source`, filter, assign ids and write the processed dataset to `out` atomically."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise DataError(
            f"{source}: source directory not found (download it with `llmrec data download`, or point "
            "LLMREC_DATA_DIR or --source at the raw files)"
        )
    raw = resolve_dataset(config.dataset).read(source, config.category)
    titled = {i for i, meta in raw.items.items() if meta.title}
    keep = titled.__contains__ if config.drop_untitled else (lambda item: True)
    seqs, n_kept = chronological(raw, keep, config.dedupe)
    n_deduped = sum(len(s.items) for s in seqs.values())
    user_min = max(config.kcore, config.min_seq_len)
    seqs = filter_core(seqs, user_min, config.kcore)
    if not seqs:
        raise DataError(
            f"{source}: no user has >= {user_min} interactions after filtering "
            f"({len(raw.interactions)} read, {n_deduped} kept before k-core / length filters)"
        )
    users = id_order(list(seqs))
    item_ids = id_order(list({i for s in seqs.values() for i in s.items}))
    items = {i: raw.items.get(i, RawItem("")) for i in item_ids}
    removed = {
        "untitled": len(raw.interactions) - n_kept,
        "duplicates": n_kept - n_deduped,
        "kcore_and_length": n_deduped - sum(len(s.items) for s in seqs.values()),
    }
    meta = {
        "name": config.dataset, "verb": raw.verb, "noun": raw.noun, "genres": _genres(raw, items),
        "source": _source_info(raw), "config": dataclasses.asdict(config),
    }  # fmt: skip
    path = write_processed(out, meta, items, [(u, seqs[u]) for u in users], removed)
    logger.info("prepared %s: %d users, %d items -> %s", config.dataset, len(users), len(items), path)
    return path
