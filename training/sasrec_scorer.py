"""The SASRec checkpoint directory (`save_checkpoint` writes it atomically, `load_sasrec` reads it) and
`SASRecScorer` (the evaluation Scorer protocol plus user vectors) over variable-length histories.
Training lives in training/sasrec_train.py."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.sasrec import SASRec, SASRecConfig
from training.errors import CheckpointError, ConfigError

__all__ = ["SASRecScorer", "load_sasrec", "pad_histories", "save_checkpoint"]

log = logging.getLogger(__name__)


def pad_histories(histories: list[np.ndarray], max_len: int) -> np.ndarray:
    """(B, T) int64 ids, right-aligned (left padding with 0), the most recent `max_len` items of each;
    T = the longest kept history (at least 1), since SASRec's output does not depend on left padding."""
    tails = [np.asarray(h, dtype=np.int64)[-max_len:] for h in histories]
    lengths = np.fromiter((len(t) for t in tails), dtype=np.int64, count=len(tails))
    width = max(int(lengths.max(initial=0)), 1)
    out = np.zeros((len(tails), width), dtype=np.int64)
    if lengths.sum():
        rows = np.repeat(np.arange(len(tails)), lengths)  # (N,) row of every kept item
        starts = np.cumsum(lengths) - lengths  # offset of each row's first item in the concatenation
        cols = width - lengths[rows] + (np.arange(len(rows)) - starts[rows])  # (N,)
        out[rows, cols] = np.concatenate(tails)
    return out


def _read_config(ckpt_dir: Path) -> SASRecConfig:
    path = ckpt_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; is {ckpt_dir} a SASRec checkpoint directory?")
    try:
        return SASRecConfig(**json.loads(path.read_text())["model"])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: 'model' is not a valid SASRecConfig ({err})") from None


def load_sasrec(ckpt_dir: Path, device: str = "cpu") -> SASRec:
    """The trained SASRec of a checkpoint directory, on `device`, in eval mode."""
    ckpt_dir = Path(ckpt_dir)
    config = _read_config(ckpt_dir)
    path = ckpt_dir / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable or corrupt ({err})") from None
    model = SASRec(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: does not match config.json {config} ({err})") from None
    log.info("loaded SASRec from %s (%d items, hidden %d)", ckpt_dir, config.n_items, config.hidden)
    return model.to(device).eval()


class SASRecScorer:
    """Scores candidates with a SASRec in eval mode. Histories: chronological item-id arrays of any length
    (the most recent max_len items are used); timestamps are accepted and ignored."""

    def __init__(
        self, model: SASRec, device: str | torch.device | None = None, batch_size: int = 256
    ) -> None:
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else model.item_emb.weight.device
        self.batch_size = batch_size

    def _batches(self, n: int) -> range:
        return range(0, n, self.batch_size)

    def _seqs(self, histories: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(pad_histories(histories, self.model.config.max_len)).to(self.device)

    @torch.inference_mode()
    def score(
        self,
        histories: list[np.ndarray],
        candidates: np.ndarray,
        timestamps: list[np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """(B, C) float32 scores of candidate ids (B, C) given each user's history."""
        candidates = np.asarray(candidates, dtype=np.int64)
        if candidates.shape[0] != len(histories):
            raise ValueError(f"{len(histories)} histories but candidates of shape {candidates.shape}")
        out = np.empty(candidates.shape, dtype=np.float32)
        for b in self._batches(len(histories)):
            seqs = self._seqs(histories[b : b + self.batch_size])
            items = torch.from_numpy(candidates[b : b + self.batch_size]).to(self.device)
            out[b : b + self.batch_size] = self._score(seqs, items).float().cpu().numpy()
        return out

    def _score(self, seqs: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if bool(
            (items == items[:1]).all()
        ):  # one shared list (full catalogue): a matmul, no (B, C, D) gather
            table = self.model.item_embeddings()[items[0]]  # (C, D)
            return self.model.user_vector(seqs) @ table.T  # (B, C)
        return self.model.score(seqs, items)

    @torch.inference_mode()
    def user_vectors(
        self, histories: list[np.ndarray], timestamps: list[np.ndarray | None] | None = None
    ) -> np.ndarray:
        """(B, D) float32 user vectors (the last position's output)."""
        parts = [
            self.model.user_vector(self._seqs(histories[b : b + self.batch_size])).float().cpu().numpy()
            for b in self._batches(len(histories))
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.model.config.hidden), np.float32)


def save_checkpoint(out: Path, model: SASRec, meta: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """Write config.json, model.safetensors, item_embeddings.npy, history.json, training_curve.png into a
    temp directory beside OUT, then swap it in; an existing OUT is replaced only if it is a checkpoint."""
    if out.exists() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise ConfigError(f"{out}: exists, is not empty and is not a SASRec checkpoint; not overwriting it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
    np.save(tmp / "item_embeddings.npy", state["item_emb.weight"].float().numpy())
    (tmp / "history.json").write_text(json.dumps(history, indent=2))
    plot_curve(history, meta["best_epoch"], tmp / "training_curve.png")
    (tmp / "config.json").write_text(json.dumps(meta, indent=2))
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    log.info("SASRec checkpoint written to %s (best epoch %d)", out, meta["best_epoch"])


def plot_curve(history: list[dict[str, Any]], best_epoch: int, path: Path) -> None:
    """training_curve.png: training loss and validation NDCG@10 per epoch, the kept epoch marked."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    fig = Figure(figsize=(10, 4))
    loss_ax, valid_ax = fig.subplots(1, 2)
    loss_ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker=".")
    evaluated = [h for h in history if h["valid"] is not None]
    valid_ax.plot([h["epoch"] for h in evaluated], [h["valid"]["ndcg@10"] for h in evaluated], marker="o")
    valid_ax.axvline(best_epoch, color="grey", linestyle="--", label=f"kept epoch {best_epoch}")
    valid_ax.legend()
    for ax, title in ((loss_ax, "training loss (BCE)"), (valid_ax, "validation NDCG@10")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
    fig.savefig(path, format="png", dpi=100)
