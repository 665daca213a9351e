"""Favourite-genre bench: for test users, how well each method's top genres cover the genres of the held-out
next item (HR@1/@3, recall@3, NDCG@3, NDCG over the genre list) — A-LLMRec's learned genre prompt alone and
as served (blended with the history's genre shares, weight chosen on validation) vs the most frequent genres
of the history, the frozen LLM reading titles only, and the global genre prior. Also the explanation
sentences of --sentence-users test users: the served one (written from the ranked list) and the free greedy
continuation (the old answer, kept as a baseline), counted for disagreeing with the list, repeating a genre
or ending mid-word. Prints a table, writes bench/results/genre.json. Prepares data, a quick SASRec and
stage 1 when missing (--sasrec / --stage1 / --stage2 reuse trained checkpoints of the first dataset).

CPU (2 shared cores, ~15 min):  nice .venv/bin/python bench/genre_bench.py --threads 1
GPU, larger LLM:                .venv/bin/python bench/genre_bench.py --llm meta-llama/Llama-3.2-3B-Instruct \
                                    --device cuda --users 943 1000 --train-users 0 0 --epochs 3
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
from portable import portable_command

from models.allmrec_genre import GenreEncoder, genre_lead, genre_sentence
from models.allmrec_scoring import GenreBlend, blend_genre_scores, history_genre_shares
from models.prompts import ALLMRecPromptConfig
from models.runtime import LoadedLLM
from training.allmrec.config import GenreTrainConfig
from training.allmrec.genre import load_genre_encoder, train_allmrec_genre
from training.data.dataset import PreparedData, load_prepared
from training.evaluation.genre import (
    GenreScoreFn,
    evaluate_genres,
    genre_matrix,
    genre_prior,
    genre_users,
    genre_vocab,
    history_genre_counts,
    sentence_problems,
)

log = logging.getLogger("genre_bench")
REPO = Path(__file__).resolve().parents[1]
DATASETS = ("ml-100k", "ml-1m")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--work", type=Path, default=REPO / "work" / "genre", help="Scratch dir (data, checkpoints)."
    )
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument(
        "--users", nargs="+", type=int, default=[200, 100], help="Test users per dataset (seeded)."
    )
    p.add_argument(
        "--train-users", nargs="+", type=int, default=[300, 300], help="Genre-training users (0 = all)."
    )
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--history-len", type=int, default=10)
    p.add_argument("--max-title-tokens", type=int, default=16)
    p.add_argument("--valid-users", type=int, default=50)
    p.add_argument("--sentence-users", type=int, default=200, help="Test users whose sentences are checked.")
    p.add_argument("--sasrec", type=Path, default=None, help="Trained SASRec (first dataset).")
    p.add_argument("--stage1", type=Path, default=None, help="Trained A-LLMRec stage 1 (first dataset).")
    p.add_argument("--stage2", type=Path, default=None, help="Stage 2 to start the genre training from.")
    p.add_argument(
        "--stage1-epochs", nargs="+", type=int, default=[20, 3], help="Stage-1 epochs (if missing)."
    )
    p.add_argument(
        "--sasrec-budget", type=float, default=120.0, help="Seconds for a quick SASRec (if missing)."
    )
    p.add_argument("--llm", default="smollm2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = default).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "genre.json")
    return p.parse_args()


def prepared(work: Path, name: str) -> PreparedData:
    out = work / name
    if not (out / "dataset.json").is_file():
        from training.data.prepare import PrepareConfig, prepare_dataset

        root = Path(os.environ.get("LLMREC_DATA_DIR", REPO.parent / "shared" / "data"))
        prepare_dataset(PrepareConfig(dataset=name), root / name, out)
    return load_prepared(out)


def sasrec_dir(work: Path, data: PreparedData, args: argparse.Namespace) -> Path:
    out = work / f"sasrec-{data.name}"
    if not (out / "model.safetensors").is_file():
        from training.sasrec.config import SASRecTrainConfig
        from training.sasrec.train import train_sasrec

        config = SASRecTrainConfig(
            epochs=200, time_budget_s=args.sasrec_budget, device=args.device, progress=False, max_len=50
        )
        log.info("training a quick SASRec on %s (%.0f s budget)", data.name, args.sasrec_budget)
        train_sasrec(data, config, out)
    return out


def stage1_dir(work: Path, data: PreparedData, sasrec: Path, args: argparse.Namespace, epochs: int) -> Path:
    out = work / f"stage1-{data.name}"
    if not (out / "config.json").is_file():
        from training.allmrec.config import Stage1TrainConfig
        from training.allmrec.stage1 import train_stage1

        config = Stage1TrainConfig(epochs=epochs, lr=1e-3, device=args.device, progress=False)
        train_stage1(data, sasrec, config, out)
    return out


def timed(
    data: PreparedData, fn: GenreScoreFn, users: np.ndarray, matrix: np.ndarray, batch_size: int
) -> dict[str, Any]:
    start = time.perf_counter()
    with torch.no_grad():
        metrics = evaluate_genres(data, fn, users, matrix, "test", batch_size=batch_size)
    seconds = time.perf_counter() - start
    return metrics | {"seconds": round(seconds, 1), "users_per_s": round(len(users) / seconds, 2)}


def run_dataset(args: argparse.Namespace, i: int, name: str) -> dict[str, Any]:
    n_users, train_users, s1_epochs = (
        v[min(i, len(v) - 1)] for v in (args.users, args.train_users, args.stage1_epochs)
    )
    data = prepared(args.work, name)
    vocab = genre_vocab(data)
    matrix = genre_matrix(data, vocab)
    users = genre_users(data, matrix, "test", n_users, args.seed)
    sasrec = args.sasrec if i == 0 and args.sasrec else sasrec_dir(args.work, data, args)
    stage1 = args.stage1 if i == 0 and args.stage1 else stage1_dir(args.work, data, sasrec, args, s1_epochs)
    init = args.stage2 if i == 0 else None
    out = args.work / f"genre-{name}"
    config = GenreTrainConfig(
        llm=args.llm,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        history_len=args.history_len,
        max_title_tokens=args.max_title_tokens,
        max_users=train_users,
        valid_users=args.valid_users,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        progress=False,
    )
    start = time.perf_counter()
    summary = train_allmrec_genre(data, sasrec, stage1, config, out, stage2_init=init)
    train_s = time.perf_counter() - start
    learned, llm, ckpt = load_genre_encoder(out, data, args.device)
    titles_only = titles_only_encoder(data, llm, vocab, learned.prompt)
    prior = genre_prior(data, matrix)
    blend = GenreBlend(**ckpt["blend"])

    def served(h: list[np.ndarray], _u: object) -> np.ndarray:
        return blend_genre_scores(learned.scores(h).numpy(), history_genre_shares(h, matrix), blend)

    rows = {
        "history_frequency": timed(data, lambda h, _u: history_genre_counts(h, matrix), users, matrix, 64),
        "genre_prior": timed(data, lambda h, _u: np.tile(prior, (len(h), 1)), users, matrix, 64),
        "llm_titles_only": timed(data, lambda h, _u: titles_only.scores(h).numpy(), users, matrix, 8),
        "allmrec_genre (LLM alone)": timed(data, lambda h, _u: learned.scores(h).numpy(), users, matrix, 8),
        "allmrec_genre (served: blended)": timed(data, served, users, matrix, 8),
    }
    sentences = sentence_check(data, learned, served, users[: args.sentence_users], vocab)
    sample = sentences.pop("examples")
    return {
        "dataset": name,
        "n_test_users": len(users),
        "n_genres": len(vocab),
        "train": {
            "users": train_users,
            "epochs": args.epochs,
            "seconds": round(train_s, 1),
            "best_epoch": summary["best_epoch"],
            "valid": summary["valid"],
            "examples_per_s": summary["history"][-1]["examples_per_s"],
        },
        "methods": rows,
        "blend": ckpt["blend"],
        "sentences": sentences,
        "example_explanations": sample,
    }


def sentence_check(
    data: PreparedData,
    learned: GenreEncoder,
    served: Any,
    users: np.ndarray,
    vocab: list[str],
    top_n: int = 3,
) -> dict[str, Any]:
    """Problems (disagrees / repeats / cut) of the served sentence and of the free continuation, per user,
    against the served answer's top genres; counts over `users` and three examples."""
    lead = genre_lead(learned.prompt)
    counts: dict[str, dict[str, int]] = {"served": {}, "free_continuation": {}}
    examples = []
    for begin in range(0, len(users), 8):
        histories = [data.split_input(int(u), "test") for u in users[begin : begin + 8]]
        with torch.no_grad():
            ranked = [
                [vocab[g] for g in np.argsort(-row, kind="stable")[:top_n]] for row in served(histories, None)
            ]
            free = learned.explain(histories)
        for top, text in zip(ranked, free, strict=True):
            written = genre_sentence(top, learned.prompt)
            for name, sentence in (("served", written), ("free_continuation", text)):
                for problem in sentence_problems(sentence, lead, top, vocab) or ["none"]:
                    counts[name][problem] = counts[name].get(problem, 0) + 1
            if len(examples) < 3:
                examples.append({"genres": top, "served": written, "free_continuation": text})
    return {"users": len(users), "counts": counts, "examples": examples}


def titles_only_encoder(
    data: PreparedData, llm: LoadedLLM, vocab: list[str], prompt: ALLMRecPromptConfig
) -> GenreEncoder:
    titles = [item.title for item in data.items]
    return GenreEncoder(llm.model, llm.tokenizer, vocab, llm.special_tokens, prompt, titles=titles)


def print_table(results: list[dict[str, Any]]) -> None:
    keys = ("hr@1", "hr@3", "recall@3", "ndcg@3", "ndcg")
    print(f"{'dataset':8} {'method':18} " + " ".join(f"{k:>8}" for k in keys) + f" {'users/s':>8}")
    for res in results:
        for method, m in res["methods"].items():
            print(
                f"{res['dataset']:8} {method:18} "
                + " ".join(f"{m[k]:8.4f}" for k in keys)
                + f" {m['users_per_s']:8.2f}"
            )


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = []
    for i, name in enumerate(args.datasets):
        results.append(run_dataset(args, i, name))
    report = {
        "command": portable_command(sys.argv, Path(sys.executable).name),
        "llm": args.llm,
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "total_seconds": round(time.perf_counter() - start, 1),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.json)
    print_table(results)
    print(f"wrote {args.json} in {report['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
