"""Cold-item retrieval bench: how well the service's text-side retrieval (models/cold_items.py: each cold
item's MiniLM text against the mean MiniLM text of the history) finds a user's next item among items held out
as cold. For each size, a seeded set of items is treated as cold (removed from every history, as if added
later by `llmrec export add-items`); every user whose test item is one of them is a case; HR@1/5/10 of that
item among the cold set, against random order (k / size). Writes bench/results/cold_items.json.

CPU (seconds once the text table is cached):  .venv/bin/python bench/cold_items_bench.py --data work/ml-100k
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from portable import REPO, portable_args, portable_command

from models.cold_items import text_scores
from training.allmrec.text_encoder import MODEL_NAME, load_text_embeddings
from training.data.dataset import PreparedData, load_prepared

KS = (1, 5, 10)


def run_size(data: PreparedData, table: torch.Tensor, size: int, args: argparse.Namespace) -> dict:
    hits: dict[int, list[bool]] = {k: [] for k in KS}
    rng = np.random.default_rng(args.seed)
    for _ in range(args.repeats):
        cold = torch.from_numpy(rng.choice(np.arange(1, data.n_items + 1), size, replace=False))
        position = {int(i): j for j, i in enumerate(cold.tolist())}
        for seq in data.sequences:
            target = int(seq[-1])
            if target not in position:
                continue
            history = [int(i) for i in seq[:-1] if int(i) not in position][-args.window :]
            scores = text_scores(table, torch.tensor(history, dtype=torch.long), cold)
            rank = int((scores > scores[position[target]]).sum())
            for k in KS:
                hits[k].append(rank < k)
    row = {"cold_items": size, "cases": len(hits[1])}
    row |= {f"hr@{k}": round(float(np.mean(hits[k])), 4) for k in KS}
    return row | {f"random_hr@{k}": round(k / size, 4) for k in KS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "work" / "ml-100k", help="prepared dataset")
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 200], help="how many items are cold")
    p.add_argument("--repeats", type=int, default=5, help="cold sets drawn per size")
    p.add_argument("--window", type=int, default=50, help="history items read (the service: SASRec's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "cold_items.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data = load_prepared(args.data)
    table = torch.from_numpy(load_text_embeddings(data))  # (n + 1, 384), cached after the first run
    results = [run_size(data, table, size, args) for size in args.sizes]
    for row in results:
        print(json.dumps(row))
    report = {
        "command": portable_command(sys.argv, Path(sys.executable).name),
        "args": portable_args(args),
        "dataset": data.name,
        "text_model": MODEL_NAME,
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
