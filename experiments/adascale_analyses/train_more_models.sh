#!/usr/bin/env bash
# The fashion-openset models of the AdaSCALE analyses, trained with `jaxood train` (issue 20).
#
#   RUNS=/work/bg/runs LOGS=/work/bg/logs setsid nice -n 19 \
#       bash experiments/adascale_analyses/train_more_models.sh &
#
# Sequential, resumable: every run passes --resume and checkpoints every 25 steps, so running
# this script again continues where it stopped (a finished run returns at once). Order: the
# shortest runs first so that something finishes early:
#   1. ResNet-18-32x32 (D = 512), 3 epochs, seed 0: the recorded WRN recipe with another D;
#   2. WRN-16-4 (D = 256), 3 epochs, seeds 0 1 2: the recorded headline models (their
#      earlier copies were in a gitignored runs/ folder and are gone);
#   3. WRN-16-4, 20 epochs, seed 0: trained to convergence (issue 20 item 4 asks >= 15).
# Recipe of experiments/adascale_analyses/train_models.py: fashion-openset's ID classes
# (--classes 0,1,2,3,5,8 --val-size 600 gives exactly its train/val/test split), SGD-Nesterov,
# lr 0.1 cosine, batch 128, crop padding 2 + flip, mean/std of the 36,000 ID training images.
set -u
source "$(dirname "$0")/env.sh"
mkdir -p "$RUNS/openset_models" "$LOGS"
export PYTHONPATH="$ROOT"

train() {  # name, then extra flags
    local name="$1"; shift
    echo "$(date -u +%FT%TZ) start $name" >> "$LOGS/train_more_models.log"
    "$PY" -m jaxood.cli train --dataset fashion_mnist --data-dir "$DATA" \
        --classes 0,1,2,3,5,8 --val-size 600 --batch-size 128 --lr 0.1 \
        --mean 0.2787285815715175 --std 0.35038105965984445 --crop-padding 2 \
        --checkpoint-every 25 --log-every 25 --no-progress \
        --workdir "$RUNS/openset_models/$name" --resume "$@" \
        >> "$LOGS/$name.log" 2>&1
    echo "$(date -u +%FT%TZ) end $name rc=$?" >> "$LOGS/train_more_models.log"
}

WRN='{"depth": 16, "widen_factor": 4}'
train resnet18_32x32_e3_s0 --arch resnet18_32x32 --epochs 3 --seed 0
for seed in 0 1 2; do
    train "wrn16_4_e3_s$seed" --arch wrn --arch-kwargs "$WRN" --epochs 3 --seed "$seed"
done
train wrn16_4_e20_s0 --arch wrn --arch-kwargs "$WRN" --epochs 20 --seed 0
