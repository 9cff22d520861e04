#!/usr/bin/env bash
# ISBI 2012 EM through the command line, as a user would run it: a project store with images 0-19
# for training, 20-23 for validation (model selection, post-processing tuning) and 24-29 held out
# for testing; train with only the encoder and the number of epochs chosen (everything else
# automatic), tune, then evaluate on the held-out images beside the classical baseline.
#
#   bash benchmarks/isbi_cli.sh [EPOCHS] [ENCODER]      (default: 20 resnet18)
#
# Needs ../shared/data beside the checkout (or SEGBOX_SHARED_DATA) and napari-seg-box installed
# (scripts/setup.sh makes .venv/).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-20}
ENCODER=${2:-resnet18}
DATA=${SEGBOX_SHARED_DATA:-../shared/data}/isbi2012
CLI=$(command -v napari-seg-box || echo .venv/bin/napari-seg-box)
STORE=$(mktemp -d)/isbi.zarr
trap 'rm -rf "$(dirname "$STORE")"' EXIT

files() { local kind=$1; shift; for i in "$@"; do echo "$DATA/$kind/$i.png"; done; }
train_images=$(files images {0..19}); train_masks=$(files labels {0..19})
val_images=$(files images {20..23}); val_masks=$(files labels {20..23})
test_images=$(files images {24..29}); test_masks=$(files labels {24..29})
set -x
"$CLI" init "$STORE" --classes membrane,interior
"$CLI" import "$STORE" --prefix isbi --split train --images $train_images --masks $train_masks
"$CLI" import "$STORE" --prefix isbi --split validation --images $val_images --masks $val_masks
"$CLI" import "$STORE" --prefix isbi --split test --images $test_images --masks $test_masks
"$CLI" info "$STORE"
time "$CLI" train "$STORE" --epochs "$EPOCHS" --encoder "$ENCODER"
"$CLI" tune "$STORE"
"$CLI" evaluate "$STORE" --baseline
