"""Open a service bundle: verify it through models.bundle_verify (refusing any problem), then load the
catalog, popularity, SASRec, the LLM-SRec heads, the item table, the hybrid's blend weights and A-LLMRec's
recommendation and genre models (when present).
Knows nothing of the LLM itself (app.backends)."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from app.domain import CatalogItem
from app.errors import StartupError
from models.allmrec import ALLMRecStage1, ALLMRecStage2, Stage1Config, Stage2Config
from models.allmrec_scoring import ALLMRecScoring, GenreBlend
from models.bundle import CATALOG_FILE, ITEM_VECTORS_FILE, POPULARITY_FILE, BundleError, Manifest
from models.bundle_verify import load_verified_manifest
from models.hybrid import HybridConfig
from models.llmsrec import LLMSRec, LLMSRecConfig
from models.manifest_parts import LLMSpec, allmrec_prompt
from models.prompts import ALLMRecPromptConfig, PromptConfig
from models.sasrec import SASRec, SASRecConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalog:
    """Items in id order (items[i].item_id == i + 1) and the dataset's genre vocabulary."""

    items: tuple[CatalogItem, ...]
    genres: tuple[str, ...]

    @property
    def n_items(self) -> int:
        return len(self.items)

    def get(self, item_id: int) -> CatalogItem | None:
        return self.items[item_id - 1] if 1 <= item_id <= len(self.items) else None

    def cold_mask(self) -> np.ndarray:
        """(n_items + 1,) bool: the cold items (`llmrec export add-items`: no CF row, text only)."""
        out = np.zeros(self.n_items + 1, dtype=bool)
        out[[item.item_id for item in self.items if item.cold]] = True
        return out

    def genre_matrix(self) -> np.ndarray:
        """(n_items + 1, G) bool: item i has genre g; row 0 (padding) has none."""
        index = {g: j for j, g in enumerate(self.genres)}
        out = np.zeros((self.n_items + 1, len(self.genres)), dtype=bool)
        for item in self.items:
            out[item.item_id, [index[g] for g in item.genres if g in index]] = True
        return out


@dataclass
class ALLMRecModel:
    """A-LLMRec's recommendation prompt: stage 1 (item latents) and the stage 2 trained on next-item titles
    (F_U, F_I) in eval mode, and the prompt wording it was trained with."""

    stage1: ALLMRecStage1
    stage2: ALLMRecStage2
    prompt: ALLMRecPromptConfig
    scoring: ALLMRecScoring = field(
        default_factory=ALLMRecScoring
    )  # how title likelihoods become candidate scores


@dataclass
class GenreModel:
    """A-LLMRec's genre prompt: the genre vocabulary it scores, stage 1 (item latents) and the genre-trained
    stage 2 (F_U, F_I) in eval mode, and the prompt wording it was trained with."""

    genres: tuple[str, ...]
    stage1: ALLMRecStage1
    stage2: ALLMRecStage2
    prompt: ALLMRecPromptConfig
    template_version: str
    blend: GenreBlend = field(
        default_factory=GenreBlend
    )  # the LLM's genre scores with the history's genre shares


@dataclass
class ServingBundle:
    """Everything the service reads from the bundle, loaded once at startup (weights on `device`)."""

    root: Path
    manifest: Manifest
    catalog: Catalog
    popularity: np.ndarray  # (n_items + 1,) float32, row 0 = 0
    sasrec: SASRec
    heads: LLMSRec | None  # None for a SASRec-only bundle
    item_vectors: np.ndarray | None  # (n_items + 1, user_dim) float32
    prompt: PromptConfig | None
    genre: GenreModel | None = None  # None without an A-LLMRec genre part
    allmrec: ALLMRecModel | None = None  # None without an A-LLMRec recommendation part
    hybrid: HybridConfig | None = None  # None without a hybrid part (LLM-SRec blended with SASRec)
    llm: LLMSpec | None = None  # the manifest's LLM record; None without LLM-based models

    @property
    def version(self) -> str:
        return self.manifest.bundle_version

    @property
    def window(self) -> int:
        """The longest history any model of the bundle reads: stored histories are capped to it."""
        return max(self.sasrec.config.max_len, self.prompt.history_len if self.prompt else 0)

    def llm_location(self, override: str | None = None) -> str:
        """Where the LLM lives: the override, the bundle's llm/ directory, or the manifest's path / HF id."""
        if override:
            return override
        if self.llm is None:
            raise StartupError(f"bundle {self.root} has no llm section; it cannot serve LLM-SRec")
        return self.llm.location(self.root)


