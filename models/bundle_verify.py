"""Verification of a service bundle: every file listed and hashed, shapes of the catalog, popularity, item
table and each model's tensors (read from safetensors headers, no weights loaded), configs that match the
manifest, prompt templates this code knows. Returns human-readable problems; knows no torch or model code.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from models.allmrec_scoring import ALLMRecScoring, GenreBlend
from models.bundle import (
    CATALOG_FILE,
    COMMON_FILES,
    ITEM_VECTORS_FILE,
    LLM_DIR,
    MODEL_FILES,
    POPULARITY_FILE,
    WEIGHT_SUFFIXES,
    BundleError,
    Manifest,
    compute_bundle_version,
    read_manifest,
    read_safetensors_header,
    sha256_file,
)
from models.bundle_cold import cold_item_problems
from models.hybrid import HybridConfig
from models.manifest_parts import LLM_KEYS, LLMSpec, template_problems
from models.model_choice import RECOMMENDERS


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
    if not problems:
        try:
            LLMSpec.from_dict(m.llm)
        except BundleError as err:
            problems.append(str(err))
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
    calibrated, kind = ("blend", GenreBlend) if name == "allmrec_genre" else ("scoring", ALLMRecScoring)
    try:
        kind(**dict(cfg.get(calibrated) or {}))  # absent: older bundles, the uncalibrated default
    except (TypeError, ValueError) as err:
        problems.append(f"{name} {calibrated} is invalid: {err}")
    stage1, stage2 = dict(cfg.get("stage1") or {}), dict(cfg.get("stage2") or {})
    latent, hidden = stage1.get("latent"), stage2.get("llm_hidden")
    if hidden != d.llm_hidden:
        problems.append(f"{name} stage2 llm_hidden {hidden} != dims.llm_hidden {d.llm_hidden}")
    if stage1.get("n_items") != n:
        problems.append(f"{name} stage1 n_items {stage1.get('n_items')} != dataset n_items {n}")
    problems += _check_config_file(root, f"{name}/config.json", cfg)
    s1: dict[str, list[int | None]] = {
        "cf_item_emb": [n + 1, d.cf],
        "text_emb": [n + 1, stage1.get("d_text")],
        "cold": [n + 1],
        "item_ae.enc.weight": [latent, d.cf],
    }
    s2: dict[str, list[int | None]] = {
        "user_proj.0.weight": [hidden, d.cf],
        "item_proj.0.weight": [hidden, latent],
    }
    problems += _check_tensors(root, f"{name}/stage1.safetensors", s1)
    return problems + _check_tensors(root, f"{name}/stage2.safetensors", s2)


def _check_hybrid(root: Path, m: Manifest) -> list[str]:
    """The blend needs LLM-SRec's user and item vectors besides SASRec; a weight in [0, 1], scales > 0."""
    cfg = m.configs["hybrid"]
    problems = [] if "llmsrec" in m.models else ["hybrid needs the llmsrec part (its user and item vectors)"]
    try:
        HybridConfig.from_dict(cfg)
    except (KeyError, TypeError, ValueError) as err:
        problems.append(f"hybrid config is invalid: {err!r}")
    if extra := sorted(set(cfg) - set(HybridConfig.__dataclass_fields__)):
        problems.append(f"hybrid config has unknown keys {extra}")
    return problems + _check_config_file(root, "hybrid/config.json", cfg)


def _check_default_model(m: Manifest) -> list[str]:
    if m.default_model is None or (m.default_model in m.models and m.default_model in RECOMMENDERS):
        return []
    return [f"default_model {m.default_model!r} is not a recommending model of this bundle {list(m.models)}"]


_MODEL_CHECKS: dict[str, Callable[[Path, Manifest], list[str]]] = {
    "sasrec": _check_sasrec,
    "llmsrec": _check_llmsrec,
    "hybrid": _check_hybrid,
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
    problems += cold_item_problems(root, m, present)
    problems += _check_default_model(m)
    problems += template_problems(m)
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
