#!/usr/bin/env bash
# Issue 20 item 4: the mechanism analyses (Figs. 3-5, Fig. 7) and the headline on one more
# fashion-openset model of train_more_models.sh, e.g. the ResNet-18-32x32 (D = 512) or the
# 20-epoch WRN-16-4 (training length):
#
#   NAME=resnet18_32x32_e3_s0 RUNS=/work/bg/runs LOGS=/work/bg/logs setsid \
#       bash experiments/adascale_analyses/run_model_analyses.sh &
#   NAME=wrn16_4_e20_s0 ...      # waits until train_more_models.sh has finished that run
#
# Resumable (feature cache in $OUT/cache, runner store in $OUT/work). Then copy $OUT/out/* into
# experiments/results/adascale_analyses/$NAME/ (the ResNet-18 records are in resnet18_32x32/).
set -u
source "$(dirname "$0")/env.sh"
NAME="${NAME:?set NAME to a run of train_more_models.sh, e.g. wrn16_4_e20_s0}"
OUT="${OUT:-$RUNS/analyses_$NAME}"
until grep -q "end $NAME rc=0" "$LOGS/train_more_models.log" 2>/dev/null; do sleep 60; done
"$PY" -m jaxood.cli experiment headline fig3_shift fig4_q_ratio fig5_perturbed fig7_pgrid \
    --benchmark fashion-openset --model "$RUNS/openset_models/$NAME/best" \
    --data-root "$DATA" --out "$OUT/out" --work "$OUT/work" --cache "$OUT/cache"
echo "$(date -u +%FT%TZ) analyses $NAME rc=$?"
