#!/usr/bin/env bash
# `promptseg train` on a lent GPU machine (MODEL_CARD.md, "Training on a GPU machine"), for the device tool's `run`
# from the repository root with `.device` (tools/pack_training_data.py) carried. The model, its loss log and the
# training log are written to $OUT, which comes back. DEVICE=cpu runs it here, for a dry run.
# Usage: bash tools/device_train.sh MINUTES [promptseg train options: --data ... --native-mpp ... --width ...]
set -euo pipefail
minutes=${1:?minutes of training}
shift
device=${DEVICE:-cuda}
python3 -c "import shapely" 2>/dev/null || {
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/wheels/*.whl
    export PYTHONPATH=/tmp/site
}
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
[ "$device" = cpu ] || nvidia-smi -L
tmp=$(mktemp -d)  # the checkpoint (optimiser state) is larger than what comes back
trap 'rm -rf "$tmp"' EXIT
run=$tmp/device  # the model's version is named after its folder: 0.1.0+device
python3 -m promptseg_cli train --device "$device" --workers "$(( $(nproc) > 2 ? $(nproc) - 1 : 1 ))" \
    --minutes "$minutes" -o "$run" "$@" 2>&1 | tee "$OUT/train.log"
cp "$run/model.pt" "$run/losses.jsonl" "$OUT/"
