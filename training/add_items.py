"""`llmrec export add-items`: a new bundle with cold items appended to a bundle's catalogue — a title, genres
and maybe a year, no interactions. They get the next internal ids; every item-indexed table grows by zero
rows (SASRec, LLM-SRec heads and item vectors, popularity) and each A-LLMRec stage 1 gets their MiniLM text
embeddings with cold = True, so A-LLMRec's text path is the only one that can rank them (manifest
`cold_items`, models.bundle.ColdItems). The input bundle is only read; the new one is written like `export
bundle` writes one (temp dir, every file hashed, manifest last, verified, renamed into place).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models.bundle import (
    CATALOG_FILE,
    ITEM_VECTORS_FILE,
    MANIFEST_FILE,
    POPULARITY_FILE,
    ColdItems,
    Manifest,
    compute_bundle_version,
    read_manifest,
    read_safetensors_rows,
    sha256_file,
)
from models.bundle_verify import verify_bundle
from models.manifest_parts import ALLMREC_PARTS
from training.allmrec.text_encoder import MODEL_NAME, encode_texts, item_text
from training.common.errors import CheckpointError, ConfigError
from training.common.flags import flag
from training.data.dataset import Item
from training.export import bullet_list, check_out, publish_bundle, write_json

log = logging.getLogger(__name__)

TEXT_DIM = 384  # all-MiniLM-L6-v2's sentence-embedding size
MIN_TEXT_COSINE = 0.99  # stored text rows vs MiniLM re-encoding the same catalogue texts
TEXT_SAMPLE = 16  # catalogue items re-encoded for that check
FIELDS = {"item_id", "title", "genres", "year"}


@dataclass(frozen=True)
class AddItemsConfig:
    """The flags of `llmrec export add-items` besides its paths."""

    overwrite: bool = flag(False, "Replace an existing bundle at OUT.")
    device: str = flag("cpu", "Device of the text encoder (cpu | cuda).")


@dataclass(frozen=True)
class NewItem:
    """One line of the items file: the caller's external id and what the text encoder reads."""

    external_id: str
    title: str
    genres: tuple[str, ...]
    year: int | None

    def as_item(self, item_id: int) -> Item:
        return Item(item_id, self.external_id, self.title, self.year, self.genres)


