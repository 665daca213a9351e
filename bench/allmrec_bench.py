"""A-LLMRec bench on ml-100k, stored 1+19 candidates (random Hit@1 = .05), one converged SASRec per table.

Warm table (test users, the normal split): popularity, SASRec, A-LLMRec under every candidate scoring — the
paper's summed title log-likelihood, per token, PMI (minus the prior prompt's), PMI per token — and the
scoring chosen on validation (a blend with SASRec), each with standard errors. Cold table: a seeded 20% of
items held out of every train sequence (SASRec never trains them; A-LLMRec reads them through the text
encoder), the test users whose target is cold, the same rows — plus SASRec with the cold rows predicted from
text by stage 1 — and the same models on a seeded sample of the split's warm-target users (what the cold
scoring costs the others). Plus stage-2 training time, examples/s and its loss curve
(`<--out stem>_stage2_loss.png` beside the JSON). Checkpoints under --work are reused when present.

CPU (2 cores), official stage-2 budget (5 epochs over all users), all test users:
  .venv/bin/python bench/allmrec_bench.py --work work/allmrec-bench --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
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
from portable import portable_args, portable_command, portable_path

from models.allmrec_scoring import SCORE_MODES, ALLMRecScoring, cold_sasrec_scores
from models.runtime import LoadedLLM
from training.allmrec.checkpoint import load_allmrec_encoder
from training.allmrec.cold import make_cold_split
from training.allmrec.config import Stage1TrainConfig, Stage2TrainConfig
from training.allmrec.scorer import ALLMRecScorer, RawScores, scoring_of
from training.allmrec.stage1 import train_stage1
from training.allmrec.stage2 import train_stage2
from training.common.llm import load_llm
from training.data.dataset import PreparedData, load_prepared
from training.data.prepare import PrepareConfig, prepare_dataset
from training.evaluation.candidates import load_candidates, select_users
from training.evaluation.cold import cold_test_users
from training.evaluation.metrics import hits, ndcg_gains, rank_targets
from training.evaluation.popularity import PopularityScorer
from training.sasrec.checkpoint import load_sasrec
from training.sasrec.config import SASRecTrainConfig
from training.sasrec.scorer import SASRecScorer
from training.sasrec.train import train_sasrec

log = logging.getLogger("allmrec_bench")
SHOWN_OFFSETS = (0.0, -1.0, -2.0, -3.0, -4.0)  # cold-from-text offsets tabled beside the served scoring
REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=REPO / "work" / "allmrec-bench", help="Checkpoints, data.")
    p.add_argument(
        "--source", type=Path, default=None, help="Raw ml-100k (default $LLMREC_DATA_DIR/ml-100k)."
    )
    p.add_argument("--llm", default="smollm2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stage2-epochs", type=int, default=5, help="Official: 5 epochs over all users.")
    p.add_argument("--stage2-lr", type=float, default=2e-4)
    p.add_argument("--stage2-batch", type=int, default=4)
    p.add_argument("--n-candidates", type=int, default=10, help="Candidates in each training prompt.")
    p.add_argument("--template", default="lead", help="paper | lead (A-LLMRec prompt template).")
    p.add_argument(
        "--rank-loss-weight",
        type=float,
        default=1.0,
        help="Stage 2's listwise loss over the candidates' likelihoods (ours); 0 = the paper's LM loss only.",
    )
    p.add_argument("--rank-score", default="sum", help="That loss ranks by: sum | mean | pmi | pmi-mean.")
    p.add_argument("--eval-users", type=int, default=943, help="Warm test users (seeded subset).")
    p.add_argument("--skip-cold", action="store_true", help="Only the warm table.")
    p.add_argument("--skip-warm", action="store_true", help="Only the cold table.")
    p.add_argument("--cold-users", type=int, default=0, help="At most this many cold-target users (0 = all).")
    p.add_argument("--cold-fraction", type=float, default=0.2)
    p.add_argument(
        "--cold-warm-users", type=int, default=100, help="Cold split's warm-target test users (0 = none)."
    )
    p.add_argument("--generate", action="store_true", help="Also greedy generation matched to a candidate.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "allmrec_ml100k.json")
    return p.parse_args()


def pipeline(data: PreparedData, root: Path, args: argparse.Namespace, llm: LoadedLLM) -> tuple[Path, Path]:
    """Converged SASRec → stage 1 → stage 2 (calibrated) under `root`; each step reused when present."""
    sasrec, s1, s2 = root / "sasrec", root / "stage1", root / "stage2"
    if not (sasrec / "model.safetensors").is_file():
        cfg = SASRecTrainConfig(max_len=50, epochs=200, patience=10, eval_max_users=943, progress=False)
        train_sasrec(data, cfg, sasrec)
    if not (s1 / "config.json").is_file():
        train_stage1(data, sasrec, Stage1TrainConfig(epochs=20, lr=1e-3, device=args.device), s1)
    if not (s2 / "config.json").is_file():
        cfg2 = Stage2TrainConfig(
            llm=args.llm,
            epochs=args.stage2_epochs,
            batch_size=args.stage2_batch,
            lr=args.stage2_lr,
            n_candidates=args.n_candidates,
            template=args.template,
            rank_loss_weight=args.rank_loss_weight,
            rank_score=args.rank_score,
            seed=args.seed,
            device=args.device,
            dtype="float32",
        )
        train_stage2(data, sasrec, s1, cfg2, s2, llm=llm)
    return sasrec, s2


def with_errors(scores: np.ndarray) -> dict[str, float]:
    """Hit@1 and NDCG@10 (target in column 0, ties pessimistic) with their standard errors over users."""
    ranks = rank_targets(scores, 0)
    n = len(ranks)
    out = {"n_users": n}
    per_user = (("hr@1", hits(ranks, 1)), ("ndcg@10", ndcg_gains(ranks, 10)), ("hr@10", hits(ranks, 10)))
    for key, values in per_user:
        out[key] = round(float(values.mean()), 4)
        out[f"{key}_se"] = round(float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0, 4)
    return out


def table(
    data: PreparedData,
    sasrec_dir: Path,
    s2: Path,
    users: np.ndarray,
    args: argparse.Namespace,
    llm: LoadedLLM,
) -> dict[str, Any]:
    """Every row of one table on `users` (test split, stored 1+19 candidates)."""
    candidates = load_candidates(data, "test", "1+19", args.seed, users)
    histories = [data.split_input(int(u), "test") for u in users]
    rows: dict[str, Any] = {
        "popularity": with_errors(PopularityScorer(data).score(histories, candidates)),
        "sasrec": with_errors(SASRecScorer(load_sasrec(sasrec_dir)).score(histories, candidates)),
    }
    encoder, config = load_allmrec_encoder(s2, data, args.device, llm=llm)
    scorer = ALLMRecScorer(encoder, "likelihood", batch_size=4, seed=args.seed, progress=True)
    tag = hashlib.sha256(np.asarray(users, np.int64).tobytes()).hexdigest()[:8]  # one file per user set
    start, path = time.perf_counter(), s2.parent / f"raw-{s2.name}-test-{tag}.npz"
    fresh = not path.is_file()  # else read back from an earlier run: no speed to report
    raw = cached_raw(path, users, lambda: scorer.raw(histories, candidates, True))
    speed = round(len(users) / (time.perf_counter() - start), 3) if fresh else None
    for mode in SCORE_MODES:
        rows[f"allmrec ({mode})"] = with_errors(
            scorer.calibrated(raw, histories, candidates, ALLMRecScoring(mode))
        )
    served = scoring_of(config)
    rows["allmrec (served: chosen on validation)"] = with_errors(
        scorer.calibrated(raw, histories, candidates, served)
    ) | {"scoring": config.get("scoring")}
    sasrec, cold, imputed = scorer.sasrec_side(histories, candidates)
    if imputed is not None:  # cold candidates: their SASRec side from stage 1's text-predicted embeddings
        for offset in SHOWN_OFFSETS:
            text = dataclasses.replace(served, cold_offset=offset)
            rows[f"sasrec, cold rows from text, offset {offset:g}"] = with_errors(
                cold_sasrec_scores(sasrec, cold, imputed, text)
            )
            rows[f"allmrec served blend, cold from text, offset {offset:g}"] = with_errors(
                scorer.calibrated(raw, histories, candidates, text)
            )
    if args.generate:
        gen = ALLMRecScorer(encoder, "generate", batch_size=4, seed=args.seed)
        rows["allmrec (generation)"] = with_errors(gen.score(histories, candidates)) | gen.extra_metrics()
    return {"rows": rows, "scoring_users_per_s": speed, "n_users": len(users)}


def cached_raw(path: Path, users: np.ndarray, compute: Any) -> list[RawScores]:
    """Both prompts' log-likelihoods of `users` (one pass), kept in `path`: a rerun only redoes metrics."""
    if path.is_file():
        stored = np.load(path)
        if np.array_equal(stored["users"], users):
            rows = zip(stored["sums"], stored["counts"], stored["prior"], strict=True)
            return [RawScores(s, c, p) for s, c, p in rows]
    raw = compute()
    np.savez(
        path,
        users=users,
        sums=np.stack([r.sums for r in raw]),
        counts=np.stack([r.counts for r in raw]),
        prior=np.stack([r.prior for r in raw]),
    )
    return raw


