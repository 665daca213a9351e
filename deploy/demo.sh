#!/usr/bin/env bash
# The main job: build a small ml-100k bundle if none exists (later runs reuse it), then serve it on
# localhost:8000. Sized for ~15 min on a 2-core CPU; every size below is an environment variable.
set -euo pipefail
cd "$(dirname "$0")/.."
LLMREC="${LLMREC_BIN:-.venv/bin/llmrec}"
WORK="${LLMREC_WORK_DIR:-work}"
DATA="$WORK/ml-100k"
SASREC="$WORK/sasrec-ml-100k"
LLMSREC="$WORK/llmsrec-ml-100k"
BUNDLE="${LLMREC_BUNDLE:-$WORK/bundle-ml-100k}"
mkdir -p "$WORK"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ ! -f "$BUNDLE/manifest.json" ]; then
  [ -f "$DATA/stats.json" ] || { step "prepare ml-100k"; "$LLMREC" data prepare --dataset ml-100k --out "$DATA"; }
  if [ ! -f "$SASREC/model.safetensors" ]; then
    step "train SASRec (the teacher)"
    "$LLMREC" train sasrec --data "$DATA" --out "$SASREC" --epochs "${DEMO_SASREC_EPOCHS:-60}" --max-len 50 \
      --eval-max-users 943
  fi
  step "evaluate SASRec on the stored 1+99 candidates"
  "$LLMREC" eval --model sasrec --data "$DATA" --ckpt "$SASREC" --protocol 1+99 --json
  if [ ! -f "$LLMSREC/heads.safetensors" ]; then
    step "train LLM-SRec on SmolLM2-135M (frozen; only the MLPs train)"
    "$LLMREC" train llmsrec --data "$DATA" --sasrec "$SASREC" --out "$LLMSREC" --llm smollm2 \
      --dtype bfloat16 --epochs "${DEMO_LLMSREC_EPOCHS:-1}" --max-users "${DEMO_LLMSREC_USERS:-200}" \
      --eval-max-users "${DEMO_LLMSREC_EVAL_USERS:-100}"
  fi
  step "export the bundle"
  "$LLMREC" export bundle --data "$DATA" --sasrec "$SASREC" --llmsrec "$LLMSREC" --out "$BUNDLE" \
    --include-llm --overwrite
fi
"$LLMREC" export verify "$BUNDLE"
step "serve $BUNDLE"
exec "$LLMREC" serve --bundle "$BUNDLE" --host "${LLMREC_HOST:-127.0.0.1}" --port "${LLMREC_PORT:-8000}"
