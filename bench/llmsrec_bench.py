"""LLM-SRec bench: SASRec, LLM-only, LLM-SRec (the paper's end-to-end recipe and llmrec's cached recipe)
and the hybrid on identical `1+99` test candidates with one converged SASRec teacher: NDCG@10, HR@10,
NDCG@10 on shuffled histories, cosine(original, shuffled user vector), top-10 overlap across users,
training wall time and examples/s, item-table items/s, evaluation users/s. Prints a table, writes JSON and
a plot of validation NDCG@10 against training time.

Checkpoints under --work are reused when present (train them with the commands the JSON records);
missing ones are trained here with the flags below.

ml-100k, 2 cores:
    .venv/bin/python bench/llmsrec_bench.py --work work/b11 --json bench/results/llmsrec_ml100k.json
GPU:
    .venv/bin/python bench/llmsrec_bench.py --device cuda --dtype bfloat16 \
        --llm meta-llama/Llama-3.2-3B-Instruct
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

import numpy as np
import torch
from portable import portable_command, portable_path

from models.hybrid import HybridConfig, hybrid_item_table, hybrid_user_vectors
from training.data.dataset import PreparedData, load_prepared
from training.evaluation.candidates import select_users
from training.evaluation.protocol import evaluate
from training.llmsrec.config import LLMSRecTrainConfig
from training.llmsrec.hybrid import HybridScorer
from training.llmsrec.scorer import load_llmsrec_scorer
from training.llmsrec.train import train_llmsrec
from training.sasrec.checkpoint import load_sasrec
from training.sasrec.scorer import SASRecScorer

log = logging.getLogger("llmsrec_bench")
REPO = Path(__file__).resolve().parents[1]
# row name → (checkpoint folder under --work, variant, recipe)
ROWS = {
    "llm-only": ("cached-short-llmonly", "llm-only", "cached"),
    "llmsrec-paper": ("paper-short", "llmsrec", "paper"),
    "llmsrec-cached": ("cached-short", "llmsrec", "cached"),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=REPO / "work" / "bench", help="Data and checkpoints.")
    p.add_argument("--dataset", default="ml-100k", help="Dataset prepared under WORK/<dataset>.")
    p.add_argument("--llm", default="smollm2", help="LLM alias, path or HF id.")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--dtype", default="float32", help="float32 on CPU (bf16 is ~3x slower without AVX512-bf16)."
    )
    p.add_argument("--template", default="short", choices=["paper", "short"], help="User prompt template.")
    p.add_argument(
        "--prefixes", type=int, default=16, help="cached recipe: prefixes per user (16: best measured)."
    )
    p.add_argument("--paper-epochs", type=int, default=2, help="paper recipe: epochs (2 = official budget).")
    p.add_argument("--max-users", type=int, default=0, help="Training users (0 = all).")
    p.add_argument("--eval-users", type=int, default=10_000, help="Test users (seeded subset when fewer).")
    p.add_argument("--overlap-users", type=int, default=200, help="Users for the top-10 overlap.")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="LLM rows to run.")
    p.add_argument(
        "--cached-dir", default=ROWS["llmsrec-cached"][0], help="WORK/<this> holds the cached-recipe row."
    )
    p.add_argument("--json", type=Path, default=None, help="Result file (default: WORK/llmsrec_bench.json).")
    return p.parse_args()


def prepared(args: argparse.Namespace) -> PreparedData:
    out = args.work / args.dataset
    if not (out / "dataset.json").is_file():
        from training.data.prepare import PrepareConfig, prepare_dataset

        root = Path(os.environ.get("LLMREC_DATA_DIR", REPO.parent / "shared" / "data"))
        prepare_dataset(PrepareConfig(dataset=args.dataset), root / args.dataset, out)
    return load_prepared(out)


def converged_sasrec(args: argparse.Namespace, data: PreparedData) -> tuple[Path, dict[str, Any]]:
    """SASRec trained to early stopping on validation (no time budget): the one teacher of every row."""
    out = args.work / "sasrec"
    if not (out / "config.json").is_file():
        from training.sasrec.config import SASRecTrainConfig
        from training.sasrec.train import train_sasrec

        train_sasrec(data, SASRecTrainConfig(epochs=200, patience=20, device=args.device), out)
    meta = json.loads((out / "config.json").read_text())
    return out, {k: meta.get(k) for k in ("best_epoch", "valid", "train_seconds", "epochs_run", "stopped")}


def train_row(args: argparse.Namespace, data: PreparedData, sasrec: Path, row: str) -> dict[str, Any]:
    folder, variant, recipe = ROWS[row]
    folder = args.cached_dir if row == "llmsrec-cached" else folder
    out = args.work / folder
    if not (out / "config.json").is_file():
        config = LLMSRecTrainConfig(
            llm=args.llm,
            variant=variant,
            recipe=recipe,
            template=args.template,
            device=args.device,
            dtype=args.dtype,
            max_users=args.max_users,
            prefixes_per_user=args.prefixes,
            epochs=args.paper_epochs,
            patience=args.paper_epochs,
        )
        train_llmsrec(data, sasrec, config, out)
    config = json.loads((out / "config.json").read_text())
    history = json.loads((out / "history.json").read_text())
    train = config["train"]
    if recipe == "cached":
        timing = train["recipe_timing"]
        build = _cache_build_seconds(Path(train["cache_dir"]) if train.get("cache_dir") else out / "cache")
        if "cache_build_s" not in timing:  # older runs on a cache another run built: count its build once
            shift = build - timing["cache_s"]
            timing = timing | {"cache_build_s": build, "total_s": timing["total_s"] + shift}
            history = [h | {"seconds": h["seconds"] + shift} for h in history]
            timing["examples_per_s"] = timing["n_prefixes"] / build
        speed = {
            "train_s": timing["total_s"],
            "examples_per_s": timing["examples_per_s"],
            "examples": timing["n_prefixes"],
        }
    else:
        speed = {
            "train_s": history[-1].get("seconds"),
            "examples_per_s": history[-1]["train"]["examples_per_s"],
            "items_per_s": history[-1]["speed"]["items_per_s"],
            "epochs": len(history),
        }
    return {
        "dir": portable_path(out),
        "recipe": recipe,
        "variant": variant,
        "valid": config["valid"],
        "best_epoch": config["best_epoch"],
        "hybrid": config.get("hybrid"),
        "curve": [(h.get("seconds"), h["valid"]["ndcg@10"]) for h in history],
        **speed,
    }


def _cache_build_seconds(cache_dir: Path) -> float:
    """Seconds recorded in the cache's build_seconds.json files (items, train prefixes, validation)."""
    files = list(cache_dir.glob("**/build_seconds.json"))
    return float(sum(sum(json.loads(f.read_text()).values()) for f in files))