def training_record(s2: Path) -> dict[str, Any]:
    """Stage-2 wall time, examples and examples/s from its history (seconds include validation)."""
    history = json.loads((s2 / "history.json").read_text())
    config = json.loads((s2 / "config.json").read_text())
    examples, seconds = sum(e["examples"] for e in history), history[-1].get("seconds")
    return {
        "epochs": len(history),
        "examples": examples,
        "seconds": seconds,
        "examples_per_s": None if not seconds else round(examples / seconds, 3),
        "best_epoch": config.get("best_epoch"),
        "valid_hr@1_per_epoch": [e["valid"].get("hr@1") for e in history],
        "train": config.get("train"),
        "scoring": config.get("scoring"),
        "calibration_valid": (config.get("calibration") or {}).get("valid"),
    }


def plot_losses(runs: dict[str, Path], path: Path) -> None:
    """Each run's stage-2 loss per step (20-step mean); with the ranking loss, its two parts as well."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for name, s2 in runs.items():
        steps = json.loads((s2 / "steps.json").read_text()) if (s2 / "steps.json").is_file() else []
        if not steps:
            continue
        x = [s["step"] for s in steps]
        if "rank" not in steps[0]:
            ax.plot(x, [s["loss_avg"] for s in steps], label=f"{name}: LM loss")
            continue
        for part, label in (("loss", "LM + ranking"), ("lm", "LM part"), ("rank", "ranking part")):
            values = np.array([s[part] for s in steps])
            mean = np.convolve(values, np.ones(20), "valid") / 20  # 20-step mean
            ax.plot(x[19:], mean, label=f"{name}: {label}")
    ax.axhline(np.log(10), color="grey", lw=0.8, ls=":", label="ranking loss at chance (10 candidates)")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("loss (20-step mean)")
    ax.set_title("A-LLMRec stage 2 on ml-100k")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def plot_cold_tradeoff(result: dict[str, Any], path: Path) -> None:
    """Cold-target Hit@1 against warm-target Hit@1 on the cold split, one point per cold-from-text offset
    (SASRec alone and the served blend), the neutral rule as a marker."""
    from matplotlib.figure import Figure

    cold, warm = result["cold"]["rows"], result["cold_split_warm"]["rows"]
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    for prefix, label in (
        ("sasrec, cold rows from text", "SASRec, cold rows from text"),
        ("allmrec served blend, cold from text", "A-LLMRec blend, cold from text"),
    ):
        names = [f"{prefix}, offset {o:g}" for o in SHOWN_OFFSETS]
        xs, ys = [warm[n]["hr@1"] for n in names], [cold[n]["hr@1"] for n in names]
        ax.plot(xs, ys, marker="o", label=label)
        for o, x, y in zip(SHOWN_OFFSETS, xs, ys, strict=True):
            ax.annotate(f"{o:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    served = "allmrec (served: chosen on validation)"
    ax.scatter(
        [warm[served]["hr@1"]], [cold[served]["hr@1"]], marker="*", s=150, color="k", label="as served"
    )
    ax.scatter(
        [warm["sasrec"]["hr@1"]], [cold["sasrec"]["hr@1"]], marker="x", s=80, label="SASRec (untrained rows)"
    )
    ax.axhline(0.05, color="grey", lw=0.8, ls=":", label="random (cold targets)")
    ax.set_xlabel("Hit@1, test users whose target is warm")
    ax.set_ylabel("Hit@1, test users whose target is cold")
    ax.set_title("A-LLMRec cold split (ml-100k, 1+19): cold-from-text offset trade-off")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if not (args.work / "ml-100k").is_dir():
        root = Path(os.environ.get("LLMREC_DATA_DIR", REPO.parent / "shared" / "data"))
        prepare_dataset(
            PrepareConfig(dataset="ml-100k"), args.source or root / "ml-100k", args.work / "ml-100k"
        )
    data = load_prepared(args.work / "ml-100k")
    llm = load_llm(args.llm, device=args.device, dtype="float32")
    result: dict[str, Any] = {
        "command": portable_command(sys.argv),
        "dataset": "ml-100k",
        "protocol": f"1+19, stored test candidates (seed {args.seed}); random Hit@1 = .05",
        "llm": args.llm,
        "args": portable_args(args),
        "training": {},
    }
    runs = {}
    if not args.skip_warm:
        warm_sasrec, warm_s2 = pipeline(data, args.work / "warm", args, llm)
        users = select_users(data.n_users, args.eval_users, args.seed)
        result["warm"] = table(data, warm_sasrec, warm_s2, users, args, llm)
        result["training"]["warm"] = training_record(warm_s2)
        runs["warm"] = warm_s2
    if not args.skip_cold:
        if not (args.work / "ml-100k-cold").is_dir():
            make_cold_split(data, args.work / "ml-100k-cold", args.cold_fraction, args.seed)
        cold = load_prepared(args.work / "ml-100k-cold")
        cold_sasrec, cold_s2 = pipeline(cold, args.work / "cold", args, llm)
        cold_users = cold_test_users(cold, np.arange(cold.n_users))
        if 0 < args.cold_users < len(cold_users):
            cold_users = np.sort(np.random.default_rng(args.seed).permutation(cold_users)[: args.cold_users])
        result["cold"] = table(cold, cold_sasrec, cold_s2, cold_users, args, llm)
        if args.cold_warm_users:  # the same models on the split's warm targets: what cold scoring costs them
            warm_users = np.setdiff1d(np.arange(cold.n_users), cold_test_users(cold, np.arange(cold.n_users)))
            picked = np.random.default_rng(args.seed).permutation(warm_users)[: args.cold_warm_users]
            result["cold_split_warm"] = table(cold, cold_sasrec, cold_s2, np.sort(picked), args, llm)
        result["training"]["cold"] = training_record(cold_s2)
        runs["cold"] = cold_s2
    if "cold_split_warm" in result:
        plot_cold_tradeoff(result, args.out.with_name("allmrec_cold_tradeoff.png"))
    plot = args.out.with_name(f"{args.out.stem}_stage2_loss.png")
    plot_losses(runs, plot)
    result |= {
        "loss_plot": portable_path(plot),
        "total_s": round(time.perf_counter() - start, 1),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for name in ("warm", "cold", "cold_split_warm"):
        if name in result:
            print(f"\n{name} ({result[name]['n_users']} test users)")
            for row, m in result[name]["rows"].items():
                print(
                    f"  {row:42} Hit@1 {m['hr@1']:.4f} ± {m['hr@1_se']:.4f}   "
                    f"NDCG@10 {m['ndcg@10']:.4f} ± {m['ndcg@10_se']:.4f}"
                )
    print(f"wrote {portable_path(args.out)} in {result['total_s']:.0f} s")


if __name__ == "__main__":
    main()
