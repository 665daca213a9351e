"""Readers of Amazon review data (2014, 2018 and 2023 releases, and the shared amazon-beauty TSVs) into
`RawDataset`. Knows file names and record fields; knows nothing of filtering or the processed layout."""

from __future__ import annotations

import ast
import html
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.common.errors import DataError
from training.data.readers import (
    Interaction,
    RawDataset,
    RawItem,
    bad_line,
    check_header,
    iter_lines,
    read_int_columns,
    require_file,
    split_fields,
)


@dataclass(frozen=True)
class AmazonRelease:
    reviews: tuple[str, ...]  # file-name patterns tried in order; {c} is the category
    meta: tuple[str, ...]
    user_key: str
    item_key: str
    time_key: str
    time_divisor: int  # 2023 stores milliseconds


RELEASES = {
    "amazon2014": AmazonRelease(
        ("reviews_{c}_5.json.gz", "reviews_{c}.json.gz", "reviews_{c}_5.json", "reviews_{c}.json"),
        ("meta_{c}.json.gz", "meta_{c}.json"), "reviewerID", "asin", "unixReviewTime", 1,
    ),
    "amazon2018": AmazonRelease(
        ("{c}_5.json.gz", "{c}.json.gz", "{c}_5.json", "{c}.json"),
        ("meta_{c}.json.gz", "meta_{c}.json"), "reviewerID", "asin", "unixReviewTime", 1,
    ),
    "amazon2023": AmazonRelease(
        ("{c}.jsonl.gz", "{c}.jsonl"), ("meta_{c}.jsonl.gz", "meta_{c}.jsonl"),
        "user_id", "parent_asin", "timestamp", 1000,
    ),
}  # fmt: skip


def parse_record(path: Path, lineno: int, line: str) -> dict[str, Any]:
    """One JSON object, or a Python dict literal (the 2014 metadata is written with repr, not JSON)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        try:
            record = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise bad_line(path, lineno, "neither a JSON object nor a Python dict literal") from None
    if not isinstance(record, dict):
        raise bad_line(path, lineno, "expected an object per line")
    return record


def _required(path: Path, lineno: int, record: dict[str, Any], key: str) -> Any:
    value = record.get(key)
    if value is None or value == "":
        raise bad_line(path, lineno, f"missing field {key!r}")
    return value


def read_reviews(path: Path, release: AmazonRelease) -> list[Interaction]:
    """(user, item, unix seconds) per review line, in file order."""
    rows: list[Interaction] = []
    intern = sys.intern
    for lineno, line in iter_lines(path):
        record = parse_record(path, lineno, line)
        user = str(_required(path, lineno, record, release.user_key))
        item = str(_required(path, lineno, record, release.item_key))
        stamp = _required(path, lineno, record, release.time_key)
        try:
            seconds = int(stamp) // release.time_divisor
        except (TypeError, ValueError):
            raise bad_line(path, lineno, f"{release.time_key} {stamp!r} is not an integer") from None
        rows.append((intern(user), intern(item), seconds))
    return rows


def _text(value: Any) -> str:
    """Amazon text fields are a string (2014) or a list of strings (2018, 2023); HTML entities decoded."""
    if isinstance(value, list):
        value = " ".join(str(v) for v in value if v)
    return html.unescape(str(value or "")).strip()


def amazon_item(record: dict[str, Any]) -> RawItem:
    """Title, and as genres the category names below the root ('Beauty') of every category path."""
    categories = record.get("categories") or record.get("category") or []
    paths = categories if categories and isinstance(categories[0], list) else [categories]
    genres = dict.fromkeys(html.unescape(str(c)).strip() for p in paths for c in p[1:] if c)
    return RawItem(_text(record.get("title")), None, tuple(genres), _text(record.get("description")))


def read_meta(path: Path, id_key: str, needed: set[str]) -> dict[str, RawItem]:
    """Metadata of the `needed` items (first record wins); other lines are skipped before parsing."""
    quick_id = re.compile(rf"""["']{id_key}["']\s*:\s*["']([^"']+)["']""")
    items: dict[str, RawItem] = {}
    for lineno, line in iter_lines(path):
        match = quick_id.search(line)
        if match and (match[1] not in needed or match[1] in items):
            continue
        record = parse_record(path, lineno, line)
        item = str(record.get(id_key) or "")
        if item in needed and item not in items:
            items[item] = amazon_item(record)
    return items


def find_category(source: Path, release: AmazonRelease) -> str:
    """The single category whose metadata file is in `source` (so --category can be left out)."""
    found = set()
    for pattern in release.meta:
        prefix, suffix = pattern.split("{c}")
        found |= {p.name[len(prefix) : -len(suffix)] for p in source.glob(prefix + "*" + suffix)}
    if len(found) != 1:
        expected = " or ".join(p.replace("{c}", "<Category>") for p in release.meta)
        what = f"several categories {sorted(found)}" if found else f"no {expected}"
        raise DataError(f"{source}: {what}; pass the category (e.g. --category Beauty)")
    return found.pop()


def _first_existing(source: Path, patterns: tuple[str, ...], category: str) -> Path:
    candidates = [source / p.format(c=category) for p in patterns]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        f"{candidates[0]}: file not found (also tried {', '.join(p.name for p in candidates[1:])})"
    )


def read_amazon(source: Path, release_name: str, category: str = "") -> RawDataset:
    """Amazon reviews + metadata of one category of the 2014, 2018 or 2023 release."""
    release = RELEASES[release_name]
    if not source.is_dir():
        raise DataError(f"{source}: source directory not found")
    category = category or find_category(source, release)
    reviews = _first_existing(source, release.reviews, category)
    meta = _first_existing(source, release.meta, category)
    interactions = read_reviews(reviews, release)
    items = read_meta(meta, release.item_key, {item for _, item, _ in interactions})
    return RawDataset(release_name, "purchased", "item", interactions, items, [], [reviews, meta])


def read_amazon_beauty_shared(source: Path) -> RawDataset:
    """The shared amazon-beauty: interactions.tsv.gz (user_id, item_id, timestamp) + items.tsv
    (item_id, title, asin); plain TAB splitting (no quoting), HTML entities in titles decoded."""
    path = source / "interactions.tsv.gz"
    users, item_ids, stamps = read_int_columns(path, "\t", 3, ["user_id", "item_id", "timestamp"])
    interactions: list[Interaction] = list(
        zip(map(sys.intern, users), map(sys.intern, item_ids), map(int, stamps), strict=True)
    )
    items_path = require_file(source / "items.tsv")
    items: dict[str, RawItem] = {}
    for lineno, line in iter_lines(items_path):
        if lineno == 1:
            check_header(items_path, lineno, line, ["item_id", "title"])
            continue
        item, title = split_fields(items_path, lineno, line, "\t", 2)
        items[item] = RawItem(html.unescape(title).strip())
    return RawDataset("amazon-beauty", "purchased", "item", interactions, items, [], [path, items_path])