def score_model(data: PreparedData, scorer: Any, n_users: int) -> dict[str, Any]:
    """Test metrics on the shared 1+99 candidates, original and shuffled histories, with timing."""
    start = time.perf_counter()
    plain = evaluate(data, scorer, "1+99", split="test", max_users=n_users)
    seconds = time.perf_counter() - start
    shuffled = evaluate(data, scorer, "1+99", split="test", max_users=n_users, shuffle=True)
    drop = 100.0 * (plain["ndcg@10"] - shuffled["ndcg@10"]) / max(float(plain["ndcg@10"]), 1e-12)
    return {
        "ndcg@10": plain["ndcg@10"],
        "hr@10": plain["hr@10"],
        "shuffled_ndcg@10": shuffled["ndcg@10"],
        "shuffle_drop_%": drop,
        "shuffle_cosine": shuffled.get("shuffle_cosine"),
        "n_users": plain["n_users"],
        "users_per_s": plain["n_users"] / seconds,
    }


def top10_overlap(
    data: PreparedData, user_vectors: np.ndarray, table: np.ndarray, users: np.ndarray
) -> float:
    """Mean pairwise Jaccard overlap of the users' top-10 lists over the whole catalogue, seen excluded."""
    scores = user_vectors @ table[1:].T  # (U, n_items)
    for row, u in enumerate(users):
        scores[row, data.split_input(int(u), "test") - 1] = -np.inf
    tops = [set(np.argsort(-s)[:10].tolist()) for s in scores]
    pairs = [len(a & b) / len(a | b) for i, a in enumerate(tops) for b in tops[i + 1 :]]
    return float(np.mean(pairs))


def overlap_users(data: PreparedData, n: int) -> tuple[np.ndarray, list[np.ndarray], list[Any]]:
    users = select_users(data.n_users, n, 1)
    return (
        users,
        [data.split_input(int(u), "test") for u in users],
        [data.split_timestamps(int(u), "test") for u in users],
    )


