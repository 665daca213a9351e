"""The service bundle on disk: layout, manifest schema, file hashing and bundle version (verification lives
in models.bundle_verify, typed views of the LLM and prompt sections in models.manifest_parts). Stdlib + numpy
only, shared by training/export (writer) and app/ (reader); it knows no torch or model code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BUNDLE_SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
CATALOG_FILE = "catalog.jsonl"
POPULARITY_FILE = "popularity.npy"
ITEM_VECTORS_FILE = "item_vectors.npy"
LLM_DIR = "llm"
# Files each model needs in the bundle; a new model adds its own subdirectory here.
MODEL_FILES: dict[str, tuple[str, ...]] = {
    "sasrec": ("sasrec/config.json", "sasrec/model.safetensors"),
    "llmsrec": ("llmsrec/config.json", "llmsrec/heads.safetensors", ITEM_VECTORS_FILE),
    # The blend of LLM-SRec and SASRec (models/hybrid.py): its weight and scales; the tables are theirs.
    "hybrid": ("hybrid/config.json", ITEM_VECTORS_FILE, "sasrec/model.safetensors"),
    # A-LLMRec's recommendation prompt: stage 1 (item latents) + the stage 2 trained on next-item titles.
    "allmrec": ("allmrec/config.json", "allmrec/stage1.safetensors", "allmrec/stage2.safetensors"),
    # A-LLMRec's genre prompt: stage 1 (item latents) + the genre-trained stage 2 (F_U, F_I).
    "allmrec_genre": (
        "allmrec_genre/config.json",
        "allmrec_genre/stage1.safetensors",
        "allmrec_genre/stage2.safetensors",
    ),
}
COMMON_FILES = (CATALOG_FILE, POPULARITY_FILE)
WEIGHT_SUFFIXES = (".safetensors", ".npy", ".npz", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".faiss")
_CHUNK = 1 << 20


class BundleError(Exception):
    """A bundle directory is missing, malformed, or inconsistent; the message lists every problem."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    verb: str
    noun: str
    n_items: int
    n_users: int
    genres: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dims:
    cf: int  # SASRec hidden size
    llm_hidden: int | None = None  # LLM hidden size (None without an LLM-based model)
    user: int | None = None  # size of user / item vectors scored by dot product
    item_vectors: tuple[int, int] | None = None  # shape of item_vectors.npy


