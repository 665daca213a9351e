r"""Short GPU-vs-CPU latency check (offline, well under a minute on a GPU machine): LLM forward of the same
batch of user prompts (tiny random Llama; SmolLM2 when its safetensors cache exists), FAISS exact search
(faiss-cpu vs faiss-gpu) over one item table, and one ranking request (app.retrieval.Ranker: FAISS top-N +
filters + exact torch rescoring) on CPU vs CUDA. Prints one table and writes JSON; the CUDA column reads
"no CUDA" where there is none. Called by bench/gpu_check.sh.

  .venv/bin/python bench/gpu_check.py                       # random 200k x 128 item table
  .venv/bin/python bench/gpu_check.py --bundle work/bundle  # the bundle's item_vectors.npy
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.retrieval import Ranker, faiss_gpu_support  # noqa: E402
from models.prompts import PromptConfig, user_prompt  # noqa: E402

Row = dict[str, Any]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="Use this bundle's item_vectors.npy as the item table.")
    p.add_argument("--items", type=int, default=200_000, help="Rows of the random item table (no --bundle).")
    p.add_argument("--dim", type=int, default=128, help="Dimension of the random item table.")
    p.add_argument("--batch", type=int, default=8, help="User prompts per LLM forward.")
    p.add_argument("--queries", type=int, default=256, help="Queries per FAISS search batch.")
    p.add_argument("--reps", type=int, default=20, help="Timed repetitions of searches and ranking (median).")
    p.add_argument("--llm-reps", type=int, default=5, help="Timed repetitions of each LLM forward (median).")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (torch, FAISS).")
    p.add_argument("--json", type=Path, default=REPO / "work" / "bench" / "gpu_check.json")
    return p.parse_args()


def median_ms(fn: Callable[[], Any], reps: int, cuda: bool) -> float:
    """Median wall time of fn() in ms after one warm-up call; CUDA work is synchronised."""
    fn()
    times = []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def llm_candidates() -> list[tuple[str, Callable[[], tuple[Any, Any]]]]:
    """(name, loader) for the tiny random Llama and, if cached, SmolLM2 (never downloads or converts)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.common.llm import tiny_llama, tiny_tokenizer

    def tiny() -> tuple[Any, Any]:
        tokenizer = tiny_tokenizer()
        return tiny_llama(len(tokenizer), hidden=256, layers=4), tokenizer

    out: list[tuple[str, Callable[[], tuple[Any, Any]]]] = [("tiny-llama (random, 4x256)", tiny)]
    cache = Path(os.environ.get("LLMREC_CACHE_DIR", Path.home() / ".cache" / "llmrec"))
    smol = cache / "llm" / "smollm2-135m-instruct"
    if (smol / "config.json").is_file():

        def smollm2() -> tuple[Any, Any]:
            return AutoModelForCausalLM.from_pretrained(smol), AutoTokenizer.from_pretrained(smol)

        out.append(("SmolLM2-135M", smollm2))
    return out


def user_prompts(n: int) -> list[str]:
    config = PromptConfig(verb="watched", noun="movie")
    titles = [f"Movie number {i} (199{i % 10})" for i in range(40)]
    return [user_prompt(titles[i : i + 10], None, config) for i in range(n)]


def llm_rows(args: argparse.Namespace, devices: list[str]) -> list[Row]:
    rows = []
    for name, load in llm_candidates():
        model, tokenizer = load()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        encoded = tokenizer(user_prompts(args.batch), return_tensors="pt", padding=True)
        row: Row = {"check": f"LLM forward, {name}, batch {args.batch} x {encoded['input_ids'].shape[1]} tok"}
        for device in devices:
            dtype = torch.bfloat16 if device == "cuda" else torch.float32
            decoder = model.to(device, dtype).eval().base_model
            inputs = {k: v.to(device) for k, v in encoded.items()}

            def forward(decoder: Any = decoder, inputs: dict[str, Any] = inputs) -> Any:
                with torch.inference_mode():
                    return decoder(**inputs, use_cache=False).last_hidden_state

            row[device] = median_ms(forward, args.llm_reps, device == "cuda")
            row[f"{device}_dtype"] = str(dtype).removeprefix("torch.")
        rows.append(row)
        del model
    return rows


