#!/usr/bin/env bash
# Issue 20 item 2: every analysis of the report on the three WRN-16-4 seeds of
# train_more_models.sh (run that first; this waits for seed 2):
#
#   RUNS=/work/bg/runs OUT=/work/bg/analyses_wrn3 LOGS=/work/bg/logs setsid \
#       bash experiments/adascale_analyses/run_seed_analyses.sh &
#
# Order: the cache-reading analyses and Tables 9/10 (--subset 500), `stability` (--subset 100),
# the headline and Table 3 (full sets). It pauses the 20-epoch run that train_more_models.sh
# starts after seed 2 and resumes it at the end; resumable, since the feature cache in
# $OUT/cache and the runner's store in $OUT/work are reused. Then copy $OUT/out/* into
# experiments/results/adascale_analyses/ and rebuild REPORT.md (`jaxood experiment report`).
set -u
source "$(dirname "$0")/env.sh"
OUT="${OUT:-$RUNS/analyses_wrn3}"
M="$RUNS/openset_models"
until grep -q "end wrn16_4_e3_s2" "$LOGS/train_more_models.log" 2>/dev/null; do sleep 30; done
PID=$(pgrep -f train_more_models.sh | head -1)
[ -n "$PID" ] && kill -STOP -- -"$(ps -o pgid= "$PID" | tr -d ' ')"
experiment() {
    "$PY" -m jaxood.cli experiment "$@" --benchmark fashion-openset \
        --model "$M/wrn16_4_e3_s0/best" "$M/wrn16_4_e3_s1/best" "$M/wrn16_4_e3_s2/best" \
        --data-root "$DATA" --out "$OUT/out" --work "$OUT/work" --cache "$OUT/cache"
    echo "$(date -u +%FT%TZ) experiment $* rc=$?"
}
experiment fig3_shift fig4_q_ratio fig5_perturbed fig6a_k1k2 fig6b_lambda table6_qprime \
    fig7_pgrid table7_nval table9_region table10_eps --subset 500
experiment stability --subset 100  # float64 attribution: ~50x the cost per image
experiment headline
experiment table3_fsood
[ -n "$PID" ] && kill -CONT -- -"$(ps -o pgid= "$PID" | tr -d ' ')"