@dataclass(frozen=True)
class ColdItems:
    """Items added after training by `llmrec export add-items` (training/add_items.py): a title and genres,
    no interactions. Their rows are zero in every CF table and item table (SASRec, LLM-SRec, popularity) and
    come from the text encoder in A-LLMRec's stage 1 (cold = True), so only A-LLMRec's text path ranks them.
    Their catalog rows carry `"cold": true` too."""

    ids: tuple[int, ...]  # internal item ids, ascending
    text_model: str  # the sentence encoder that embedded their texts (the one stage 1 was trained with)
    sources: tuple[str, ...] = ()  # bundle_version each add-items run started from, oldest first

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ColdItems:
        return cls(
            ids=tuple(int(i) for i in raw["ids"]),
            text_model=str(raw["text_model"]),
            sources=tuple(str(v) for v in raw.get("sources") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "text_model": self.text_model, "sources": list(self.sources)}


@dataclass(frozen=True)
class Manifest:
    """Typed, read-only view of manifest.json; per-model configs are keyed by model name."""

    schema_version: int
    bundle_version: str
    created_at: str
    dataset: DatasetInfo
    dims: Dims
    models: tuple[str, ...]
    files: Mapping[str, str]  # relative posix path → sha256 hex
    configs: Mapping[str, Mapping[str, Any]]  # model name → its config (also at <name>/config.json)
    llm: Mapping[str, Any] | None = None  # as on disk; typed by models.manifest_parts.LLMSpec
    training: Mapping[str, Any] = field(default_factory=dict)  # provenance: train config, best epoch, valid
    default_model: str | None = None  # chosen at export (models.model_choice); None in older bundles
    cold_items: ColdItems | None = None  # items added by `llmrec export add-items`; None when there are none

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Manifest:
        """Parse a manifest dict; BundleError naming the first missing or malformed field."""
        try:
            dims = dict(raw["dims"])
            shape = dims.get("item_vectors")
            models = tuple(raw["models"])
            return cls(
                schema_version=int(raw["schema_version"]),
                bundle_version=str(raw["bundle_version"]),
                created_at=str(raw.get("created_at", "")),
                dataset=DatasetInfo(**{**raw["dataset"], "genres": tuple(raw["dataset"].get("genres", ()))}),
                dims=Dims(**{**dims, "item_vectors": None if shape is None else tuple(shape)}),
                models=models,
                files={str(k): str(v) for k, v in dict(raw["files"]).items()},
                configs={name: dict(raw[name]) for name in models},
                llm=None if raw.get("llm") is None else dict(raw["llm"]),
                training=dict(raw.get("training") or {}),
                default_model=None if raw.get("default_model") is None else str(raw["default_model"]),
                cold_items=None if raw.get("cold_items") is None else ColdItems.from_dict(raw["cold_items"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise BundleError(f"{MANIFEST_FILE}: malformed or missing field: {err!r}") from err

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict; model configs become top-level keys named after the model."""
        dims = dataclasses.asdict(self.dims)
        dims["item_vectors"] = None if self.dims.item_vectors is None else list(self.dims.item_vectors)
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "bundle_version": self.bundle_version,
            "created_at": self.created_at,
            "dataset": dataclasses.asdict(self.dataset) | {"genres": list(self.dataset.genres)},
            "dims": dims,
            "models": list(self.models),
            "llm": None if self.llm is None else dict(self.llm),
        }
        out |= {name: dict(self.configs[name]) for name in self.models}
        if self.default_model is not None:  # absent rather than null, so older manifests round-trip
            out["default_model"] = self.default_model
        if self.cold_items is not None:  # absent without cold items, as in bundles from `export bundle`
            out["cold_items"] = self.cold_items.to_dict()
        return out | {"training": dict(self.training), "files": dict(self.files)}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def compute_bundle_version(dataset_name: str, files: Mapping[str, str]) -> str:
    """'<dataset>-<12 hex>' from the sorted (path, sha256) pairs: identical files, identical version."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path}\0{files[path]}\n".encode())
    return f"{dataset_name}-{digest.hexdigest()[:12]}"


def read_manifest(bundle_dir: Path) -> Manifest:
    """Parse BUNDLE/manifest.json (no file checks; use load_verified_manifest for those)."""
    path = Path(bundle_dir) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{path} is missing: {bundle_dir} is not a bundle (llmrec export bundle)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: expected a JSON object")
    if raw.get("schema_version") != BUNDLE_SCHEMA_VERSION:
        raise BundleError(
            f"{path}: schema_version {raw.get('schema_version')!r} != {BUNDLE_SCHEMA_VERSION} "
            "(re-export the bundle with this version of llmrec)"
        )
    return Manifest.from_dict(raw)


def _safetensors_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(header size, header) of a safetensors file: the JSON after its 8-byte length; no tensor data read."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        if size > 100_000_000:
            raise ValueError(f"header size {size} is implausible")
        return size, json.loads(fh.read(size))


def read_safetensors_header(path: Path) -> dict[str, list[int]]:
    """Tensor name → shape, from the safetensors JSON header only (no tensor data is read)."""
    _, header = _safetensors_header(path)
    return {name: list(meta["shape"]) for name, meta in header.items() if name != "__metadata__"}


_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BOOL": "?", "U8": "u1", "I64": "<i8"}


def read_safetensors_rows(path: Path, name: str, rows: list[int]) -> np.ndarray:
    """Rows of one tensor (first axis) in its stored dtype (BF16 widened to float32), memory-mapped so only
    those rows are read; KeyError for a missing tensor, ValueError for a dtype this reader does not know."""
    size, header = _safetensors_header(path)
    meta = header[name]
    dtype, shape = str(meta["dtype"]), tuple(int(d) for d in meta["shape"])
    begin = 8 + size + int(meta["data_offsets"][0])
    if dtype == "BF16":
        raw = np.memmap(path, dtype="<u2", mode="r", offset=begin, shape=shape)[rows]
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype not in _SAFETENSORS_DTYPES:
        raise ValueError(f"{path}: tensor {name} has dtype {dtype}, which this reader does not know")
    return np.array(
        np.memmap(path, dtype=_SAFETENSORS_DTYPES[dtype], mode="r", offset=begin, shape=shape)[rows]
    )
