"""A-LLMRec stage-2 training speed, measured side by side in one run: seconds per example of a real
optimisation step (forward + backward through the frozen LLM into F_U / F_I, Adam step) for the previous
defaults and for today's, and what the official ml-100k budget (5 epochs x 943 users) costs with each.
Needs a SASRec and a stage 1 (e.g. from bench/allmrec_bench.py). Run it on an otherwise idle machine:

  .venv/bin/python bench/allmrec_speed.py --work work/allmrec-bench/warm --data work/allmrec-bench/ml-100k
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from portable import portable_command, portable_path

from training.allmrec.config import Stage2TrainConfig
from training.allmrec.stage2 import setup_stage2, stage2_examples, training_candidates
from training.common.llm import load_llm
from training.data.dataset import load_prepared

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_EXAMPLES = 5 * 943  # 5 epochs over every ml-100k user (batch 2 at lr 1e-4 in the official code)
VARIANTS: dict[str, dict[str, Any]] = {
    "before: previous defaults, bf16 (the old bench's dtype)": {"n_candidates": 20, "dtype": "bfloat16"},
    "before: previous defaults, fp32": {"n_candidates": 20, "dtype": "float32"},
    "after: 10 candidates per training prompt, fp32": {"n_candidates": 10, "dtype": "float32"},
}


def measure(work: Path, data: Any, llm: Any, overrides: dict[str, Any], steps: int) -> dict[str, Any]:
    config = Stage2TrainConfig(batch_size=4, progress=False, calibration_users=0, **overrides)
    encoder, _, _ = setup_stage2(data, work / "sasrec", work / "stage1", config, llm)
    optimizer = torch.optim.Adam(encoder.stage2.parameters(), lr=1e-4)
    examples = stage2_examples(data, 0, 0)
    rng = np.random.default_rng(0)
    times, tokens = [], []
    for step in range(steps + 1):  # the first step warms up
        batch = examples[step * 4 : (step + 1) * 4]
        cands = [training_candidates(rng, e, encoder, config.n_candidates) for e in batch]
        start = time.perf_counter()
        histories, targets = [e.history for e in batch], [e.target for e in batch]
        prompt, _ = encoder.recommendation_batch(histories, cands, targets)
        loss = encoder.loss(histories, cands, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step:
            times.append((time.perf_counter() - start) / len(batch))
            tokens.append(float(prompt.attention_mask.sum()) / len(batch))
    per_example = float(np.mean(times))
    return {
        "s_per_example": round(per_example, 3),
        "examples_per_s": round(1 / per_example, 3),
        "tokens_per_prompt": round(float(np.mean(tokens)), 1),
        "official_budget_min": round(OFFICIAL_EXAMPLES * per_example / 60, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="Directory holding sasrec/ and stage1/.")
    p.add_argument("--data", type=Path, required=True, help="The prepared ml-100k directory.")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=6, help="Measured steps of 4 examples per variant.")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "allmrec_speed.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_prepared(args.data)
    llms = {dtype: load_llm("smollm2", dtype=dtype) for dtype in ("float32", "bfloat16")}
    rows = {
        name: measure(args.work, data, llms[o["dtype"]], o, args.steps) | o for name, o in VARIANTS.items()
    }
    result = {
        "command": portable_command(sys.argv),
        "work": portable_path(args.work),
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "official_examples": OFFICIAL_EXAMPLES,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2))
    for name, row in rows.items():
        print(
            f"{name:55} {row['s_per_example']:6.3f} s/example  {row['tokens_per_prompt']:6.1f} tokens  "
            f"official budget {row['official_budget_min']:6.1f} min"
        )


if __name__ == "__main__":
    main()
