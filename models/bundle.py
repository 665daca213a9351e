"""The service bundle on disk: manifest schema, file hashing, bundle version, and verification.
Stdlib + numpy only, shared by training/export (writer) and app/ (reader); it knows no torch or model code.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
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
# What the service needs to rebuild LLM-SRec prompts exactly as in training.
LLM_KEYS = (
    "id",
    "path",
    "dtype",
    "special_tokens",
    "prompt_template_version",
    "max_title_tokens",
    "history_len",
)
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
    llm: Mapping[str, Any] | None = None
    training: Mapping[str, Any] = field(default_factory=dict)  # provenance: train config, best epoch, valid

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


def read_safetensors_header(path: Path) -> dict[str, list[int]]:
    """Tensor name → shape, from the safetensors JSON header only (no tensor data is read)."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        if size > 100_000_000:
            raise ValueError(f"header size {size} is implausible")
        header = json.loads(fh.read(size))
    return {name: list(meta["shape"]) for name, meta in header.items() if name != "__metadata__"}


def _unsafe_path(rel: str) -> bool:
    p = PurePosixPath(rel)
    return p.is_absolute() or ".." in p.parts or rel in ("", ".")


def _check_files(root: Path, m: Manifest, check_hashes: bool) -> list[str]:
    """Every required file listed, every listed file present (and hash-equal), no unlisted weights."""
    problems = []
    required = [*COMMON_FILES, *(f for name in m.models for f in MODEL_FILES.get(name, ()))]
    problems += [
        f"required file {rel} is not listed in manifest files" for rel in required if rel not in m.files
    ]
    problems += [f"unknown model {name!r} in manifest models" for name in m.models if name not in MODEL_FILES]
    for rel, expected in sorted(m.files.items()):
        path = root / rel
        if _unsafe_path(rel):
            problems.append(f"manifest files: path {rel!r} points outside the bundle")
        elif not path.is_file():
            problems.append(f"{rel}: listed in the manifest but missing")
        elif check_hashes and (actual := sha256_file(path)) != expected:
            problems.append(f"{rel}: sha256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…)")
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in m.files and path.suffix in WEIGHT_SUFFIXES:
            problems.append(f"{rel}: weight file not listed in the manifest (unknown provenance)")
    return problems


