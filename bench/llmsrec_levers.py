"""LLM-SRec levers bench: several cached-recipe checkpoints trained against one SASRec teacher (e.g. 4 vs 8
training prefixes per user, with or without an end-to-end phase before caching), each measured on the same
stored `1+99` test candidates of every test user: LLM-SRec NDCG@10 / HR@10, its hybrid with SASRec at the
weight the checkpoint chose on validation, the top-10 overlap across users, and what its training cost.
Prints a table, writes JSON and a bar plot. The full comparison with the paper's recipe, shuffled
histories and evaluation speed is bench/llmsrec_bench.py; this one answers "which lever helped".

    python bench/llmsrec_levers.py --work work/b11 \
        --rows 4-prefixes=cached-short-kd1 8-prefixes=cached-short-kd1-p8 \
        --json bench/results/llmsrec_ml100k_levers.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from llmsrec_bench import overlap_users, top10_overlap
from portable import portable_command, portable_path

from models.hybrid import HybridConfig, hybrid_item_table, hybrid_scores, hybrid_user_vectors
from training.data.dataset import PreparedData, load_prepared
from training.evaluation.candidates import load_candidates, select_users
from training.evaluation.metrics import compute_metrics, rank_targets
from training.llmsrec.cache import input_signature, user_hidden_states
from training.llmsrec.scorer import LLMSRecScorer, load_llmsrec_scorer
from training.sasrec.checkpoint import load_sasrec
from training.sasrec.scorer import SASRecScorer


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="Holds <dataset>/, sasrec/ and the checkpoints.")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument(
        "--rows", nargs="+", required=True, help="NAME=DIR: a cached-recipe checkpoint under WORK."
    )
    p.add_argument("--eval-users", type=int, default=10_000, help="Test users (seeded subset when fewer).")
    p.add_argument("--overlap-users", type=int, default=200, help="Users for the top-10 overlap.")
    p.add_argument("--json", type=Path, default=None, help="Result file (default WORK/llmsrec_levers.json).")
    args = p.parse_args()
    rows = {}
    for spec in args.rows:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not (args.work / folder / "config.json").is_file():
            p.error(f"--rows {spec!r}: want NAME=DIR with WORK/DIR/config.json (a trained checkpoint)")
        rows[name] = args.work / folder
    args.rows = rows
    return args


def ndcg_hr(scores: np.ndarray) -> dict[str, float]:
    found = compute_metrics(rank_targets(scores))
    return {"ndcg@10": round(float(found["ndcg@10"]), 6), "hr@10": round(float(found["hr@10"]), 6)}


def budget(config: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoint's training cost, from its config.json."""
    train, timing = config["train"], config["train"]["recipe_timing"]
    return {
        "prefixes_per_user": train["prefixes_per_user"],
        "e2e_steps": train["e2e_steps"],
        "e2e_lr": train["lr"] if train["e2e_steps"] else None,
        "n_prefixes": timing["n_prefixes"],
        "e2e_s": round(timing["e2e_s"], 1),
        "cache_build_s": round(timing["cache_build_s"], 1),
        "heads_s": round(timing["heads_s"], 1),
        "total_s": round(timing["e2e_s"] + timing["cache_build_s"] + timing["heads_s"], 1),
        "best_epoch": config["best_epoch"],
        "valid_ndcg@10": config["valid"]["ndcg@10"],
        "hybrid_valid_ndcg@10": config["hybrid"]["valid"]["ndcg@10"],
    }


class HiddenStates:
    """The LLM's [UserOut] states of the test and overlap prompts, computed once per input side: rows that
    differ only in their heads (prefixes, head training) share one LLM pass."""

    def __init__(self, data: PreparedData, test: dict[str, Any], overlap: tuple[Any, ...]) -> None:
        self.data, self.test, self.overlap = data, test, overlap
        self.found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, folder: Path, llm: Any) -> tuple[LLMSRecScorer, torch.Tensor, torch.Tensor]:
        """The checkpoint's scorer and the states for its input side; `llm`: its config's LLM record."""
        scorer = load_llmsrec_scorer(folder, self.data)
        enc = scorer.encoder
        key = input_signature(enc, json.dumps(llm, sort_keys=True), {"prompt": repr(enc.prompt)})
        if key not in self.found:
            o_hist, o_stamps = self.overlap[1], self.overlap[2]
            test = user_hidden_states(
                enc, "test", self.test["histories"], self.test["timestamps"], None, 16, True
            )
            self.found[key] = (test, user_hidden_states(enc, "overlap", o_hist, o_stamps, None, 16, True))
        return scorer, *self.found[key]


