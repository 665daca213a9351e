"""The SASRec checkpoint directory: `save_checkpoint` writes it atomically (weights, item table, history,
training curve, config.json), `load_sasrec` reads it back with clear errors. Training: sasrec/train.py;
scoring: sasrec/scorer.py."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.sasrec import SASRec, SASRecConfig
from training.common.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)


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
