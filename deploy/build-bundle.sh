#!/usr/bin/env bash
# One-shot bundle build for containers (the compose `train` service, a k8s Job): the steps of deploy/demo.sh
# (data prepare, train sasrec, train llmsrec, export bundle) without serving, then the bundle is published
# into $LLMREC_BUNDLE, which may be a volume's mount point (it is filled in place, manifest.json last).
set -euo pipefail
LLMREC="${LLMREC_BIN:-llmrec}"
DATASET="${TRAIN_DATASET:-ml-100k}"
WORK="${LLMREC_WORK_DIR:-/work}"
RAW="${LLMREC_DATA_DIR:-/data}"
OUT="${LLMREC_BUNDLE:-/bundle}"
DATA="$WORK/$DATASET"
SASREC="$WORK/sasrec-$DATASET"
LLMSREC="$WORK/llmsrec-$DATASET"
STAGED="$WORK/bundle-$DATASET"

step() { printf '\n== %s\n' "$*"; }

if [ -f "$OUT/manifest.json" ] && [ "${TRAIN_FORCE:-0}" != "1" ]; then
  step "$OUT already holds a bundle; verifying it (TRAIN_FORCE=1 rebuilds)"
  exec "$LLMREC" export verify "$OUT"
fi
mkdir -p "$WORK"
if [ ! -d "$RAW/$DATASET" ]; then
  step "download $DATASET into $RAW"
  "$LLMREC" data download "$DATASET" --dest "$RAW"
fi
[ -f "$DATA/stats.json" ] || { step "prepare $DATASET"; "$LLMREC" data prepare --dataset "$DATASET" --out "$DATA"; }
if [ ! -f "$SASREC/model.safetensors" ]; then
  step "train SASRec (the teacher)"
  "$LLMREC" train sasrec --data "$DATA" --out "$SASREC" --epochs "${TRAIN_SASREC_EPOCHS:-60}" --max-len 50 \
    --eval-max-users "${TRAIN_EVAL_USERS:-943}"
fi
if [ ! -f "$LLMSREC/heads.safetensors" ]; then
  step "train LLM-SRec on ${TRAIN_LLM:-smollm2} (frozen; only the MLPs train)"
  "$LLMREC" train llmsrec --data "$DATA" --sasrec "$SASREC" --out "$LLMSREC" --llm "${TRAIN_LLM:-smollm2}" \
    --dtype "${TRAIN_LLM_DTYPE:-bfloat16}" --epochs "${TRAIN_LLMSREC_EPOCHS:-1}" \
    --max-users "${TRAIN_LLMSREC_USERS:-200}" --eval-max-users "${TRAIN_LLMSREC_EVAL_USERS:-100}"
fi
step "export the bundle (with the LLM, so the API and vLLM need no model download)"
"$LLMREC" export bundle --data "$DATA" --sasrec "$SASREC" --llmsrec "$LLMSREC" --out "$STAGED" \
  --include-llm --overwrite
"$LLMREC" export verify "$STAGED"

step "publish into $OUT"
mkdir -p "$OUT"
rm -f "$OUT/manifest.json"  # no manifest = not a bundle: a reader never sees a half-copied one as complete
find "$OUT" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
(cd "$STAGED" && find . -type f ! -name manifest.json -exec cp --parents {} "$OUT/" \;)
cp "$STAGED/manifest.json" "$OUT/manifest.json"
"$LLMREC" export verify "$OUT"
step "done: restart the API to load it (docker compose restart api)"
