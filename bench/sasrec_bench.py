r"""SASRec bench against the SASRec paper (Kang & McAuley 2018, Table III: 100 uniformly sampled negatives):
trains with the paper's settings per dataset, evaluates on the shared test candidates (1+99, and full), prints
a table (NDCG@10, HR@10, the paper's NDCG@10 and the gap, popularity, epochs, time) and writes JSON.

CPU (2 shared cores, 15 min of training per dataset):
    nice .venv/bin/python bench/sasrec_bench.py --datasets ml-1m amazon-beauty --threads 1 \
        --out bench/results/sasrec.json
GPU, the paper's full 200 epochs:
    .venv/bin/python bench/sasrec_bench.py --device cuda --budget-min 0 --out bench/results/sasrec_gpu.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from portable import portable_args, portable_command

from training.data.dataset import PreparedData, load_prepared
from training.evaluation.popularity import PopularityScorer
from training.evaluation.protocol import evaluate
from training.sasrec.checkpoint import load_sasrec
from training.sasrec.config import SASRecTrainConfig
from training.sasrec.scorer import SASRecScorer
from training.sasrec.train import train_sasrec

log = logging.getLogger("sasrec_bench")
REPO = Path(__file__).resolve().parents[1]

# SASRec paper settings and results (Table III, NDCG@10 / Hit@10 with 100 sampled negatives). The paper's
# ML-1M is 5-core (6,040 users, 3,416 items); its Beauty is a larger cut (52,024 users, 57,289 items) than the
# standard 5-core Beauty shared here (22,332 users, 12,086 items).
PAPER: dict[str, dict[str, Any]] = {
    "ml-1m": {"max_len": 200, "dropout": 0.2, "kcore": 5, "ndcg@10": 0.5905, "hr@10": 0.8245},
    "amazon-beauty": {"max_len": 50, "dropout": 0.5, "kcore": 5, "ndcg@10": 0.3219, "hr@10": 0.4854},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(PAPER), choices=list(PAPER))
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sasrec.json")
    p.add_argument("--work", type=Path, default=REPO / "work" / "sasrec_bench", help="Prepared data, ckpts.")
    p.add_argument("--epochs", type=int, default=200, help="Maximum epochs (the paper trained 200).")
    p.add_argument("--budget-min", type=float, default=15.0, help="Training minutes per dataset (0 = none).")
    p.add_argument("--max-len", type=int, default=None, help="Override the paper's max length.")
    p.add_argument("--dropout", type=float, default=None, help="Override the paper's dropout.")
    p.add_argument("--hidden", type=int, default=50, help="The paper's d = 50.")
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument(
        "--eval-users", type=int, default=10_000, help="Validation and test users (as the papers)."
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default; 1 on a busy box).")
    p.add_argument("--reuse", action="store_true", help="Reuse checkpoints already under --work.")
    return p.parse_args()


def prepared(name: str, work: Path) -> PreparedData:
    out = work / name
    if not (out / "dataset.json").is_file():
        from training.data.prepare import PrepareConfig, prepare_dataset

        root = Path(os.environ.get("LLMREC_DATA_DIR", REPO.parent / "shared" / "data"))
        prepare_dataset(PrepareConfig(dataset=name, kcore=PAPER[name]["kcore"]), root / name, out)
    return load_prepared(out)


def train_config(name: str, args: argparse.Namespace) -> SASRecTrainConfig:
    paper = PAPER[name]
    return SASRecTrainConfig(
        hidden=args.hidden,
        max_len=args.max_len or paper["max_len"],
        dropout=paper["dropout"] if args.dropout is None else args.dropout,
        epochs=args.epochs,
        patience=args.patience,
        eval_every=args.eval_every,
        eval_max_users=args.eval_users,
        time_budget_s=60.0 * args.budget_min,
        device=args.device,
        num_threads=args.threads,
    )


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    data = prepared(name, args.work)
    config, ckpt = train_config(name, args), args.work / f"{name}-sasrec"
    if not (args.reuse and (ckpt / "config.json").is_file()):
        train_sasrec(data, config, ckpt)
    meta = json.loads((ckpt / "config.json").read_text())
    history = json.loads((ckpt / "history.json").read_text())
    device = meta["train"]["device"] if args.device == "auto" else args.device
    scorer = SASRecScorer(load_sasrec(ckpt, device=device))
    test = evaluate(data, scorer, "1+99", split="test", max_users=args.eval_users, progress=False)
    full = evaluate(data, scorer, "full", split="test", max_users=args.eval_users, progress=False)
    popularity = evaluate(
        data, PopularityScorer(data), "1+99", split="test", max_users=args.eval_users, progress=False
    )
    paper = PAPER[name]
    epoch_s = [h["seconds"] for h in history]
    return {
        "dataset": name,
        "users": data.n_users,
        "items": data.n_items,
        "ndcg@10": test["ndcg@10"],
        "hr@10": test["hr@10"],
        "paper_ndcg@10": paper["ndcg@10"],
        "paper_hr@10": paper["hr@10"],
        "gap_%": 100.0 * (test["ndcg@10"] - paper["ndcg@10"]) / paper["ndcg@10"],
        "popularity_ndcg@10": popularity["ndcg@10"],
        "epochs_run": meta["epochs_run"],
        "best_epoch": meta["best_epoch"],
        "stopped": meta.get("stopped"),
        "train_s": meta["train_seconds"],
        "s_per_epoch": sum(epoch_s) / len(epoch_s),
        "valid": meta["valid"],
        "test_1+99": test,
        "test_full": full,
        "popularity_1+99": popularity,
        "config": meta["train"],
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="SASRec vs the SASRec paper (test, 1 + 99 uniform negatives)")
    for col in (
        "dataset",
        "users",
        "items",
        "NDCG@10",
        "HR@10",
        "paper NDCG@10",
        "gap",
        "pop NDCG@10",
        "full NDCG@10",
        "epochs",
        "best",
        "train s",
    ):
        table.add_column(col, justify="left" if col == "dataset" else "right")
    for r in rows:
        table.add_row(
            r["dataset"], str(r["users"]), str(r["items"]), f"{r['ndcg@10']:.4f}", f"{r['hr@10']:.4f}",
            f"{r['paper_ndcg@10']:.4f}", f"{r['gap_%']:+.1f}%", f"{r['popularity_ndcg@10']:.4f}",
            f"{r['test_full']['ndcg@10']:.4f}", str(r["epochs_run"]), str(r["best_epoch"]),
            f"{r['train_s']:.0f}",
        )  # fmt: skip
    Console(width=180).print(table)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    rows = [run_dataset(name, args) for name in args.datasets]
    print_table(rows)
    result = {
        "command": portable_command(sys.argv),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "args": portable_args(args),
        "paper_settings": PAPER,
        "results": rows,
        "wall_s": time.perf_counter() - wall,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out} (wall {result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