def item_table(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    if args.bundle:
        table = np.load(args.bundle / "item_vectors.npy").astype(np.float32)
        return table, f"bundle {args.bundle.name}"
    table = np.random.default_rng(0).standard_normal((args.items + 1, args.dim)).astype(np.float32)
    table[0] = 0
    return table, "random"


def faiss_row(args: argparse.Namespace, table: np.ndarray, source: str, gpu: bool) -> Row:
    vectors = np.ascontiguousarray(table[1:])
    queries = np.random.default_rng(1).standard_normal((args.queries, table.shape[1])).astype(np.float32)
    k = 100
    row: Row = {
        "check": f"FAISS exact IP top-{k}, {args.queries} queries, {len(vectors)}x{table.shape[1]} ({source})"
    }
    cpu_index = faiss.IndexFlatIP(vectors.shape[1])
    cpu_index.add(vectors)
    row["cpu"] = median_ms(lambda: cpu_index.search(queries, k), max(3, args.reps // 4), False)
    if gpu:
        resources = faiss.StandardGpuResources()
        gpu_index = faiss.index_cpu_to_gpu(resources, 0, cpu_index)
        row["cuda"] = median_ms(lambda: gpu_index.search(queries, k), args.reps, False)
        _, want = cpu_index.search(queries, k)
        _, got = gpu_index.search(queries, k)
        overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(want, got, strict=True)])
        row["note"] = f"faiss-gpu top-{k} overlap with CPU {overlap:.4f}"
    return row


def ranking_row(args: argparse.Namespace, table: np.ndarray, devices: list[str]) -> Row:
    n = len(table) - 1
    rng = np.random.default_rng(2)
    user = rng.standard_normal(table.shape[1]).astype(np.float32)
    blocked = rng.choice(np.arange(1, n + 1), 50, replace=False)
    row: Row = {"check": f"rank one request (top-200 + 50 filtered + torch rescoring), {n} items"}
    results = {}
    for device in devices:
        ranker = Ranker(table, device, exact_max_items=10**9, top_n=200)
        allowed = torch.ones(n + 1, dtype=torch.bool, device=device)
        allowed[0] = False
        allowed[torch.from_numpy(blocked).to(device)] = False
        row[device] = median_ms(
            lambda r=ranker, a=allowed: r.rank(user, a, 10, 50), args.reps, device == "cuda"
        )
        row[f"{device}_index"] = ranker.index.kind
        results[device] = [i for i, _ in ranker.rank(user, allowed, 10, 50)]
    if len(results) == 2:
        row["note"] = "same top-10 on both" if results["cpu"] == results["cuda"] else "TOP-10 DIFFERS"
    return row


def print_table(rows: list[Row], cuda_name: str | None) -> None:
    head = f"{'check':<84} {'CPU ms':>10} {'CUDA ms':>10} {'speed-up':>9}  note"
    print(head + "\n" + "-" * len(head))
    for row in rows:
        cpu, cuda = row.get("cpu"), row.get("cuda")
        cuda_txt = f"{cuda:10.2f}" if cuda is not None else f"{'no CUDA' if cuda_name is None else 'n/a':>10}"
        speed = f"{cpu / cuda:8.1f}x" if cpu and cuda else f"{'-':>9}"
        notes = [row.get("note", "")] + [
            f"{k}={v}" for k, v in row.items() if k.endswith(("_dtype", "_index"))
        ]
        print(f"{row['check']:<84} {cpu:10.2f} {cuda_txt} {speed}  {'; '.join(n for n in notes if n)}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    cuda_name = torch.cuda.get_device_name(0) if cuda else None
    gpus, has_gpu = faiss_gpu_support()
    print(
        f"torch {torch.__version__}, CUDA: {cuda_name or 'no CUDA'}, faiss {faiss.__version__} "
        f"(GPUs seen by faiss: {gpus}, GPU classes: {has_gpu}), CPU threads: {args.threads}"
    )
    devices = ["cpu", "cuda"] if cuda else ["cpu"]
    table, source = item_table(args)
    rows = llm_rows(args, devices)
    rows.append(faiss_row(args, table, source, gpu=cuda and gpus > 0 and has_gpu))
    rows.append(ranking_row(args, table, devices))
    print_table(rows, cuda_name)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"cuda": cuda_name, "threads": args.threads, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
