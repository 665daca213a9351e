#!/usr/bin/env bash
# GPU check for a machine with no network (<5 min): the `gpu`-marked tests (vLLM parity included where vLLM
# is installed), then bench/gpu_check.py's latency table (LLM forward, FAISS, ranking; CPU vs CUDA).
# Without CUDA it says so, skips the tests and prints the CPU columns only.
#   bench/gpu_check.sh [extra gpu_check.py flags, e.g. --bundle work/bundle --threads 1]
# PYTHON (default .venv/bin/python, else python3) picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x $PY ]] || PY=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1
start=$(date +%s)

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    "$PY" -c 'import torch; print("CUDA:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
    echo "== gpu-marked tests =="
    tests_rc=0
    timeout 150 "$PY" -m pytest -m gpu -rs -q -p no:cacheprovider tests/ || tests_rc=$?
else
    echo "no CUDA: torch sees no GPU; gpu-marked tests skipped, CPU columns only"
    tests_rc=skipped
fi

echo "== latency (median ms) =="
timeout 120 "$PY" bench/gpu_check.py "$@"
echo "gpu tests: rc=${tests_rc}; total $(( $(date +%s) - start )) s"
[[ $tests_rc == 0 || $tests_rc == skipped ]]
