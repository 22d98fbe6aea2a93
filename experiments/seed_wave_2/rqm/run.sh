#!/usr/bin/env bash
# privacy=rqm (RQM, Youn et al. 2023, as re-implemented by Cai et al.'s DP_Linprog code) on
# FedAvg uplinks: LEAF Synthetic(1, 1) logistic regression (d = 610), 100 users, 10 a round,
# 30 rounds, one seed; against no privacy and against the same levels kept with q = 1 (plain
# stochastic rounding on the same grid, no privacy). Run from the repo root: 6 runs, about
# 2 minutes of CPU, then the analysis.
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
out=experiments/seed_wave_2/rqm/runs
common="data=synthetic partition=natural model=logreg num_nodes=100 rounds=30 eval_every=5 checkpoint_every=0 progress=false seed=0"
run() { nice -n 15 fedsim run $common hydra.run.dir=$out/$1 "${@:2}" > /dev/null; }
run none
run rounding_m4 privacy=rqm privacy.levels=4 privacy.keep=1 privacy.clip=0.05 privacy.margin=0.05
run rqm_m4_q0.5 privacy=rqm privacy.levels=4 privacy.keep=0.5 privacy.clip=0.05 privacy.margin=0.05
run rqm_m4_q0.2_wide privacy=rqm privacy.levels=4 privacy.keep=0.2 privacy.clip=0.05 privacy.margin=0.15
run rqm_m2_wide privacy=rqm privacy.levels=2 privacy.clip=0.05 privacy.margin=0.15
run rqm_m16_q0.5 privacy=rqm privacy.levels=16 privacy.keep=0.5 privacy.clip=0.05 privacy.margin=0.05
python experiments/seed_wave_2/rqm/analyze.py
