#!/usr/bin/env bash
# The main job: build a small ml-100k bundle if none exists (later runs reuse it), then serve it on
# localhost:8000. Sized for ~19 min on a 2-core CPU; every size below is an environment variable.
set -euo pipefail
cd "$(dirname "$0")/.."
LLMREC="${LLMREC_BIN:-.venv/bin/llmrec}"
WORK="${LLMREC_WORK_DIR:-work}"
DATA="$WORK/ml-100k"
SASREC="$WORK/sasrec-ml-100k"
LLMSREC="$WORK/llmsrec-ml-100k"
STAGE1="$WORK/allmrec-stage1-ml-100k"
ALLMREC="$WORK/allmrec-stage2-ml-100k"
GENRE="$WORK/allmrec-genre-ml-100k"
BUNDLE="${LLMREC_BUNDLE:-$WORK/bundle-ml-100k}"
mkdir -p "$WORK"
# raw data: $LLMREC_DATA_DIR, else the shared data beside the checkout (`llmrec data download` fetches it)
export LLMREC_DATA_DIR="${LLMREC_DATA_DIR:-../shared/data}"

# every step line carries the clock time and the time since the start (bash's SECONDS), so a slow step shows
step() {
  local now; now="$(date +%H:%M:%S)"
  printf '\n\033[1m== %s +%dm%02ds  %s\033[0m\n' "$now" $((SECONDS / 60)) $((SECONDS % 60)) "$*"
}
step "llmrec demo: builds $BUNDLE if it is missing, then serves it (Ctrl-C stops it at any step)"

if [ ! -f "$BUNDLE/manifest.json" ]; then
  [ -f "$DATA/stats.json" ] || { step "prepare ml-100k"; "$LLMREC" data prepare --dataset ml-100k --out "$DATA"; }
  if [ ! -f "$SASREC/model.safetensors" ]; then
    step "train SASRec (the teacher) to early stopping on validation"
    "$LLMREC" train sasrec --data "$DATA" --out "$SASREC" --epochs "${DEMO_SASREC_EPOCHS:-200}" --max-len 50 \
      --patience "${DEMO_SASREC_PATIENCE:-10}" --eval-max-users 943
  fi
  step "evaluate SASRec on the stored 1+99 candidates"
  "$LLMREC" eval --model sasrec --data "$DATA" --ckpt "$SASREC" --protocol 1+99 --json
  if [ ! -f "$LLMSREC/heads.safetensors" ]; then
    step "train LLM-SRec on SmolLM2-135M, llmrec's cached recipe (frozen LLM; only the MLPs train)"
    "$LLMREC" train llmsrec --data "$DATA" --sasrec "$SASREC" --out "$LLMSREC" --llm smollm2 --dtype float32 \
      --recipe cached --template short --max-users "${DEMO_LLMSREC_USERS:-0}" \
      --prefixes-per-user "${DEMO_LLMSREC_PREFIXES:-4}" --eval-max-users "${DEMO_LLMSREC_EVAL_USERS:-943}" \
      --w-score-distill "${DEMO_LLMSREC_SCORE_DISTILL:-1}"
  fi
  if [ ! -f "$STAGE1/stage1.safetensors" ]; then
    step "A-LLMRec stage 1: align SASRec item embeddings with MiniLM text embeddings"
    "$LLMREC" train allmrec-stage1 --data "$DATA" --sasrec "$SASREC" --out "$STAGE1" \
      --epochs "${DEMO_STAGE1_EPOCHS:-20}" --lr 1e-3
  fi
  if [ ! -f "$ALLMREC/config.json" ]; then
    step "A-LLMRec stage 2: soft prompts for next-item titles (frozen SmolLM2), scoring chosen on validation"
    "$LLMREC" train allmrec-stage2 --data "$DATA" --sasrec "$SASREC" --stage1 "$STAGE1" --llm smollm2 \
      --out "$ALLMREC" --epochs 1 --max-users "${DEMO_ALLMREC_USERS:-48}" --lr 1e-3 --batch-size 4 \
      --n-candidates 10 --template "${DEMO_ALLMREC_TEMPLATE:-lead}" --dtype float32 \
      --eval-max-users "${DEMO_ALLMREC_EVAL_USERS:-16}" --calibration-users "${DEMO_ALLMREC_CALIBRATION_USERS:-60}"
  fi
  if [ ! -f "$GENRE/config.json" ]; then
    step "A-LLMRec genre prompt: the user's favourite genres (for /v1/explain/genre)"
    "$LLMREC" train allmrec-genre --data "$DATA" --sasrec "$SASREC" --stage1 "$STAGE1" --stage2 "$ALLMREC" \
      --out "$GENRE" --max-users "${DEMO_GENRE_USERS:-96}" --valid-users "${DEMO_GENRE_VALID_USERS:-60}" \
      --lr 1e-3
  fi
  step "export the bundle"
  "$LLMREC" export bundle --data "$DATA" --sasrec "$SASREC" --llmsrec "$LLMSREC" --allmrec "$ALLMREC" \
    --allmrec-genre "$GENRE" --out "$BUNDLE" --include-llm --overwrite
fi
"$LLMREC" export verify "$BUNDLE"
step "serve $BUNDLE on http://${LLMREC_HOST:-127.0.0.1}:${LLMREC_PORT:-8000}/ (Ctrl-C stops it)"
exec "$LLMREC" serve --bundle "$BUNDLE" --host "${LLMREC_HOST:-127.0.0.1}" --port "${LLMREC_PORT:-8000}"