def verify(bundle_dir: Path) -> Manifest:
    """The manifest of a sound bundle; StartupError listing every problem (files named) otherwise."""
    try:
        return load_verified_manifest(Path(bundle_dir))
    except BundleError as err:
        raise StartupError(f"refusing to start: {err}") from err


def _config(cls: type, raw: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in names})


def _load_weights(module: nn.Module, path: Path, device: str) -> None:
    try:
        module.load_state_dict(load_file(path, device=device))
    except (OSError, SafetensorError, RuntimeError) as err:
        raise StartupError(f"{path}: cannot load weights: {err}") from err


def _read_catalog(path: Path, genres: tuple[str, ...]) -> Catalog:
    items = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            items.append(
                CatalogItem(
                    int(row["item_id"]),
                    str(row.get("original_id", row["item_id"])),
                    str(row["title"]),
                    None if row.get("year") is None else int(row["year"]),
                    tuple(str(g) for g in row.get("genres") or ()),
                    row.get("cold") is True,
                )
            )
    vocab = genres or tuple(sorted({g for item in items for g in item.genres}))
    return Catalog(tuple(items), vocab)


def _load_allmrec(root: Path, manifest: Manifest, name: str, device: str) -> ALLMRecModel:
    """Stage 1 and stage 2 of the bundle's `name` part (allmrec or allmrec_genre), frozen on `device`."""
    raw = manifest.configs[name]
    stage1 = ALLMRecStage1(_config(Stage1Config, dict(raw["stage1"])))
    _load_weights(stage1, root / name / "stage1.safetensors", "cpu")
    stage2 = ALLMRecStage2(_config(Stage2Config, dict(raw["stage2"])))
    _load_weights(stage2, root / name / "stage2.safetensors", "cpu")
    return ALLMRecModel(
        stage1=stage1.to(device).eval().requires_grad_(False),
        stage2=stage2.to(device).eval().requires_grad_(False),
        prompt=allmrec_prompt(manifest, name),
        scoring=_config(ALLMRecScoring, dict(raw.get("scoring") or {})),  # absent in older bundles
    )


def _load_genre(root: Path, manifest: Manifest, device: str) -> GenreModel:
    part = _load_allmrec(root, manifest, "allmrec_genre", device)
    raw = manifest.configs["allmrec_genre"]
    return GenreModel(
        genres=tuple(str(g) for g in raw["genres"]),
        stage1=part.stage1,
        stage2=part.stage2,
        prompt=part.prompt,
        template_version=str(raw["genre_template_version"]),
        blend=_config(GenreBlend, dict(raw.get("blend") or {})),  # absent in older bundles: the LLM alone
    )


def load_bundle(bundle_dir: Path, manifest: Manifest, device: str) -> ServingBundle:
    """Load a verified bundle's weights and tables; SASRec and heads in eval mode on `device`."""
    root = Path(bundle_dir)
    sasrec = SASRec(_config(SASRecConfig, dict(manifest.configs["sasrec"])))
    _load_weights(sasrec, root / "sasrec" / "model.safetensors", "cpu")
    heads, item_vectors, prompt, llm = None, None, None, LLMSpec.of(manifest)
    if "llmsrec" in manifest.models:
        heads = LLMSRec(_config(LLMSRecConfig, dict(manifest.configs["llmsrec"])))
        _load_weights(heads, root / "llmsrec" / "heads.safetensors", "cpu")
        heads = heads.to(device).eval()
        item_vectors = np.load(root / ITEM_VECTORS_FILE, allow_pickle=False).astype(np.float32)
        if llm is None:
            raise StartupError(f"bundle {root} has llmsrec but no llm section")  # verify refuses it first
        prompt = llm.prompt(manifest)
    popularity = np.load(root / POPULARITY_FILE, allow_pickle=False).astype(np.float32)
    catalog = _read_catalog(root / CATALOG_FILE, manifest.dataset.genres)
    genre, allmrec = None, None
    if "allmrec_genre" in manifest.models:
        genre = _load_genre(root, manifest, device)
    if "allmrec" in manifest.models:
        allmrec = _load_allmrec(root, manifest, "allmrec", device)
    hybrid = HybridConfig.from_dict(manifest.configs["hybrid"]) if "hybrid" in manifest.models else None
    log.info("bundle %s: %d items, models %s", manifest.bundle_version, catalog.n_items, manifest.models)
    return ServingBundle(
        root,
        manifest,
        catalog,
        popularity,
        sasrec.to(device).eval(),
        heads,
        item_vectors,
        prompt,
        genre,
        allmrec,
        hybrid,
        llm,
    )
