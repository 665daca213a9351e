"""Verification of a bundle's cold items (manifest `cold_items`, written by `llmrec export add-items`): the
ids, the catalog's `cold` flags, zero rows in every CF and item table, text rows and the cold mask in each
A-LLMRec stage 1. Reads only those rows (memory-mapped); knows no torch or model code.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import numpy as np

from models.bundle import (
    CATALOG_FILE,
    ITEM_VECTORS_FILE,
    POPULARITY_FILE,
    Manifest,
    read_safetensors_rows,
)
from models.manifest_parts import ALLMREC_PARTS

# (file, tensor) of every CF table the service loads: a cold item has no trained row in any of them.
CF_TABLES = (
    ("sasrec/model.safetensors", "item_emb.weight"),
    ("llmsrec/heads.safetensors", "cf_item_emb"),
    *((f"{part}/stage1.safetensors", "cf_item_emb") for part in ALLMREC_PARTS),
)
ZERO_ARRAYS = (POPULARITY_FILE, ITEM_VECTORS_FILE)  # no interactions, never retrieved by LLM-SRec / hybrid


def catalog_cold_ids(path: Path) -> list[int]:
    """Item ids whose catalog row says `"cold": true` (lines that do not parse are _check_catalog's)."""
    ids = []
    with open(path, "rb") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("cold") is True and isinstance(row.get("item_id"), int):
                ids.append(int(row["item_id"]))
    return ids


def _rows(root: Path, rel: str, name: str | None, ids: list[int]) -> tuple[np.ndarray | None, str | None]:
    """(rows of a safetensors tensor or a .npy array, None) or (None, the problem)."""
    try:
        if name is None:
            return np.asarray(np.load(root / rel, mmap_mode="r", allow_pickle=False)[ids]), None
        return read_safetensors_rows(root / rel, name, ids), None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        return (
            None,
            f"{rel}: cannot read the cold items' rows{'' if name is None else f' of {name}'}: {err!r}",
        )


def _nonzero_rows(rows: np.ndarray, ids: list[int]) -> list[int]:
    flat = rows.reshape(len(ids), -1)
    return [i for i, row in zip(ids, flat, strict=True) if np.any(row)]


def _table_problems(root: Path, ids: list[int], present: Collection[str]) -> list[str]:
    problems = []
    tables = [(rel, name) for rel, name in CF_TABLES] + [(rel, None) for rel in ZERO_ARRAYS]
    for rel, name in tables:
        if rel not in present:
            continue
        rows, problem = _rows(root, rel, name, ids)
        if rows is None:
            problems.append(str(problem))
        elif bad := _nonzero_rows(rows, ids):
            what = rel if name is None else f"{rel} {name}"
            problems.append(f"{what}: cold item(s) {bad[:5]} have non-zero rows (a cold item has none)")
    return problems


def _stage1_problems(root: Path, part: str, ids: list[int]) -> list[str]:
    rel = f"{part}/stage1.safetensors"
    cold, problem = _rows(root, rel, "cold", ids)
    text, text_problem = _rows(root, rel, "text_emb", ids)
    problems = [p for p in (problem, text_problem) if p]
    if cold is not None and not bool(np.all(cold)):
        problems.append(
            f"{rel}: cold item(s) {[i for i, c in zip(ids, cold, strict=True) if not c][:5]} "
            "are not marked cold (their latent must come from the text encoder)"
        )
    if text is not None and (missing := sorted(set(ids) - set(_nonzero_rows(text, ids)))):
        problems.append(f"{rel}: cold item(s) {missing[:5]} have no text embedding (zero rows)")
    return problems


def cold_item_problems(root: Path, m: Manifest, present: Collection[str]) -> list[str]:
    """Every problem of the manifest's cold items (none without them); `present`: listed files on disk."""
    if m.cold_items is None:
        return []
    ids, n = list(m.cold_items.ids), m.dataset.n_items
    if not ids or ids != sorted(set(ids)) or ids[0] < 1 or ids[-1] > n:
        return [f"cold_items.ids must be ascending, unique item ids in 1..{n}, got {ids[:10]}"]
    problems = []
    if "allmrec" not in m.models:
        problems.append(
            "cold_items need the allmrec part: A-LLMRec's text path is the only one that ranks them"
        )
    if CATALOG_FILE in present and (flagged := catalog_cold_ids(root / CATALOG_FILE)) != ids:
        problems.append(
            f"{CATALOG_FILE}: rows marked cold {flagged[:10]} != manifest cold_items.ids {ids[:10]}"
        )
    problems += _table_problems(root, ids, present)
    for part in ALLMREC_PARTS:
        if part in m.models and f"{part}/stage1.safetensors" in present:
            problems += _stage1_problems(root, part, ids)
    return problems