def _check_npy(root: Path, rel: str, shape: tuple[int, ...], label: str) -> list[str]:
    """dtype and shape from the .npy header (memory-mapped, not read); row 0 (padding) must be zero."""
    try:
        arr = np.load(root / rel, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        return [f"{rel}: cannot read as .npy: {err}"]
    if arr.dtype != np.float32:
        return [f"{rel}: dtype {arr.dtype} != float32"]
    if tuple(arr.shape) != tuple(shape):
        return [f"{rel}: shape {tuple(arr.shape)} != {tuple(shape)} ({label})"]
    if arr.shape[0] and np.any(arr[0]):
        return [f"{rel}: row 0 (padding) is not zero"]
    return []


def _check_catalog(root: Path, n_items: int) -> list[str]:
    """One JSON line per item, item_id = line number (1-based), titles present."""
    count = 0
    with open(root / CATALOG_FILE, "rb") as fh:  # bytes: a bad UTF-8 line is a problem, not a crash
        for count, line in enumerate(fh, start=1):
            try:
                row = json.loads(line)
                ok = row["item_id"] == count and isinstance(row["title"], str)
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                return [f"{CATALOG_FILE}: line {count} is not item {count} with a title"]
    return [] if count == n_items else [f"{CATALOG_FILE}: {count} lines != dataset n_items {n_items}"]


def _check_tensors(root: Path, rel: str, expected: Mapping[str, list[int | None]]) -> list[str]:
    try:
        shapes = read_safetensors_header(root / rel)
    except (OSError, ValueError, KeyError, TypeError, struct.error) as err:
        return [f"{rel}: not a readable safetensors file: {err!r}"]
    return [
        f"{rel}: tensor {name} has shape {shapes.get(name)} != {shape} (manifest dims)"
        for name, shape in expected.items()
        if shapes.get(name) != shape
    ]


def _check_config_file(root: Path, rel: str, section: Mapping[str, Any]) -> list[str]:
    try:
        on_disk = json.loads((root / rel).read_text())
    except (OSError, ValueError) as err:  # ValueError covers bad JSON and bad UTF-8
        return [f"{rel}: cannot read: {err}"]
    return [] if on_disk == dict(section) else [f"{rel}: differs from the manifest's config section"]


def _check_sasrec(root: Path, m: Manifest) -> list[str]:
    cfg, n = m.configs["sasrec"], m.dataset.n_items
    problems = []
    if cfg.get("hidden") != m.dims.cf:
        problems.append(f"dims.cf {m.dims.cf} != sasrec hidden {cfg.get('hidden')}")
    if cfg.get("n_items") != n:
        problems.append(f"sasrec n_items {cfg.get('n_items')} != dataset n_items {n}")
    problems += _check_config_file(root, "sasrec/config.json", cfg)
    expected: dict[str, list[int | None]] = {"item_emb.weight": [n + 1, m.dims.cf]}
    return problems + _check_tensors(root, "sasrec/model.safetensors", expected)


def _check_llmsrec(root: Path, m: Manifest) -> list[str]:
    cfg, d, n = m.configs["llmsrec"], m.dims, m.dataset.n_items
    pairs = [
        ("n_items", n, "dataset n_items"),
        ("d_cf", d.cf, "dims.cf"),
        ("llm_hidden", d.llm_hidden, "dims.llm_hidden"),
        ("user_dim", d.user, "dims.user"),
    ]
    problems = [
        f"llmsrec {key} {cfg.get(key)} != {label} {want}"
        for key, want, label in pairs
        if cfg.get(key) != want
    ]
    if d.item_vectors != (n + 1, d.user):
        problems.append(f"dims.item_vectors {d.item_vectors} != (n_items + 1, dims.user) {(n + 1, d.user)}")
    problems += _check_llm(m)
    problems += _check_config_file(root, "llmsrec/config.json", cfg)
    problems += _check_npy(root, ITEM_VECTORS_FILE, (n + 1, d.user or 0), "dataset n_items + 1, dims.user")
    heads: dict[str, list[int | None]] = {
        "cf_item_emb": [n + 1, d.cf],
        "user_out": [d.llm_hidden],
        "item_out": [d.llm_hidden],
    }
    return problems + _check_tensors(root, "llmsrec/heads.safetensors", heads)


def _check_llm(m: Manifest) -> list[str]:
    """The LLM record the service needs to rebuild prompts; a bundled LLM must have its config listed."""
    if m.llm is None:
        return ["llmsrec needs an llm section in the manifest"]
    problems = [f"llm.{key} is missing" for key in LLM_KEYS if key not in m.llm]
    if m.llm.get("path") == LLM_DIR and f"{LLM_DIR}/config.json" not in m.files:
        problems.append(f"llm.path is {LLM_DIR!r} but {LLM_DIR}/config.json is not listed in manifest files")
    return problems


def _check_allmrec_part(name: str, root: Path, m: Manifest) -> list[str]:
    """An A-LLMRec part (`allmrec` or `allmrec_genre`): the LLM record, a non-empty genre vocabulary for the
    genre part, and tensor shapes that fit SASRec and the LLM."""
    cfg, d, n = m.configs[name], m.dims, m.dataset.n_items
    problems = []
    if name == "allmrec_genre":
        genres = cfg.get("genres")
        if not isinstance(genres, list) or not genres or not all(isinstance(g, str) and g for g in genres):
            problems.append(f"{name} genres must be a non-empty list of names, got {genres!r}")
    if m.llm is None:
        problems.append(f"{name} needs an llm section in the manifest")
    stage1, stage2 = dict(cfg.get("stage1") or {}), dict(cfg.get("stage2") or {})
    latent, hidden = stage1.get("latent"), stage2.get("llm_hidden")
    if hidden != d.llm_hidden:
        problems.append(f"{name} stage2 llm_hidden {hidden} != dims.llm_hidden {d.llm_hidden}")
    problems += _check_config_file(root, f"{name}/config.json", cfg)
    s1: dict[str, list[int | None]] = {"cf_item_emb": [n + 1, d.cf], "item_ae.enc.weight": [latent, d.cf]}
    s2: dict[str, list[int | None]] = {
        "user_proj.0.weight": [hidden, d.cf],
        "item_proj.0.weight": [hidden, latent],
    }
    problems += _check_tensors(root, f"{name}/stage1.safetensors", s1)
    return problems + _check_tensors(root, f"{name}/stage2.safetensors", s2)


_MODEL_CHECKS: dict[str, Callable[[Path, Manifest], list[str]]] = {
    "sasrec": _check_sasrec,
    "llmsrec": _check_llmsrec,
    "allmrec": functools.partial(_check_allmrec_part, "allmrec"),
    "allmrec_genre": functools.partial(_check_allmrec_part, "allmrec_genre"),
}


def verify_bundle(bundle_dir: Path, *, check_hashes: bool = True) -> list[str]:
    """Every problem of a bundle, human-readable; empty when it is sound. check_hashes=False skips sha256."""
    root = Path(bundle_dir)
    if not root.is_dir():
        return [f"{root} is not a directory"]
    try:
        m = read_manifest(root)
    except BundleError as err:
        return [str(err)]
    problems = _check_files(root, m, check_hashes)
    present = {rel for rel in m.files if not _unsafe_path(rel) and (root / rel).is_file()}
    if CATALOG_FILE in present:
        problems += _check_catalog(root, m.dataset.n_items)
    if POPULARITY_FILE in present:
        problems += _check_npy(root, POPULARITY_FILE, (m.dataset.n_items + 1,), "dataset n_items + 1")
    for name in m.models:
        needed = MODEL_FILES.get(name, ())
        if name in _MODEL_CHECKS and all(rel in present for rel in needed):
            problems += _MODEL_CHECKS[name](root, m)
    version = compute_bundle_version(m.dataset.name, m.files)
    if m.bundle_version != version:
        problems.append(f"bundle_version {m.bundle_version!r} != {version!r} computed from the file hashes")
    return problems


def load_verified_manifest(bundle_dir: Path, *, check_hashes: bool = True) -> Manifest:
    """The manifest of a sound bundle; BundleError listing every problem otherwise."""
    problems = verify_bundle(bundle_dir, check_hashes=check_hashes)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise BundleError(f"bundle {bundle_dir} has {len(problems)} problem(s):\n{lines}")
    return read_manifest(bundle_dir)