@torch.no_grad()
def measure(folder: Path, states: HiddenStates) -> dict[str, Any]:
    config = json.loads((folder / "config.json").read_text())
    scorer, test_hidden, overlap_hidden = states.get(folder, config["llm"])
    heads, test = scorer.encoder.heads, states.test
    users = heads.user_vector(test_hidden).float().numpy()
    llm = np.einsum("ud,ucd->uc", users, scorer.item_table[test["candidates"]])
    hybrid = HybridConfig.from_dict(config["hybrid"])
    o_users = states.overlap[0]
    o_llm = heads.user_vector(overlap_hidden).float().numpy()
    joint = hybrid_user_vectors(o_llm, test["sasrec_overlap_users"], hybrid)
    data = states.data
    return {
        "dir": portable_path(folder),
        "llmsrec": ndcg_hr(llm) | {"top10_jaccard": top10_overlap(data, o_llm, scorer.item_table, o_users)},
        "hybrid": ndcg_hr(hybrid_scores(llm, test["sasrec"], hybrid))
        | {
            "weight": hybrid.weight,
            "top10_jaccard": top10_overlap(
                data, joint, hybrid_item_table(scorer.item_table, test["sasrec_table"]), o_users
            ),
        },
        "training": budget(config),
    }


def plot(results: dict[str, Any], sasrec: float, path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(results["rows"])
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    x = np.arange(len(names))
    ax.bar(x - 0.2, [results["rows"][n]["llmsrec"]["ndcg@10"] for n in names], 0.4, label="LLM-SRec")
    ax.bar(x + 0.2, [results["rows"][n]["hybrid"]["ndcg@10"] for n in names], 0.4, label="hybrid")
    ax.axhline(sasrec, color="grey", linestyle="--", label="SASRec (teacher)")
    minutes = [results["rows"][n]["training"]["total_s"] / 60 for n in names]
    ax.set_xticks(x, [f"{n}\n{m:.0f} min" for n, m in zip(names, minutes, strict=True)])
    ax.set_ylabel("test NDCG@10 (1+99)")
    ax.set_title("LLM-SRec levers: one SASRec teacher, training time on 2 CPU cores")
    values = [results["rows"][n][m]["ndcg@10"] for n in names for m in ("llmsrec", "hybrid")]
    ax.set_ylim(max(0.0, min(values) - 0.05), max(sasrec, *values) + 0.03)
    ax.legend(loc="upper left", fontsize="small")
    fig.savefig(path, format="png", dpi=110)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args()
    wall = time.perf_counter()
    data = load_prepared(args.work / args.dataset)
    sas = SASRecScorer(load_sasrec(args.work / "sasrec"))
    users = select_users(data.n_users, args.eval_users, 0)
    histories = [data.split_input(int(u), "test") for u in users]
    candidates = load_candidates(data, "test", "1+99", 0, users)
    test = {
        "histories": histories,
        "timestamps": [data.split_timestamps(int(u), "test") for u in users],
        "candidates": candidates,
        "sasrec": np.asarray(sas.score(histories, candidates), dtype=np.float64),
    }
    overlap = overlap_users(data, args.overlap_users)
    # SASRec's side of every row's hybrid, computed once
    test["sasrec_overlap_users"] = sas.user_vectors(overlap[1])
    test["sasrec_table"] = sas.model.item_embeddings().detach().float().cpu().numpy()
    states = HiddenStates(data, test, overlap)
    sas_row = ndcg_hr(test["sasrec"]) | {
        "top10_jaccard": top10_overlap(data, test["sasrec_overlap_users"], test["sasrec_table"], overlap[0])
    }
    teacher = json.loads((args.work / "sasrec" / "config.json").read_text())
    results: dict[str, Any] = {
        "command": portable_command(sys.argv),
        "dataset": data.name,
        "protocol": "1+99 test",
        "n_users": len(users),
        "sasrec": sas_row
        | {"valid_ndcg@10": teacher["valid"]["ndcg@10"], "best_epoch": teacher["best_epoch"]},
        "rows": {name: measure(folder, states) for name, folder in args.rows.items()},
    }
    out = args.json or args.work / "llmsrec_levers.json"
    results["plot"] = portable_path(out.with_suffix(".png"))
    results["wall_s"] = time.perf_counter() - wall
    plot(results, sas_row["ndcg@10"], out.with_suffix(".png"))
    out.write_text(json.dumps(results, indent=2))
    s = sas_row["ndcg@10"]
    print(
        f"{'row':<16} {'prefixes':>8} {'e2e':>4} {'valid':>6} {'NDCG@10':>8} {'xSAS':>5} "
        f"{'hybrid':>7} {'xSAS':>5} {'J/J_SAS':>7} {'train s':>8}"
    )
    print(f"{'SASRec':<16} {'':>8} {'':>4} {teacher['valid']['ndcg@10']:>6.4f} {s:>8.4f} {1:>5.2f}")
    for name, r in results["rows"].items():
        t, llm, hyb = r["training"], r["llmsrec"], r["hybrid"]
        cells = [
            f"{name:<16} {t['n_prefixes']:>8} {t['e2e_steps']:>4} {t['valid_ndcg@10']:>6.4f}",
            f"{llm['ndcg@10']:>8.4f} {llm['ndcg@10'] / s:>5.2f} {hyb['ndcg@10']:>7.4f}",
            f"{hyb['ndcg@10'] / s:>5.3f} {llm['top10_jaccard'] / sas_row['top10_jaccard']:>7.2f}",
            f"{t['total_s']:>8.0f}",
        ]
        print(" ".join(cells))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
