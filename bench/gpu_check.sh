#!/usr/bin/env bash
# GPU check for a machine with no network (< 10 min in all): the `gpu`-marked tests (vLLM parity included where
# vLLM is installed; its two engines start with enforce_eager), then bench/gpu_check.py's latency table (LLM
# forward, FAISS, ranking; CPU vs CUDA). Without CUDA it says so, skips the tests and prints the CPU columns.
# Each step has its own budget; a step past it is stopped (its child processes too) and the next one runs.
#   bench/gpu_check.sh [extra gpu_check.py flags, e.g. --bundle work/bundle --threads 1]
# PYTHON (default .venv/bin/python, else python3) picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x $PY ]] || PY=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1
# budgets in seconds (the environment may lower them); with KILL_AFTER_S each and ~30 s for the two CUDA
# probes the defaults keep the whole script under 600 s (tests/deploy/test_gpu_check.py)
TESTS_BUDGET_S=${TESTS_BUDGET_S:-330}
BENCH_BUDGET_S=${BENCH_BUDGET_S:-150}
KILL_AFTER_S=${KILL_AFTER_S:-10}
start=$(date +%s)

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    "$PY" -c 'import torch; print("CUDA:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
    echo "== gpu-marked tests =="
    tests_rc=0
    timeout --kill-after="$KILL_AFTER_S" "$TESTS_BUDGET_S" \
        "$PY" -m pytest -m gpu -rs -q -p no:cacheprovider tests/ || tests_rc=$?
else
    echo "no CUDA: torch sees no GPU; gpu-marked tests skipped, CPU columns only"
    tests_rc=skipped
fi

echo "== latency (median ms) =="
timeout --kill-after="$KILL_AFTER_S" "$BENCH_BUDGET_S" "$PY" bench/gpu_check.py "$@"
echo "gpu tests: rc=${tests_rc}; total $(( $(date +%s) - start )) s"
[[ $tests_rc == 0 || $tests_rc == skipped ]]