def plot_curves(rows: dict[str, dict[str, Any]], sasrec_valid: float, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, row in rows.items():
        points = [(s, v) for s, v in row["curve"] if s is not None]
        if points:
            ax.plot(*zip(*[(s / 60, v) for s, v in points], strict=True), marker=".", label=name)
    ax.axhline(sasrec_valid, color="grey", linestyle="--", label="SASRec (teacher)")
    ax.set_xlabel("training minutes (2 CPU cores; cache building included)")
    ax.set_ylabel("validation NDCG@10 (1+99)")
    ax.legend()
    fig.savefig(path, format="png", dpi=110)


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    head = f"{'model':<15} {'NDCG@10':>8} {'HR@10':>7} {'shufNDCG':>9} {'drop%':>7} {'cos':>7} {'top10 J':>8}"
    print(head + f" {'users/s':>8}\n" + "-" * (len(head) + 9))
    for name, r in rows.items():
        cos = "-" if r.get("shuffle_cosine") is None else f"{r['shuffle_cosine']:.4f}"
        print(
            f"{name:<15} {r['ndcg@10']:>8.4f} {r['hr@10']:>7.4f} {r['shuffled_ndcg@10']:>9.4f} "
            f"{r['shuffle_drop_%']:>7.1f} {cos:>7} {r['top10_jaccard']:>8.4f} {r['users_per_s']:>8.2f}"
        )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    data = prepared(args)
    sasrec_path, sasrec_meta = converged_sasrec(args, data)
    trained = {row: train_row(args, data, sasrec_path, row) for row in args.rows}
    sas = SASRecScorer(load_sasrec(sasrec_path, device=args.device), device=args.device)
    users, histories, stamps = overlap_users(data, args.overlap_users)
    sas_table = sas.model.item_embeddings().detach().float().cpu().numpy()
    results = {"sasrec": score_model(data, sas, args.eval_users)}
    results["sasrec"]["top10_jaccard"] = top10_overlap(data, sas.user_vectors(histories), sas_table, users)
    for row in args.rows:
        saved = Path(trained[row]["dir"]) / f"bench_eval-{args.eval_users}-{args.overlap_users}.json"
        if saved.is_file():  # measured by an earlier run of this bench on the same checkpoint
            results |= json.loads(saved.read_text())
            continue
        scorer = load_llmsrec_scorer(Path(trained[row]["dir"]), data, args.device, dtype=args.dtype)
        results[row] = score_model(data, scorer, args.eval_users)
        llm_users = scorer.user_vectors(histories, stamps)
        results[row]["top10_jaccard"] = top10_overlap(data, llm_users, scorer.item_table, users)
        if row == "llmsrec-cached" and trained[row]["hybrid"]:
            hybrid = HybridConfig.from_dict(trained[row]["hybrid"])
            results["hybrid"] = score_model(data, HybridScorer(scorer, sas, hybrid), args.eval_users)
            joint = hybrid_user_vectors(llm_users, sas.user_vectors(histories), hybrid)
            table = hybrid_item_table(scorer.item_table, sas_table)
            results["hybrid"]["top10_jaccard"] = top10_overlap(data, joint, table, users)
            results["hybrid"]["weight"] = hybrid.weight
        saved.write_text(json.dumps({k: v for k, v in results.items() if k in (row, "hybrid")}, indent=2))
    out = args.json or args.work / "llmsrec_bench.json"
    plot = out.with_suffix(".png")
    plot_curves(trained, float(sasrec_meta["valid"]["ndcg@10"]), plot)
    result = {
        "command": portable_command(sys.argv),
        "dataset": data.name,
        "protocol": "1+99 test",
        "device": args.device,
        "dtype": args.dtype,
        "llm": args.llm,
        "template": args.template,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "sasrec_teacher": sasrec_meta,
        "models": results,
        "training": {k: {x: y for x, y in v.items() if x != "curve"} for k, v in trained.items()},
        "curves": {k: v["curve"] for k, v in trained.items()},
        "plot": portable_path(plot),
        "wall_s": time.perf_counter() - wall,
    }
    print_table(results)
    for row, t in trained.items():
        speed = f"{t['train_s'] or 0:.0f} s, {t['examples_per_s'] or 0:.2f} examples/s"
        print(f"train {row} ({t['recipe']}): {speed}")
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out} and {plot}")


if __name__ == "__main__":
    main()
