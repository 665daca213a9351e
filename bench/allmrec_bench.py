"""A-LLMRec bench on ml-100k: Hit@1 / NDCG@10 on the shared `1+19` test candidates for SASRec, A-LLMRec
(likelihood ranking, summed and length-normalised; greedy generation matched to a candidate, with its
no-match rate) and LLM-SRec (when --llmsrec is given), plus the cold-item table: a seeded 20% of items held
out of SASRec training, test users whose target is cold, A-LLMRec (text latents) vs SASRec (untrained rows).

CPU (2 shared cores, 1 thread, ~20 min):  nice .venv/bin/python bench/allmrec_bench.py
GPU, more users:  .venv/bin/python bench/allmrec_bench.py --device cuda --train-users 0 --eval-users 943
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

from training.allmrec_cold import cold_test_users, make_cold_split
from training.allmrec_scorer import ALLMRecScorer, evaluate_users
from training.allmrec_train import Stage1TrainConfig, Stage2TrainConfig, train_stage1, train_stage2
from training.data.dataset import PreparedData, load_prepared
from training.data.prepare import PrepareConfig, prepare_dataset
from training.evaluation import PopularityScorer, evaluate, select_users
from training.llm import load_llm
from training.sasrec_train import SASRecScorer, SASRecTrainConfig, load_sasrec, train_sasrec

log = logging.getLogger("allmrec_bench")
REPO = Path(__file__).resolve().parents[1]
KEYS = ("hr@1", "ndcg@10", "hr@10", "mrr")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/llmrec-allmrec-bench"), help="Scratch directory.")
    p.add_argument(
        "--source", type=Path, default=None, help="Raw ml-100k (default: $LLMREC_DATA_DIR/ml-100k)."
    )
    p.add_argument("--llm", default="smollm2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sasrec-epochs", type=int, default=30)
    p.add_argument("--stage1-epochs", type=int, default=20)
    p.add_argument("--stage1-lr", type=float, default=1e-3, help="Paper: 1e-4 (too few steps on ml-100k).")
    p.add_argument("--train-users", type=int, default=48, help="Stage-2 training users (0 = all).")
    p.add_argument("--stage2-lr", type=float, default=1e-3)
    p.add_argument("--stage2-batch", type=int, default=2)
    p.add_argument("--stage2-epochs", type=int, default=1)
    p.add_argument("--history-len", type=int, default=10)
    p.add_argument("--max-title-tokens", type=int, default=16)
    p.add_argument("--eval-users", type=int, default=32, help="Warm test users (seeded subset).")
    p.add_argument("--cold-users", type=int, default=32, help="At most this many cold-target test users.")
    p.add_argument("--cold-fraction", type=float, default=0.2)
    p.add_argument("--no-generate", action="store_true", help="Skip greedy generation.")
    p.add_argument("--skip-cold", action="store_true", help="Only the warm table (no cold split pipeline).")
    p.add_argument("--llmsrec", type=Path, default=None, help="LLM-SRec checkpoint on ml-100k (optional).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "allmrec.json")
    return p.parse_args()


def timed(label: str, timings: dict[str, float], fn: Any, *args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[label] = round(time.perf_counter() - start, 1)
    log.info("%s: %.1f s", label, timings[label])
    return result


def pick(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in (*KEYS, "n_users") if k in metrics}


def train_pipeline(
    data: PreparedData, root: Path, args: argparse.Namespace, llm: Any, t: dict
) -> tuple[Path, Path]:
    """SASRec → stage 1 → stage 2 under `root` (each step reused when its checkpoint exists)."""
    sasrec, s1, s2 = root / "sasrec", root / "stage1", root / "stage2"
    if not (sasrec / "model.safetensors").is_file():
        cfg = SASRecTrainConfig(
            max_len=50, epochs=args.sasrec_epochs, num_threads=args.threads, progress=False
        )
        timed(f"{root.name}: sasrec", t, train_sasrec, data, cfg, sasrec)
    if not (s1 / "config.json").is_file():
        cfg1 = Stage1TrainConfig(
            epochs=args.stage1_epochs, lr=args.stage1_lr, device=args.device, progress=False
        )
        timed(f"{root.name}: stage1", t, train_stage1, data, sasrec, cfg1, s1)
    if not (s2 / "config.json").is_file():
        cfg2 = Stage2TrainConfig(
            llm=args.llm,
            epochs=args.stage2_epochs,
            batch_size=args.stage2_batch,
            lr=args.stage2_lr,
            history_len=args.history_len,
            max_title_tokens=args.max_title_tokens,
            max_users=args.train_users,
            eval_max_users=0,
            seed=args.seed,
            device=args.device,
            dtype="float32",
            progress=False,
        )
        timed(f"{root.name}: stage2", t, train_stage2, data, sasrec, s1, cfg2, s2, llm=llm)
    return sasrec, s2


def allmrec_rows(data: PreparedData, s2: Path, llm: Any, run: Any, args: argparse.Namespace, t: dict) -> dict:
    """A-LLMRec by summed and mean log-likelihood (one pass, memoised) and by generation."""
    from training.allmrec_checkpoint import load_allmrec_encoder

    encoder, _ = load_allmrec_encoder(s2, data, args.device, llm=llm)
    scorer = ALLMRecScorer(encoder, "likelihood", batch_size=4, seed=args.seed)
    rows = {"allmrec (likelihood)": pick(timed(f"{data.name}: allmrec likelihood", t, run, scorer))}
    scorer.length_norm = True
    rows["allmrec (likelihood / token)"] = pick(run(scorer))
    if not args.no_generate:
        gen = ALLMRecScorer(encoder, "generate", batch_size=4, seed=args.seed)
        metrics = timed(f"{data.name}: allmrec generate", t, run, gen)
        rows["allmrec (generation)"] = {
            "hr@1": metrics["hr@1"],
            "n_users": metrics["n_users"],
        } | gen.extra_metrics()
    return rows


def warm_table(
    data: PreparedData, sasrec: Path, s2: Path, llm: Any, args: argparse.Namespace, t: dict
) -> dict:
    def run(scorer: Any) -> dict:
        return evaluate(
            data, scorer, "1+19", seed=args.seed, max_users=args.eval_users, batch_size=16, progress=False
        )

    rows = {
        "popularity": pick(run(PopularityScorer(data))),
        "sasrec": pick(run(SASRecScorer(load_sasrec(sasrec)))),
    }
    if args.llmsrec is not None:
        from training.llmsrec_scorer import load_llmsrec_scorer

        rows["llmsrec"] = pick(timed("llmsrec eval", t, run, load_llmsrec_scorer(args.llmsrec, data)))
    return rows | allmrec_rows(data, s2, llm, run, args, t)


def cold_table(
    data: PreparedData, sasrec: Path, s2: Path, llm: Any, args: argparse.Namespace, t: dict
) -> dict:
    users = cold_test_users(data, select_users(data.n_users, data.n_users, args.seed))
    n_all = len(users)
    users = np.sort(np.random.default_rng(args.seed).permutation(users)[: args.cold_users])

    def run(scorer: Any) -> dict:
        return evaluate_users(data, scorer, users, "1+19", seed=args.seed)

    rows = {
        "sasrec": pick(run(SASRecScorer(load_sasrec(sasrec)))),
        "popularity": pick(run(PopularityScorer(data))),
    }
    return (
        {"cold_target_test_users": n_all, "evaluated": len(users)}
        | rows
        | allmrec_rows(data, s2, llm, run, args, t)
    )


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.work.mkdir(parents=True, exist_ok=True)
    t: dict[str, float] = {}
    start = time.perf_counter()
    warm_root, cold_root = args.work / "warm", args.work / "cold"
    if not (args.work / "ml-100k").is_dir():
        source = (
            args.source
            or Path(os.environ.get("LLMREC_DATA_DIR", REPO.parent / "shared" / "data")) / "ml-100k"
        )
        prepare_dataset(PrepareConfig(dataset="ml-100k"), source, args.work / "ml-100k")
    data = load_prepared(args.work / "ml-100k")
    if not (args.work / "ml-100k-cold").is_dir():
        make_cold_split(data, args.work / "ml-100k-cold", args.cold_fraction, args.seed)
    cold = load_prepared(args.work / "ml-100k-cold")
    llm = load_llm(args.llm, device=args.device, dtype="float32")
    warm_sasrec, warm_s2 = train_pipeline(data, warm_root, args, llm, t)
    warm = warm_table(data, warm_sasrec, warm_s2, llm, args, t)
    cold_rows: dict[str, Any] = {}
    if not args.skip_cold:
        cold_sasrec, cold_s2 = train_pipeline(cold, cold_root, args, llm, t)
        cold_rows = cold_table(cold, cold_sasrec, cold_s2, llm, args, t)
    result = {
        "command": " ".join(["python", *sys.argv]),
        "dataset": "ml-100k",
        "protocol": f"1+19 (shared stored candidates, seed {args.seed})",
        "llm": args.llm,
        "args": {k: str(v) for k, v in vars(args).items()},
        "warm": warm,
        "cold": cold_rows,
        "timings_s": t,
        "total_s": round(time.perf_counter() - start, 1),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"warm": warm, "cold": cold_rows, "total_s": result["total_s"]}, indent=2))


if __name__ == "__main__":
    main()