def _parse_line(line: str, where: str) -> NewItem:
    """One JSON object; ConfigError naming the line and what is wrong with it."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where}: not valid JSON: {err}") from None
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if unknown := sorted(set(row) - FIELDS):
        raise ConfigError(f"{where}: unknown field(s) {unknown}; an item has {sorted(FIELDS)}")
    ext, title, genres, year = row.get("item_id"), row.get("title"), row.get("genres", []), row.get("year")
    if isinstance(ext, bool) or not isinstance(ext, str | int) or not str(ext).strip():
        raise ConfigError(f"{where}: item_id must be a non-empty string (the external id), got {ext!r}")
    if not isinstance(title, str) or not title.strip():
        raise ConfigError(f"{where}: empty title: an item needs one (it is what A-LLMRec reads)")
    if not isinstance(genres, list) or not all(isinstance(g, str) and g.strip() for g in genres):
        raise ConfigError(f"{where}: genres must be a list of non-empty strings, got {genres!r}")
    if year is not None and (isinstance(year, bool) or not isinstance(year, int)):
        raise ConfigError(f"{where}: year must be an integer, got {year!r}")
    return NewItem(str(ext).strip(), title.strip(), tuple(g.strip() for g in genres), year)


def read_new_items(path: Path, existing: dict[str, int]) -> list[NewItem]:
    """The items of a JSONL file (blank lines skipped); ConfigError naming the line of the first bad one,
    of an id repeated in the file, or of an id the bundle already has (`existing`: external id → item id)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--items {path}: cannot read: {err}") from None
    items, first_line = [], {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        item = _parse_line(line, where)
        if item.external_id in existing:
            raise ConfigError(
                f"{where}: item_id {item.external_id!r} is already in the bundle "
                f"(item {existing[item.external_id]})"
            )
        if item.external_id in first_line:
            raise ConfigError(
                f"{where}: item_id {item.external_id!r} repeats line {first_line[item.external_id]}"
            )
        first_line[item.external_id] = number
        items.append(item)
    if not items:
        raise ConfigError(f"--items {path} holds no items")
    return items


def _source(bundle: Path) -> Manifest:
    """The input bundle's manifest, after a full verification (hashes included)."""
    if not bundle.is_dir() or not (bundle / MANIFEST_FILE).is_file():
        raise CheckpointError(
            f"--bundle {bundle}: no bundle there (no {MANIFEST_FILE}; llmrec export bundle)"
        )
    if problems := verify_bundle(bundle):
        raise CheckpointError(f"--bundle {bundle} has {len(problems)} problem(s):\n{bullet_list(problems)}")
    manifest = read_manifest(bundle)
    if "allmrec" not in manifest.models:
        raise ConfigError(
            f"--bundle {bundle} has no allmrec part (models: {', '.join(manifest.models)}): cold items are "
            "ranked only by A-LLMRec's text path; export the bundle with --allmrec"
        )
    if manifest.cold_items is not None and manifest.cold_items.text_model != MODEL_NAME:
        raise CheckpointError(f"--bundle {bundle}: its cold items were embedded by another text model")
    return manifest


def _catalog(bundle: Path) -> list[dict[str, Any]]:
    with open(bundle / CATALOG_FILE, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _catalog_item(row: dict[str, Any]) -> Item:
    year = row.get("year")
    genres = tuple(str(g) for g in row.get("genres") or ())
    return Item(int(row["item_id"]), str(row.get("original_id", "")), str(row["title"]), year, genres)


def _text_rows(
    bundle: Path, m: Manifest, catalog: list[dict[str, Any]], new: list[NewItem], device: str
) -> np.ndarray:
    """(k, 384) MiniLM embeddings of the new items' texts, after checking that each A-LLMRec stage 1's text
    table is MiniLM's on this catalogue (re-encoding a sample of it): otherwise the new rows would not be
    comparable with the ones its text encoder was trained on."""
    parts = [p for p in ALLMREC_PARTS if p in m.models]
    for part in parts:
        d_text = m.configs[part]["stage1"].get("d_text")
        if d_text != TEXT_DIM:
            raise CheckpointError(
                f"--bundle {bundle}: {part} stage 1 reads {d_text}-dim text embeddings, {MODEL_NAME} gives "
                f"{TEXT_DIM}: its text table was not made by the encoder add-items uses"
            )
    n = len(catalog)
    sample = sorted({int(i) for i in np.linspace(1, n, min(TEXT_SAMPLE, n)).round()})
    texts = [item_text(_catalog_item(catalog[i - 1])) for i in sample]
    texts += [item_text(item.as_item(n + j)) for j, item in enumerate(new, start=1)]
    log.info("encoding %d texts with %s (%d to check the stored table)", len(texts), MODEL_NAME, len(sample))
    fresh = encode_texts(texts, device)
    for part in parts:
        stored = read_safetensors_rows(bundle / part / "stage1.safetensors", "text_emb", sample).astype(
            np.float32
        )
        cos = (stored * fresh[: len(sample)]).sum(1) / np.maximum(
            np.linalg.norm(stored, axis=1) * np.linalg.norm(fresh[: len(sample)], axis=1), 1e-12
        )
        if cos.min() < MIN_TEXT_COSINE:
            worst = int(np.argmin(cos))
            raise CheckpointError(
                f"--bundle {bundle}: {part} stage 1's text row of item {sample[worst]} is not {MODEL_NAME}'s "
                f"embedding of its catalogue text (cosine {cos[worst]:.3f}): was it trained with "
                "--finetune-text-encoder? New items' text embeddings would not be comparable"
            )
    return fresh[len(sample) :]


def _grow_safetensors(src: Path, dst: Path, rows: dict[str, torch.Tensor | None], k: int) -> None:
    """Copy a safetensors file with rows appended to the named tensors (first axis): the given (k, ...) rows,
    or k zero rows for None; dtypes and metadata kept."""
    with safe_open(str(src), framework="pt") as fh:
        metadata = fh.metadata()
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (safe_open is no dict)
    for name, extra in rows.items():
        table = tensors[name]
        extra = torch.zeros((k, *table.shape[1:]), dtype=table.dtype) if extra is None else extra
        tensors[name] = torch.cat([table, extra.to(table.dtype)])  # (n + 1 + k, ...)
    save_file(tensors, str(dst), metadata=metadata)


def _grow_npy(src: Path, dst: Path, k: int) -> None:
    table = np.load(src, allow_pickle=False)
    with open(dst, "wb") as fh:
        np.save(fh, np.concatenate([table, np.zeros((k, *table.shape[1:]), table.dtype)]))


def _write_tables(src: Path, tmp: Path, m: Manifest, text: np.ndarray) -> None:
    """Every listed file of the source into tmp: item-indexed tables grown by k rows, the rest copied."""
    k = len(text)
    stage1_rows: dict[str, torch.Tensor | None] = {
        "cf_item_emb": None,
        "text_emb": torch.from_numpy(text),
        "cold": torch.ones(k, dtype=torch.bool),
    }
    grown: dict[str, dict[str, torch.Tensor | None]] = {
        "sasrec/model.safetensors": {"item_emb.weight": None},
        "llmsrec/heads.safetensors": {"cf_item_emb": None},
        **{f"{part}/stage1.safetensors": stage1_rows for part in ALLMREC_PARTS},
    }
    for rel in m.files:
        dst = tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel in grown:
            _grow_safetensors(src / rel, dst, grown[rel], k)
        elif rel in (POPULARITY_FILE, ITEM_VECTORS_FILE):
            _grow_npy(src / rel, dst, k)
        elif rel != MANIFEST_FILE:
            shutil.copyfile(src / rel, dst)


def _append_catalog(path: Path, new: list[NewItem], n: int) -> None:
    """The new items as catalog rows n+1.. with `"cold": true` (original_id = the caller's external id)."""
    ends_open = path.read_bytes()[-1:] not in (b"", b"\n")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n" if ends_open else "")
        for item_id, item in enumerate(new, start=n + 1):
            row = dataclasses.asdict(item.as_item(item_id)) | {"genres": list(item.genres), "cold": True}
            fh.write(json.dumps(row) + "\n")


def _grown_configs(m: Manifest, k: int) -> dict[str, dict[str, Any]]:
    configs = {name: json.loads(json.dumps(dict(cfg))) for name, cfg in m.configs.items()}  # deep copies
    for name in ("sasrec", "llmsrec"):
        if name in configs:
            configs[name]["n_items"] += k
    for part in ALLMREC_PARTS:
        if part in configs:
            configs[part]["stage1"]["n_items"] += k
    return configs


def _new_manifest(m: Manifest, tmp: Path, configs: dict[str, dict[str, Any]], k: int) -> Manifest:
    n = m.dataset.n_items
    ids = tuple(range(n + 1, n + k + 1))
    old = m.cold_items or ColdItems((), MODEL_NAME)
    files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    vectors = m.dims.item_vectors
    return dataclasses.replace(
        m,
        bundle_version=compute_bundle_version(m.dataset.name, files),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        dataset=dataclasses.replace(m.dataset, n_items=n + k),
        dims=dataclasses.replace(m.dims, item_vectors=None if vectors is None else (n + k + 1, vectors[1])),
        configs=configs,
        files=files,
        cold_items=ColdItems((*old.ids, *ids), MODEL_NAME, (*old.sources, m.bundle_version)),
    )


def _warn_unknown_genres(m: Manifest, new: list[NewItem]) -> None:
    vocab = set(m.dataset.genres)
    unknown = sorted({g for item in new for g in item.genres} - vocab) if vocab else []
    if unknown:
        log.warning(
            "genres %s are not in the bundle's vocabulary: the text encoder reads them, "
            "filters.genres cannot select them",
            unknown,
        )


def add_items(
    bundle: Path, items_file: Path, out: Path, *, overwrite: bool = False, device: str = "cpu"
) -> Path:
    """Write OUT: BUNDLE plus the items of ITEMS_FILE as cold items (ids n+1..n+k); returns OUT."""
    bundle, out = Path(bundle), Path(out)
    manifest = _source(bundle)
    if out.resolve() == bundle.resolve():
        raise ConfigError(f"--out {out} is the input bundle: add-items writes a new bundle, never the input")
    check_out(out, overwrite)
    catalog = _catalog(bundle)
    known = {str(row["original_id"]): int(row["item_id"]) for row in catalog if "original_id" in row}
    new = read_new_items(items_file, known)
    _warn_unknown_genres(manifest, new)
    text = _text_rows(bundle, manifest, catalog, new, device)
    n, k = manifest.dataset.n_items, len(new)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        _write_tables(bundle, tmp, manifest, text)
        _append_catalog(tmp / CATALOG_FILE, new, n)
        configs = _grown_configs(manifest, k)
        for name, config in configs.items():
            write_json(tmp / name / "config.json", config)
        grown = _new_manifest(manifest, tmp, configs, k)
        write_json(tmp / MANIFEST_FILE, grown.to_dict())  # last: a manifest marks a complete bundle
        if problems := verify_bundle(tmp, check_hashes=False):  # hashes were just taken from the files
            raise CheckpointError("the new bundle does not verify:\n" + bullet_list(problems))
        publish_bundle(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "bundle %s: %s + %d cold items (ids %d..%d) → %s",
        grown.bundle_version,
        manifest.bundle_version,
        k,
        n + 1,
        n + k,
        out,
    )
    return out
